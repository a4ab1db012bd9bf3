/* ops_amx.c -- the packed matrix product for BF16 and F16 weights on AMX tiles (tdpbf16ps), x split into two bf16 parts so the result stays near F32's (F16 weights, tuned for throughput, split exactly into two bf16 parts in registers; F32 weights, with the measuring switch LLMCGI_F32_TILES=1 as well, into three, against x's three exact parts).
 *
 * Math. y[t][o] = sum_i x[t][i] W[o][i]. Each x is split x = hi + lo with
 * hi = x with its low 16 bits cut (exact in bf16) and lo = bf16(x - hi)
 * (round to nearest even), so |x - hi - lo| <= 2^-17 |x|; products of bf16
 * values are exact and the tiles accumulate in FP32, so
 * y = sum hi W + sum lo W carries about F32's error, not bf16's (2^-9).
 *
 * Tiles (8 registers of 16 rows x 64 bytes): C0..C3 (tmm0-3) hold 16 rows
 * of x by the 64 outputs of a panel in FP32 (16 outputs each); A (tmm4
 * hi, tmm5 lo) holds 16 rows x 32 inputs of x in bf16; B (tmm6, tmm7)
 * holds 32 inputs x 16 outputs in the pair-interleaved form tdpbf16ps
 * wants: B row r = [W[o][2r], W[o][2r+1]] for its 16 outputs o. For each
 * 32 inputs: C_q += A_hi B_q, then C_q += A_lo B_q (q = 0..3), 8 tile
 * products.
 *
 * Layout: ops_pack's BF16 panels hold these B tiles as they are (per
 * group of 32 inputs, the four 1 KiB tiles of its 64 outputs; I padded
 * with zeros to 32), so a B tile is one contiguous tileloadd, no copy and
 * no tail. (Building the tiles on the fly from plain panels into an L1
 * scratch was measured first: the build and the store-to-tile-load made
 * batch-1 decode 2x slower than the AVX-512 kernel, 322 us against 157
 * for 768 x 3072 on one thread; tiles read from pair-interleaved panels,
 * 256 bytes a row, 200 us.) The C partial sums wait in a buffer (16 rows
 * x 64 floats per row tile) between blocks of KC inputs; every row tile
 * of the pass reads the block while it is in L1/L2.
 *
 * Every row count takes this path, one row (batch-1 decode) too: A and C
 * tiles have min(T, 16) rows (a last partial row tile is padded with zero
 * rows), and each C element is the same sequence of tile products whatever
 * the other rows hold, so a row's result does not depend on how many rows
 * share the product. At one row the call streams each panel once, 1 KiB
 * tiles in address order, which the hardware prefetchers follow: software
 * prefetch (to L1 4-8 KiB ahead or to L2 16-32 KiB ahead) was measured
 * slower, 209-250 us against 176 for a 768 x 3072 product from memory.
 *
 * The thread's tile config is loaded at the start of each call and
 * released at the end (other kernels may use other configs on the same
 * thread). x's bf16 parts and the C sums live in a per-thread scratch
 * grown as needed and freed when the thread exits. */
#include "ops_int.h"

#ifdef OPS_HAVE_AMX
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define P OPS_PANEL
#define KC 256                    /* inputs per block: 256 x 64 bf16 = 32 KiB of the panel */
#define MC 256                    /* rows per pass: the C sums of a pass are MC x 64 floats */
#define AMX __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

