/* ops_gemm.c -- the packed, cache-blocked matrix product: weights repacked once at load into panels of 64 outputs, an AVX-512 micro-kernel of up to 6 rows of x by 64 outputs (4 zmm), an AVX2 one of up to 6 rows by 16 outputs (2 ymm), and the portable C version of the same layout.
 *
 * Layout (ops_pack): panel p holds outputs [64p, 64p + 64); inside it, for
 * each input i, the 64 weights W[64p + j][i] (j < 64) are contiguous, in the
 * weight's own type (F32, F16 or BF16); outputs past O are zeros. So a
 * panel is one contiguous run of 64 * I weights, read front to back.
 * BF16 is in AMX's B tiles (ops_amx.c reads them straight from the
 * panel): per group of 32 inputs (I padded with zeros to a multiple of
 * 32), four 1 KiB tiles, one per 16 outputs q, each 16 rows r of
 * [W[j][2r], W[j][2r + 1]] for its 16 outputs j. Here a pair's 16 outputs
 * are one 512-bit load, the even input widened by a shift, the odd one by
 * a mask, summed k then k + 1 as before. A group starts where input 32g of
 * the plain layout would.
 *
 * The micro-kernel keeps R x 4 accumulators of 16 outputs (R <= 6 rows of
 * x, 24 of the 32 zmm registers), and for each input i loads 4 vectors of
 * weights (widened in registers for F16/BF16) and broadcasts x[r][i]: 24
 * FMAs per 4 loads + 6 broadcasts, no horizontal sums, no I % 16 tail. The
 * inputs are blocked by KC (32 KiB of the panel, so the block stays in L1
 * while every group of up to 6 rows passes over it; the rows are split in
 * groups of near-equal size, and an F16 block read by more than one group
 * is widened to F32 once, see ops_matmul_packed_avx512); between blocks the partial
 * sums wait in a small buffer on the stack. Each output is one lane summed
 * in input order, so a row's result does not depend on how many rows share
 * the product (batched decode, chunked and whole prefill agree exactly).
 * One row (batch-1 decode) is the same kernel at R = 1: it streams the
 * panel once, 4 independent accumulator chains. */
#include "ops_int.h"

#include <string.h>

#ifdef OPS_HAVE_X86
#include <immintrin.h>
#endif

#define P OPS_PANEL
#define MC 64      /* rows of x per pass over a panel: the stack buffer is MC x 64 floats */

/* Inputs a panel holds: I, rounded up to a group of 32 for BF16. */
static int panel_inputs(enum ckpt_dtype wt, int I)
{
    return wt == CKPT_BF16 ? (I + 31) & ~31 : I;
}

/* Element index of W[o][i] in the packed matrix. */
static size_t pidx(enum ckpt_dtype wt, int I, int o, int i)
{
    size_t base = (size_t)(o / P) * P * (size_t)panel_inputs(wt, I);
    int j = o % P;
    if (wt == CKPT_BF16)
        return base + (size_t)(i / 32) * 32 * P + (size_t)(j / 16) * 512 + (size_t)(i % 32 / 2) * 32 +
               (size_t)(j % 16) * 2 + (size_t)(i % 2);
    return base + (size_t)i * P + (size_t)j;
}

size_t ops_pack_bytes(enum ckpt_dtype wt, int I, int O)
{
    return (size_t)(O + P - 1) / P * P * (size_t)panel_inputs(wt, I) * ckpt_dtype_size(wt);
}

void ops_pack(void *dst, const void *w, enum ckpt_dtype wt, int I, int O, int o0, int o1)
{
    size_t es = ckpt_dtype_size(wt);
    int oe = (o1 + P - 1) / P * P;      /* the last panel's padding too */
    int ip = panel_inputs(wt, I);
    for (int o = o0; o < oe; o++) {
        const char *s = (const char *)w + (size_t)(o - o0) * I * es;
        for (int i = 0; i < ip; i++) {
            char *d = (char *)dst + pidx(wt, I, o, i) * es;
            if (o < o1 && o < O && i < I)
                memcpy(d, s + (size_t)i * es, es);
            else
                memset(d, 0, es);
        }
    }
}

void ops_packed_row(float *dst, const void *wp, enum ckpt_dtype wt, int I, int o)
{
    for (int i = 0; i < I; i++) {
        size_t k = pidx(wt, I, o, i);
        dst[i] = wt == CKPT_F32    ? ((const float *)wp)[k]
                 : wt == CKPT_F16 ? ckpt_f16_to_f32(((const uint16_t *)wp)[k])
                                  : ckpt_bf16_to_f32(((const uint16_t *)wp)[k]);
    }
}

/* KC: inputs per block, 32 KiB of a panel. */
static int kc_of(size_t es)
{
    return (int)(32768 / (P * es));
}

/* ------------------------------------------------------------------ portable C */

static float wget(const void *w, enum ckpt_dtype wt, size_t k)
{
    return wt == CKPT_F32   ? ((const float *)w)[k]
           : wt == CKPT_F16 ? ckpt_f16_to_f32(((const uint16_t *)w)[k])
                            : ckpt_bf16_to_f32(((const uint16_t *)w)[k]);
}

