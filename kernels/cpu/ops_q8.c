/* ops_q8.c -- int8 weights and activations in llama.cpp's Q8_0 layout: row quantization, and matrix products in portable C, AVX2 (vpmaddubsw) and AVX-512 VNNI (vpdpbusd).
 *
 * A block is 32 int8 values and one F16 scale. The product of a weight row
 * and an activation row is, per block, the exact integer dot product of the
 * two blocks times both scales, summed in F32. The SIMD versions take one
 * block per 256-bit vector (8 lanes of 4 products):
 *   AVX2:  |x| (u8) times w with x's sign (s8) by vpmaddubsw (pairs into
 *          16 bits; 2 * 127 * 127 does not saturate), then vpmaddwd by 1;
 *   VNNI:  (w + 128) (u8) times x (s8) by vpdpbusd, its accumulator started
 *          at -128 * x's block sum (one more vpdpbusd per x block, shared by
 *          the tile's rows of W), so one instruction per pair of blocks.
 * Tiles are up to 4 rows of W by 2 (AVX2: 16 vector registers) or 4 (VNNI
 * with AVX-512VL: 32) rows of x; weights stream once per chunk of x. One
 * row of x (batch-1 decode) has its own VNNI matrix-vector path below, and
 * 2+ rows at VNNI a panel path with 16 outputs across the lanes; both (and
 * ops_q8_amx.c, and AVX2's matmul_q8_groups_avx2 at any row count) read W
 * grouped (ops.h, ops_q8_pack_rows) where I <= 4096, the tiles above read
 * plain Q8_0 rows (the portable level, and wider rows at AVX2 and VNNI). */
#include "ops_int.h"

#include <math.h>
#include <string.h>

_Static_assert(sizeof(struct ops_q8_block) == 34, "Q8_0 block is 34 bytes, as llama.cpp's block_q8_0");

size_t ops_q8_row_bytes(int I)
{
    return (size_t)((I + OPS_Q8_BLOCK - 1) / OPS_Q8_BLOCK) * sizeof(struct ops_q8_block);
}

static bool q8_quantize_avx2(struct ops_q8_block *b, const float *x, int nfull);

/* The grouped layout (ops.h): a group of 16 rows is np pairs of 1,088
 * bytes; O rows take ceil(O / 16) groups. */
size_t ops_q8g_bytes(int I, int O)
{
    size_t np = (size_t)((I + 2 * OPS_Q8_BLOCK - 1) / (2 * OPS_Q8_BLOCK));
    return (size_t)((O + OPS_Q8G_ROWS - 1) / OPS_Q8G_ROWS) * np * OPS_Q8G_PAIR_BYTES;
}

void ops_q8g_pack_rows(void *dst, const void *src, int I, int O, int o0, int n)
{
    int nb = (I + OPS_Q8_BLOCK - 1) / OPS_Q8_BLOCK, np = (nb + 1) / 2;
    size_t gbytes = (size_t)np * OPS_Q8G_PAIR_BYTES;
    const struct ops_q8_block *S = src;
    int end = o0 + n == O ? (O + OPS_Q8G_ROWS - 1) / OPS_Q8G_ROWS * OPS_Q8G_ROWS : o0 + n;
    for (int o = o0; o < end; o++) {
        unsigned char *g = (unsigned char *)dst + (size_t)(o / OPS_Q8G_ROWS) * gbytes;
        int r = o % OPS_Q8G_ROWS;
        for (int k = 0; k < 2 * np; k++) {
            unsigned char *pair = g + (size_t)(k / 2) * OPS_Q8G_PAIR_BYTES;
            uint16_t d = 0;
            if (o < o0 + n && k < nb) {
                const struct ops_q8_block *b = S + (size_t)(o - o0) * nb + k;
                memcpy(pair + r * 64 + (k % 2) * 32, b->q, OPS_Q8_BLOCK);
                d = b->d;
            } else
                memset(pair + r * 64 + (k % 2) * 32, 0, OPS_Q8_BLOCK);
            memcpy(pair + OPS_Q8G_ROWS * 64 + (2 * r + k % 2) * 2, &d, sizeof d);
        }
    }
}

void ops_q8_quantize_row(void *dst, const float *x, int I)
{
    struct ops_q8_block *b = dst;
    int k = 0;
    if (q8_quantize_avx2(b, x, I / OPS_Q8_BLOCK))
        k = I / OPS_Q8_BLOCK;
    for (; k * OPS_Q8_BLOCK < I; k++) {
        int n = I - k * OPS_Q8_BLOCK < OPS_Q8_BLOCK ? I - k * OPS_Q8_BLOCK : OPS_Q8_BLOCK;
        const float *xb = x + (size_t)k * OPS_Q8_BLOCK;
        float amax = 0.0f;
        for (int i = 0; i < n; i++)
            if (fabsf(xb[i]) > amax)
                amax = fabsf(xb[i]);
        float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
        b[k].d = ckpt_f32_to_f16(d);
        /* roundf(v) (half away from zero) as truncation plus a correction,
         * so that the loop needs no libm call and vectorizes: |v| <= 127
         * (up to rounding), where v - trunc(v) is exact. */
        for (int i = 0; i < OPS_Q8_BLOCK; i++) {
            float v = i < n ? xb[i] * id : 0.0f;
            int t = (int)v;
            float f = v - (float)t;
            t += f >= 0.5f ? 1 : f <= -0.5f ? -1 : 0;
            b[k].q[i] = (int8_t)(t > 127 ? 127 : t < -127 ? -127 : t);
        }
    }
}

typedef void (*q8_tile_fn)(const struct ops_q8_block *w, size_t wstride, const struct ops_q8_block *x,
                           size_t xstride, int nb, float *s);

/* The driver every level shares: chunks of x rows, Q = 4 outputs at a time
 * in tiles of up to max_r rows of x, then the last 1-3 outputs one by one.
 * t[r] computes s[r * 4 + q]; one computes a single row pair. Strides are
 * in blocks. */