/* The palette-1 tile config: 64 bytes. */
struct tilecfg {
    uint8_t palette, start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

/* ---------------------------------------------------------- per-thread scratch */

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static bool scratch_key_ok;
static __thread void *scratch_p;
static __thread size_t scratch_n;

static void scratch_free(void *p)
{
    free(p);
}

static void scratch_init(void)
{
    scratch_key_ok = pthread_key_create(&scratch_key, scratch_free) == 0;
}

/* n bytes, 64-aligned, owned by this thread (freed at its exit; reused by
 * its next call); NULL when out of memory. */
static void *scratch(size_t n)
{
    if (n <= scratch_n)
        return scratch_p;
    pthread_once(&scratch_once, scratch_init);
    if (!scratch_key_ok)
        return NULL;
    n = (n + 65535) & ~(size_t)65535;
    void *p = NULL;
    if (posix_memalign(&p, 64, n) != 0)
        return NULL;
    if (pthread_setspecific(scratch_key, p) != 0) {
        free(p);
        return NULL;
    }
    free(scratch_p);
    scratch_p = p;
    scratch_n = n;
    return p;
}

/* ---------------------------------------------------------- the kernel */

/* hi[t][i], lo[t][i] (bf16, stride ld) for t < T16, i < ld: x's two parts,
 * zeros past T rows and I inputs. With lo2 (F32 weights) three exact
 * parts instead: lo the rest x - hi cut likewise, lo2 what is left (at
 * most 8 significant bits, so its bf16 is exact). */
AMX static void split_rows(uint16_t *hi, uint16_t *lo, uint16_t *lo2, size_t ld, const float *x, int T, int T16,
                           int I)
{
    const __m512i cut = _mm512_set1_epi32((int)0xffff0000u);
    for (int t = 0; t < T16; t++) {
        uint16_t *h = hi + (size_t)t * ld, *l = lo + (size_t)t * ld;
        if (t >= T) {
            memset(h, 0, ld * 2);
            memset(l, 0, ld * 2);
            if (lo2)
                memset(lo2 + (size_t)t * ld, 0, ld * 2);
            continue;
        }
        const float *xr = x + (size_t)t * I;
        for (size_t i = 0; i < ld; i += 32) {
            int n = I - (int)i < 0 ? 0 : I - (int)i;
            __mmask16 ma = n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1);
            __mmask16 mb = n >= 32 ? 0xffff : n <= 16 ? 0 : (__mmask16)((1u << (n - 16)) - 1);
            __m512 x0 = _mm512_maskz_loadu_ps(ma, xr + i), x1 = _mm512_maskz_loadu_ps(mb, xr + i + 16);
            __m512 h0 = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x0), cut));
            __m512 h1 = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x1), cut));
            _mm512_store_si512((void *)(h + i), (__m512i)_mm512_cvtne2ps_pbh(h1, h0));
            __m512 r0 = _mm512_sub_ps(x0, h0), r1 = _mm512_sub_ps(x1, h1);
            if (lo2) {
                __m512 m0 = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(r0), cut));
                __m512 m1 = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(r1), cut));
                _mm512_store_si512((void *)(l + i), (__m512i)_mm512_cvtne2ps_pbh(m1, m0));
                _mm512_store_si512((void *)(lo2 + (size_t)t * ld + i),
                                   (__m512i)_mm512_cvtne2ps_pbh(_mm512_sub_ps(r1, m1), _mm512_sub_ps(r0, m0)));
            } else {
                _mm512_store_si512((void *)(l + i), (__m512i)_mm512_cvtne2ps_pbh(r1, r0));
            }
        }
    }
}

/* The tiles all three kernels use: C 0-3 and A 4-5 of `rows` rows (min(T,
 * 16)), B 6-7 of 16; every row 64 bytes. */
AMX static void tiles_config(int rows)
{
    struct tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int r = 0; r < 8; r++) {
        cfg.rows[r] = (uint8_t)(r >= 6 ? 16 : rows);
        cfg.colsb[r] = 64;
    }
    /* the intrinsic's asm names one byte of cfg as its input: the barrier
     * keeps the compiler from dropping the other stores (ops_q8_amx.c) */
    __asm__ volatile("" : : "r"(&cfg) : "memory");
    _tile_loadconfig(&cfg);
}

/* C tiles 0-3 from c[16][64] (stride 64 floats), or zeros. */
AMX static void c_load(const float *c, bool zero)
{
    if (zero) {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    } else {
        _tile_loadd(0, c, P * 4);
        _tile_loadd(1, c + 16, P * 4);
        _tile_loadd(2, c + 32, P * 4);
        _tile_loadd(3, c + 48, P * 4);
    }
}