void ops_matmul_packed_portable(float *y, const float *x, const void *wp, enum ckpt_dtype wt, const float *bias,
                                int T, int I, int O, int o0, int o1, bool accumulate)
{
    float c[P];
    for (int p = o0 / P; p * P < o1; p++) {
        int lo = p * P > o0 ? p * P : o0, hi = p * P + P < o1 ? p * P + P : o1;
        for (int t = 0; t < T; t++) {
            const float *xr = x + (size_t)t * I;
            memset(c, 0, sizeof c);
            for (int i = 0; i < I; i++)
                for (int j = 0; j < P; j++)
                    c[j] += xr[i] * wget(wp, wt, pidx(wt, I, p * P + j, i));
            for (int o = lo; o < hi; o++)
                ops_store1(y + (size_t)t * O, o, c[o - p * P], bias, accumulate);
        }
    }
}

/* ------------------------------------------------------------------ AVX-512 */
#ifdef OPS_HAVE_X86
#define A512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))
#define INL static inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 8")

INL A512 __m512 pk_f32(const void *w, size_t k)
{
    return _mm512_loadu_ps((const float *)w + k);
}
INL A512 __m512 pk_f16(const void *w, size_t k)
{
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w + k)));
}

/* The next block's lines spread evenly over every step of every group:
 * after step s of a block's `den` steps, num * (s + 1) / den of its `num`
 * lines are asked for (acc: num * s mod den; at: the next line). */
struct pf_stream {
    const char *at;
    int num, den, acc;
};

/* One step's share of the stream into L2. */
#define PF_STEP(ps)                                                                                   \
    if (ps.at) {                                                                                     \
        ps.acc += ps.num;                                                                            \
        while (ps.acc >= ps.den) {                                                                   \
            ps.acc -= ps.den;                                                                        \
            _mm_prefetch(ps.at, _MM_HINT_T1);                                                        \
            ps.at += 64;                                                                             \
        }                                                                                            \
    }

/* The block the calls over block k0 (kn inputs, blocks of bk) of panel p
 * prefetch: the panel's next block, or the next panel's first in
 * [o0, o1) once this is the panel's last block of its last pass of rows;
 * NULL at the end of the range. */
static const char *next_block(const char *panel, int p, int k0, int kn, int bk, int I, int ip, size_t es, int o1,
                              int t0, int T)
{
    if (k0 + bk < I)
        return panel + (size_t)(k0 + kn) * P * es;
    return (p + 1) * P < o1 && t0 + MC >= T ? panel + (size_t)P * ip * es : NULL;
}

/* The stream of `lines` lines from `next` shared out evenly over a
 * block's `steps` steps, as it stands at step `first` (a call that starts
 * there); at NULL for no stream. One division for the line and the
 * remainder, taken whether or not there is a stream: computed only with a
 * stream, the quotient and the remainder were two 64-bit divisions a call,
 * ~2% of an F32 prefill's samples. */
static struct pf_stream pf_from(const char *next, int lines, int steps, long long first)
{
    long long sl = first * lines, line = sl / steps, rem = sl % steps;
    return (struct pf_stream){next ? next + line * 64 : NULL, lines, steps, (int)rem};
}

/* One input k: 4 vectors of weights, R broadcasts of x, R x 4 FMAs. */
#define MK_STEP(LD, R, WIDE)                                                                               \
    __m512 wv[4];                                                                                    \
    UNROLL for (int q = 0; q < 4; q++) wv[q] = LD(w, (size_t)k * P + q * 16);                        \
    if (WIDE)                                                                                        \
        UNROLL for (int q = 0; q < 4; q++) _mm512_store_ps(wide + (size_t)k * P + q * 16, wv[q]);    \
    UNROLL for (int r = 0; r < R; r++)                                                               \
    {                                                                                                \
        __m512 xb = _mm512_set1_ps(x[(size_t)r * ldx + k]);                                          \
        UNROLL for (int q = 0; q < 4; q++) acc[r][q] = _mm512_fmadd_ps(wv[q], xb, acc[r][q]);         \
    }

/* c[r][0..64) (+)= sum over k < kn of x[r][k] * w[k][0..64): R rows of x
 * (stride ldx), the panel block w ([kn][64] in the weight type), the sums
 * c (stride 64), started from zero when `first`. When pf is set,
 * each step k also pulls its share of *pf's lines into L2 (PF_STEP). */