static void matmul_q8_tiles(const q8_tile_fn *t, q8_tile_fn one, int max_r, float *y, const void *xq,
                            const void *wq, const float *bias, int T, int I, int O, int o0, int o1,
                            bool accumulate)
{
    int nb = (I + OPS_Q8_BLOCK - 1) / OPS_Q8_BLOCK;
    size_t rs = (size_t)nb;
    const struct ops_q8_block *X = xq, *W = wq;
    float s[4 * 4];
    int chunk = ops_t_chunk(I / 4 + 1, max_r);  /* int8 rows are a quarter of F32 ones */
    for (int tc = 0; tc < T; tc += chunk) {
        int te = tc + chunk < T ? tc + chunk : T;
        int o = o0;
        for (; t && o + 4 <= o1; o += 4)
            for (int tt = tc; tt < te;) {
                int r = te - tt >= max_r ? max_r : te - tt;
                t[r](W + (size_t)o * rs, rs, X + (size_t)tt * rs, rs, nb, s);
                for (int k = 0; k < r; k++)
                    for (int q = 0; q < 4; q++)
                        ops_store1(y + (size_t)(tt + k) * O, o + q, s[k * 4 + q], bias, accumulate);
                tt += r;
            }
        for (; o < o1; o++)
            for (int tt = tc; tt < te; tt++) {
                one(W + (size_t)o * rs, rs, X + (size_t)tt * rs, rs, nb, s);
                ops_store1(y + (size_t)tt * O, o, s[0], bias, accumulate);
            }
    }
}

/* ------------------------------------------------------------------ portable C */

static void q8_one_portable(const struct ops_q8_block *w, size_t ws, const struct ops_q8_block *x, size_t xs,
                            int nb, float *s)
{
    (void)ws;
    (void)xs;
    float sum = 0.0f;
    for (int k = 0; k < nb; k++) {
        int32_t isum = 0;
        for (int i = 0; i < OPS_Q8_BLOCK; i++)
            isum += (int32_t)w[k].q[i] * x[k].q[i];
        sum += (float)isum * ckpt_f16_to_f32(w[k].d) * ckpt_f16_to_f32(x[k].d);
    }
    s[0] = sum;
}

void ops_matmul_q8_portable(float *y, const void *xq, const void *wq, const float *bias, int T, int I, int O, int o0,
                            int o1, bool accumulate)
{
    matmul_q8_tiles(NULL, q8_one_portable, 1, y, xq, wq, bias, T, I, O, o0, o1, accumulate);
}

#ifdef OPS_HAVE_X86
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#define INL static inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 8")

INL AVX2 float hsum8(__m256 a)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* ops_q8_quantize_row's full blocks, 8 lanes at a time, the same
 * arithmetic (the scale in scalar code, then x * id, truncation and the
 * half-away correction, exact in F32): bit-identical to the C loop, ~10x
 * faster (it ran per element, and the activations of every product of a
 * batched step pass through it). false: no AVX2 here, nothing done. */
static AVX2 void quantize_blocks_avx2(struct ops_q8_block *b, const float *x, int nfull)
{
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 half = _mm256_set1_ps(0.5f), mhalf = _mm256_set1_ps(-0.5f);
    const __m256i lim = _mm256_set1_epi32(127), mlim = _mm256_set1_epi32(-127);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int k = 0; k < nfull; k++) {
        const float *xb = x + (size_t)k * OPS_Q8_BLOCK;
        __m256 v[4];
        __m256 m = _mm256_setzero_ps();
        for (int j = 0; j < 4; j++) {
            v[j] = _mm256_loadu_ps(xb + 8 * j);
            m = _mm256_max_ps(m, _mm256_and_ps(v[j], absmask));
        }
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        float amax = _mm_cvtss_f32(h);
        float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
        b[k].d = ckpt_f32_to_f16(d);
        __m256 vid = _mm256_set1_ps(id);
        __m256i q[4];
        for (int j = 0; j < 4; j++) {
            __m256 s = _mm256_mul_ps(v[j], vid);
            __m256i t = _mm256_cvttps_epi32(s);
            __m256 f = _mm256_sub_ps(s, _mm256_cvtepi32_ps(t));
            t = _mm256_sub_epi32(t, _mm256_castps_si256(_mm256_cmp_ps(f, half, _CMP_GE_OQ)));
            t = _mm256_add_epi32(t, _mm256_castps_si256(_mm256_cmp_ps(f, mhalf, _CMP_LE_OQ)));
            q[j] = _mm256_max_epi32(_mm256_min_epi32(t, lim), mlim);
        }
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        _mm256_storeu_si256((__m256i *)b[k].q, _mm256_permutevar8x32_epi32(p, perm));
    }
}

/* The same with AVX-512 (~2x fewer instructions: a block is two vectors,
 * the scale's F16 by vcvtps2ph, which rounds as ckpt_f32_to_f16 does for
 * finite values), bit-identical to the AVX2 loop: a block with an infinite
 * or NaN input, where the F16 conversions and max orders differ in their
 * NaNs, takes the AVX2 loop. */
#define Q8_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl")))

/* One block's q from its inputs and 1 / d, as the AVX2 loop rounds them. */
INL Q8_AVX512 void quantize_q_avx512(int8_t *q, const float *xb, float id)
{
    const __m512 half = _mm512_set1_ps(0.5f), mhalf = _mm512_set1_ps(-0.5f);
    const __m512i one = _mm512_set1_epi32(1), lim = _mm512_set1_epi32(127), mlim = _mm512_set1_epi32(-127);
    __m512 vid = _mm512_set1_ps(id);
    for (int j = 0; j < 2; j++) {
        __m512 s = _mm512_mul_ps(_mm512_loadu_ps(xb + 16 * j), vid);
        __m512i t = _mm512_cvttps_epi32(s);
        __m512 f = _mm512_sub_ps(s, _mm512_cvtepi32_ps(t));
        t = _mm512_mask_add_epi32(t, _mm512_cmp_ps_mask(f, half, _CMP_GE_OQ), t, one);
        t = _mm512_mask_sub_epi32(t, _mm512_cmp_ps_mask(f, mhalf, _CMP_LE_OQ), t, one);
        _mm_storeu_si128((__m128i *)(q + 16 * j), _mm512_cvtepi32_epi8(_mm512_max_epi32(_mm512_min_epi32(t, lim), mlim)));
    }
}

/* The same with AVX-512 (a block is two vectors; per 16 blocks the scales
 * d = max|x| / 127, 1 / d and their F16 by one vector division each and
 * one vcvtps2ph, which rounds as ckpt_f32_to_f16 does for finite values),
 * the last nfull % 16 a block at a time), bit-identical to the AVX2 loop:
 * blocks with an infinite or NaN input (16 at once, or the one), where the
 * F16 conversions and max orders differ in their NaNs, take the AVX2
 * loop. */
