/* ops.c -- the CPU backend's numeric kernels and their dispatch: the portable C reference and the AVX2+FMA+F16C set here, the AVX-512 products in ops_avx512.c, int8 in ops_q8.c; the best level the CPU has chosen once at load. */
#include "ops_int.h"
#include "exp_poly.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#ifdef OPS_HAVE_X86
#include <cpuid.h>
#include <immintrin.h>
#ifdef __linux__
#include <sys/syscall.h>
#include <unistd.h>
#endif
#endif

/* ------------------------------------------------------------------ portable C */

static float load_w(const void *w, enum ckpt_dtype t, size_t i)
{
    switch (t) {
    case CKPT_F16: return ckpt_f16_to_f32(((const uint16_t *)w)[i]);
    case CKPT_BF16: return ckpt_bf16_to_f32(((const uint16_t *)w)[i]);
    case CKPT_F32: break;
    }
    return ((const float *)w)[i];
}

static void matmul_portable(float *y, const float *x, const void *w, enum ckpt_dtype wt, const float *bias,
                            int T, int I, int O, int o0, int o1, bool accumulate)
{
    float wrow[4096];
    for (int o = o0; o < o1; o++) {
        const float *wf = NULL;
        if (wt == CKPT_F32) {
            wf = (const float *)w + (size_t)o * I;
        } else if (I <= 4096) {
            ops_to_f32(wrow, (const uint16_t *)w + (size_t)o * I, wt, (size_t)I);
            wf = wrow;
        }
        for (int t = 0; t < T; t++) {
            const float *xr = x + (size_t)t * I;
            float s = 0.0f;
            if (wf) {
                for (int i = 0; i < I; i++)
                    s += xr[i] * wf[i];
            } else {
                for (int i = 0; i < I; i++)
                    s += xr[i] * load_w(w, wt, (size_t)o * I + i);
            }
            float *dst = y + (size_t)t * O + o;
            *dst = (accumulate ? *dst : 0.0f) + (bias ? bias[o] : 0.0f) + s;
        }
    }
}

static void layernorm_portable(float *y, const float *x, const float *g, const float *b, int n, float eps)
{
    float mean = 0.0f;
    for (int i = 0; i < n; i++)
        mean += x[i];
    mean /= (float)n;
    float var = 0.0f;
    for (int i = 0; i < n; i++) {
        float d = x[i] - mean;
        var += d * d;
    }
    var /= (float)n;
    float rstd = 1.0f / sqrtf(var + eps);
    for (int i = 0; i < n; i++)
        y[i] = (x[i] - mean) * rstd * g[i] + b[i];
}

static float act1(float v, enum ops_act act)
{
    switch (act) {
    case OPS_GELU_TANH: {
        const float k = 0.7978845608028654f; /* sqrt(2/pi) */
        return 0.5f * v * (1.0f + tanhf(k * (v + 0.044715f * v * v * v)));
    }
    case OPS_GELU_ERF: return 0.5f * v * (1.0f + erff(v * 0.7071067811865476f));
    case OPS_RELU: return v > 0.0f ? v : 0.0f;
    case OPS_QUICK_GELU: return v / (1.0f + expf(-1.702f * v));
    }
    return v;
}

void ops_activate_scalar(float *x, int n, enum ops_act act)
{
    for (int i = 0; i < n; i++)
        x[i] = act1(x[i], act);
}

static float dot_portable(const float *a, const float *b, int n)
{
    float s = 0.0f;
    for (int i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

static void axpy_portable(float *y, float a, const float *x, int n)
{
    for (int i = 0; i < n; i++)
        y[i] += a * x[i];
}

static void softmax_portable(float *x, int n)
{
    float mx = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > mx)
            mx = x[i];
    float s = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        s += x[i];
    }
    float inv = 1.0f / s;
    for (int i = 0; i < n; i++)
        x[i] *= inv;
}

void ops_to_f32(float *dst, const void *src, enum ckpt_dtype t, size_t n)
{
    if (t == CKPT_F32) {
        memcpy(dst, src, n * sizeof(float));
        return;
    }
    for (size_t i = 0; i < n; i++)
        dst[i] = load_w(src, t, i);
}

int ops_t_chunk(int I, int tile)
{
    int c = (int)(96 * 1024 / ((size_t)I * sizeof(float)));
    c = c / tile * tile;
    return c < tile ? tile : c;
}

/* ------------------------------------------------------------------ AVX2 + FMA */
#ifdef OPS_HAVE_X86
#define AVX2 __attribute__((target("avx2,fma,f16c")))