/* C tiles 0-3 into c[16][64]. */
AMX static void c_store(float *c)
{
    _tile_stored(0, c, P * 4);
    _tile_stored(1, c + 16, P * 4);
    _tile_stored(2, c + 32, P * 4);
    _tile_stored(3, c + 48, P * 4);
}

/* c[rows][64] (stride 64 floats) (+)= rows of hi/lo (stride ld bf16) by
 * ns groups of 32 inputs, the B tiles of group s at b + s * 32 * 64 (four
 * of 1 KiB, ops_pack's BF16 form); from zero when first. */
AMX static void row_tile(float *c, const uint16_t *hi, const uint16_t *lo, size_t ld, const uint16_t *b, int ns,
                         bool first)
{
    c_load(c, first);
    for (int s = 0; s < ns; s++, b += 32 * P) {
        _tile_loadd(4, hi + s * 32, ld * 2);
        _tile_loadd(5, lo + s * 32, ld * 2);
        _tile_loadd(6, b, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(0, 5, 6);
        _tile_loadd(7, b + 512, 64);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(1, 5, 7);
        _tile_loadd(6, b + 1024, 64);
        _tile_dpbf16ps(2, 4, 6);
        _tile_dpbf16ps(2, 5, 6);
        _tile_loadd(7, b + 1536, 64);
        _tile_dpbf16ps(3, 4, 7);
        _tile_dpbf16ps(3, 5, 7);
    }
    c_store(c);
}

/* Per pass of up to mc rows (x split once per pass), per panel in
 * [o0, o1), per block of KC inputs: every row tile of the pass over the
 * block's B tiles, read from the panel; then the store rule on the
 * panel's outputs inside [o0, o1). A and C tiles have min(T, 16) rows. */
AMX static void amx_bf16(float *y, const float *x, const uint16_t *wp, const float *bias, int T, int I, int O, int o0,
                         int o1, bool accumulate, char *mem, int mc, size_t ld)
{
    float *c = (float *)mem;                                     /* mc x 64 floats */
    uint16_t *hi = (uint16_t *)((char *)c + (size_t)mc * P * 4); /* mc x ld bf16 */
    uint16_t *lo = hi + (size_t)mc * ld;
    tiles_config(T < 16 ? T : 16);
    for (int t0 = 0; t0 < T; t0 += mc) {
        int tn = T - t0 < mc ? T - t0 : mc, t16 = T < 16 ? T : (tn + 15) & ~15;
        split_rows(hi, lo, NULL, ld, x + (size_t)t0 * I, tn, t16, I);
        for (int p = o0 / P; p * P < o1; p++) {
            int olo = p * P > o0 ? p * P : o0, ohi = p * P + P < o1 ? p * P + P : o1;
            const uint16_t *panel = wp + (size_t)p * P * ld;
            for (int k0 = 0; k0 < I; k0 += KC) {
                int kn = I - k0 < KC ? I - k0 : KC;
                for (int r0 = 0; r0 < t16; r0 += 16)
                    row_tile(c + (size_t)r0 * P, hi + (size_t)r0 * ld + k0, lo + (size_t)r0 * ld + k0, ld,
                             panel + (size_t)k0 * P, (kn + 31) / 32, k0 == 0);
            }
            ops_store_rows_avx512(y + (size_t)t0 * O, c + (olo - p * P), bias, tn, O, olo, ohi - olo, accumulate);
        }
    }
    _tile_release();
}

/* ------------------------------------------------------------------ F16 weights */

/* F16 weights on the same tiles. An F16 weight has 11 significant bits, so
 * it is exactly w = whi + wlo with whi = w cut to bf16 (its F32 form's low
 * 16 bits dropped: 8 significant bits) and wlo = w - whi (at most 3
 * significant bits, exact in bf16; F16 subnormals are F32 normals, so
 * neither part is a bf16 subnormal). ops_pack keeps F16 in the plain panel
 * layout (the AVX-512 kernel's); here each group of 32 inputs x 64 outputs
 * (4 KiB of the panel) is widened in registers into its whi and wlo B tiles
 * (8 KiB of L1 staging): tile row r of outputs 16q.. pairs inputs 2r and
 * 2r + 1, one vcvtph2ps each, and because both parts are bf16-exact their
 * bits are the top halves of the F32 lanes, so a row is (a >> 16) | (b &
 * 0xffff0000), one shift and one ternary logic op, no rounding and no
 * permute. The products per C tile and group, always in this order:
 * xhi whi, xlo whi, xhi wlo, xlo wlo, so only x's split is inexact, as
 * for BF16 (F16_PRODUCTS 3 leaves the last out: within 2^-14 |x w| a
 * product, 5-8% faster at 32 rows, the tiny model's logits 5.3e-5 from
 * transformers' against 2e-5 with 4; doc/cpu-kernels.md "F16 on the AMX
 * tiles"). Cache-warm the conversion costs ~2.7x the FMA kernel's time at
 * one row (12 vector uops per 32 weights on ports 0 and 5); with the
 * weights streaming from memory it hides under the stream once it is
 * interleaved with the tile products (amx_f16). */
#ifndef F16_PRODUCTS
#define F16_PRODUCTS 4
#endif
#ifndef F16_PF
#define F16_PF 32768               /* bytes ahead that each tile row's 4 lines are prefetched to L2 */
#define F16_PFH _MM_HINT_T1
#endif

/* A B-tile row of bf16 pairs from two inputs' F32 lanes whose low 16 bits
 * are cut or zero: (a >> 16) | (b & top), imm 0xF8 = A | (B & C). */
AMX static inline __m512i bf16_pair(__m512i a, __m512i b, __m512i top)
{
    return _mm512_ternarylogic_epi32(_mm512_srli_epi32(a, 16), b, top, 0xF8);
}

/* w - (w with its low 16 bits cut), per F32 lane: exact. */
AMX static inline __m512i cut_rest(__m512i a, __m512i top)
{
    return _mm512_castps_si512(_mm512_sub_ps(_mm512_castsi512_ps(a), _mm512_castsi512_ps(_mm512_and_si512(a, top))));
}

/* The whi and wlo B tiles q of one group (st: the group's 8 KiB, whi
 * tile q at q KiB, wlo tile q at 4 + q KiB) from the plain panel's inputs
 * i0 .. i0 + 32 (w at input i0; inputs past n are zeros); each tile row's
 * source lines F16_PF bytes on are prefetched to L2. */
AMX static void f16_tile(uint16_t *st, const uint16_t *w, int n, int q)
{
    const __m512i top = _mm512_set1_epi32((int)0xffff0000u);
    for (int r = 0; r < 16; r++) {
        const uint16_t *a = w + (size_t)(2 * r) * P + q * 16, *b = a + P;
        _mm_prefetch((const char *)(w + (size_t)(2 * r) * P) + F16_PF + q * 64, F16_PFH);
        __m512 fa = 2 * r < n ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)a)) : _mm512_setzero_ps();
        __m512 fb = 2 * r + 1 < n ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)b)) : _mm512_setzero_ps();
        __m512i ia = _mm512_castps_si512(fa), ib = _mm512_castps_si512(fb);
        _mm512_store_si512((void *)(st + q * 512 + r * 32), bf16_pair(ia, ib, top));
        _mm512_store_si512((void *)(st + 2048 + q * 512 + r * 32),
                           bf16_pair(cut_rest(ia, top), cut_rest(ib, top), top));
    }
}