static Q8_AVX512 void quantize_blocks_avx512(struct ops_q8_block *b, const float *x, int nfull)
{
    const __m512 inf = _mm512_set1_ps(__builtin_inff());
    int k0 = 0;
    for (; k0 + 16 <= nfull; k0 += 16) {
        const float *xg = x + (size_t)k0 * OPS_Q8_BLOCK;
        float amax[16] __attribute__((aligned(64))), id[16] __attribute__((aligned(64)));
        uint16_t d16[16] __attribute__((aligned(32)));
        __mmask16 bad = 0;
        for (int j = 0; j < 16; j++) {
            __m512 a0 = _mm512_abs_ps(_mm512_loadu_ps(xg + 32 * j)), a1 = _mm512_abs_ps(_mm512_loadu_ps(xg + 32 * j + 16));
            bad |= _mm512_cmp_ps_mask(a0, inf, _CMP_NLT_UQ) | _mm512_cmp_ps_mask(a1, inf, _CMP_NLT_UQ);
            amax[j] = _mm512_reduce_max_ps(_mm512_max_ps(a0, a1));
        }
        if (bad) {
            quantize_blocks_avx2(b + k0, xg, 16);
            continue;
        }
        __m512 d = _mm512_div_ps(_mm512_load_ps(amax), _mm512_set1_ps(127.0f));
        __mmask16 pos = _mm512_cmp_ps_mask(d, _mm512_setzero_ps(), _CMP_GT_OQ);
        _mm512_store_ps(id, _mm512_maskz_div_ps(pos, _mm512_set1_ps(1.0f), d));
        _mm256_store_si256((__m256i *)d16, _mm512_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        for (int j = 0; j < 16; j++) {
            b[k0 + j].d = d16[j];
            quantize_q_avx512(b[k0 + j].q, xg + 32 * j, id[j]);
        }
    }
    for (; k0 < nfull; k0++) {   /* the last nfull % 16 a block at a time */
        const float *xb = x + (size_t)k0 * OPS_Q8_BLOCK;
        __m512 a0 = _mm512_abs_ps(_mm512_loadu_ps(xb)), a1 = _mm512_abs_ps(_mm512_loadu_ps(xb + 16));
        if (_mm512_cmp_ps_mask(a0, inf, _CMP_NLT_UQ) | _mm512_cmp_ps_mask(a1, inf, _CMP_NLT_UQ)) {
            quantize_blocks_avx2(b + k0, xb, 1);
            continue;
        }
        float d = _mm512_reduce_max_ps(_mm512_max_ps(a0, a1)) / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
        b[k0].d = (uint16_t)_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        quantize_q_avx512(b[k0].q, xb, id);
    }
}

static bool q8_quantize_avx2(struct ops_q8_block *b, const float *x, int nfull)
{
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
        quantize_blocks_avx512(b, x, nfull);
    else if (__builtin_cpu_supports("avx2"))
        quantize_blocks_avx2(b, x, nfull);
    else
        return false;
    return true;
}

/* AVX2: R rows of x by Q rows of W. */
#define DEFINE_Q8_AVX2(R, Q)                                                                           \
    __attribute__((noinline)) AVX2 static void q8a_##R##x##Q(const struct ops_q8_block *w, size_t ws, \
                                                             const struct ops_q8_block *x, size_t xs, \
                                                             int nb, float *s)                        \
    {                                                                                                \
        const __m256i ones = _mm256_set1_epi16(1);                                                   \
        __m256 acc[R][Q];                                                                            \
        UNROLL for (int r = 0; r < R; r++) UNROLL for (int q = 0; q < Q; q++) acc[r][q] =            \
            _mm256_setzero_ps();                                                                     \
        for (int k = 0; k < nb; k++) {                                                               \
            __m256i wv[Q];                                                                           \
            __m256 dw[Q];                                                                            \
            UNROLL for (int q = 0; q < Q; q++)                                                       \
            {                                                                                        \
                wv[q] = _mm256_loadu_si256((const __m256i *)w[(size_t)q * ws + k].q);                \
                dw[q] = _mm256_set1_ps(_cvtsh_ss(w[(size_t)q * ws + k].d));                          \
            }                                                                                        \
            UNROLL for (int r = 0; r < R; r++)                                                       \
            {                                                                                        \
                __m256i xv = _mm256_loadu_si256((const __m256i *)x[(size_t)r * xs + k].q);           \
                __m256i ax = _mm256_sign_epi8(xv, xv);                                               \
                __m256 dx = _mm256_set1_ps(_cvtsh_ss(x[(size_t)r * xs + k].d));                      \
                UNROLL for (int q = 0; q < Q; q++)                                                   \
                {                                                                                    \
                    __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(ax, _mm256_sign_epi8(wv[q], xv)), \
                                                  ones);                                             \
                    acc[r][q] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(dw[q], dx),     \
                                                acc[r][q]);                                          \
                }                                                                                    \
            }                                                                                        \
        }                                                                                            \
        UNROLL for (int r = 0; r < R; r++) UNROLL for (int q = 0; q < Q; q++) s[r * Q + q] =         \
            hsum8(acc[r][q]);                                                                        \
    }

DEFINE_Q8_AVX2(1, 1)
DEFINE_Q8_AVX2(1, 4)
DEFINE_Q8_AVX2(2, 4)

/* One row of x against half h (rows 8h .. 8h + 7) of a group of W grouped
 * (ops.h; nb <= OPS_Q8G_MAX_BLOCKS), pairs [p0, p1): per pair each row's
 * two blocks are two loads (whole lines when the matrix is 64-byte
 * aligned, as the engine's is), |x| times w with x's sign by
 * vpmaddubsw, pairs summed by vpmaddwd, then times d_w d_x (the pair's 16
 * scale products made by two converts and two multiplies, each broadcast
 * from the stack) into the row's 8 lanes. acc (8 rows x 8 lanes) carries
 * the sums from one range of pairs to the next, so a row is summed in the
 * same order however its pairs are cut. An odd last block's pair has a
 * zero upper half in W (and scale), and x's is not read. */
