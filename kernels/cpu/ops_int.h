/* ops_int.h -- what ops.c, ops_avx512.c, ops_q8.c, ops_gemm.c and ops_amx.c share: the kernel table one level fills, and helpers every level uses. Not for callers outside kernels/cpu/ops*.c. */
#ifndef LLMCGI_OPS_INT_H
#define LLMCGI_OPS_INT_H

#include "ops.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define OPS_HAVE_X86 1
/* The AMX intrinsics and target attributes: gcc 11+, clang 12+. A compiler
 * without them builds no tile kernels and never offers the OPS_AMX level. */
#if defined(__clang__) ? __clang_major__ >= 12 : __GNUC__ >= 11
#define OPS_HAVE_AMX 1
#endif
#endif

typedef void (*ops_matmul_fn)(float *y, const float *x, const void *w, enum ckpt_dtype wt, const float *bias, int T,
                              int I, int O, int o0, int o1, bool accumulate);
typedef void (*ops_matmul_q8_fn)(float *y, const void *xq, const void *wq, const float *bias, int T, int I, int O,
                                 int o0, int o1, bool accumulate);

/* One level's kernels; a level that has no better version of a kernel keeps
 * the one below it. */
struct ops_kernels {
    const char *name;
    ops_matmul_fn matmul;
    ops_matmul_q8_fn matmul_q8;
    ops_matmul_fn matmul_packed;   /* over ops_pack's layout, OPS_LATENCY */
    ops_matmul_fn matmul_packed_tp; /* the same, OPS_THROUGHPUT */
    bool packed;                   /* the engine should pack (matmul_packed is the fast path) */
    void (*activate)(float *, int, enum ops_act);
    float (*dot)(const float *, const float *, int);
    void (*axpy)(float *, float, const float *, int);
    void (*softmax)(float *, int);
    void (*scores)(float *, const float *, const float *, size_t, int, int, float);
    void (*mix)(float *, size_t, const float *, size_t, int, const float *, size_t, int, int);
    void (*scores_f16)(float *, const float *, const uint16_t *, size_t, int, int, float);
    void (*mix_f16)(float *, size_t, const float *, size_t, int, const uint16_t *, size_t, int, int);
    void (*layernorm)(float *, const float *, const float *, const float *, int, float);
    void (*to_f16)(uint16_t *, const float *, size_t);
    void (*scores_q)(float *, size_t, const float *, size_t, int, const float *, size_t, int, int, float);
    void (*scores_q_f16)(float *, size_t, const float *, size_t, int, const uint16_t *, size_t, int, int, float);
};

/* Rows of x processed together per pass over a tile of W, sized so the chunk
 * of x (I floats a row) stays in L2 while the tile's rows stream through L1;
 * a multiple of `tile` rows. */
int ops_t_chunk(int I, int tile);

/* ops.c: the activation one element at a time (the portable level's). */
void ops_activate_scalar(float *x, int n, enum ops_act act);

/* y[o] = (accumulate ? y[o] : 0) + bias[o] + s: the one store rule. */
static inline void ops_store1(float *y, int o, float s, const float *bias, bool accumulate)
{
    y[o] = (accumulate ? y[o] : 0.0f) + (bias ? bias[o] : 0.0f) + s;
}

#ifdef OPS_HAVE_X86
/* ops_avx512.c: the AVX-512 matrix products (bf16: vdpbf16ps for BF16 weights). */
void ops_matmul_avx512(float *y, const float *x, const void *w, enum ckpt_dtype wt, const float *bias, int T, int I,
                       int O, int o0, int o1, bool accumulate);
void ops_matmul_avx512_bf16(float *y, const float *x, const void *w, enum ckpt_dtype wt, const float *bias, int T,
                            int I, int O, int o0, int o1, bool accumulate);
/* ops_q8.c: int8 products with AVX2 (maddubs) and AVX-512 VNNI (vpdpbusd). */
void ops_matmul_q8_avx2(float *y, const void *xq, const void *wq, const float *bias, int T, int I, int O, int o0,
                        int o1, bool accumulate);
void ops_matmul_q8_vnni(float *y, const void *xq, const void *wq, const float *bias, int T, int I, int O, int o0,
                        int o1, bool accumulate);
/* ops_q8.c: the grouped Q8_0 layout (ops.h, ops_q8_mat_bytes) the AVX2, VNNI and AMX products read where I <= 4096:
 * 16 rows a group, per block pair 16 x 64 bytes of q, then 32 F16 scales. */
#define OPS_Q8G_ROWS 16
#define OPS_Q8G_MAX_BLOCKS 128
#define OPS_Q8G_PAIR_BYTES (OPS_Q8G_ROWS * 68)
size_t ops_q8g_bytes(int I, int O);
void ops_q8g_pack_rows(void *dst, const void *src, int I, int O, int o0, int n);
#ifdef OPS_HAVE_X86
#include <immintrin.h>
/* Block k's 16 scales of a group gp, as F32: the even (k even) or odd words
 * of its pair's scale line. */