/* C tile q += the group's x parts (A: tmm4 hi, tmm5 lo) by its staged
 * whi and wlo tiles q, in the fixed order xhi whi, xlo whi, xhi wlo
 * (, xlo wlo). */
#define F16_Q(q, st)                               \
    do {                                           \
        _tile_loadd(6, (st) + (q) * 512, 64);      \
        _tile_dpbf16ps(q, 4, 6);                   \
        _tile_dpbf16ps(q, 5, 6);                   \
        _tile_loadd(7, (st) + 2048 + (q) * 512, 64); \
        _tile_dpbf16ps(q, 4, 7);                   \
        if (F16_PRODUCTS == 4)                     \
            _tile_dpbf16ps(q, 5, 7);               \
    } while (0)

AMX static void f16_q(int q, const uint16_t *st)
{
    switch (q) {
    case 0: F16_Q(0, st); break;
    case 1: F16_Q(1, st); break;
    case 2: F16_Q(2, st); break;
    default: F16_Q(3, st); break;
    }
}

/* ------------------------------------------------------------------ F32 weights */

/* F32 weights on the same tiles (OPS_THROUGHPUT with LLMCGI_F32_TILES=1; doc/cpu-kernels.md
 * "F32 on the AMX tiles"). An F32 weight is exactly w = w1 + w2 + w3: w1
 * = w cut to bf16 (its low 16 bits dropped), r = w - w1 (exact), w2 = r
 * cut likewise, w3 = r - w2 (at most 8 significant bits: exact in bf16;
 * only weights under ~2^-110 lose their tail to the tiles' denormal
 * flush). x is split the same way into three exact parts (split_rows with
 * lo2). The products per C tile and group, always in this order: x1 w1,
 * x2 w1, x3 w1, x1 w2, x2 w2 (, x1 w3): the dropped ones (x2 w3, x3 w2,
 * x3 w3) are within 2^-24 |x w|. Panels keep the plain F32 layout (the
 * FMA kernel's); a group of 32 inputs x 64 outputs (8 KiB of the panel)
 * becomes its w1, w2, w3 B tiles (12 KiB of L1 staging) as F16's does:
 * each part's bits are the top halves of F32 lanes, so a tile row is (a
 * >> 16) | (b & 0xffff0000) of inputs 2r, 2r + 1 (two vector ops), the
 * rests two an input and level (and, sub): 14 vector uops per 32
 * weights. Tiles: A = tmm4 x1, tmm5 x2 then x3 (reloaded), B = tmm6,
 * tmm7 (two C tiles' parts at a time, F32_Q2). For measuring,
 * F32_PRODUCTS 4 leaves out x3 w1 and x1 w3, 3 x2 w2 too. */