INL AVX2 void q8g_half_avx2(const unsigned char *gp, const struct ops_q8_block *x, int nb, int h, int p0, int p1,
                            float *acc_io)
{
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[8];
    UNROLL for (int r = 0; r < 8; r++) acc[r] = _mm256_load_ps(acc_io + r * 8);
    float sc[16] __attribute__((aligned(32)));
    for (int p = p0; p < p1; p++) {
        const unsigned char *b = gp + (size_t)p * OPS_Q8G_PAIR_BYTES;
        const struct ops_q8_block *xb = x + 2 * p;
        bool two = 2 * p + 1 < nb;
        __m256i x0 = _mm256_loadu_si256((const __m256i *)xb[0].q);
        __m256i x1 = two ? _mm256_loadu_si256((const __m256i *)xb[1].q) : _mm256_setzero_si256();
        __m256i a0 = _mm256_sign_epi8(x0, x0), a1 = _mm256_sign_epi8(x1, x1);
        uint32_t dd = (uint32_t)xb[0].d | (uint32_t)(two ? xb[1].d : 0) << 16;
        __m256 dxp = _mm256_cvtph_ps(_mm_set1_epi32((int)dd));   /* d_x of the pair's blocks, alternating */
        const unsigned char *sl = b + OPS_Q8G_ROWS * 64 + (size_t)h * 32;
        _mm256_store_ps(sc, _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)sl)), dxp));
        _mm256_store_ps(sc + 8, _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sl + 16))), dxp));
        UNROLL for (int r = 0; r < 8; r++)
        {
            const unsigned char *wr = b + (size_t)(8 * h + r) * 64;
            __m256i q0 = _mm256_madd_epi16(
                _mm256_maddubs_epi16(a0, _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)wr), x0)), ones);
            __m256i q1 = _mm256_madd_epi16(
                _mm256_maddubs_epi16(a1, _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)(wr + 32)), x1)), ones);
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q0), _mm256_broadcast_ss(sc + 2 * r), acc[r]);
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q1), _mm256_broadcast_ss(sc + 2 * r + 1), acc[r]);
        }
    }
    UNROLL for (int r = 0; r < 8; r++) _mm256_store_ps(acc_io + r * 8, acc[r]);
}

/* Pairs a group's rows take together before the other half's turn: 16
 * pairs (17 KiB: the whole group at I = 768) stay in L1 for the second
 * half of the rows. One-thread step products, three interleaved rounds:
 * best calls 4.6-4.8 ms at 16, 4.9-5.3 at 8, 5.2-5.4 at 4, 5.8-6.1 at 1;
 * 32 and 64 within 16's noise. */
#define Q8G_CHUNK 16

/* W grouped, any T: per group, per row of x, both halves of the group's 16
 * rows over the pairs in chunks of Q8G_CHUNK, then the 16 sums; one row's
 * arithmetic whatever T is (batched decode and prefill give each row the
 * bits it has alone). The group (13 KiB at I = 768) stays in L1 or L2 for
 * the rows after the first. Rows of the first and last group outside
 * [o0, o1) are computed and not stored. */
static AVX2 void matmul_q8_groups_avx2(float *y, const struct ops_q8_block *X, const unsigned char *W,
                                       const float *bias, int T, int nb, int O, int o0, int o1, bool accumulate)
{
    int np = (nb + 1) / 2;
    size_t gbytes = (size_t)np * OPS_Q8G_PAIR_BYTES;
    float acc[16 * 8] __attribute__((aligned(32)));
    for (int g = o0 / OPS_Q8G_ROWS; g * OPS_Q8G_ROWS < o1; g++) {
        const unsigned char *gp = W + (size_t)g * gbytes;
        for (int t = 0; t < T; t++) {
            const struct ops_q8_block *x = X + (size_t)t * nb;
            memset(acc, 0, sizeof acc);
            for (int p0 = 0; p0 < np; p0 += Q8G_CHUNK) {
                int p1 = p0 + Q8G_CHUNK < np ? p0 + Q8G_CHUNK : np;
                q8g_half_avx2(gp, x, nb, 0, p0, p1, acc);
                q8g_half_avx2(gp, x, nb, 1, p0, p1, acc + 64);
            }
            for (int r = 0; r < 16; r++) {
                int o = g * OPS_Q8G_ROWS + r;
                if (o >= o0 && o < o1)
                    ops_store1(y + (size_t)t * O, o, hsum8(_mm256_load_ps(acc + r * 8)), bias, accumulate);
            }
        }
    }
}

void ops_matmul_q8_avx2(float *y, const void *xq, const void *wq, const float *bias, int T, int I, int O, int o0,
                        int o1, bool accumulate)
{
    int nb = (I + OPS_Q8_BLOCK - 1) / OPS_Q8_BLOCK;
    if (nb <= OPS_Q8G_MAX_BLOCKS) {   /* W grouped (ops_q8_pack_rows) */
        matmul_q8_groups_avx2(y, xq, wq, bias, T, nb, O, o0, o1, accumulate);
        return;
    }
    static const q8_tile_fn t[] = {NULL, q8a_1x4, q8a_2x4};
    matmul_q8_tiles(t, q8a_1x1, 2, y, xq, wq, bias, T, I, O, o0, o1, accumulate);
}

/* VNNI: the same tile with vpdpbusd on (w + 128) and x, started at -128 * sum(x). */
#define DEFINE_Q8_VNNI(R, Q)                                                                           \
    __attribute__((noinline)) VNNI static void q8v_##R##x##Q(const struct ops_q8_block *w, size_t ws, \
                                                             const struct ops_q8_block *x, size_t xs, \
                                                             int nb, float *s)                        \
    {                                                                                                \
        const __m256i b128 = _mm256_set1_epi8((char)0x80);                                           \
        __m256 acc[R][Q];                                                                            \
        UNROLL for (int r = 0; r < R; r++) UNROLL for (int q = 0; q < Q; q++) acc[r][q] =            \
            _mm256_setzero_ps();                                                                     \
        for (int k = 0; k < nb; k++) {                                                               \
            __m256i wu[Q];                                                                           \
            __m256 dw[Q];                                                                            \
            UNROLL for (int q = 0; q < Q; q++)                                                       \
            {                                                                                        \
                wu[q] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)w[(size_t)q * ws + k].q), b128); \
                dw[q] = _mm256_set1_ps(_cvtsh_ss(w[(size_t)q * ws + k].d));                          \
            }                                                                                        \
            UNROLL for (int r = 0; r < R; r++)                                                       \
            {                                                                                        \
                __m256i xv = _mm256_loadu_si256((const __m256i *)x[(size_t)r * xs + k].q);           \
                __m256i c = _mm256_sub_epi32(_mm256_setzero_si256(),                                 \
                                             _mm256_dpbusd_epi32(_mm256_setzero_si256(), b128, xv)); \
                __m256 dx = _mm256_set1_ps(_cvtsh_ss(x[(size_t)r * xs + k].d));                      \
                UNROLL for (int q = 0; q < Q; q++)                                                   \
                {                                                                                    \
                    __m256i p = _mm256_dpbusd_epi32(c, wu[q], xv);                                   \
                    acc[r][q] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(dw[q], dx),     \
                                                acc[r][q]);                                          \
                }                                                                                    \
            }                                                                                        \
        }                                                                                            \
        UNROLL for (int r = 0; r < R; r++) UNROLL for (int q = 0; q < Q; q++) s[r * Q + q] =         \
            hsum8(acc[r][q]);                                                                        \
    }