AVX2 static inline __m256 load8_f32(const void *w, size_t i)
{
    return _mm256_loadu_ps((const float *)w + i);
}
AVX2 static inline __m256 load8_f16(const void *w, size_t i)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i)));
}
/* bf16 is the top half of an f32: widen to 32 bits and shift into place. */
AVX2 static inline __m256 load8_bf16(const void *w, size_t i)
{
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* The four sums of a0..a3 in one vector: {sum a0, sum a1, sum a2, sum a3}. */
AVX2 static inline __m128 hsum4(__m256 a0, __m256 a1, __m256 a2, __m256 a3)
{
    __m256 s01 = _mm256_hadd_ps(a0, a1);       /* a0 pairs, a1 pairs, per 128-bit lane */
    __m256 s23 = _mm256_hadd_ps(a2, a3);
    __m256 s = _mm256_hadd_ps(s01, s23);       /* per lane: a0 a1 a2 a3 partial sums */
    return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

AVX2 static inline float hsum1(__m256 a)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Stores four outputs o..o+3 of row t: y = (acc ? y : 0) + bias + s. */
AVX2 static inline void store4(float *y, __m128 s, const float *bias, int o, bool accumulate)
{
    if (bias)
        s = _mm_add_ps(s, _mm_loadu_ps(bias + o));
    if (accumulate)
        s = _mm_add_ps(s, _mm_loadu_ps(y + o));
    _mm_storeu_ps(y + o, s);
}


/* The register tiles, one set per weight type. A tile computes the dot
 * products of 4 rows of W (w, w+I, w+2I, w+3I) with R rows of x (stride I)
 * into s[r] = {4 sums}: R x 4 accumulators of 8 lanes, each W vector loaded
 * (and widened) once for the R rows. The tiles are separate functions so the
 * compiler keeps their few pointers in registers (inlined into the driver it
 * spilled them and reloaded them every iteration). I8 = I rounded down to 8;
 * the driver adds the tail. */
#define DEFINE_TILES_AVX2(SUF, LOAD8, ELEM)                                                        \
    __attribute__((noinline)) AVX2 static void tile3_##SUF(const void *wp, const float *x, size_t I, \
                                                           size_t I8, __m128 *s)                 \
    {                                                                                              \
        const ELEM *w = (const ELEM *)wp, *w1 = w + I, *w2 = w1 + I, *w3 = w2 + I;                 \
        const float *x1 = x + I, *x2 = x1 + I;                                                     \
        __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a10 = a00, a11 = a00, a12 = a00;   \
        __m256 a20 = a00, a21 = a00, a22 = a00, a30 = a00, a31 = a00, a32 = a00;                   \
        for (size_t i = 0; i < I8; i += 8) {                                                       \
            __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x1 + i);                      \
            __m256 v2 = _mm256_loadu_ps(x2 + i);                                                   \
            __m256 wv = LOAD8(w, i);                                                               \
            a00 = _mm256_fmadd_ps(wv, v0, a00);                                                    \
            a01 = _mm256_fmadd_ps(wv, v1, a01);                                                    \
            a02 = _mm256_fmadd_ps(wv, v2, a02);                                                    \
            wv = LOAD8(w1, i);                                                                     \
            a10 = _mm256_fmadd_ps(wv, v0, a10);                                                    \
            a11 = _mm256_fmadd_ps(wv, v1, a11);                                                    \
            a12 = _mm256_fmadd_ps(wv, v2, a12);                                                    \
            wv = LOAD8(w2, i);                                                                     \
            a20 = _mm256_fmadd_ps(wv, v0, a20);                                                    \
            a21 = _mm256_fmadd_ps(wv, v1, a21);                                                    \
            a22 = _mm256_fmadd_ps(wv, v2, a22);                                                    \
            wv = LOAD8(w3, i);                                                                     \
            a30 = _mm256_fmadd_ps(wv, v0, a30);                                                    \
            a31 = _mm256_fmadd_ps(wv, v1, a31);                                                    \
            a32 = _mm256_fmadd_ps(wv, v2, a32);                                                    \
        }                                                                                          \
        s[0] = hsum4(a00, a10, a20, a30);                                                          \
        s[1] = hsum4(a01, a11, a21, a31);                                                          \
        s[2] = hsum4(a02, a12, a22, a32);                                                          \
    }                                                                                              \
    __attribute__((noinline)) AVX2 static void tile2_##SUF(const void *wp, const float *x, size_t I, \
                                                           size_t I8, __m128 *s)                 \
    {                                                                                              \
        const ELEM *w = (const ELEM *)wp, *w1 = w + I, *w2 = w1 + I, *w3 = w2 + I;                 \
        const float *x1 = x + I;                                                                   \
        __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00;                         \
        __m256 a20 = a00, a21 = a00, a30 = a00, a31 = a00;                                         \
        for (size_t i = 0; i < I8; i += 8) {                                                       \
            __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x1 + i);                      \
            __m256 wv = LOAD8(w, i);                                                               \
            a00 = _mm256_fmadd_ps(wv, v0, a00);                                                    \
            a01 = _mm256_fmadd_ps(wv, v1, a01);                                                    \
            wv = LOAD8(w1, i);                                                                     \
            a10 = _mm256_fmadd_ps(wv, v0, a10);                                                    \
            a11 = _mm256_fmadd_ps(wv, v1, a11);                                                    \
            wv = LOAD8(w2, i);                                                                     \
            a20 = _mm256_fmadd_ps(wv, v0, a20);                                                    \
            a21 = _mm256_fmadd_ps(wv, v1, a21);                                                    \
            wv = LOAD8(w3, i);                                                                     \
            a30 = _mm256_fmadd_ps(wv, v0, a30);                                                    \
            a31 = _mm256_fmadd_ps(wv, v1, a31);                                                    \
        }                                                                                          \
        s[0] = hsum4(a00, a10, a20, a30);                                                          \
        s[1] = hsum4(a01, a11, a21, a31);                                                          \
    }                                                                                              \
    /* One row of x: two accumulators per row of W, so 8 independent chains. */                  \
    __attribute__((noinline)) AVX2 static void tile1_##SUF(const void *wp, const float *x, size_t I, \
                                                           size_t I8, __m128 *s)                 \
    {                                                                                              \
        const ELEM *w = (const ELEM *)wp, *w1 = w + I, *w2 = w1 + I, *w3 = w2 + I;                 \
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0;     \
        __m256 b3 = a0;                                                                            \
        size_t i = 0;                                                                              \
        for (; i + 16 <= I8; i += 16) {                                                            \
            __m256 v0 = _mm256_loadu_ps(x + i), u0 = _mm256_loadu_ps(x + i + 8);                   \
            a0 = _mm256_fmadd_ps(LOAD8(w, i), v0, a0);                                             \
            a1 = _mm256_fmadd_ps(LOAD8(w1, i), v0, a1);                                            \
            a2 = _mm256_fmadd_ps(LOAD8(w2, i), v0, a2);                                            \
            a3 = _mm256_fmadd_ps(LOAD8(w3, i), v0, a3);                                            \
            b0 = _mm256_fmadd_ps(LOAD8(w, i + 8), u0, b0);                                         \
            b1 = _mm256_fmadd_ps(LOAD8(w1, i + 8), u0, b1);                                        \
            b2 = _mm256_fmadd_ps(LOAD8(w2, i + 8), u0, b2);                                        \
            b3 = _mm256_fmadd_ps(LOAD8(w3, i + 8), u0, b3);                                        \
        }                                                                                          \
        for (; i < I8; i += 8) {                                                                   \
            __m256 v0 = _mm256_loadu_ps(x + i);                                                    \
            a0 = _mm256_fmadd_ps(LOAD8(w, i), v0, a0);                                             \
            a1 = _mm256_fmadd_ps(LOAD8(w1, i), v0, a1);                                            \
            a2 = _mm256_fmadd_ps(LOAD8(w2, i), v0, a2);                                            \
            a3 = _mm256_fmadd_ps(LOAD8(w3, i), v0, a3);                                            \
        }                                                                                          \
        s[0] = hsum4(_mm256_add_ps(a0, b0), _mm256_add_ps(a1, b1), _mm256_add_ps(a2, b2),          \
                     _mm256_add_ps(a3, b3));                                                       \
    }                                                                                              \
    __attribute__((noinline)) AVX2 static float dot1_##SUF(const void *wp, const float *x, size_t I8) \
    {                                                                                              \
        const ELEM *w = (const ELEM *)wp;                                                          \
        __m256 a0 = _mm256_setzero_ps();                                                           \
        for (size_t i = 0; i < I8; i += 8)                                                         \
            a0 = _mm256_fmadd_ps(LOAD8(w, i), _mm256_loadu_ps(x + i), a0);                         \
        return hsum1(a0);                                                                          \
    }

typedef uint16_t f16_t;
typedef uint16_t bf16_t;
DEFINE_TILES_AVX2(f32, load8_f32, float)
DEFINE_TILES_AVX2(f16, load8_f16, f16_t)
DEFINE_TILES_AVX2(bf16, load8_bf16, bf16_t)