#define DEFINE_MK(SUF, LD, R, WIDE)                                                                    \
    __attribute__((noinline)) A512 static void mk_##SUF##_##R(const void *w, const float *x, size_t ldx, \
                                                              int kn, float *c, bool first,          \
                                                              const struct pf_stream *pf, float *wide) \
    {                                                                                                \
        __m512 acc[R][4];                                                                            \
        UNROLL for (int r = 0; r < R; r++) UNROLL for (int q = 0; q < 4; q++) acc[r][q] =            \
            first ? _mm512_setzero_ps() : _mm512_loadu_ps(c + r * P + q * 16);                       \
        if (R > 1 && pf) { /* one row (tn = 1) never streams the next block */            \
            struct pf_stream ps = *pf;                                                               \
            for (int k = 0; k < kn; k++) {                                                           \
                PF_STEP(ps)                                                                          \
                MK_STEP(LD, R, WIDE)                                                                     \
            }                                                                                        \
        } else {                                                                                     \
            for (int k = 0; k < kn; k++) {                                                           \
                MK_STEP(LD, R, WIDE)                                                                     \
            }                                                                                        \
        }                                                                                            \
        UNROLL for (int r = 0; r < R; r++) UNROLL for (int q = 0; q < 4; q++)                        \
            _mm512_storeu_ps(c + r * P + q * 16, acc[r][q]);                                         \
    }

#define DEFINE_MKS(SUF, LD, WIDE)                                                                      \
    DEFINE_MK(SUF, LD, 1, WIDE)                                                                      \
    DEFINE_MK(SUF, LD, 2, WIDE)                                                                      \
    DEFINE_MK(SUF, LD, 3, WIDE)                                                                      \
    DEFINE_MK(SUF, LD, 4, WIDE)                                                                      \
    DEFINE_MK(SUF, LD, 5, WIDE)                                                                      \
    DEFINE_MK(SUF, LD, 6, WIDE)                                                                      \
    static void (*const mks_##SUF[7])(const void *, const float *, size_t, int, float *, bool,      \
                                      const struct pf_stream *, float *) = {                                              \
        NULL, mk_##SUF##_1, mk_##SUF##_2, mk_##SUF##_3, mk_##SUF##_4, mk_##SUF##_5, mk_##SUF##_6};

DEFINE_MKS(f32, pk_f32, 0)
DEFINE_MKS(f16, pk_f16, 0)

/* BF16, inputs k (and k + 1 when BOTH) of 64 outputs: each 512-bit load
 * holds a pair for 16 outputs; input k is the low half of each 32-bit lane
 * (shifted up), k + 1 the high half (masked), the mask applied to a second
 * load so R = 6 fits the registers. Each accumulator adds k, then k + 1. */
#define MKB_STEP(R, BOTH)                                                                              \
    {                                                                                                \
        const uint16_t *wk = (const uint16_t *)w + (size_t)(k / 32) * 32 * P + (size_t)(k % 32 / 2) * 32; \
        __m512 wv[4];                                                                                \
        UNROLL for (int q = 0; q < 4; q++) wv[q] =                                                   \
            _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_loadu_si512(wk + q * 512), 16));            \
        UNROLL for (int r = 0; r < R; r++)                                                           \
        {                                                                                            \
            __m512 xb = _mm512_set1_ps(x[(size_t)r * ldx + k]);                                      \
            UNROLL for (int q = 0; q < 4; q++) acc[r][q] = _mm512_fmadd_ps(wv[q], xb, acc[r][q]);     \
        }                                                                                            \
        if (BOTH) {                                                                                  \
            UNROLL for (int q = 0; q < 4; q++) wv[q] =                                               \
                _mm512_castsi512_ps(_mm512_and_si512(_mm512_loadu_si512(wk + q * 512), odd));         \
            UNROLL for (int r = 0; r < R; r++)                                                       \
            {                                                                                        \
                __m512 xb = _mm512_set1_ps(x[(size_t)r * ldx + k + 1]);                              \
                UNROLL for (int q = 0; q < 4; q++) acc[r][q] = _mm512_fmadd_ps(wv[q], xb, acc[r][q]); \
            }                                                                                        \
        }                                                                                            \
    }

/* mk_bf16_R: as DEFINE_MK's kernels over BF16 pairs (kn may be odd: the
 * last pair's high half is padding, not read); pf as there, two
 * steps' lines per pair. BF16 blocks are never widened (`wide` unused). */
#define DEFINE_MKB(R)                                                                                  \
    __attribute__((noinline)) A512 static void mk_bf16_##R(const void *w, const float *x, size_t ldx,   \
                                                           int kn, float *c, bool first,              \
                                                           const struct pf_stream *pf, float *wide)  \
    {                                                                                                \
        (void)wide;                                                                                  \
        const __m512i odd = _mm512_set1_epi32((int)0xffff0000u);                                     \
        __m512 acc[R][4];                                                                            \
        UNROLL for (int r = 0; r < R; r++) UNROLL for (int q = 0; q < 4; q++) acc[r][q] =            \
            first ? _mm512_setzero_ps() : _mm512_loadu_ps(c + r * P + q * 16);                       \
        struct pf_stream ps = pf ? *pf : (struct pf_stream){NULL, 0, 1, 0};                         \
        int k = 0;                                                                                   \
        for (; k + 1 < kn; k += 2) {                                                                 \
            PF_STEP(ps)                                                                              \
            PF_STEP(ps)                                                                              \
            MKB_STEP(R, 1)                                                                           \
        }                                                                                            \
        if (k < kn) {                                                                                \
            PF_STEP(ps)                                                                              \
            MKB_STEP(R, 0)                                                                           \
        }                                                                                            \
        UNROLL for (int r = 0; r < R; r++) UNROLL for (int q = 0; q < 4; q++)                        \
            _mm512_storeu_ps(c + r * P + q * 16, acc[r][q]);                                         \
    }

