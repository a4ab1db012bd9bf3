/* ops_avx512.c -- the AVX-512 matrix products over F32, F16 and BF16 weights: register tiles of up to 6 rows of x by 4 rows of W, half precision widened in registers; with avx512_bf16, vdpbf16ps for BF16 weights. Also attention over a KV block, and GELU, softmax and LayerNorm.
 *
 * W is output-major ([O][I], one output's weights a row), so a tile streams
 * 4 contiguous rows of W once and reuses each loaded (and widened) vector
 * for every row of x in the tile: batch 1 (decode) is a matrix-vector
 * product that reads each weight once per step; 2-64 rows (batched decode,
 * prefill chunks) reuse it up to 6 times from registers and the rest from
 * L1/L2 (ops_t_chunk keeps the chunk of x in L2). The I % 16 tail is a
 * masked load, not scalar code. Half precision is never copied to F32: F16
 * by vcvtph2ps, BF16 by a 16-bit shift (or, with avx512_bf16, consumed as
 * it is by vdpbf16ps, with x split into a bf16 high part and a bf16 low
 * part so the products keep ~16 bits of x). */
#include "ops_int.h"
#include "exp_poly.h"

#ifdef OPS_HAVE_X86
#include <immintrin.h>
#include <math.h>

#define A512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))
#define A512BF __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,f16c")))
#define INL static inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 8")

/* 16 weights at element i of row w, widened to F32; the masked forms read
 * only the lanes in m (the row's tail) and zero the others. */
INL A512 __m512 ld_f32(const void *w, size_t i)
{
    return _mm512_loadu_ps((const float *)w + i);
}
INL A512 __m512 ldm_f32(const void *w, size_t i, __mmask16 m)
{
    return _mm512_maskz_loadu_ps(m, (const float *)w + i);
}
INL A512 __m512 ld_f16(const void *w, size_t i)
{
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i)));
}
INL A512 __m512 ldm_f16(const void *w, size_t i, __mmask16 m)
{
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)w + i));
}
/* bf16 is the top half of an f32: widen to 32 bits and shift into place. */
INL A512 __m512 ld_bf16(const void *w, size_t i)
{
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
INL A512 __m512 ldm_bf16(const void *w, size_t i, __mmask16 m)
{
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)w + i);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* s[r * Q + q] = x row r . W row q, for R rows of x (stride I floats) and Q
 * rows of W (stride I elements of ES bytes). R x Q accumulators of 16 lanes;
 * the loops have constant bounds, so they unroll and the accumulators live
 * in registers (24 + 4 + 1 of the 32 for 6 x 4). */
#define DEFINE_TILE(SUF, LD, LDM, ES, R, Q)                                                            \
    __attribute__((noinline)) A512 static void tile_##SUF##_##R##x##Q(const char *w, const float *x,  \
                                                                      size_t I, float *s)            \
    {                                                                                                \
        __m512 acc[R][Q];                                                                            \
        UNROLL for (int r = 0; r < R; r++) UNROLL for (int q = 0; q < Q; q++) acc[r][q] =            \
            _mm512_setzero_ps();                                                                     \
        size_t i = 0;                                                                                \
        for (; i + 16 <= I; i += 16) {                                                               \
            __m512 wv[Q];                                                                            \
            UNROLL for (int q = 0; q < Q; q++) wv[q] = LD(w + (size_t)q * I * ES, i);                \
            UNROLL for (int r = 0; r < R; r++)                                                       \
            {                                                                                        \
                __m512 xv = _mm512_loadu_ps(x + (size_t)r * I + i);                                  \
                UNROLL for (int q = 0; q < Q; q++) acc[r][q] = _mm512_fmadd_ps(wv[q], xv, acc[r][q]); \
            }                                                                                        \
        }                                                                                            \
        if (i < I) {                                                                                 \
            __mmask16 m = (__mmask16)((1u << (I - i)) - 1);                                          \
            __m512 wv[Q];                                                                            \
            UNROLL for (int q = 0; q < Q; q++) wv[q] = LDM(w + (size_t)q * I * ES, i, m);            \
            UNROLL for (int r = 0; r < R; r++)                                                       \
            {                                                                                        \
                __m512 xv = _mm512_maskz_loadu_ps(m, x + (size_t)r * I + i);                         \
                UNROLL for (int q = 0; q < Q; q++) acc[r][q] = _mm512_fmadd_ps(wv[q], xv, acc[r][q]); \
            }                                                                                        \
        }                                                                                            \
        UNROLL for (int r = 0; r < R; r++) UNROLL for (int q = 0; q < Q; q++) s[r * Q + q] =         \
            _mm512_reduce_add_ps(acc[r][q]);                                                         \
    }