typedef void (*tile_fn)(const void *w, const float *x, size_t I, size_t I8, __m128 *s);
typedef float (*dot1_fn)(const void *w, const float *x, size_t I8);

/* The driver: blocks of x rows that stay in L2, 4 outputs at a time, rows of
 * x in tiles of 3 (then 2 or 1), the I % 8 tail in scalar code, then bias,
 * accumulate and store. */
AVX2 static void matmul_avx2(float *y, const float *x, const void *w, enum ckpt_dtype wt, const float *bias,
                             int T, int I, int O, int o0, int o1, bool accumulate)
{
    tile_fn tiles[4];
    dot1_fn dot1;
    switch (wt) {
    case CKPT_F16:
        tiles[1] = tile1_f16, tiles[2] = tile2_f16, tiles[3] = tile3_f16;
        dot1 = dot1_f16;
        break;
    case CKPT_BF16:
        tiles[1] = tile1_bf16, tiles[2] = tile2_bf16, tiles[3] = tile3_bf16;
        dot1 = dot1_bf16;
        break;
    case CKPT_F32:
    default:
        tiles[1] = tile1_f32, tiles[2] = tile2_f32, tiles[3] = tile3_f32;
        dot1 = dot1_f32;
        break;
    }
    size_t es = ckpt_dtype_size(wt), I8 = (size_t)I & ~(size_t)7;
    int chunk = ops_t_chunk(I, 3);
    for (int tc = 0; tc < T; tc += chunk) {
        int te = tc + chunk < T ? tc + chunk : T;
        int o = o0;
        for (; o + 4 <= o1; o += 4) {
            const char *wo = (const char *)w + (size_t)o * I * es;
            for (int t = tc; t < te;) {
                int r = te - t >= 3 ? 3 : te - t;
                __m128 s[3];
                const float *xt = x + (size_t)t * I;
                tiles[r](wo, xt, (size_t)I, I8, s);
                for (int k = 0; k < r; k++) {
                    if (I8 < (size_t)I) {
                        float tail[4] = {0};
                        for (int q = 0; q < 4; q++)
                            for (int i = (int)I8; i < I; i++)
                                tail[q] += load_w(w, wt, (size_t)(o + q) * I + i) * xt[(size_t)k * I + i];
                        s[k] = _mm_add_ps(s[k], _mm_loadu_ps(tail));
                    }
                    store4(y + (size_t)(t + k) * O, s[k], bias, o, accumulate);
                }
                t += r;
            }
        }
        for (; o < o1; o++) { /* the last 1-3 outputs of the block */
            const char *wo = (const char *)w + (size_t)o * I * es;
            for (int t = tc; t < te; t++) {
                const float *xt = x + (size_t)t * I;
                float s = dot1(wo, xt, I8);
                for (int i = (int)I8; i < I; i++)
                    s += load_w(w, wt, (size_t)o * I + i) * xt[i];
                float *dst = y + (size_t)t * O + o;
                *dst = (accumulate ? *dst : 0.0f) + (bias ? bias[o] : 0.0f) + s;
            }
        }
    }
}


/* exp(x) for 8 floats, relative error ~1e-7 over the float range:
 * exp(x) = 2^n * exp(r), n = round(x / ln 2), r = x - n ln 2 (ln 2 split in two
 * parts so r is exact), exp(r) by a degree-6 polynomial on |r| <= ln2 / 2. */
AVX2 static inline __m256 exp8(__m256 x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.33654f)), _mm256_set1_ps(88.37626f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(EXP_LOG2E)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_C1), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_C2), r);
    __m256 p = _mm256_set1_ps(EXP_P0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P5));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    /* 2^n: n + 127 into the exponent field. n = 128 (x near 88.37) is split
     * in two halves so the scale does not overflow the field. */
    __m256 h = _mm256_mul_ps(n, _mm256_set1_ps(0.5f));
    __m256 n1 = _mm256_floor_ps(h), n2 = _mm256_sub_ps(n, n1);
    __m256i e1 = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n1), _mm256_set1_epi32(127)), 23);
    __m256i e2 = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n2), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e1)), _mm256_castsi256_ps(e2));
}

/* tanh(u) = sign(u) (1 - 2 / (exp(2|u|) + 1)) */
AVX2 static inline __m256 tanh8(__m256 u)
{
    __m256 sign = _mm256_and_ps(u, _mm256_set1_ps(-0.0f));
    __m256 a = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), u);
    __m256 e = exp8(_mm256_mul_ps(a, _mm256_set1_ps(2.0f)));
    __m256 t = _mm256_sub_ps(_mm256_set1_ps(1.0f),
                             _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, _mm256_set1_ps(1.0f))));
    return _mm256_or_ps(t, sign);
}

AVX2 static void activate_avx2(float *x, int n, enum ops_act act)
{
    int i = 0;
    if (act == OPS_GELU_TANH) {
        const __m256 k = _mm256_set1_ps(0.7978845608028654f), c = _mm256_set1_ps(0.044715f);
        const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
        for (; i + 8 <= n; i += 8) {
            __m256 v = _mm256_loadu_ps(x + i);
            __m256 inner = _mm256_mul_ps(k, _mm256_fmadd_ps(_mm256_mul_ps(c, v), _mm256_mul_ps(v, v), v));
            __m256 g = _mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_add_ps(one, tanh8(inner)));
            _mm256_storeu_ps(x + i, g);
        }
    } else if (act == OPS_RELU) {
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(x + i, _mm256_max_ps(_mm256_loadu_ps(x + i), _mm256_setzero_ps()));
    }
    for (; i < n; i++)
        x[i] = act1(x[i], act);
}

AVX2 static float dot_avx2(const float *a, const float *b, int n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum1(_mm256_add_ps(s0, s1));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

AVX2 static void axpy_avx2(float *y, float a, const float *x, int n)
{
    __m256 av = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] += a * x[i];
}

/* The largest of x[0..n), as the scalar loop `if (x[i] > mx) mx = x[i]`
 * from mx = x[0] finds it, 8 lanes a pass: vmaxps returns its second
 * operand when either is a NaN, so with the lanes' maxima second a NaN
 * past x[0] is passed over and a NaN x[0] stays, as in the loop; equal
 * values (+0 and -0) may give the other zero, which exp(x - mx) does not
 * tell apart. The loop's compare and branch per score was ~1% of a
 * prefill. */
AVX2 static float max_avx2(const float *x, int n)
{
    __m256 m = _mm256_set1_ps(x[0]);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        m = _mm256_max_ps(_mm256_loadu_ps(x + i), m);
    __m128 t = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
    t = _mm_max_ps(_mm_movehl_ps(t, t), t);
    t = _mm_max_ss(_mm_movehdup_ps(t), t);
    float mx = _mm_cvtss_f32(t);
    for (; i < n; i++)
        if (x[i] > mx)
            mx = x[i];
    return mx;
}