DEFINE_MKB(1)
DEFINE_MKB(2)
DEFINE_MKB(3)
DEFINE_MKB(4)
DEFINE_MKB(5)
DEFINE_MKB(6)
static void (*const mks_bf16[7])(const void *, const float *, size_t, int, float *, bool,
                                 const struct pf_stream *, float *) = {NULL,        mk_bf16_1,   mk_bf16_2, mk_bf16_3,
                                             mk_bf16_4,   mk_bf16_5,   mk_bf16_6};
/* F16 weights that also leave the block widened to F32 at `wide` (64-byte
 * aligned, [kn][64]) for the groups after this one. */
DEFINE_MKS(f16w, pk_f16, 1)

typedef void (*mk_fn)(const void *, const float *, size_t, int, float *, bool, const struct pf_stream *, float *);

/* y[t][o .. o + n) from the sums c (64 a row) by the store rule (ops_store1), 16 outputs a vector. */
A512 void ops_store_rows_avx512(float *y, const float *c, const float *bias, int T, int O, int o, int n,
                                bool accumulate)
{
    for (int t = 0; t < T; t++) {
        float *yr = y + (size_t)t * O + o;
        for (int j = 0; j < n; j += 16) {
            __mmask16 m = n - j >= 16 ? 0xffff : (__mmask16)((1u << (n - j)) - 1);
            __m512 v = _mm512_maskz_loadu_ps(m, c + (size_t)t * P + j);
            __m512 base = accumulate ? _mm512_maskz_loadu_ps(m, yr + j) : _mm512_setzero_ps();
            if (bias)
                base = _mm512_add_ps(base, _mm512_maskz_loadu_ps(m, bias + o + j));
            _mm512_mask_storeu_ps(yr + j, m, _mm512_add_ps(base, v));
        }
    }
}

/* Rows of a pass split into ceil(tn / 6) groups of near-equal size, the
 * larger first (8 = 4 + 4, 32 = 6 + 6 + 5 + 5 + 5 + 5): a group of 1 or 2
 * rows does 4 or 8 FMAs per 4 weight loads and would run at a fraction of
 * the FMA rate. Returns the group count; size[g] the rows of group g. */
static int row_groups(int tn, int size[MC / 4 + 1])
{
    int g = (tn + 5) / 6;
    for (int i = 0; i < g; i++)
        size[i] = tn / g + (i < tn % g);
    return g;
}

/* KC for a widened F16 block: 16 KiB of F32, beside the F16 source, the
 * rows' x and the next block's prefetch in the 48 KiB L1 (64 and 128 beat
 * 32 and 256 on one core; 64 is better at 16 rows). */
#define KC_WIDE 64


/* Per panel in [o0, o1): rows in passes of MC; per pass, inputs in blocks
 * of KC, and per block the pass's rows in groups of up to 6 (row_groups);
 * then the store rule on the panel's outputs inside [o0, o1). An F16 block
 * that more than one group reads is widened to F32 once into an L1
 * scratch by the first group (mks_f16w: it stores the vectors it converts)
 * and the other groups run the F32 kernel over it: the in-register
 * conversion (2 uops on the FMA ports per 16 weights) is paid once a
 * block, not once a group. The sums are the same either way, bit for bit. */