#define DEFINE_TILES(SUF, LD, LDM, ES)                                                                 \
    DEFINE_TILE(SUF, LD, LDM, ES, 1, 1)                                                              \
    DEFINE_TILE(SUF, LD, LDM, ES, 1, 4)                                                              \
    DEFINE_TILE(SUF, LD, LDM, ES, 2, 4)                                                              \
    DEFINE_TILE(SUF, LD, LDM, ES, 3, 4)                                                              \
    DEFINE_TILE(SUF, LD, LDM, ES, 4, 4)                                                              \
    DEFINE_TILE(SUF, LD, LDM, ES, 5, 4)                                                              \
    DEFINE_TILE(SUF, LD, LDM, ES, 6, 4)

DEFINE_TILES(f32, ld_f32, ldm_f32, 4)
DEFINE_TILES(f16, ld_f16, ldm_f16, 2)
DEFINE_TILES(bf16, ld_bf16, ldm_bf16, 2)

typedef void (*tile_fn)(const char *w, const float *x, size_t I, float *s);

/* A tile set: t[r] for r rows of x by 4 rows of W (r = 1..6), one for the
 * last 1-3 outputs of a block. */
struct tiles {
    tile_fn t[7];
    tile_fn one;
    int max_r;
};

#define TILESET(SUF)                                                                                   \
    {                                                                                                \
        {NULL, tile_##SUF##_1x4, tile_##SUF##_2x4, tile_##SUF##_3x4, tile_##SUF##_4x4,              \
         tile_##SUF##_5x4, tile_##SUF##_6x4},                                                        \
            tile_##SUF##_1x1, 6                                                                      \
    }
static const struct tiles tiles_f32 = TILESET(f32), tiles_f16 = TILESET(f16), tiles_bf16 = TILESET(bf16);

/* The driver: chunks of x rows that stay in L2; per chunk, 4 outputs at a
 * time, the chunk's rows in tiles of up to max_r; then bias, accumulate and
 * store. */
static void matmul_tiles(const struct tiles *ts, size_t es, float *y, const float *x, const void *w,
                         const float *bias, int T, int I, int O, int o0, int o1, bool accumulate)
{
    float s[6 * 4];
    int chunk = ops_t_chunk(I, ts->max_r);
    for (int tc = 0; tc < T; tc += chunk) {
        int te = tc + chunk < T ? tc + chunk : T;
        int o = o0;
        for (; o + 4 <= o1; o += 4) {
            const char *wo = (const char *)w + (size_t)o * I * es;
            for (int t = tc; t < te;) {
                int r = te - t >= ts->max_r ? ts->max_r : te - t;
                ts->t[r](wo, x + (size_t)t * I, (size_t)I, s);
                for (int k = 0; k < r; k++)
                    for (int q = 0; q < 4; q++)
                        ops_store1(y + (size_t)(t + k) * O, o + q, s[k * 4 + q], bias, accumulate);
                t += r;
            }
        }
        for (; o < o1; o++) {
            const char *wo = (const char *)w + (size_t)o * I * es;
            for (int t = tc; t < te; t++) {
                ts->one(wo, x + (size_t)t * I, (size_t)I, s);
                ops_store1(y + (size_t)t * O, o, s[0], bias, accumulate);
            }
        }
    }
}

void ops_matmul_avx512(float *y, const float *x, const void *w, enum ckpt_dtype wt, const float *bias, int T, int I,
                       int O, int o0, int o1, bool accumulate)
{
    const struct tiles *ts = wt == CKPT_F16 ? &tiles_f16 : wt == CKPT_BF16 ? &tiles_bf16 : &tiles_f32;
    matmul_tiles(ts, ckpt_dtype_size(wt), y, x, w, bias, T, I, O, o0, o1, accumulate);
}

/* ------------------------------------------------------------------ avx512_bf16 */

/* x[i..i+32) split in two bf16 vectors, hi = x with its low 16 bits cut
 * (exact in bf16) and lo = x - hi rounded to bf16, so hi + lo keeps ~16
 * bits of x's 24 (vdpbf16ps multiplies bf16 by bf16 exactly). */
INL A512BF void split_bf16(__m512 x0, __m512 x1, __m512bh *hi, __m512bh *lo)
{
    const __m512i cut = _mm512_set1_epi32((int)0xffff0000u);
    __m512 h0 = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x0), cut));
    __m512 h1 = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x1), cut));
    *hi = _mm512_cvtne2ps_pbh(h1, h0);
    *lo = _mm512_cvtne2ps_pbh(_mm512_sub_ps(x1, h1), _mm512_sub_ps(x0, h0));
}