DEFINE_Q8_VNNI(1, 1)
DEFINE_Q8_VNNI(1, 4)
DEFINE_Q8_VNNI(2, 4)
DEFINE_Q8_VNNI(3, 4)
DEFINE_Q8_VNNI(4, 4)

/* One row of x (decode at batch 1) of 4,097-8,192 inputs, plain Q8_0 rows
 * (narrower rows are grouped: matvec_q8_groups below): the matrix-vector
 * product streams each
 * row of W once, two blocks per 512-bit vector, 4 rows of W at a time, with
 * a software prefetch PF bytes ahead in every row (2 KiB: 1.3-2x the
 * single-thread throughput of no prefetch on the development machine, where
 * 0.5 and 1 KiB were in between and 4-8 KiB no better). What depends on x alone
 * is made once per call, not per tile: each block pair of x in one vector,
 * its -128 * sum(x) start and its scale broadcast over the pair's lanes. */
#define MV_MAX_PAIRS 128   /* I up to 8192; wider rows take the tiles */
#ifndef PF
#define PF 2048
#endif

/* w's two block scales (F16), each over 8 lanes, as F32. */
INL VNNI __m512 scales2(const struct ops_q8_block *w)
{
    return _mm512_cvtph_ps(_mm256_set_m128i(_mm_set1_epi16((short)w[1].d), _mm_set1_epi16((short)w[0].d)));
}

INL VNNI __m512i load2(const struct ops_q8_block *w)
{
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)w[0].q)),
                              _mm256_loadu_si256((const __m256i *)w[1].q), 1);
}

/* Q rows of W from w (stride ws blocks) against the prepared x: s[q]. */
INL VNNI void mv_rows(const struct ops_q8_block *w, size_t ws, const __m512i *xz, const __m512i *cz,
                        const __m512 *dz, int np, int Q, float *s)
{
    const __m512i b128 = _mm512_set1_epi8((char)0x80);
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int p = 0; p < np; p++) {
        UNROLL for (int q = 0; q < Q; q++)
        {
            const struct ops_q8_block *r = w + (size_t)q * ws + 2 * (size_t)p;
            _mm_prefetch((const char *)r + PF, _MM_HINT_T0);
            __m512i wu = _mm512_xor_si512(load2(r), b128);
            __m512i d = _mm512_dpbusd_epi32(cz[p], wu, xz[p]);
            acc[q] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_mul_ps(scales2(r), dz[p]), acc[q]);
        }
    }
    UNROLL for (int q = 0; q < Q; q++) s[q] = _mm512_reduce_add_ps(acc[q]);
}

static VNNI void matvec_q8_vnni(float *y, const struct ops_q8_block *x, const struct ops_q8_block *W,
                                  const float *bias, int nb, int o0, int o1, bool accumulate)
{
    __m512i xz[MV_MAX_PAIRS], cz[MV_MAX_PAIRS];
    __m512 dz[MV_MAX_PAIRS];
    const __m512i b128 = _mm512_set1_epi8((char)0x80);
    int np = (nb + 1) / 2;
    struct ops_q8_block pad[2];
    for (int p = 0; p < np; p++) {
        const struct ops_q8_block *xb = x + 2 * p;
        if (2 * p + 1 == nb) {    /* odd count: the last pair's upper block is zero */
            memset(pad, 0, sizeof pad);
            pad[0] = x[2 * p];
            xb = pad;
        }
        xz[p] = load2(xb);
        cz[p] = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), b128, xz[p]));
        dz[p] = scales2(xb);
    }
    size_t rs = (size_t)nb;
    float s[4];
    int o = o0;
    if (nb % 2 == 0)
        for (; o + 4 <= o1; o += 4) {
            mv_rows(W + (size_t)o * rs, rs, xz, cz, dz, np, 4, s);
            for (int q = 0; q < 4; q++)
                ops_store1(y, o + q, s[q], bias, accumulate);
        }
    for (; o < o1; o++) {
        if (nb % 2 == 0)
            mv_rows(W + (size_t)o * rs, rs, xz, cz, dz, np, 1, s);
        else {    /* the row's last block alone: its pair would read past the row */
            mv_rows(W + (size_t)o * rs, rs, xz, cz, dz, np - 1, 1, s);
            q8v_1x1(W + (size_t)o * rs + nb - 1, rs, x + nb - 1, rs, 1, s + 1);
            s[0] += s[1];
        }
        ops_store1(y, o, s[0], bias, accumulate);
    }
}

/* One row of x against W grouped (ops.h; nb <= OPS_Q8G_MAX_BLOCKS): per
 * group all 16 rows, per block pair one run of 17 cache lines read in
 * order (the 16 rows' 64 bytes, aligned loads, then their 32 scales), so a
 * task streams one sequential run where 4 rows of 34-byte blocks were 4
 * strided streams of split loads; the scales by one load and convert per
 * 8 rows, times x's (alternating lanes) by one multiply, then a permute per
 * row where each row's pair took 2 loads, an insert and a convert. The
 * prefetch runs MVG_PF bytes ahead of the stream (2 KiB, ~2 pairs: on one
 * thread with the memory bus shared, 1.5-3 KiB streamed a step 3-5%
 * faster than the 4-row path, 4 and 8 KiB 2-5% slower than 2 KiB; a
 * quieter minute put 2, 4 and 8 KiB within each other's noise). Per row
 * the same lanes, products and order as mv_rows for an even nb (the same
 * bits); an odd last block is the lower half of a pair whose upper half is
 * zero, summed in its lanes. Outputs outside [o0, o1) of the first and
 * last group are computed and not stored. */