AVX2 static void softmax_avx2(float *x, int n)
{
    float mx = max_avx2(x, n);
    __m256 m = _mm256_set1_ps(mx), s8 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), m));
        _mm256_storeu_ps(x + i, e);
        s8 = _mm256_add_ps(s8, e);
    }
    float s = hsum1(s8);
    for (; i < n; i++) {
        x[i] = expf(x[i] - mx);
        s += x[i];
    }
    float inv = 1.0f / s;
    __m256 iv = _mm256_set1_ps(inv);
    for (i = 0; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), iv));
    for (; i < n; i++)
        x[i] *= inv;
}

/* The four sums of a0..a3, each in hsum1's order, so a key's score is the
 * same whether it shares a block of 4 or sits in the tail. */
AVX2 static inline __m128 hsum4_as1(__m256 a0, __m256 a1, __m256 a2, __m256 a3)
{
    __m128 t0 = _mm_add_ps(_mm256_castps256_ps128(a0), _mm256_extractf128_ps(a0, 1));
    __m128 t1 = _mm_add_ps(_mm256_castps256_ps128(a1), _mm256_extractf128_ps(a1, 1));
    __m128 t2 = _mm_add_ps(_mm256_castps256_ps128(a2), _mm256_extractf128_ps(a2, 1));
    __m128 t3 = _mm_add_ps(_mm256_castps256_ps128(a3), _mm256_extractf128_ps(a3, 1));
    __m128 u = _mm_add_ps(_mm_unpacklo_ps(t0, t1), _mm_unpackhi_ps(t0, t1));   /* t0 (0+2, 1+3), t1 the same */
    __m128 v = _mm_add_ps(_mm_unpacklo_ps(t2, t3), _mm_unpackhi_ps(t2, t3));
    return _mm_add_ps(_mm_movelh_ps(u, v), _mm_movehl_ps(v, u));
}

/* Eight K or V values from i on, F32 or F16 (widened by vcvtph2ps). */
AVX2 static inline __m256 kv8(const void *p, size_t i, int half)
{
    return half ? load8_f16(p, i) : load8_f32(p, i);
}
static inline float kv1(const void *p, size_t i, int half)
{
    return half ? ckpt_f16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

/* s[j] = scale q . K_j over a block of keys (F32 or F16): per key one 8-lane
 * chain in input order, hsum1's order across the lanes, a scalar tail past
 * d % 8. Keys 8 at a time where d is a multiple of 8: 8 independent chains
 * keep both FMA ports busy (4 chains of 4-cycle FMAs filled half of them,
 * and prefill spent 7% of its time here), then 4, then 1; the same sums
 * for a key whichever group it falls in. */
AVX2 static inline __attribute__((always_inline)) void scores_t2(float *s, const float *q, const void *k, size_t stride,
                                                                int n, int d, float scale, int half)
{
    int d8 = d & ~7, j = 0;
    for (; d8 == d && j + 8 <= n; j += 8) {
        size_t k0 = (size_t)j * stride;
        __m256 a[8];
        _Pragma("GCC unroll 8") for (int c = 0; c < 8; c++)
            a[c] = _mm256_setzero_ps();
        for (int i = 0; i < d; i += 8) {
            __m256 qv = _mm256_loadu_ps(q + i);
            _Pragma("GCC unroll 8") for (int c = 0; c < 8; c++)
                a[c] = _mm256_fmadd_ps(qv, kv8(k, k0 + (size_t)c * stride + i, half), a[c]);
        }
        __m256 sc = _mm256_set1_ps(scale);
        __m256 t = _mm256_set_m128(hsum4_as1(a[4], a[5], a[6], a[7]), hsum4_as1(a[0], a[1], a[2], a[3]));
        _mm256_storeu_ps(s + j, _mm256_mul_ps(t, sc));
    }
    for (; j + 4 <= n; j += 4) {
        size_t k0 = (size_t)j * stride;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int i = 0; i < d8; i += 8) {
            __m256 qv = _mm256_loadu_ps(q + i);
            a0 = _mm256_fmadd_ps(qv, kv8(k, k0 + i, half), a0);
            a1 = _mm256_fmadd_ps(qv, kv8(k, k0 + stride + i, half), a1);
            a2 = _mm256_fmadd_ps(qv, kv8(k, k0 + 2 * stride + i, half), a2);
            a3 = _mm256_fmadd_ps(qv, kv8(k, k0 + 3 * stride + i, half), a3);
        }
        float t[4];
        _mm_storeu_ps(t, hsum4_as1(a0, a1, a2, a3));
        for (int c = 0; c < 4; c++) {
            for (int i = d8; i < d; i++)
                t[c] += q[i] * kv1(k, k0 + (size_t)c * stride + i, half);
            s[j + c] = t[c] * scale;
        }
    }
    for (; j < n; j++) {
        size_t k0 = (size_t)j * stride;
        __m256 a = _mm256_setzero_ps();
        for (int i = 0; i < d8; i += 8)
            a = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), kv8(k, k0 + i, half), a);
        float t = hsum1(a);
        for (int i = d8; i < d; i++)
            t += q[i] * kv1(k, k0 + i, half);
        s[j] = t * scale;
    }
}

/* scores_t2 for 4 queries (q + r x ldq, into s + r x lds) over the same
 * keys, d a multiple of 8: keys 2 at a time, 8 chains (4 queries x 2
 * keys), each K vector loaded (and widened) once for the 4 queries. Each
 * score is the same chain in input order and hsum1's order across the
 * lanes as scores_t2's, so bit-identical to that query scored alone.
 * An odd last key goes to scores_t2 per query. */
AVX2 static inline __attribute__((always_inline)) void scores_q4_t2(float *s, size_t lds, const float *q, size_t ldq,
                                                                   const void *k, size_t stride, int n, int d,
                                                                   float scale, int half)
{
    int j = 0;
    for (; j + 2 <= n; j += 2) {
        size_t k0 = (size_t)j * stride, k1 = k0 + stride;
        __m256 a[4][2];
        _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++)
            a[r][0] = a[r][1] = _mm256_setzero_ps();
        for (int i = 0; i < d; i += 8) {
            __m256 kv0 = kv8(k, k0 + i, half), kv1 = kv8(k, k1 + i, half);
            _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++) {
                __m256 qv = _mm256_loadu_ps(q + (size_t)r * ldq + i);
                a[r][0] = _mm256_fmadd_ps(qv, kv0, a[r][0]);
                a[r][1] = _mm256_fmadd_ps(qv, kv1, a[r][1]);
            }
        }
        __m128 sc = _mm_set1_ps(scale);
        /* {q0 k0, q0 k1, q1 k0, q1 k1} and the same for q2, q3 */
        __m128 t01 = _mm_mul_ps(hsum4_as1(a[0][0], a[0][1], a[1][0], a[1][1]), sc);
        __m128 t23 = _mm_mul_ps(hsum4_as1(a[2][0], a[2][1], a[3][0], a[3][1]), sc);
        _mm_storel_pi((__m64 *)(s + j), t01);
        _mm_storeh_pi((__m64 *)(s + lds + j), t01);
        _mm_storel_pi((__m64 *)(s + 2 * lds + j), t23);
        _mm_storeh_pi((__m64 *)(s + 3 * lds + j), t23);
    }
    size_t es = half ? sizeof(uint16_t) : sizeof(float);
    if (j < n)
        for (int r = 0; r < 4; r++)
            scores_t2(s + (size_t)r * lds + j, q + (size_t)r * ldq, (const char *)k + (size_t)j * stride * es,
                      stride, 1, d, scale, half);
}