/* The BF16 tiles: 32 weights a step, loaded as they are; each pair of
 * adjacent weights meets the same pair of x in one 32-bit lane. */
#define DEFINE_BF_TILE(R, Q)                                                                           \
    __attribute__((noinline)) A512BF static void tilebf_##R##x##Q(const char *wc, const float *x,     \
                                                                  size_t I, float *s)                \
    {                                                                                                \
        const uint16_t *w = (const uint16_t *)wc;                                                    \
        __m512 acc[R][Q];                                                                            \
        UNROLL for (int r = 0; r < R; r++) UNROLL for (int q = 0; q < Q; q++) acc[r][q] =            \
            _mm512_setzero_ps();                                                                     \
        for (size_t i = 0; i < I; i += 32) {                                                         \
            size_t n = I - i < 32 ? I - i : 32;                                                      \
            __mmask32 m32 = n == 32 ? 0xffffffffu : (__mmask32)((1u << n) - 1);                       \
            __mmask16 ma = (__mmask16)(m32 & 0xffff), mb = (__mmask16)(m32 >> 16);                   \
            __m512bh wv[Q];                                                                          \
            UNROLL for (int q = 0; q < Q; q++) wv[q] =                                               \
                (__m512bh)_mm512_maskz_loadu_epi16(m32, w + (size_t)q * I + i);                      \
            UNROLL for (int r = 0; r < R; r++)                                                       \
            {                                                                                        \
                __m512bh hi, lo;                                                                     \
                split_bf16(_mm512_maskz_loadu_ps(ma, x + (size_t)r * I + i),                         \
                           _mm512_maskz_loadu_ps(mb, x + (size_t)r * I + i + 16), &hi, &lo);         \
                UNROLL for (int q = 0; q < Q; q++)                                                   \
                {                                                                                    \
                    acc[r][q] = _mm512_dpbf16_ps(acc[r][q], wv[q], hi);                              \
                    acc[r][q] = _mm512_dpbf16_ps(acc[r][q], wv[q], lo);                              \
                }                                                                                    \
            }                                                                                        \
        }                                                                                            \
        UNROLL for (int r = 0; r < R; r++) UNROLL for (int q = 0; q < Q; q++) s[r * Q + q] =         \
            _mm512_reduce_add_ps(acc[r][q]);                                                         \
    }

DEFINE_BF_TILE(1, 1)
DEFINE_BF_TILE(1, 4)
DEFINE_BF_TILE(2, 4)
DEFINE_BF_TILE(3, 4)
DEFINE_BF_TILE(4, 4)