void ops_matmul_packed_avx512(float *y, const float *x, const void *wp, enum ckpt_dtype wt, const float *bias,
                              int T, int I, int O, int o0, int o1, bool accumulate)
{
    mk_fn const *mk = wt == CKPT_F16 ? mks_f16 : wt == CKPT_BF16 ? mks_bf16 : mks_f32;
    size_t es = ckpt_dtype_size(wt);
    int kc = kc_of(es), ip = panel_inputs(wt, I);   /* kc: a multiple of 32 (BF16's groups) */
    float c[MC * P] __attribute__((aligned(64)));
    float wide[KC_WIDE * P] __attribute__((aligned(64)));
    int size[MC / 4 + 1];
    for (int p = o0 / P; p * P < o1; p++) {
        int lo = p * P > o0 ? p * P : o0, hi = p * P + P < o1 ? p * P + P : o1;
        const char *panel = (const char *)wp + (size_t)p * P * ip * es;
        for (int t0 = 0; t0 < T; t0 += MC) {
            int tn = T - t0 < MC ? T - t0 : MC;
            int ng = row_groups(tn, size);
            bool widen = wt == CKPT_F16 && ng > 1;
            int bk = widen ? KC_WIDE : kc;
            for (int k0 = 0; k0 < I; k0 += bk) {
                int kn = I - k0 < bk ? I - k0 : bk;
                const char *blk = panel + (size_t)k0 * P * es;
                /* The groups also pull the next block (of this panel, or
                 * the next panel's first) into L2 while they compute on
                 * this one: the hardware streamer stops at each 4 KiB
                 * page, so without it the weight stream and the FMAs take
                 * turns. The block's lines are shared out in order and
                 * evenly over all ng * kn steps (PF_STEP), so the stream
                 * runs at the rate the groups compute: a whole line a step
                 * until the block was asked for (the last groups asking
                 * for none) ran one core's prefetches past what it can
                 * keep in flight (~14 GB/s) at 32 rows in F32, and the
                 * F32 LM head 7% slower on one thread (doc/cpu-kernels.md,
                 * session fmapeak). */
                const char *next = tn > 1 ? next_block(panel, p, k0, kn, bk, I, ip, es, o1, t0, T) : NULL;
                int lines = kn * P * (int)es / 64, steps = ng * kn;
                for (int g = 0, r0 = 0; g < ng; r0 += size[g++]) {
                    mk_fn const *gk = !widen ? mk : g == 0 ? mks_f16w : mks_f32;
                    /* group g starts at step g * kn of the block's */
                    struct pf_stream ps = pf_from(next, lines, steps, (long long)g * kn);
                    gk[size[g]](widen && g > 0 ? (const void *)wide : blk, x + (size_t)(t0 + r0) * I + k0,
                                (size_t)I, kn, c + r0 * P, k0 == 0, ps.at ? &ps : NULL, wide);
                }
            }
            ops_store_rows_avx512(y + (size_t)t0 * O, c + (lo - p * P), bias, tn, O, lo, hi - lo, accumulate);
        }
    }
}
/* ------------------------------------------------------------------ AVX2 + FMA
 * The same layout and the same sums with 8-lane vectors and 16 registers
 * (the AVX2 level: Zen 2/3, Haswell to Skylake client). One row streams a
 * whole panel with 8 accumulators (64 outputs); two or more rows take the
 * panel in slices of 16 outputs (2 vectors) by groups of up to 6 rows, 12
 * accumulators, 2 weight vectors and a broadcast: 12 FMAs per 2 weight
 * loads and 6 broadcasts. Blocks are 16 KiB of a panel (KC2: the slices
 * and the groups re-read it from a 32 KiB L1). Each output is still one
 * lane summed in input order, so these are bit for bit the AVX-512
 * kernel's sums, whatever the rows. */
#define A2 __attribute__((target("avx2,fma,f16c")))

INL A2 __m256 p2_f32(const void *w, size_t k)
{
    return _mm256_loadu_ps((const float *)w + k);
}
INL A2 __m256 p2_f16(const void *w, size_t k)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + k)));
}

/* KC for the AVX2 kernels: inputs per 16 KiB of a panel (a multiple of 32). */
static int kc2_of(size_t es)
{
    return (int)(16384 / (P * es));
}

/* c[r][0..16) (+)= sum over k < kn of x[r][k] * w[k][0..16): R rows, one
 * 16-output slice of a panel block (w at the slice, stride P), sums c
 * (stride P), started from zero when `first`. */
#define DEFINE_MK2(SUF, LD, R)                                                                           \
    __attribute__((noinline)) A2 static void mk2_##SUF##_##R(const void *w, const float *x, size_t ldx,  \
                                                             int kn, float *c, bool first,              \
                                                             const struct pf_stream *pf)                \
    {                                                                                                  \
        __m256 acc[R][2];                                                                              \
        UNROLL for (int r = 0; r < R; r++) UNROLL for (int q = 0; q < 2; q++) acc[r][q] =              \
            first ? _mm256_setzero_ps() : _mm256_loadu_ps(c + r * P + q * 8);                          \
        struct pf_stream ps = pf ? *pf : (struct pf_stream){NULL, 0, 1, 0};                           \
        for (int k = 0; k < kn; k++) {                                                                 \
            PF_STEP(ps)                                                                                \
            __m256 w0 = LD(w, (size_t)k * P), w1 = LD(w, (size_t)k * P + 8);                           \
            UNROLL for (int r = 0; r < R; r++)                                                         \
            {                                                                                          \
                __m256 xb = _mm256_broadcast_ss(x + (size_t)r * ldx + k);                              \
                acc[r][0] = _mm256_fmadd_ps(w0, xb, acc[r][0]);                                        \
                acc[r][1] = _mm256_fmadd_ps(w1, xb, acc[r][1]);                                        \
            }                                                                                          \
        }                                                                                              \
        UNROLL for (int r = 0; r < R; r++) UNROLL for (int q = 0; q < 2; q++)                          \
            _mm256_storeu_ps(c + r * P + q * 8, acc[r][q]);                                            \
    }

/* One row over all 64 outputs of a panel block: 8 independent chains. */
#define DEFINE_MK2W(SUF, LD)                                                                             \
    __attribute__((noinline)) A2 static void mk2w_##SUF(const void *w, const float *x, size_t ldx, int kn, \
                                                        float *c, bool first, const struct pf_stream *pf) \
    {                                                                                                  \
        (void)ldx, (void)pf;                                                                           \
        __m256 acc[8];                                                                                 \
        UNROLL for (int q = 0; q < 8; q++) acc[q] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(c + q * 8); \
        for (int k = 0; k < kn; k++) {                                                                 \
            __m256 xb = _mm256_broadcast_ss(x + k);                                                    \
            UNROLL for (int q = 0; q < 8; q++) acc[q] = _mm256_fmadd_ps(LD(w, (size_t)k * P + q * 8), xb, acc[q]); \
        }                                                                                              \
        UNROLL for (int q = 0; q < 8; q++) _mm256_storeu_ps(c + q * 8, acc[q]);                        \
    }