/* nq queries: groups of 4 through the tile, the rest (and any d not a
 * multiple of 8) one query at a time. */
AVX2 static inline __attribute__((always_inline)) void scores_q_t2(float *s, size_t lds, const float *q, size_t ldq,
                                                                  int nq, const void *k, size_t stride, int n, int d,
                                                                  float scale, int half)
{
    int r = 0;
    for (; d % 8 == 0 && r + 4 <= nq; r += 4)
        scores_q4_t2(s + (size_t)r * lds, lds, q + (size_t)r * ldq, ldq, k, stride, n, d, scale, half);
    for (; r < nq; r++)
        scores_t2(s + (size_t)r * lds, q + (size_t)r * ldq, k, stride, n, d, scale, half);
}

/* out[r][0..d) += sum_j a[r][j] V_j for nq queries: per 64 values, the
 * query's outputs stay in 8 registers across every key (each element
 * summed over the keys in order, as one axpy per key would). */
AVX2 static inline void mix_t2(float *out, size_t ldo, const float *a, size_t lda, int nq, const void *v,
                               size_t stride, int n, int d, int half)
{
    int d8 = d & ~7;
    for (int r = 0; r < nq; r++) {
        float *o = out + (size_t)r * ldo;
        const float *ar = a + (size_t)r * lda;
        int i0 = 0;
        for (; i0 + 64 <= d8; i0 += 64) {
            __m256 acc[8];
            _Pragma("GCC unroll 8") for (int x = 0; x < 8; x++)
                acc[x] = _mm256_loadu_ps(o + i0 + x * 8);
            for (int j = 0; j < n; j++) {
                __m256 av = _mm256_set1_ps(ar[j]);
                size_t vj = (size_t)j * stride + (size_t)i0;
                _Pragma("GCC unroll 8") for (int x = 0; x < 8; x++)
                    acc[x] = _mm256_fmadd_ps(av, kv8(v, vj + (size_t)x * 8, half), acc[x]);
            }
            _Pragma("GCC unroll 8") for (int x = 0; x < 8; x++)
                _mm256_storeu_ps(o + i0 + x * 8, acc[x]);
        }
        for (; i0 < d8; i0 += 8) {
            __m256 acc = _mm256_loadu_ps(o + i0);
            for (int j = 0; j < n; j++)
                acc = _mm256_fmadd_ps(_mm256_set1_ps(ar[j]), kv8(v, (size_t)j * stride + (size_t)i0, half), acc);
            _mm256_storeu_ps(o + i0, acc);
        }
        for (int i = d8; i < d; i++)
            for (int j = 0; j < n; j++)
                o[i] += ar[j] * kv1(v, (size_t)j * stride + (size_t)i, half);
    }
}

AVX2 static void scores_avx2(float *s, const float *q, const float *k, size_t stride, int n, int d, float scale)
{
    scores_t2(s, q, k, stride, n, d, scale, 0);
}
AVX2 static void scores_f16_avx2(float *s, const float *q, const uint16_t *k, size_t stride, int n, int d, float scale)
{
    scores_t2(s, q, k, stride, n, d, scale, 1);
}
AVX2 static void scores_q_avx2(float *s, size_t lds, const float *q, size_t ldq, int nq, const float *k, size_t stride,
                               int n, int d, float scale)
{
    scores_q_t2(s, lds, q, ldq, nq, k, stride, n, d, scale, 0);
}
AVX2 static void scores_q_f16_avx2(float *s, size_t lds, const float *q, size_t ldq, int nq, const uint16_t *k,
                                   size_t stride, int n, int d, float scale)
{
    scores_q_t2(s, lds, q, ldq, nq, k, stride, n, d, scale, 1);
}
AVX2 static void mix_avx2(float *out, size_t ldo, const float *a, size_t lda, int nq, const float *v, size_t stride,
                          int n, int d)
{
    mix_t2(out, ldo, a, lda, nq, v, stride, n, d, 0);
}
AVX2 static void mix_f16_avx2(float *out, size_t ldo, const float *a, size_t lda, int nq, const uint16_t *v,
                              size_t stride, int n, int d)
{
    mix_t2(out, ldo, a, lda, nq, v, stride, n, d, 1);
}
/* The portable one's passes (the mean, the mean square of x - mean, the
 * output), 8 lanes summed apart and reduced in hsum1's order, the n % 8 tail added
 * after; ops_layernorm_avx512's rule with 8 lanes. The portable loop's
 * sums are one serial chain of adds: 1.8% of a prefill's time. */
AVX2 static void layernorm_avx2(float *y, const float *x, const float *g, const float *b, int n, float eps)
{
    int n8 = n & ~7;
    __m256 s = _mm256_setzero_ps();
    for (int i = 0; i < n8; i += 8)
        s = _mm256_add_ps(s, _mm256_loadu_ps(x + i));
    float sum = hsum1(s);
    for (int i = n8; i < n; i++)
        sum += x[i];
    float mean = sum / (float)n;
    __m256 mv = _mm256_set1_ps(mean), v = _mm256_setzero_ps();
    for (int i = 0; i < n8; i += 8) {
        __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + i), mv);
        v = _mm256_fmadd_ps(d, d, v);
    }
    float var = hsum1(v);
    for (int i = n8; i < n; i++)
        var += (x[i] - mean) * (x[i] - mean);
    var /= (float)n;
    float rstd = 1.0f / sqrtf(var + eps);
    __m256 rv = _mm256_set1_ps(rstd);
    for (int i = 0; i < n8; i += 8) {
        __m256 d = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv), rv);
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(d, _mm256_loadu_ps(g + i), _mm256_loadu_ps(b + i)));
    }
    for (int i = n8; i < n; i++)
        y[i] = (x[i] - mean) * rstd * g[i] + b[i];
}

/* ops_to_f16 8 values a pass by vcvtps2ph (F16C), rounding to nearest
 * even as ckpt_f32_to_f16 does; a pass holding a NaN, and the n % 8 tail,
 * go through ckpt_f32_to_f16 (vcvtps2ph would quiet a signalling NaN's
 * payload). The rule of ops_to_f16_avx512; the scalar loop it replaces was
 * 1.6% of an F16 model's prefill (its K and V rows). */