static const struct tiles tiles_bfdp = {
    {NULL, tilebf_1x4, tilebf_2x4, tilebf_3x4, tilebf_4x4, NULL, NULL}, tilebf_1x1, 4};

void ops_matmul_avx512_bf16(float *y, const float *x, const void *w, enum ckpt_dtype wt, const float *bias, int T,
                            int I, int O, int o0, int o1, bool accumulate)
{
    /* Every row count takes this path, so a row's result does not depend on
     * how many rows share its step (batched and alone, whole and chunked
     * prefill agree; widening for T > 1 only broke that by 1e-5). The cost:
     * the split of x is redone for every 4 outputs, so at 8 rows and more it
     * is slower than widening (cpu_bench --kernels). */
    if (wt != CKPT_BF16) {
        ops_matmul_avx512(y, x, w, wt, bias, T, I, O, o0, o1, accumulate);
        return;
    }
    matmul_tiles(&tiles_bfdp, 2, y, x, w, bias, T, I, O, o0, o1, accumulate);
}
#endif /* OPS_HAVE_X86 */

/* ------------------------------------------------------------------ attention */
#ifdef OPS_HAVE_X86
/* Accumulator slot of key j in a group of 16: the transpose of j as 4 x 4,
 * so that hsum16's last step leaves key j's sum in lane j. Its own inverse. */
#define SLOT(j) ((((j) & 3) << 2) | ((j) >> 2))

/* The 16 lane sums of a0..a15 (a_t the slot of key SLOT(t)), key j's in
 * lane j, by the pairing _mm512_reduce_add_ps uses for one vector (lanes
 * i + i+8, then i + i+4, i + i+2, i + i+1), four vectors' worth of shuffles
 * for the 16 instead of 16 separate reductions. A lane's sum takes only its
 * own slot's values: a key's sum is the same whatever its group holds. */