/* BF16 over AMX's tile layout: a 32-input group holds, per 16 outputs, 16
 * rows of 32 bf16 [W[j][2r], W[j][2r + 1]]; a 256-bit half of a row is the
 * pair of inputs for 8 outputs. Input k is each lane's low half shifted up,
 * k + 1 the high half masked; each accumulator adds k, then k + 1 (kn may
 * be odd: the last pair's high half is not read). w is at the slice (the
 * group's 16 outputs q, 512 values on per q). */
#define BF_PAIR(wk, h, LO) \
    _mm256_castsi256_ps(LO ? _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)((wk) + (h) * 16)), 16) \
                           : _mm256_and_si256(_mm256_loadu_si256((const __m256i *)((wk) + (h) * 16)), odd))
#define BF_AT(k) ((const uint16_t *)w + (size_t)((k) / 32) * 32 * P + (size_t)((k) % 32 / 2) * 32)

/* One BF16 input of the pair at wk for R rows: the two halves' vectors
 * widened (LO: the low halves shifted up, else the high halves masked),
 * then 2R FMAs with x[r][k]. */
#define MK2B_STEP(R, LO, k)                                                                              \
    {                                                                                                  \
        __m256 w0 = _mm256_castsi256_ps(LO ? _mm256_slli_epi32(h0, 16) : _mm256_and_si256(h0, odd));   \
        __m256 w1 = _mm256_castsi256_ps(LO ? _mm256_slli_epi32(h1, 16) : _mm256_and_si256(h1, odd));   \
        UNROLL for (int r = 0; r < R; r++)                                                             \
        {                                                                                              \
            __m256 xb = _mm256_broadcast_ss(x + (size_t)r * ldx + (k));                                \
            acc[r][0] = _mm256_fmadd_ps(w0, xb, acc[r][0]);                                            \
            acc[r][1] = _mm256_fmadd_ps(w1, xb, acc[r][1]);                                            \
        }                                                                                              \
    }

/* mk2_bf16_R: as DEFINE_MK2's kernels over a BF16 slice (w at the slice):
 * each pair's two 256-bit halves loaded once for both of its inputs, k
 * then k + 1 (kn may be odd: the last pair's high halves are not used). */
#define DEFINE_MK2B(R)                                                                                   \
    __attribute__((noinline)) A2 static void mk2_bf16_##R(const void *w, const float *x, size_t ldx,     \
                                                          int kn, float *c, bool first,                 \
                                                          const struct pf_stream *pf)                   \
    {                                                                                                  \
        const __m256i odd = _mm256_set1_epi32((int)0xffff0000u);                                       \
        __m256 acc[R][2];                                                                              \
        UNROLL for (int r = 0; r < R; r++) UNROLL for (int q = 0; q < 2; q++) acc[r][q] =              \
            first ? _mm256_setzero_ps() : _mm256_loadu_ps(c + r * P + q * 8);                          \
        struct pf_stream ps = pf ? *pf : (struct pf_stream){NULL, 0, 1, 0};                           \
        int k = 0;                                                                                     \
        for (; k + 1 < kn; k += 2) {                                                                   \
            PF_STEP(ps)                                                                                \
            PF_STEP(ps)                                                                                \
            const uint16_t *wk = BF_AT(k);                                                             \
            __m256i h0 = _mm256_loadu_si256((const __m256i *)wk);                                      \
            __m256i h1 = _mm256_loadu_si256((const __m256i *)(wk + 16));                               \
            MK2B_STEP(R, 1, k)                                                                         \
            MK2B_STEP(R, 0, k + 1)                                                                     \
        }                                                                                              \
        if (k < kn) {                                                                                  \
            PF_STEP(ps)                                                                                \
            const uint16_t *wk = BF_AT(k);                                                             \
            __m256i h0 = _mm256_loadu_si256((const __m256i *)wk);                                      \
            __m256i h1 = _mm256_loadu_si256((const __m256i *)(wk + 16));                               \
            MK2B_STEP(R, 1, k)                                                                         \
        }                                                                                              \
        UNROLL for (int r = 0; r < R; r++) UNROLL for (int q = 0; q < 2; q++)                          \
            _mm256_storeu_ps(c + r * P + q * 8, acc[r][q]);                                            \
    }

/* One BF16 row over the 64 outputs: per group of 32 inputs, each slice of
 * 16 outputs in turn, its 1 KiB front to back, so the group's 4 KiB is read
 * in order (all four slices a pair at a time were four streams 1 KiB apart,
 * 1.3-1.5x slower on one thread, and two at a time no better than four),
 * 2 accumulators, input k then k + 1 per pair. Each output lane still sums
 * its inputs in order. */