#ifndef MVG_PF
#define MVG_PF 2048
#endif
static VNNI void matvec_q8_groups(float *y, const struct ops_q8_block *x, const unsigned char *W,
                                  const float *bias, int nb, int o0, int o1, bool accumulate)
{
    __m512i xz[MV_MAX_PAIRS / 2], cz[MV_MAX_PAIRS / 2];
    __m512 dz[MV_MAX_PAIRS / 2];
    const __m512i b128 = _mm512_set1_epi8((char)0x80);
    int np = (nb + 1) / 2;
    struct ops_q8_block pad[2];
    for (int p = 0; p < np; p++) {
        const struct ops_q8_block *xb = x + 2 * p;
        if (2 * p + 1 == nb) {
            memset(pad, 0, sizeof pad);
            pad[0] = x[2 * p];
            xb = pad;
        }
        xz[p] = load2(xb);
        cz[p] = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), b128, xz[p]));
        /* d_x of the pair's two blocks alternating, as the scale line holds d_w */
        dz[p] = _mm512_cvtph_ps(_mm256_set1_epi32((int)((uint32_t)xb[0].d | (uint32_t)xb[1].d << 16)));
    }
    size_t gbytes = (size_t)np * OPS_Q8G_PAIR_BYTES;
    for (int g = o0 / OPS_Q8G_ROWS; g * OPS_Q8G_ROWS < o1; g++) {
        const unsigned char *gp = W + (size_t)g * gbytes;
        __m512 acc[16];
        UNROLL for (int r = 0; r < 16; r++) acc[r] = _mm512_setzero_ps();
        for (int p = 0; p < np; p++) {
            const unsigned char *b = gp + (size_t)p * OPS_Q8G_PAIR_BYTES;
            __m512 s0 = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(b + 1024))), dz[p]);
            __m512 s1 = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(b + 1056))), dz[p]);
            _Pragma("GCC unroll 16") for (int r = 0; r < 16; r++) {
                _mm_prefetch((const char *)b + MVG_PF + r * 64, _MM_HINT_T0);
                __m512i wu = _mm512_xor_si512(_mm512_loadu_si512(b + r * 64), b128);
                __m512i d = _mm512_dpbusd_epi32(cz[p], wu, xz[p]);
                int i = 2 * (r % 8);
                __m512 sc = _mm512_permutexvar_ps(_mm512_set_epi32(i + 1, i + 1, i + 1, i + 1, i + 1, i + 1, i + 1,
                                                                   i + 1, i, i, i, i, i, i, i, i),
                                                  r < 8 ? s0 : s1);
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), sc, acc[r]);
            }
            _mm_prefetch((const char *)b + MVG_PF + 1024, _MM_HINT_T0);
        }
        UNROLL for (int r = 0; r < 16; r++) {
            int o = g * OPS_Q8G_ROWS + r;
            if (o >= o0 && o < o1)
                ops_store1(y, o, _mm512_reduce_add_ps(acc[r]), bias, accumulate);
        }
    }
}

/* Several rows of x (batched decode, prefill): the matrix-vector path's
 * arithmetic, in tiles of R <= 4 rows of x by 4 rows of W (16 zmm
 * accumulators), two blocks per 512-bit vector. x's block pairs, their
 * -128 * sum(x) starts and scales are made once per call and chunk of 4
 * rows (prep_x), not once per tile; each row of W is loaded and offset once
 * per pair for the tile's rows. A row's sum is the same expression in the
 * same order as in matvec_q8_vnni (the odd last block included, summed apart
 * as there), so its result does not depend on how many rows come with it,
 * one included. */
struct q8_xprep {
    __m512i xz[MV_MAX_PAIRS], cz[MV_MAX_PAIRS];
    __m512 dz[MV_MAX_PAIRS];
};

/* x's row (nb blocks) into p: its full pairs, and an odd last block's pair
 * with a zero upper block. */
static VNNI void prep_x(struct q8_xprep *p, const struct ops_q8_block *x, int nb)
{
    const __m512i b128 = _mm512_set1_epi8((char)0x80);
    struct ops_q8_block pad[2];
    for (int k = 0; 2 * k < nb; k++) {
        const struct ops_q8_block *xb = x + 2 * k;
        if (2 * k + 1 == nb) {
            memset(pad, 0, sizeof pad);
            pad[0] = x[2 * k];
            xb = pad;
        }
        p->xz[k] = load2(xb);
        p->cz[k] = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), b128, p->xz[k]));
        p->dz[k] = scales2(xb);
    }
}

/* R rows of x (px, their quantized rows x, stride xs blocks) by Q = 4 rows
 * of W (w, stride ws): s[r * 4 + q]. */
INL VNNI void mm_tile(const struct ops_q8_block *w, size_t ws, const struct q8_xprep *px,
                      const struct ops_q8_block *x, size_t xs, int nb, int R, float *s)
{
    const __m512i b128 = _mm512_set1_epi8((char)0x80);
    __m512 acc[4][4];
    UNROLL for (int r = 0; r < 4; r++) UNROLL for (int q = 0; q < 4; q++) acc[r][q] = _mm512_setzero_ps();
    int np = nb / 2;
    for (int p = 0; p < np; p++) {
        __m512i wu[4];
        __m512 dw[4];
        UNROLL for (int q = 0; q < 4; q++)
        {
            const struct ops_q8_block *b = w + (size_t)q * ws + 2 * (size_t)p;
            wu[q] = _mm512_xor_si512(load2(b), b128);
            dw[q] = scales2(b);
        }
        UNROLL for (int r = 0; r < 4; r++)
        {
            if (r >= R)
                break;
            __m512i xz = px[r].xz[p], cz = px[r].cz[p];
            __m512 dz = px[r].dz[p];
            UNROLL for (int q = 0; q < 4; q++)
            {
                __m512i d = _mm512_dpbusd_epi32(cz, wu[q], xz);
                acc[r][q] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_mul_ps(dw[q], dz), acc[r][q]);
            }
        }
    }
    UNROLL for (int r = 0; r < 4; r++)
    {
        if (r >= R)
            break;
        UNROLL for (int q = 0; q < 4; q++) s[r * 4 + q] = _mm512_reduce_add_ps(acc[r][q]);
    }
    if (nb % 2) {    /* the last block alone, as matvec_q8_vnni does it */
        float t[4 * 4];
        UNROLL for (int r = 0; r < 4; r++)
        {
            if (r >= R)
                break;
            q8v_1x4(w + nb - 1, ws, x + (size_t)r * xs + nb - 1, xs, 1, t + r * 4);
        }
        for (int i = 0; i < R * 4; i++)
            s[i] += t[i];
    }
}