#ifndef F32_PRODUCTS
#define F32_PRODUCTS 6
#endif
#ifndef F32_PF
#define F32_PF 32768               /* bytes ahead that each tile row's 8 lines are prefetched to L2 */
#endif

/* The w1, w2, w3 B tiles q of one group (st: the group's 12 KiB, part k's
 * tile q at 4k + q KiB) from the plain F32 panel's inputs i0 .. i0 + 32
 * (w at input i0; inputs past n are zeros). */
AMX static void f32_tile(uint16_t *st, const float *w, int n, int q)
{
    const __m512i top = _mm512_set1_epi32((int)0xffff0000u);
    for (int r = 0; r < 16; r++) {
        const float *a = w + (size_t)(2 * r) * P + q * 16, *b = a + P;
        _mm_prefetch((const char *)(w + (size_t)(2 * r) * P) + F32_PF + q * 128, _MM_HINT_T1);
        _mm_prefetch((const char *)(w + (size_t)(2 * r) * P) + F32_PF + q * 128 + 64, _MM_HINT_T1);
        __m512i ia = 2 * r < n ? _mm512_loadu_si512((const void *)a) : _mm512_setzero_si512();
        __m512i ib = 2 * r + 1 < n ? _mm512_loadu_si512((const void *)b) : _mm512_setzero_si512();
        for (int k = 0; k < 3; k++) {
            /* one vpermt2w instead of bf16_pair was 10-20% slower */
            _mm512_store_si512((void *)(st + k * 2048 + q * 512 + r * 32), bf16_pair(ia, ib, top));
            if (k < 2) {   /* the rest: w - (w cut), exact */
                ia = cut_rest(ia, top);
                ib = cut_rest(ib, top);
            }
        }
    }
}