__attribute__((noinline)) A2 static void mk2w_bf16(const void *w, const float *x, size_t ldx, int kn, float *c,
                                                   bool first, const struct pf_stream *pf)
{
    (void)ldx, (void)pf;
    const __m256i odd = _mm256_set1_epi32((int)0xffff0000u);
    __m256 acc[8];
    UNROLL for (int q = 0; q < 8; q++) acc[q] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(c + q * 8);
    for (int k0 = 0; k0 < kn; k0 += 32) {
        int k1 = k0 + 32 < kn ? k0 + 32 : kn;
        UNROLL for (int q = 0; q < 4; q++)
        {
            __m256 a0 = acc[2 * q], a1 = acc[2 * q + 1];
            for (int k = k0; k < k1; k += 2) {
                const uint16_t *wk = BF_AT(k) + q * 512;
                __m256 xb = _mm256_broadcast_ss(x + k);
                a0 = _mm256_fmadd_ps(BF_PAIR(wk, 0, 1), xb, a0);
                a1 = _mm256_fmadd_ps(BF_PAIR(wk, 1, 1), xb, a1);
                if (k + 1 < k1) {
                    xb = _mm256_broadcast_ss(x + k + 1);
                    a0 = _mm256_fmadd_ps(BF_PAIR(wk, 0, 0), xb, a0);
                    a1 = _mm256_fmadd_ps(BF_PAIR(wk, 1, 0), xb, a1);
                }
            }
            acc[2 * q] = a0, acc[2 * q + 1] = a1;
        }
    }
    UNROLL for (int q = 0; q < 8; q++) _mm256_storeu_ps(c + q * 8, acc[q]);
}

/* 2-6 rows: row_groups never makes a group of 1 from 2+ rows, and one row
 * takes the whole-panel kernel. */
#define DEFINE_MK2S(SUF, LD)                                                                             \
    DEFINE_MK2(SUF, LD, 2)                                                                             \
    DEFINE_MK2(SUF, LD, 3)                                                                             \
    DEFINE_MK2(SUF, LD, 4)                                                                             \
    DEFINE_MK2(SUF, LD, 5)                                                                             \
    DEFINE_MK2(SUF, LD, 6)                                                                             \
    DEFINE_MK2W(SUF, LD)
DEFINE_MK2S(f32, p2_f32)
DEFINE_MK2S(f16, p2_f16)
DEFINE_MK2B(2)
DEFINE_MK2B(3)
DEFINE_MK2B(4)
DEFINE_MK2B(5)
DEFINE_MK2B(6)

typedef void (*mk2_fn)(const void *, const float *, size_t, int, float *, bool, const struct pf_stream *);
/* [type][rows of a group]: [0] is the one-row whole-panel kernel; no group has 1 row */
static const mk2_fn mk2s[3][7] = {
    {mk2w_f32, NULL, mk2_f32_2, mk2_f32_3, mk2_f32_4, mk2_f32_5, mk2_f32_6},
    {mk2w_f16, NULL, mk2_f16_2, mk2_f16_3, mk2_f16_4, mk2_f16_5, mk2_f16_6},
    {mk2w_bf16, NULL, mk2_bf16_2, mk2_bf16_3, mk2_bf16_4, mk2_bf16_5, mk2_bf16_6},
};

/* ops_store_rows_avx512 with 8 lanes (the same sums per output: base =
 * y or 0, plus the bias, plus c), the last n % 8 outputs one at a time.
 * The scalar ops_store1 loop it replaces took 12% of F32 prefill's
 * product time (perf, 512 tokens). */
A2 static void store_rows_avx2(float *y, const float *c, const float *bias, int T, int O, int o, int n,
                               bool accumulate)
{
    for (int t = 0; t < T; t++) {
        float *yr = y + (size_t)t * O + o;
        const float *cr = c + (size_t)t * P;
        int j = 0;
        for (; j + 8 <= n; j += 8) {
            __m256 base = accumulate ? _mm256_loadu_ps(yr + j) : _mm256_setzero_ps();
            if (bias)
                base = _mm256_add_ps(base, _mm256_loadu_ps(bias + o + j));
            _mm256_storeu_ps(yr + j, _mm256_add_ps(base, _mm256_loadu_ps(cr + j)));
        }
        for (; j < n; j++) {
            float base = accumulate ? yr[j] : 0.0f;
            if (bias)
                base += bias[o + j];
            yr[j] = base + cr[j];
        }
    }
}

/* A BF16 block of kn inputs (kn <= KC2_WIDE, a multiple of 2 unless it is
 * the panel's last) widened to F32 in the F32 panel layout (input k at
 * k * P): per 32-input group and slice of 16 outputs, each pair's low
 * halves shifted up are input k, its high halves masked input k + 1.
 * Exact, so the F32 kernels over it give mk2_bf16's sums bit for bit. */