static inline __attribute__((always_inline, target("avx2,fma,f16c,avx512f,avx512bw,avx512vl"))) __m512
ops_q8g_scales(const unsigned char *gp, int k)
{
    __m512i l = _mm512_loadu_si512(gp + (size_t)(k / 2) * OPS_Q8G_PAIR_BYTES + OPS_Q8G_ROWS * 64);
    if (k % 2)
        l = _mm512_srli_epi32(l, 16);
    return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(l));
}
/* The lanes of group output o .. o + 15 inside [o0, o1). */
static inline __mmask16 ops_q8g_mask(int o, int o0, int o1)
{
    int lo = o0 > o ? o0 - o : 0, hi = o1 - o < 16 ? o1 - o : 16;
    return (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
}
#endif
/* ops_q8_amx.c: int8 products of 5+ rows on AMX tiles, with the VNNI panel path's bits; fewer rows take the VNNI kernels. */
void ops_matmul_q8_amx(float *y, const void *xq, const void *wq, const float *bias, int T, int I, int O, int o0,
                       int o1, bool accumulate);
/* ops_q8_amx.c: x prepared once per product (ops.h, ops_q8_x_bytes) where the tiles take it: the rows, then their B tiles. */
size_t ops_q8_amx_x_bytes(int T, int I);
int ops_q8_amx_x_parts(int T, int I);
void ops_q8_amx_prepare_x(void *dst, const float *x, int T, int I, int part);
void ops_matmul_q8x_amx(float *y, const void *xp, const void *wq, const float *bias, int T, int I, int O, int o0,
                        int o1, bool accumulate);
/* ops_avx512.c: attention over a KV block. */
void ops_scores_avx512(float *s, const float *q, const float *k, size_t stride, int n, int d, float scale);
void ops_mix_avx512(float *out, size_t ldo, const float *a, size_t lda, int nq, const float *v, size_t stride, int n,
                    int d);
/* ops_to_f16 by vcvtps2ph (round to nearest even), NaNs by ckpt_f32_to_f16. */
void ops_to_f16_avx512(uint16_t *dst, const float *x, size_t n);
void ops_scores_f16_avx512(float *s, const float *q, const uint16_t *k, size_t stride, int n, int d, float scale);
void ops_mix_f16_avx512(float *out, size_t ldo, const float *a, size_t lda, int nq, const uint16_t *v, size_t stride,
                        int n, int d);
/* ops_avx512.c: GELU (gelu_new, relu; the others by ops_activate_scalar), softmax, LayerNorm. */
void ops_activate_avx512(float *x, int n, enum ops_act act);
void ops_softmax_avx512(float *x, int n);
void ops_layernorm_avx512(float *y, const float *x, const float *g, const float *b, int n, float eps);
/* ops_gemm.c: the packed products (AVX-512; AVX2 + FMA + F16C, the same sums). */
void ops_matmul_packed_avx2(float *y, const float *x, const void *wp, enum ckpt_dtype wt, const float *bias, int T,
                            int I, int O, int o0, int o1, bool accumulate);
void ops_matmul_packed_avx512(float *y, const float *x, const void *wp, enum ckpt_dtype wt, const float *bias, int T,
                              int I, int O, int o0, int o1, bool accumulate);
/* y[t][o .. o + n) for t < T from the sums c (64 floats a row) by the store rule (ops_store1). */
void ops_store_rows_avx512(float *y, const float *c, const float *bias, int T, int O, int o, int n, bool accumulate);
/* ops_amx.c: the packed product on AMX tiles for BF16, F16 and F32 weights (OPS_THROUGHPUT with LLMCGI_F32_TILES=1). */
void ops_matmul_packed_amx_f32(float *y, const float *x, const void *wp, enum ckpt_dtype wt, const float *bias, int T,
                               int I, int O, int o0, int o1, bool accumulate);
/* ops_amx.c: as above with F32 on the AVX-512 FMA kernel (OPS_THROUGHPUT). */
void ops_matmul_packed_amx(float *y, const float *x, const void *wp, enum ckpt_dtype wt, const float *bias, int T,
                           int I, int O, int o0, int o1, bool accumulate);
/* ops_amx.c: as above with F16 and F32 on the AVX-512 FMA kernel (OPS_LATENCY; OPS_THROUGHPUT takes the one above). */
void ops_matmul_packed_amx_bf16(float *y, const float *x, const void *wp, enum ckpt_dtype wt, const float *bias, int T,
                                int I, int O, int o0, int o1, bool accumulate);
#endif
void ops_matmul_packed_portable(float *y, const float *x, const void *wp, enum ckpt_dtype wt, const float *bias, int T,
                                int I, int O, int o0, int o1, bool accumulate);
void ops_matmul_q8_portable(float *y, const void *xq, const void *wq, const float *bias, int T, int I, int O, int o0,
                            int o1, bool accumulate);

#endif