/* C tiles q and q + 1 += the group's x parts (A: tmm4 x1, tmm5 x2 or x3)
 * by its staged w1, w2, w3 tiles q, q + 1 (B: tmm6, tmm7), in the fixed
 * order x1 w1, x2 w1, x3 w1, x1 w2, x2 w2, x1 w3, the two C tiles
 * alternating so each product's wait on its C tile's previous one
 * overlaps the other's. */
#define F32_Q2(q, q1, st, xlo, xlo2, ld) \
    do {                                                  \
        _tile_loadd(6, (st) + (q) * 512, 64);             \
        _tile_loadd(7, (st) + (q) * 512 + 512, 64);       \
        _tile_loadd(5, (xlo), (ld) * 2);                  \
        _tile_dpbf16ps(q, 4, 6);                          \
        _tile_dpbf16ps(q1, 4, 7);                      \
        _tile_dpbf16ps(q, 5, 6);                          \
        _tile_dpbf16ps(q1, 5, 7);                      \
        if (F32_PRODUCTS >= 6) {                          \
            _tile_loadd(5, (xlo2), (ld) * 2);             \
            _tile_dpbf16ps(q, 5, 6);                      \
            _tile_dpbf16ps(q1, 5, 7);                  \
            _tile_loadd(5, (xlo), (ld) * 2);              \
        }                                                 \
        _tile_loadd(6, (st) + 2048 + (q) * 512, 64);      \
        _tile_loadd(7, (st) + 2048 + (q) * 512 + 512, 64); \
        _tile_dpbf16ps(q, 4, 6);                          \
        _tile_dpbf16ps(q1, 4, 7);                      \
        if (F32_PRODUCTS >= 4) {                          \
            _tile_dpbf16ps(q, 5, 6);                      \
            _tile_dpbf16ps(q1, 5, 7);                  \
        }                                                 \
        if (F32_PRODUCTS >= 6) {                          \
            _tile_loadd(6, (st) + 4096 + (q) * 512, 64);  \
            _tile_loadd(7, (st) + 4096 + (q) * 512 + 512, 64); \
            _tile_dpbf16ps(q, 4, 6);                      \
            _tile_dpbf16ps(q1, 4, 7);                  \
        }                                                 \
    } while (0)

/* F32_Q2 for q 0 or 2; xlo, xlo2: the row tile's x2 and x3 at this group. */
AMX static void f32_q2(int q, const uint16_t *st, const uint16_t *xlo, const uint16_t *xlo2, size_t ld)
{
    if (q == 0)
        F32_Q2(0, 1, st, xlo, xlo2, ld);
    else
        F32_Q2(2, 3, st, xlo, xlo2, ld);
}

/* ------------------------------------------------------------------ F16 and F32: converted in registers */

/* Bytes of staging for one group's B tiles: F16 two parts, F32 three. */
#define STAGE_F16 8192
#define STAGE_F32 12288

/* As amx_bf16 over the plain F16 (f32: F32) panels (I inputs a panel),
 * software pipelined by groups of 32 inputs: step j converts group j (of
 * the pass's panels in order) into one staging half while the tile
 * products of group j - 1 run from the other, the conversion cut in 4
 * pieces (tiles q) spread between the row tiles' products, so the vector
 * ports convert while the tile unit multiplies and the tile loads read
 * lines stored a group earlier. With one row tile (T <= 16) the C tiles
 * stay in their registers across a panel's groups; with more they wait in
 * c between groups. stage: 2 x STAGE_F16 (STAGE_F32). Inlined into its
 * two callers, so each has its own code for a constant f32. */