INL A512 __m512 pair8(__m512 a, __m512 b)     /* lanes 0-7: a's i + i+8; 8-15: b's */
{
    return _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xee));
}
INL A512 __m512 pair4(__m512 a, __m512 b)     /* quarters: a's two slots' i + i+4, then b's */
{
    return _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x88), _mm512_shuffle_f32x4(a, b, 0xdd));
}
INL A512 __m512 pair2(__m512 a, __m512 b)     /* quarter q: a's slot's i + i+2 (i = 0, 1), then b's */
{
    return _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(b))),
                         _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(b))));
}
INL A512 __m512 hsum16(__m512 a0, __m512 a1, __m512 a2, __m512 a3, __m512 a4, __m512 a5, __m512 a6, __m512 a7,
                       __m512 a8, __m512 a9, __m512 a10, __m512 a11, __m512 a12, __m512 a13, __m512 a14, __m512 a15)
{
    __m512 y0 = pair4(pair8(a0, a1), pair8(a2, a3)), y1 = pair4(pair8(a4, a5), pair8(a6, a7));
    __m512 y2 = pair4(pair8(a8, a9), pair8(a10, a11)), y3 = pair4(pair8(a12, a13), pair8(a14, a15));
    __m512 z0 = pair2(y0, y1), z1 = pair2(y2, y3);
    /* lane 4q+e: slot 4e+q's i + i+1, i.e. key 4q+e */
    return _mm512_add_ps(_mm512_shuffle_ps(z0, z1, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_ps(z0, z1, _MM_SHUFFLE(3, 1, 3, 1)));
}

/* 16 K or V values at element i of kv (F32, or F16 widened by vcvtph2ps),
 * only the lanes in m read, the others zero. */
INL A512 __m512 ld_kv(const void *kv, size_t i, __mmask16 m, int half)
{
    return half ? ldm_f16(kv, i, m) : ldm_f32(kv, i, m);
}

/* s[j] = (q . K_j) * scale for n keys `stride` values apart, d values each:
 * q in up to 8 zmm (d <= 128) loaded once, 16 keys at a time (16
 * independent chains, one per key, in the same order for every key) summed
 * across lanes together by hsum16; a partial group repeats its last key in
 * the slots past n and stores only n lanes. d > 128: masked loads in a loop
 * and one reduction per key. half: K is F16, widened as it is loaded. */
INL A512 void scores_t(float *s, const float *q, const void *k, size_t stride, int n, int d, float scale, int half)
{
    int nv = (d + 15) / 16;
    if (nv > 8) {
        for (int j = 0; j < n; j++) {
            __m512 a = _mm512_setzero_ps();
            for (int i = 0; i < d; i += 16) {
                __mmask16 m = d - i >= 16 ? 0xffff : (__mmask16)((1u << (d - i)) - 1);
                a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + i), ld_kv(k, (size_t)j * stride + i, m, half), a);
            }
            s[j] = _mm512_reduce_add_ps(a) * scale;
        }
        return;
    }
    __m512 qv[8];
    __mmask16 mk[8];
    for (int v = 0; v < nv; v++) {
        int left = d - v * 16;
        mk[v] = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
        qv[v] = _mm512_maskz_loadu_ps(mk[v], q + v * 16);
    }
    __m512 sc = _mm512_set1_ps(scale);
    for (int j0 = 0; j0 < n; j0 += 16) {
        int last = n - j0 >= 16 ? 15 : n - j0 - 1;
        size_t kb = (size_t)j0 * stride;
        /* the key row of slot t, clamped to the group's last key */
#define KROW(t) (kb + (size_t)(SLOT(t) < last ? SLOT(t) : last) * stride)
        size_t r0 = KROW(0), r1 = KROW(1), r2 = KROW(2), r3 = KROW(3), r4 = KROW(4), r5 = KROW(5), r6 = KROW(6),
               r7 = KROW(7), r8 = KROW(8), r9 = KROW(9), r10 = KROW(10), r11 = KROW(11), r12 = KROW(12),
               r13 = KROW(13), r14 = KROW(14), r15 = KROW(15);
#undef KROW
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0,
               a9 = a0, a10 = a0, a11 = a0, a12 = a0, a13 = a0, a14 = a0, a15 = a0;
        for (int v = 0; v < nv; v++) {
            __m512 qq = qv[v];
            __mmask16 m = mk[v];
            size_t o = (size_t)v * 16;
#define F(t) a##t = _mm512_fmadd_ps(qq, ld_kv(k, r##t + o, m, half), a##t)
            F(0); F(1); F(2); F(3); F(4); F(5); F(6); F(7);
            F(8); F(9); F(10); F(11); F(12); F(13); F(14); F(15);
#undef F
        }
        __m512 sum = _mm512_mul_ps(hsum16(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15), sc);
        _mm512_mask_storeu_ps(s + j0, (__mmask16)((1u << (last + 1)) - 1), sum);
    }
}

/* 16 values a pass by vcvtps2ph, rounding to nearest even as
 * ckpt_f32_to_f16 does (subnormal halves and overflow to infinity alike); a
 * pass holding a NaN goes through ckpt_f32_to_f16, whose NaN payloads are
 * its own (vcvtps2ph would set the quiet bit of a signalling one). */