A2 static void widen_bf16_block(float *dst, const void *w, int kn)
{
    const __m256i odd = _mm256_set1_epi32((int)0xffff0000u);
    for (int k = 0; k < kn; k += 2) {
        const uint16_t *wk = BF_AT(k);
        UNROLL for (int q = 0; q < 4; q++)
        {
            __m256i h0 = _mm256_loadu_si256((const __m256i *)(wk + q * 512));
            __m256i h1 = _mm256_loadu_si256((const __m256i *)(wk + q * 512 + 16));
            float *d = dst + (size_t)k * P + q * 16;
            _mm256_store_ps(d, _mm256_castsi256_ps(_mm256_slli_epi32(h0, 16)));
            _mm256_store_ps(d + 8, _mm256_castsi256_ps(_mm256_slli_epi32(h1, 16)));
            if (k + 1 < kn) {
                _mm256_store_ps(d + P, _mm256_castsi256_ps(_mm256_and_si256(h0, odd)));
                _mm256_store_ps(d + P + 8, _mm256_castsi256_ps(_mm256_and_si256(h1, odd)));
            }
        }
    }
}

/* Inputs per BF16 block widened once (16 KiB of F32 in the 32 KiB L1),
 * and the fewest groups of rows that take that path: at 3 and more the
 * F32 kernels' rate pays for the widening (the shifts and masks in
 * mk2_bf16 share the FMA ports: 58 GFLOP/s a core at 64 rows against
 * F16's 84), at 2 it would not. */
#define KC2_WIDE 64
#define WIDE_MIN_GROUPS 3

/* Per panel in [o0, o1): rows in passes of MC. One row: the whole panel
 * front to back in one call (nothing to keep in L1). More: inputs in
 * blocks of KC2, and per block each group of up to 6 rows (row_groups)
 * over each of the 4 slices of 16 outputs; then the store rule. BF16 read
 * by WIDE_MIN_GROUPS groups or more: blocks of KC2_WIDE inputs, each
 * widened to F32 once (widen_bf16_block) for the F32 kernels. */
void ops_matmul_packed_avx2(float *y, const float *x, const void *wp, enum ckpt_dtype wt, const float *bias, int T,
                            int I, int O, int o0, int o1, bool accumulate)
{
    const mk2_fn *mk = mk2s[wt == CKPT_F16 ? 1 : wt == CKPT_BF16 ? 2 : 0];
    size_t es = ckpt_dtype_size(wt);
    size_t slice = wt == CKPT_BF16 ? 512 : 16;   /* values from one slice of 16 outputs to the next */
    int ip = panel_inputs(wt, I);
    float c[MC * P] __attribute__((aligned(32)));
    float wide[KC2_WIDE * P] __attribute__((aligned(32)));
    int size[MC / 4 + 1];
    for (int p = o0 / P; p * P < o1; p++) {
        int lo = p * P > o0 ? p * P : o0, hi = p * P + P < o1 ? p * P + P : o1;
        const char *panel = (const char *)wp + (size_t)p * P * ip * es;
        for (int t0 = 0; t0 < T; t0 += MC) {
            int tn = T - t0 < MC ? T - t0 : MC;
            int ng = row_groups(tn, size);
            bool widen = wt == CKPT_BF16 && ng >= WIDE_MIN_GROUPS;
            const mk2_fn *mg = widen ? mk2s[0] : mk;
            int bk = tn == 1 ? I : widen ? KC2_WIDE : kc2_of(es);
            for (int k0 = 0; k0 < I; k0 += bk) {
                int kn = I - k0 < bk ? I - k0 : bk;
                const char *blk = panel + (size_t)k0 * P * es;
                const float *xb = x + (size_t)t0 * I + k0;
                if (tn == 1) {
                    mk[0](blk, xb, (size_t)I, kn, c, k0 == 0, NULL);
                    continue;
                }
                /* The next block (of this panel, or the next panel's
                 * first) is asked into L2 while this one is computed on,
                 * its lines shared out evenly over the block's ng x 4
                 * calls, as the AVX-512 kernel does (PF_STEP): the first
                 * slice reads only every fourth line of a block, so the
                 * hardware alone fetches it in four passes. */
                const char *next = next_block(panel, p, k0, kn, bk, I, ip, es, o1, t0, T);
                int lines = kn * P * (int)es / 64, steps = ng * 4 * kn;
                if (widen)
                    widen_bf16_block(wide, blk, kn);
                for (int g = 0, r0 = 0; g < ng; r0 += size[g++])
                    for (int q = 0; q < 4; q++) {
                        struct pf_stream ps = pf_from(next, lines, steps, (long long)(g * 4 + q) * kn);
                        const void *wq = widen ? (const void *)(wide + q * 16) : blk + (size_t)q * slice * es;
                        mg[size[g]](wq, xb + (size_t)r0 * I, (size_t)I, kn, c + r0 * P + q * 16, k0 == 0,
                                    ps.at ? &ps : NULL);
                    }
            }
            store_rows_avx2(y + (size_t)t0 * O, c + (lo - p * P), bias, tn, O, lo, hi - lo, accumulate);
        }
    }
}
#endif /* OPS_HAVE_X86 */