__attribute__((noinline)) static VNNI void mm_tile1(const struct ops_q8_block *w, size_t ws,
                                                    const struct q8_xprep *px, const struct ops_q8_block *x,
                                                    size_t xs, int nb, float *s)
{
    mm_tile(w, ws, px, x, xs, nb, 1, s);
}
__attribute__((noinline)) static VNNI void mm_tile2(const struct ops_q8_block *w, size_t ws,
                                                    const struct q8_xprep *px, const struct ops_q8_block *x,
                                                    size_t xs, int nb, float *s)
{
    mm_tile(w, ws, px, x, xs, nb, 2, s);
}
__attribute__((noinline)) static VNNI void mm_tile3(const struct ops_q8_block *w, size_t ws,
                                                    const struct q8_xprep *px, const struct ops_q8_block *x,
                                                    size_t xs, int nb, float *s)
{
    mm_tile(w, ws, px, x, xs, nb, 3, s);
}
__attribute__((noinline)) static VNNI void mm_tile4(const struct ops_q8_block *w, size_t ws,
                                                    const struct q8_xprep *px, const struct ops_q8_block *x,
                                                    size_t xs, int nb, float *s)
{
    mm_tile(w, ws, px, x, xs, nb, 4, s);
}

__attribute__((noinline)) static VNNI void
matmul_q8_vnni_rows(float *y, const struct ops_q8_block *X, const struct ops_q8_block *W,
                    const float *bias, int T, int nb, int O, int o0, int o1, bool accumulate)
{
    typedef void (*tile_fn)(const struct ops_q8_block *, size_t, const struct q8_xprep *,
                            const struct ops_q8_block *, size_t, int, float *);
    static const tile_fn tiles[] = {NULL, mm_tile1, mm_tile2, mm_tile3, mm_tile4};
    struct q8_xprep px[4];
    size_t rs = (size_t)nb;
    float s[4 * 4];
    for (int tc = 0; tc < T; tc += 4) {
        int R = T - tc < 4 ? T - tc : 4;
        for (int r = 0; r < R; r++)
            prep_x(&px[r], X + (size_t)(tc + r) * rs, nb);
        int o = o0;
        for (; o + 4 <= o1; o += 4) {
            tiles[R](W + (size_t)o * rs, rs, px, X + (size_t)tc * rs, rs, nb, s);
            for (int r = 0; r < R; r++)
                for (int q = 0; q < 4; q++)
                    ops_store1(y + (size_t)(tc + r) * O, o + q, s[r * 4 + q], bias, accumulate);
        }
        for (; o < o1; o++)    /* the last 1-3 outputs: the one-row path's own code, row by row */
            for (int r = 0; r < R; r++)
                matvec_q8_vnni(y + (size_t)(tc + r) * O, X + (size_t)(tc + r) * rs, W, bias, nb, o, o + 1,
                               accumulate);
    }
}

/* Several rows with outputs across the lanes (2+ rows, I <= 4096): per
 * group of 16 outputs, W's group is turned once per call and chunk of
 * 32 rows of x into a panel: for block k and each 4 inputs g, the
 * 16 outputs' 4 weights (offset by 128, u8) in one vector, then the 16
 * scales as F32. The micro-kernel holds R <= 8 rows of x by those 16
 * outputs: per block, 8 vpdpbusd (4 bytes of x broadcast from its block)
 * into an accumulator started at x's -128 * block sum, then one convert, one
 * multiply by both scales, one FMA, 11 instructions per 16 x 32
 * multiply-adds where the tile above takes about 26 (and no horizontal sums).
 * Each output is one lane summed in block order, so a row's result does not
 * depend on the other rows of the call (the one-row path sums otherwise: a
 * row alone may differ in the last bits). */
#define PN_MAX_BLOCKS 128   /* the panel (74 KiB) and x's sums (32 KiB) live on the stack: noinline below
                               keeps them out of the callers' frames */
#define PN_ROWS 32
struct q8_panel {
    __m512i w[PN_MAX_BLOCKS][8];
    __m512 d[PN_MAX_BLOCKS];
};

/* Group g of W (grouped, ops.h) into the panel. Per block the 16 rows'
 * 32 bytes, rows i and i + 8 in one vector (aligned loads from the pair's
 * lines), are transposed as 8 x 8 dwords in each half (24 shuffles); the
 * 16 scales are the even or odd words of the pair's scale line (no
 * gather). */
static VNNI void panel_make(struct q8_panel *pn, const unsigned char *gp, int nb)
{
    const __m512i b128 = _mm512_set1_epi8((char)0x80);
    const __m512i lo = _mm512_set_epi64(13, 12, 5, 4, 9, 8, 1, 0), hi = _mm512_set_epi64(15, 14, 7, 6, 11, 10, 3, 2);
    /* the next group (contiguous) into L1, a share per block, so that its
     * stream from memory overlaps this panel and its tiles. Past the
     * matrix a prefetch is a no-op. */
    size_t gbytes = (size_t)((nb + 1) / 2) * OPS_Q8G_PAIR_BYTES;
    const char *next = (const char *)gp + gbytes;
    const size_t share = OPS_Q8G_PAIR_BYTES / 2;
    for (int k = 0; k < nb; k++) {
        const unsigned char *b = gp + (size_t)(k / 2) * OPS_Q8G_PAIR_BYTES + (k % 2) * 32;
        __m512i r[8], t[8], u[8];
        for (size_t c = 0; c < share; c += 64)
            _mm_prefetch(next + (size_t)k * share + c, _MM_HINT_T0);
        for (int i = 0; i < 8; i++)
            r[i] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(b + i * 64))),
                                      _mm256_loadu_si256((const __m256i *)(b + (i + 8) * 64)), 1);
        for (int i = 0; i < 8; i += 2) {
            t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
            t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
        }
        for (int i = 0; i < 8; i += 4) {
            u[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);       /* g0 | g4 */
            u[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);   /* g1 | g5 */
            u[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);   /* g2 | g6 */
            u[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);   /* g3 | g7 */
        }
        for (int g = 0; g < 4; g++) {
            pn->w[k][g] = _mm512_xor_si512(_mm512_permutex2var_epi64(u[g], lo, u[g + 4]), b128);
            pn->w[k][g + 4] = _mm512_xor_si512(_mm512_permutex2var_epi64(u[g], hi, u[g + 4]), b128);
        }
        pn->d[k] = ops_q8g_scales(gp, k);
    }
}

/* x's per-block starts (-128 * sum) and scales for rows t0 .. t0 + R - 1. */
struct q8_xs {
    int32_t c[PN_ROWS][PN_MAX_BLOCKS];
    float d[PN_ROWS][PN_MAX_BLOCKS];
};