A512 void ops_to_f16_avx512(uint16_t *dst, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? 0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        if (_mm512_mask_cmp_ps_mask(m, v, v, _CMP_UNORD_Q)) {
            for (size_t j = i; j < n && j < i + 16; j++)
                dst[j] = ckpt_f32_to_f16(x[j]);
            continue;
        }
        _mm256_mask_storeu_epi16(dst + i, m, _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
}

A512 void ops_scores_avx512(float *s, const float *q, const float *k, size_t stride, int n, int d, float scale)
{
    scores_t(s, q, k, stride, n, d, scale, 0);
}

A512 void ops_scores_f16_avx512(float *s, const float *q, const uint16_t *k, size_t stride, int n, int d, float scale)
{
    scores_t(s, q, k, stride, n, d, scale, 1);
}

/* out[0..d) += sum_j a[j] V_j: out in up to 8 zmm across the n values
 * (loaded and stored once per call); d > 128: per 16 values, all keys. */
INL A512 void mix1(float *out, const float *a, const void *v, size_t stride, int n, int d, int half)
{
    for (int i0 = 0; i0 < d; i0 += 128) {
        int nv = (d - i0 + 15) / 16 < 8 ? (d - i0 + 15) / 16 : 8;
        __m512 o[8];
        __mmask16 mk[8];
        for (int x = 0; x < 8; x++) {
            int left = d - i0 - x * 16;
            mk[x] = x < nv ? (left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1)) : 0;
            o[x] = _mm512_maskz_loadu_ps(mk[x], out + i0 + (x < nv ? x * 16 : 0));
        }
        for (int j = 0; j < n; j++) {
            __m512 aj = _mm512_set1_ps(a[j]);
            size_t vj = (size_t)j * stride + (size_t)i0;
            for (int x = 0; x < nv; x++)
                o[x] = _mm512_fmadd_ps(aj, ld_kv(v, vj + (size_t)x * 16, mk[x], half), o[x]);
        }
        for (int x = 0; x < nv; x++)
            _mm512_mask_storeu_ps(out + i0 + x * 16, mk[x], o[x]);
    }
}

/* 4 queries at once where d <= 64: 4 x 4 zmm of outputs, each V row loaded
 * (and widened) once for the 4; the same FMAs in the same order per query
 * as mix1. */
INL A512 void mix_t(float *out, size_t ldo, const float *a, size_t lda, int nq, const void *v, size_t stride, int n,
                    int d, int half)
{
    int i = 0;
    if (d <= 64) {
        int nv = (d + 15) / 16;
        __mmask16 mk[4];
        for (int x = 0; x < 4; x++) {
            int left = d - x * 16;
            mk[x] = x < nv ? (left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1)) : 0;
        }
        for (; i + 4 <= nq; i += 4) {
            __m512 o[4][4];
            UNROLL for (int r = 0; r < 4; r++) UNROLL for (int x = 0; x < 4; x++) o[r][x] =
                _mm512_maskz_loadu_ps(mk[x], out + (size_t)(i + r) * ldo + (x < nv ? x * 16 : 0));
            for (int j = 0; j < n; j++) {
                size_t vj = (size_t)j * stride;
                __m512 vv[4];
                UNROLL for (int x = 0; x < 4; x++) vv[x] = ld_kv(v, vj + (size_t)(x < nv ? x * 16 : 0), mk[x], half);
                UNROLL for (int r = 0; r < 4; r++)
                {
                    __m512 aj = _mm512_set1_ps(a[(size_t)(i + r) * lda + j]);
                    UNROLL for (int x = 0; x < 4; x++) o[r][x] = _mm512_fmadd_ps(aj, vv[x], o[r][x]);
                }
            }
            UNROLL for (int r = 0; r < 4; r++) UNROLL for (int x = 0; x < 4; x++) if (x < nv)
                _mm512_mask_storeu_ps(out + (size_t)(i + r) * ldo + x * 16, mk[x], o[r][x]);
        }
    }
    for (; i < nq; i++)
        mix1(out + (size_t)i * ldo, a + (size_t)i * lda, v, stride, n, d, half);
}

A512 void ops_mix_avx512(float *out, size_t ldo, const float *a, size_t lda, int nq, const float *v, size_t stride,
                         int n, int d)
{
    mix_t(out, ldo, a, lda, nq, v, stride, n, d, 0);
}

A512 void ops_mix_f16_avx512(float *out, size_t ldo, const float *a, size_t lda, int nq, const uint16_t *v,
                             size_t stride, int n, int d)
{
    mix_t(out, ldo, a, lda, nq, v, stride, n, d, 1);
}
/* ------------------------------------------------------------------ the row-wise work
 *
 * GELU, softmax and LayerNorm grow with the rows like the products do. Each
 * is one 16-lane loop whose last pass is masked, so every element goes
 * through the same vector arithmetic wherever it sits in the row (no
 * scalar tail that rounds differently). */