AVX2 static void to_f16_avx2(uint16_t *dst, const float *x, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        if (_mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q))) {
            for (size_t j = i; j < i + 8; j++)
                dst[j] = ckpt_f32_to_f16(x[j]);
            continue;
        }
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    for (; i < n; i++)
        dst[i] = ckpt_f32_to_f16(x[i]);
}
#endif /* OPS_HAVE_X86 */

/* ------------------------------------------------------------------ dispatch */

static void scores_generic(float *s, const float *q, const float *k, size_t stride, int n, int d, float scale);
static void scores_q_generic(float *s, size_t lds, const float *q, size_t ldq, int nq, const float *k, size_t stride,
                             int n, int d, float scale);
static void scores_q_f16_generic(float *s, size_t lds, const float *q, size_t ldq, int nq, const uint16_t *k,
                                 size_t stride, int n, int d, float scale);
static void mix_generic(float *out, size_t ldo, const float *a, size_t lda, int nq, const float *v, size_t stride,
                        int n, int d);

/* The new K and V rows into the F16 cache, the reference. */
static void to_f16_portable(uint16_t *dst, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = ckpt_f32_to_f16(x[i]);
}

/* The F16 KV cache's attention, the reference: one float sum per key in
 * order, each value widened as it is read. */
static void scores_f16_portable(float *s, const float *q, const uint16_t *k, size_t stride, int n, int d, float scale)
{
    for (int j = 0; j < n; j++) {
        const uint16_t *kj = k + (size_t)j * stride;
        float t = 0.0f;
        for (int i = 0; i < d; i++)
            t += q[i] * ckpt_f16_to_f32(kj[i]);
        s[j] = t * scale;
    }
}

static void mix_f16_portable(float *out, size_t ldo, const float *a, size_t lda, int nq, const uint16_t *v,
                             size_t stride, int n, int d)
{
    for (int r = 0; r < nq; r++)
        for (int j = 0; j < n; j++) {
            const uint16_t *vj = v + (size_t)j * stride;
            float aj = a[(size_t)r * lda + j], *o = out + (size_t)r * ldo;
            for (int i = 0; i < d; i++)
                o[i] += aj * ckpt_f16_to_f32(vj[i]);
        }
}

static const struct ops_kernels k_portable = {"portable",          matmul_portable,  ops_matmul_q8_portable,
                                              ops_matmul_packed_portable, ops_matmul_packed_portable, false,
                                              ops_activate_scalar,
                                              dot_portable,        axpy_portable,    softmax_portable,
                                              scores_generic,      mix_generic,
                                              scores_f16_portable, mix_f16_portable, layernorm_portable,
                                              to_f16_portable,     scores_q_generic, scores_q_f16_generic};
static struct ops_kernels K = {"portable",         matmul_portable,   ops_matmul_q8_portable,
                               ops_matmul_packed_portable, ops_matmul_packed_portable, false,
                               ops_activate_scalar,
                               dot_portable,       axpy_portable,     softmax_portable,
                               scores_generic,     mix_generic,
                               scores_f16_portable, mix_f16_portable, layernorm_portable,
                               to_f16_portable,    scores_q_generic, scores_q_f16_generic};

/* Attention over a block of keys by the level's dot and axpy, one call per key. */
static void scores_generic(float *s, const float *q, const float *k, size_t stride, int n, int d, float scale)
{
    for (int j = 0; j < n; j++)
        s[j] = K.dot(q, k + (size_t)j * stride, d) * scale;
}

/* nq queries by the level's scores, one query at a time. */
static void scores_q_generic(float *s, size_t lds, const float *q, size_t ldq, int nq, const float *k, size_t stride,
                             int n, int d, float scale)
{
    for (int i = 0; i < nq; i++)
        K.scores(s + (size_t)i * lds, q + (size_t)i * ldq, k, stride, n, d, scale);
}

static void scores_q_f16_generic(float *s, size_t lds, const float *q, size_t ldq, int nq, const uint16_t *k,
                                 size_t stride, int n, int d, float scale)
{
    for (int i = 0; i < nq; i++)
        K.scores_f16(s + (size_t)i * lds, q + (size_t)i * ldq, k, stride, n, d, scale);
}

static void mix_generic(float *out, size_t ldo, const float *a, size_t lda, int nq, const float *v, size_t stride,
                        int n, int d)
{
    for (int i = 0; i < nq; i++)
        for (int j = 0; j < n; j++)
            K.axpy(out + (size_t)i * ldo, a[(size_t)i * lda + j], v + (size_t)j * stride, d);
}
static char k_name[64] = "portable";
static enum ops_level k_level = OPS_PORTABLE;
static bool k_done;

static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;

#ifdef OPS_HAVE_X86
/* The OS saves the AVX-512 state (XCR0 bits 1, 2 and 5-7) and the AVX one (1, 2). */
static unsigned long long xcr0(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27)))   /* OSXSAVE */
        return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

/* AMX: CPUID leaf 7 EDX bit 22 AMX-BF16, 24 AMX-TILE, 25 AMX-INT8; the OS
 * saves the tile state (XCR0 bits 17 and 18) and, on Linux, grants this
 * process the tile data (XFEATURE 18) when asked (arch_prctl
 * ARCH_REQ_XCOMP_PERM; without it the first tile instruction is a SIGILL).
 * Asked once; the answer holds for every thread of the process. */
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
static bool amx_usable(unsigned edx7, unsigned long long x)
{
    if (!(edx7 & (1u << 22)) || !(edx7 & (1u << 24)) || !(edx7 & (1u << 25)) || (x & 0x60000) != 0x60000)
        return false;
#if defined(__linux__) && defined(OPS_HAVE_AMX)
    static int granted = -1;    /* under init_lock */
    if (granted < 0)
        granted = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
    return granted == 1;
#else
    return false;
#endif
}

/* CPUID leaf 7: EBX bit 16 AVX512F, 17 DQ, 30 BW, 31 VL; ECX bit 11 VNNI;
 * subleaf 1 EAX bit 5 AVX512_BF16. Leaf 1 ECX bit 29: F16C. */
static void cpu_features(bool *avx2, bool *avx512, bool *vnni, bool *bf16, bool *amx)
{
    unsigned a, b, c, d;
    unsigned long long x = xcr0();
    bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29)) && (c & (1u << 12));   /* F16C, FMA */
    bool os_avx = (x & 0x6) == 0x6, os_avx512 = (x & 0xe6) == 0xe6;
    *avx2 = *avx512 = *vnni = *bf16 = *amx = false;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return;
    unsigned edx7 = d;
    *avx2 = os_avx && f16c && (b & (1u << 5));
    *avx512 = *avx2 && os_avx512 && (b & (1u << 16)) && (b & (1u << 17)) && (b & (1u << 30)) && (b & (1u << 31));
    *vnni = *avx512 && (c & (1u << 11));
    unsigned max_sub = a;
    if (*avx512 && max_sub >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d))
        *bf16 = (a & (1u << 5)) != 0;
    *amx = *bf16 && *vnni && amx_usable(edx7, x);
}
#endif