static VNNI void xs_make(struct q8_xs *xs, const struct ops_q8_block *X, size_t rs, int nb, int R)
{
    const __m256i b128 = _mm256_set1_epi8((char)0x80);
    for (int r = 0; r < R; r++)
        for (int k = 0; k < nb; k++) {
            const struct ops_q8_block *b = X + (size_t)r * rs + k;
            __m256i s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), b128,
                                            _mm256_loadu_si256((const __m256i *)b->q));
            __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
            h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xb1));
            xs->c[r][k] = -_mm_cvtsi128_si32(h);
            xs->d[r][k] = _cvtsh_ss(b->d);
        }
}

INL VNNI void pn_tile(const struct q8_panel *pn, const struct q8_xs *xs, int r0, const struct ops_q8_block *X,
                      size_t rs, int nb, int R, __m512 *out)
{
    __m512 acc[8];
    UNROLL for (int r = 0; r < 8; r++) acc[r] = _mm512_setzero_ps();
    for (int k = 0; k < nb; k++) {
        __m512i a[8];
        UNROLL for (int r = 0; r < 8; r++) if (r < R) a[r] = _mm512_set1_epi32(xs->c[r0 + r][k]);
        UNROLL for (int g = 0; g < 8; g++)
        {
            __m512i w = pn->w[k][g];
            UNROLL for (int r = 0; r < 8; r++)
            {
                if (r < R) {
                    int32_t xv;
                    memcpy(&xv, X[(size_t)r * rs + k].q + 4 * g, sizeof xv);
                    a[r] = _mm512_dpbusd_epi32(a[r], w, _mm512_set1_epi32(xv));
                }
            }
        }
        __m512 dw = pn->d[k];
        UNROLL for (int r = 0; r < 8; r++) if (r < R) acc[r] = _mm512_fmadd_ps(
            _mm512_cvtepi32_ps(a[r]), _mm512_mul_ps(dw, _mm512_set1_ps(xs->d[r0 + r][k])), acc[r]);
    }
    UNROLL for (int r = 0; r < 8; r++) if (r < R) out[r] = acc[r];
}

#define DEFINE_PN_TILE(R)                                                                              \
    __attribute__((noinline)) static VNNI void pn_tile##R(const struct q8_panel *pn, const struct q8_xs *xs, \
                                                          int r0, const struct ops_q8_block *X, size_t rs,  \
                                                          int nb, __m512 *out)                              \
    {                                                                                                  \
        pn_tile(pn, xs, r0, X, rs, nb, R, out);                                                        \
    }
DEFINE_PN_TILE(1)
DEFINE_PN_TILE(2)
DEFINE_PN_TILE(3)
DEFINE_PN_TILE(4)
DEFINE_PN_TILE(5)
DEFINE_PN_TILE(6)
DEFINE_PN_TILE(7)
DEFINE_PN_TILE(8)

__attribute__((noinline)) static VNNI void
matmul_q8_vnni_panel(float *y, const struct ops_q8_block *X, const unsigned char *W,
                     const float *bias, int T, int nb, int O, int o0, int o1, bool accumulate)
{
    typedef void (*tile_fn)(const struct q8_panel *, const struct q8_xs *, int, const struct ops_q8_block *,
                            size_t, int, __m512 *);
    static const tile_fn tiles[] = {NULL, pn_tile1, pn_tile2, pn_tile3, pn_tile4,
                                    pn_tile5, pn_tile6, pn_tile7, pn_tile8};
    struct q8_panel pn;
    struct q8_xs xs;
    size_t rs = (size_t)nb, gbytes = (size_t)((nb + 1) / 2) * OPS_Q8G_PAIR_BYTES;
    __m512 out[8];
    for (int tc = 0; tc < T; tc += PN_ROWS) {
        int te = tc + PN_ROWS < T ? tc + PN_ROWS : T;
        xs_make(&xs, X + (size_t)tc * rs, rs, nb, te - tc);
        for (int g = o0 / OPS_Q8G_ROWS; g * OPS_Q8G_ROWS < o1; g++) {
            int o = g * OPS_Q8G_ROWS;
            __mmask16 m = ops_q8g_mask(o, o0, o1);
            panel_make(&pn, W + (size_t)g * gbytes, nb);
            __m512 b = bias ? _mm512_maskz_loadu_ps(m, bias + o) : _mm512_setzero_ps();
            for (int t = tc; t < te;) {
                int R = te - t < 8 ? te - t : 8;
                tiles[R](&pn, &xs, t - tc, X + (size_t)t * rs, rs, nb, out);
                for (int r = 0; r < R; r++) {
                    float *yo = y + (size_t)(t + r) * O + o;
                    __m512 v = accumulate ? _mm512_add_ps(_mm512_maskz_loadu_ps(m, yo), b) : b;
                    _mm512_mask_storeu_ps(yo, m, _mm512_add_ps(v, out[r]));   /* as ops_store1 */
                }
                t += R;
            }
        }
    }
}

void ops_matmul_q8_vnni(float *y, const void *xq, const void *wq, const float *bias, int T, int I, int O, int o0,
                        int o1, bool accumulate)
{
    int nb = (I + OPS_Q8_BLOCK - 1) / OPS_Q8_BLOCK;
    if (nb <= OPS_Q8G_MAX_BLOCKS) {   /* W grouped (ops_q8_pack_rows) */
        if (T == 1)
            matvec_q8_groups(y, xq, wq, bias, nb, o0, o1, accumulate);
        else
            matmul_q8_vnni_panel(y, xq, wq, bias, T, nb, O, o0, o1, accumulate);
        return;
    }
    if (T == 1 && nb <= 2 * MV_MAX_PAIRS) {
        matvec_q8_vnni(y, xq, wq, bias, nb, o0, o1, accumulate);
        return;
    }
    if (nb <= 2 * MV_MAX_PAIRS) {
        matmul_q8_vnni_rows(y, xq, wq, bias, T, nb, O, o0, o1, accumulate);
        return;
    }
    static const q8_tile_fn t[] = {NULL, q8v_1x4, q8v_2x4, q8v_3x4, q8v_4x4};
    matmul_q8_tiles(t, q8v_1x1, 4, y, xq, wq, bias, T, I, O, o0, o1, accumulate);
}
#else
static bool q8_quantize_avx2(struct ops_q8_block *b, const float *x, int nfull)
{
    (void)b;
    (void)x;
    (void)nfull;
    return false;
}
#endif /* OPS_HAVE_X86 */