/* exp(x) for 16 floats, the exp8 of ops.c (Cephes expf, exp_poly.h's constants: x clamped to
 * [-87.34, 88.38], n = round(x / ln 2), r = x - n ln 2 in two parts, a
 * degree-6 polynomial) with vscalefps for the 2^n, which needs no split of
 * the exponent at n = 128. */
INL A512 __m512 exp16(__m512 x)
{
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.33654f)), _mm512_set1_ps(88.37626f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(EXP_LOG2E)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_C1), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_C2), r);
    __m512 p = _mm512_set1_ps(EXP_P0);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P5));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

INL A512 __mmask16 tail16(int left)
{
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
}

/* gelu_new: 0.5 v (1 + tanh(u)), u = sqrt(2/pi) (v + 0.044715 v^3), is
 * v / (1 + exp(-2u)): one exp and one division, no tanh. exp's clamp keeps
 * exp(-2u) finite, so a large negative v gives v / 2.4e38 ~ -0. */
A512 void ops_activate_avx512(float *x, int n, enum ops_act act)
{
    if (act != OPS_GELU_TANH && act != OPS_RELU) {
        ops_activate_scalar(x, n, act);
        return;
    }
    const __m512 k2 = _mm512_set1_ps(-2.0f * 0.7978845608028654f), c = _mm512_set1_ps(0.044715f);
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = tail16(n - i);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i), g;
        if (act == OPS_RELU) {
            g = _mm512_max_ps(v, _mm512_setzero_ps());
        } else {
            __m512 u2 = _mm512_mul_ps(k2, _mm512_fmadd_ps(_mm512_mul_ps(c, v), _mm512_mul_ps(v, v), v));
            g = _mm512_div_ps(v, _mm512_add_ps(one, exp16(u2)));
        }
        _mm512_mask_storeu_ps(x + i, m, g);
    }
}

A512 void ops_softmax_avx512(float *x, int n)
{
    __m512 mx = _mm512_set1_ps(-INFINITY);
    for (int i = 0; i < n; i += 16)
        mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), tail16(n - i), x + i));
    __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(mx)), s = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) {
        __mmask16 t = tail16(n - i);
        __m512 e = _mm512_maskz_mov_ps(t, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(t, x + i), m)));
        _mm512_mask_storeu_ps(x + i, t, e);
        s = _mm512_add_ps(s, e);
    }
    __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(s));
    for (int i = 0; i < n; i += 16) {
        __mmask16 t = tail16(n - i);
        _mm512_mask_storeu_ps(x + i, t, _mm512_mul_ps(_mm512_maskz_loadu_ps(t, x + i), inv));
    }
}

/* Two passes as the portable one (mean, then the mean square of x - mean),
 * 16 lanes summed apart and reduced at the end. */
A512 void ops_layernorm_avx512(float *y, const float *x, const float *g, const float *b, int n, float eps)
{
    __m512 s = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16)
        s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(tail16(n - i), x + i));
    float mean = _mm512_reduce_add_ps(s) / (float)n;
    __m512 mv = _mm512_set1_ps(mean), v = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) {
        __mmask16 t = tail16(n - i);
        __m512 d = _mm512_maskz_sub_ps(t, _mm512_maskz_loadu_ps(t, x + i), mv);
        v = _mm512_fmadd_ps(d, d, v);
    }
    float var = _mm512_reduce_add_ps(v) / (float)n;
    __m512 rstd = _mm512_set1_ps(1.0f / sqrtf(var + eps));
    for (int i = 0; i < n; i += 16) {
        __mmask16 t = tail16(n - i);
        __m512 d = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(t, x + i), mv), rstd);
        _mm512_mask_storeu_ps(y + i, t,
                              _mm512_fmadd_ps(d, _mm512_maskz_loadu_ps(t, g + i), _mm512_maskz_loadu_ps(t, b + i)));
    }
}

#endif /* OPS_HAVE_X86 */