/* ops_cpu_level with init_lock held (the AMX permission is asked once). */
static enum ops_level cpu_level_locked(void)
{
#ifdef OPS_HAVE_X86
    bool avx2, avx512, vnni, bf16, amx;
    cpu_features(&avx2, &avx512, &vnni, &bf16, &amx);
    return amx ? OPS_AMX : bf16 ? OPS_AVX512_BF16 : avx512 ? OPS_AVX512 : avx2 ? OPS_AVX2 : OPS_PORTABLE;
#else
    return OPS_PORTABLE;
#endif
}

enum ops_level ops_cpu_level(void)
{
    pthread_mutex_lock(&init_lock);
    enum ops_level lv = cpu_level_locked();
    pthread_mutex_unlock(&init_lock);
    return lv;
}

enum ops_level ops_init(enum ops_level cap)
{
    pthread_mutex_lock(&init_lock);
    enum ops_level want = cpu_level_locked();
    if (cap < want)
        want = cap;
    if (k_done && want == k_level) {
        pthread_mutex_unlock(&init_lock);
        return want;
    }
    struct ops_kernels k = k_portable;
    strcpy(k_name, "portable");
#ifdef OPS_HAVE_X86
    bool avx2, avx512, vnni, bf16, amx;
    cpu_features(&avx2, &avx512, &vnni, &bf16, &amx);
    if (want >= OPS_AVX2) {
        k.matmul = matmul_avx2;
        k.matmul_q8 = ops_matmul_q8_avx2;
        k.matmul_packed = k.matmul_packed_tp = ops_matmul_packed_avx2;
        k.packed = true;
        k.activate = activate_avx2;
        k.dot = dot_avx2;
        k.axpy = axpy_avx2;
        k.softmax = softmax_avx2;
        k.scores = scores_avx2;
        k.mix = mix_avx2;
        k.scores_f16 = scores_f16_avx2;
        k.mix_f16 = mix_f16_avx2;
        k.scores_q = scores_q_avx2;
        k.scores_q_f16 = scores_q_f16_avx2;
        k.to_f16 = to_f16_avx2;
        k.layernorm = layernorm_avx2;
        strcpy(k_name, "avx2+fma+f16c");
    }
    if (want >= OPS_AVX512) {
        k.matmul = ops_matmul_avx512;
        k.matmul_packed = k.matmul_packed_tp = ops_matmul_packed_avx512;
        k.packed = true;
        k.scores = ops_scores_avx512;
        k.mix = ops_mix_avx512;
        k.scores_f16 = ops_scores_f16_avx512;
        k.scores_q = scores_q_generic;          /* its scores' own bits, a query at a time */
        k.scores_q_f16 = scores_q_f16_generic;
        k.mix_f16 = ops_mix_f16_avx512;
        k.activate = ops_activate_avx512;
        k.softmax = ops_softmax_avx512;
        k.layernorm = ops_layernorm_avx512;
        k.to_f16 = ops_to_f16_avx512;
        if (vnni)
            k.matmul_q8 = ops_matmul_q8_vnni;
        snprintf(k_name, sizeof k_name, "avx512f+bw+vl%s", vnni ? "+vnni" : "");
    }
    if (want >= OPS_AVX512_BF16) {
        k.matmul = ops_matmul_avx512_bf16;
        strcat(k_name, "+bf16");
    }
#ifdef OPS_HAVE_AMX
    if (want >= OPS_AMX) {
        /* Tile products: ops_amx.c (BF16 weights; F16 too for
         * OPS_THROUGHPUT: faster at many rows, slower at one,
         * doc/cpu-kernels.md "F16 on the AMX tiles"), ops_q8_amx.c (Q8_0).
         * Both packed kernels are fixed here; the caller passes one tuning
         * per model to every product, so every row count takes the same.
         * LLMCGI_F32_TILES=1 (a measuring switch, "+f32tiles") takes F32 to
         * the tiles too under throughput: measured no faster at batch 32
         * and a third slower at batch 1 here (doc/cpu-kernels.md "F32 on
         * the AMX tiles"), so it is off. */
        const char *f32t = getenv("LLMCGI_F32_TILES");
        bool f32_tiles = f32t && !strcmp(f32t, "1");
        k.matmul_packed = ops_matmul_packed_amx_bf16;
        k.matmul_packed_tp = f32_tiles ? ops_matmul_packed_amx_f32 : ops_matmul_packed_amx;
        k.matmul_q8 = ops_matmul_q8_amx;           /* 5+ rows on tiles, the VNNI bits */
        strcat(k_name, f32_tiles ? "+amx+f32tiles" : "+amx");
    }
#endif
#endif
    k.name = k_name;
    K = k;
    k_level = want;
    k_done = true;
    pthread_mutex_unlock(&init_lock);
    return want;
}

const char *ops_simd_name(void)
{
    return K.name;
}

void ops_matmul(float *y, const float *x, const void *w, enum ckpt_dtype wt, const float *bias,
                int T, int I, int O, int o0, int o1, bool accumulate)
{
    K.matmul(y, x, w, wt, bias, T, I, O, o0, o1, accumulate);
}

void ops_matmul_packed(float *y, const float *x, const void *wp, enum ckpt_dtype wt, const float *bias, int T, int I,
                       int O, int o0, int o1, bool accumulate, enum ops_tuning tuning)
{
    (tuning == OPS_THROUGHPUT ? K.matmul_packed_tp : K.matmul_packed)(y, x, wp, wt, bias, T, I, O, o0, o1, accumulate);
}

bool ops_tuning_matters(void)
{
    return K.matmul_packed != K.matmul_packed_tp;
}

bool ops_packed(void)
{
    return K.packed;
}

void ops_layernorm(float *y, const float *x, const float *g, const float *b, int n, float eps)
{
    K.layernorm(y, x, g, b, n, eps);
}

void ops_activate(float *x, int n, enum ops_act act)
{
    K.activate(x, n, act);
}

float ops_dot(const float *a, const float *b, int n)
{
    return K.dot(a, b, n);
}

void ops_axpy(float *y, float a, const float *x, int n)
{
    K.axpy(y, a, x, n);
}

void ops_scores(float *s, const float *q, const float *k, size_t stride, int n, int d, float scale)
{
    K.scores(s, q, k, stride, n, d, scale);
}