AMX static inline __attribute__((always_inline)) void amx_staged(float *y, const float *x, const void *wp,
                                                                 const float *bias, int T, int I, int O, int o0,
                                                                 int o1, bool accumulate, char *mem, int mc,
                                                                 size_t ld, bool f32)
{
    float *c = (float *)mem;
    uint16_t *hi = (uint16_t *)((char *)c + (size_t)mc * P * 4);
    uint16_t *lo = hi + (size_t)mc * ld;
    uint16_t *lo2 = f32 ? lo + (size_t)mc * ld : NULL;
    uint16_t *stage = lo + (size_t)mc * ld * (f32 ? 2 : 1);
    size_t half = (f32 ? STAGE_F32 : STAGE_F16) / 2, es = f32 ? 4 : 2;   /* half: uint16 per staging half */
    tiles_config(T < 16 ? T : 16);
    int ng = (I + 31) / 32, p0 = o0 / P, n = ((o1 + P - 1) / P - p0) * ng;
    for (int t0 = 0; t0 < T; t0 += mc) {
        int tn = T - t0 < mc ? T - t0 : mc, t16 = T < 16 ? T : (tn + 15) & ~15;
        int rt = (t16 + 15) / 16, nseg = rt * 4;
        split_rows(hi, lo, lo2, ld, x + (size_t)t0 * I, tn, t16, I);
        for (int j = 0; j <= n; j++) {
            /* group j to convert (none past n), group j - 1 to multiply */
            const char *src = NULL;
            int cn = 0, piece = 0;
            if (j < n) {
                int g = j % ng;
                src = (const char *)wp + ((size_t)(p0 + j / ng) * P * I + (size_t)g * 32 * P) * es;
                cn = I - g * 32;
            }
            uint16_t *cst = stage + (size_t)(j & 1) * half;
            if (j > 0) {
                int p = p0 + (j - 1) / ng, g = (j - 1) % ng, k0 = g * 32;
                const uint16_t *st = stage + (size_t)((j - 1) & 1) * half;
                for (int r = 0, seg = 0; r < rt; r++) {
                    float *cr = c + (size_t)r * 16 * P;
                    if (rt > 1 || g == 0)
                        c_load(cr, g == 0);
                    const uint16_t *xlo = lo + (size_t)r * 16 * ld + k0;
                    _tile_loadd(4, hi + (size_t)r * 16 * ld + k0, ld * 2);
                    if (!f32)
                        _tile_loadd(5, xlo, ld * 2);
                    for (int q = 0; q < 4; q++, seg++) {
                        for (; src && piece < 4 && piece * nseg <= seg * 4; piece++)
                            if (f32)
                                f32_tile(cst, (const float *)src, cn, piece);
                            else
                                f16_tile(cst, (const uint16_t *)src, cn, piece);
                        if (f32) {
                            if (q & 1)
                                f32_q2(q - 1, st, xlo, lo2 + (size_t)r * 16 * ld + k0, ld);
                        } else
                            f16_q(q, st);
                    }
                    if (rt > 1 || g == ng - 1)
                        c_store(cr);
                }
                if (g == ng - 1) {
                    int olo = p * P > o0 ? p * P : o0, ohi = p * P + P < o1 ? p * P + P : o1;
                    ops_store_rows_avx512(y + (size_t)t0 * O, c + (olo - p * P), bias, tn, O, olo, ohi - olo,
                                          accumulate);
                }
            }
            for (; src && piece < 4; piece++)
                if (f32)
                    f32_tile(cst, (const float *)src, cn, piece);
                else
                    f16_tile(cst, (const uint16_t *)src, cn, piece);
        }
    }
    _tile_release();
}

AMX static void amx_f16(float *y, const float *x, const void *wp, const float *bias, int T, int I, int O, int o0,
                        int o1, bool accumulate, char *mem, int mc, size_t ld)
{
    amx_staged(y, x, wp, bias, T, I, O, o0, o1, accumulate, mem, mc, ld, false);
}

AMX static void amx_f32(float *y, const float *x, const void *wp, const float *bias, int T, int I, int O, int o0,
                        int o1, bool accumulate, char *mem, int mc, size_t ld)
{
    amx_staged(y, x, wp, bias, T, I, O, o0, o1, accumulate, mem, mc, ld, true);
}