void ops_scores_q(float *s, size_t lds, const float *q, size_t ldq, int nq, const float *k, size_t stride, int n, int d,
                  float scale)
{
    K.scores_q(s, lds, q, ldq, nq, k, stride, n, d, scale);
}

void ops_scores_q_f16(float *s, size_t lds, const float *q, size_t ldq, int nq, const uint16_t *k, size_t stride, int n,
                      int d, float scale)
{
    K.scores_q_f16(s, lds, q, ldq, nq, k, stride, n, d, scale);
}

void ops_mix(float *out, size_t ldo, const float *a, size_t lda, int nq, const float *v, size_t stride, int n, int d)
{
    K.mix(out, ldo, a, lda, nq, v, stride, n, d);
}

void ops_scores_f16(float *s, const float *q, const uint16_t *k, size_t stride, int n, int d, float scale)
{
    K.scores_f16(s, q, k, stride, n, d, scale);
}

void ops_mix_f16(float *out, size_t ldo, const float *a, size_t lda, int nq, const uint16_t *v, size_t stride, int n,
                 int d)
{
    K.mix_f16(out, ldo, a, lda, nq, v, stride, n, d);
}

/* Asks for bytes [p, p + n) into the caches (L2 and out), one line at a time. */
static void prefetch_run(const void *p, size_t n)
{
    for (size_t o = 0; o < n; o += 64)
        __builtin_prefetch((const char *)p + o, 0, 2);
}

/* Head i's run in the block at p: i x hstride values on. */
static const void *head_run(const void *p, int i, size_t hstride, size_t es)
{
    return (const char *)p + (size_t)i * hstride * es;
}

void ops_attend1(float *out, float *s, const float *q, const void *const *k, const void *const *v, int n, int B, int d,
                 int nh, size_t hstride, float scale, bool half)
{
    int nb = (n + B - 1) / B;
    size_t es = half ? sizeof(uint16_t) : sizeof(float);
    for (int b = 0; b < nb; b++) {
        size_t rows = (size_t)(n - b * B < B ? n - b * B : B);
        prefetch_run(k[b], rows * (size_t)d * es);
        prefetch_run(v[b], rows * (size_t)d * es);
    }
    /* Head i's calls; the next head's block b is asked for right after the
     * current head's block b is done with, so its misses are in flight while
     * this head computes from L2 and only the first head waits for its own. */
    for (int i = 0; i < nh; i++) {
        const float *qi = q + (size_t)i * d;
        float *oi = out + (size_t)i * d;
        for (int b = 0; b < nb; b++) {
            int rows = n - b * B < B ? n - b * B : B;
            const void *kr = head_run(k[b], i, hstride, es);
            if (half)
                K.scores_f16(s + (size_t)b * B, qi, kr, (size_t)d, rows, d, scale);
            else
                K.scores(s + (size_t)b * B, qi, kr, (size_t)d, rows, d, scale);
            if (i + 1 < nh)
                prefetch_run(head_run(k[b], i + 1, hstride, es), (size_t)rows * d * es);
        }
        K.softmax(s, n);
        memset(oi, 0, (size_t)d * sizeof(float));
        for (int b = 0; b < nb; b++) {
            int rows = n - b * B < B ? n - b * B : B;
            const void *vr = head_run(v[b], i, hstride, es);
            if (half)
                K.mix_f16(oi, (size_t)d, s + (size_t)b * B, (size_t)n, 1, vr, (size_t)d, rows, d);
            else
                K.mix(oi, (size_t)d, s + (size_t)b * B, (size_t)n, 1, vr, (size_t)d, rows, d);
            if (i + 1 < nh)
                prefetch_run(head_run(v[b], i + 1, hstride, es), (size_t)rows * d * es);
        }
    }
}

void ops_to_f16(uint16_t *dst, const float *x, size_t n)
{
    K.to_f16(dst, x, n);
}

void ops_softmax(float *x, int n)
{
    K.softmax(x, n);
}

bool ops_q8_grouped(int I)
{
#ifdef OPS_HAVE_X86
    bool grouped = K.matmul_q8 == ops_matmul_q8_avx2 || K.matmul_q8 == ops_matmul_q8_vnni;
#ifdef OPS_HAVE_AMX
    grouped = grouped || K.matmul_q8 == ops_matmul_q8_amx;
#endif
    return grouped && (I + OPS_Q8_BLOCK - 1) / OPS_Q8_BLOCK <= OPS_Q8G_MAX_BLOCKS;
#else
    (void)I;
    return false;
#endif
}

size_t ops_q8_mat_bytes(int I, int O)
{
    return ops_q8_grouped(I) ? ops_q8g_bytes(I, O) : (size_t)O * ops_q8_row_bytes(I);
}

void ops_q8_pack_rows(void *dst, const void *src, int I, int O, int o0, int n)
{
    if (ops_q8_grouped(I))
        ops_q8g_pack_rows(dst, src, I, O, o0, n);
    else
        memcpy((char *)dst + (size_t)o0 * ops_q8_row_bytes(I), src, (size_t)n * ops_q8_row_bytes(I));
}

void ops_matmul_q8(float *y, const void *xq, const void *wq, const float *bias, int T, int I, int O, int o0, int o1,
                   bool accumulate)
{
    K.matmul_q8(y, xq, wq, bias, T, I, O, o0, o1, accumulate);
}

/* Whether this level's int8 products read a prepared x of their own (the tiles). */
static bool q8_amx(void)
{
#ifdef OPS_HAVE_AMX
    return K.matmul_q8 == ops_matmul_q8_amx;
#else
    return false;
#endif
}

size_t ops_q8_x_bytes(int T, int I)
{
#ifdef OPS_HAVE_AMX
    if (q8_amx())
        return ops_q8_amx_x_bytes(T, I);
#endif
    return (size_t)T * ops_q8_row_bytes(I);
}

int ops_q8_x_parts(int T, int I)
{
#ifdef OPS_HAVE_AMX
    if (q8_amx())
        return ops_q8_amx_x_parts(T, I);
#endif
    return T;
}

void ops_q8_prepare_x(void *dst, const float *x, int T, int I, int part)
{
#ifdef OPS_HAVE_AMX
    if (q8_amx()) {
        ops_q8_amx_prepare_x(dst, x, T, I, part);
        return;
    }
#endif
    ops_q8_quantize_row((char *)dst + (size_t)part * ops_q8_row_bytes(I), x + (size_t)part * I, I);
}

void ops_matmul_q8x(float *y, const void *xp, const void *wq, const float *bias, int T, int I, int O, int o0, int o1,
                    bool accumulate)
{
#ifdef OPS_HAVE_AMX
    if (q8_amx()) {
        ops_matmul_q8x_amx(y, xp, wq, bias, T, I, O, o0, o1, accumulate);
        return;
    }
#endif
    K.matmul_q8(y, xp, wq, bias, T, I, O, o0, o1, accumulate);
}