void ops_matmul_packed_amx_f32(float *y, const float *x, const void *wp, enum ckpt_dtype wt, const float *bias, int T,
                               int I, int O, int o0, int o1, bool accumulate)
{
    if (T <= 0 || o0 >= o1) {
        ops_matmul_packed_avx512(y, x, wp, wt, bias, T, I, O, o0, o1, accumulate);
        return;
    }
    size_t ld = (size_t)(I + 31) & ~(size_t)31;
    /* rows per pass: the pass's bf16 x (4 bytes an input, F32's three parts
     * 6) within ~1 MiB of L2, 16 at least */
    size_t xb = wt == CKPT_F32 ? 6 : 4;
    int mc = (int)((1u << 20) / (ld * xb)) & ~15;
    if (mc < 16)
        mc = 16;
    if (mc > MC)
        mc = MC;
    if (mc > ((T + 15) & ~15))
        mc = (T + 15) & ~15;
    size_t stage = wt == CKPT_F16 ? (size_t)2 * STAGE_F16 : wt == CKPT_F32 ? (size_t)2 * STAGE_F32 : 0;
    char *mem = scratch((size_t)mc * P * 4 + (size_t)mc * ld * xb + stage);
    if (!mem && mc > 16) {   /* out of memory: 16 rows a pass need the least, and give the same bits */
        mc = 16;
        mem = scratch((size_t)mc * P * 4 + (size_t)mc * ld * xb + stage);
    }
    if (!mem) {   /* not even that: the AVX-512 kernel needs none (its bits differ from the tiles') */
        ops_matmul_packed_avx512(y, x, wp, wt, bias, T, I, O, o0, o1, accumulate);
        return;
    }
    if (wt == CKPT_F32)
        amx_f32(y, x, wp, bias, T, I, O, o0, o1, accumulate, mem, mc, ld);
    else if (wt == CKPT_F16)
        amx_f16(y, x, wp, bias, T, I, O, o0, o1, accumulate, mem, mc, ld);
    else
        amx_bf16(y, x, wp, bias, T, I, O, o0, o1, accumulate, mem, mc, ld);
}

/* BF16 and F16 on the tiles, F32 on the AVX-512 FMA kernel (what
 * OPS_THROUGHPUT runs: F32 on the tiles was no faster at batch 32 and
 * 22-35% slower at batch 1, doc/cpu-kernels.md "F32 on the AMX tiles";
 * LLMCGI_F32_TILES=1 as well takes the one above). */
void ops_matmul_packed_amx(float *y, const float *x, const void *wp, enum ckpt_dtype wt, const float *bias, int T,
                           int I, int O, int o0, int o1, bool accumulate)
{
    if (wt == CKPT_F32)
        ops_matmul_packed_avx512(y, x, wp, wt, bias, T, I, O, o0, o1, accumulate);
    else
        ops_matmul_packed_amx_f32(y, x, wp, wt, bias, T, I, O, o0, o1, accumulate);
}

/* BF16 on the tiles, F16 and F32 on the AVX-512 FMA kernel: the AMX
 * level's OPS_LATENCY kernel (ops_init; OPS_THROUGHPUT takes F16 to the tiles). */
void ops_matmul_packed_amx_bf16(float *y, const float *x, const void *wp, enum ckpt_dtype wt, const float *bias, int T,
                                int I, int O, int o0, int o1, bool accumulate)
{
    if (wt == CKPT_F16 || wt == CKPT_F32)
        ops_matmul_packed_avx512(y, x, wp, wt, bias, T, I, O, o0, o1, accumulate);
    else
        ops_matmul_packed_amx_f32(y, x, wp, wt, bias, T, I, O, o0, o1, accumulate);
}
#else
typedef int ops_amx_none;   /* no x86: nothing here (ISO C wants a declaration) */
#endif /* OPS_HAVE_AMX */
