/* ops.h -- the CPU backend's numeric kernels: matrix products over F32/F16/BF16 and int8 (Q8_0) weights, LayerNorm, GELU, softmax, dot/axpy; one kernel set per CPU level, chosen at run time.
 *
 * Every kernel has one portable C version (the reference) and, where it
 * pays, versions for AVX2+FMA+F16C, AVX-512F/BW/VL (with VNNI for int8) and
 * AVX-512 with avx512_bf16; ops_init picks the best level the CPU has, once
 * at load. tests/unit/test_cpu_ops.c runs every level the CPU supports
 * against double-precision references and against the portable kernels. */
#ifndef LLMCGI_OPS_H
#define LLMCGI_OPS_H

#include "checkpoint.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The kernel sets, lowest first. */
enum ops_level {
    OPS_PORTABLE,       /* C only */
    OPS_AVX2,           /* AVX2 + FMA + F16C */
    OPS_AVX512,         /* AVX-512 F/BW/VL (+ VNNI for int8 where the CPU has it) */
    OPS_AVX512_BF16,    /* the above + avx512_bf16 (vdpbf16ps for BF16 weights) */
    OPS_AMX,            /* the above + AMX tiles (amx_tile, amx_bf16, amx_int8), the OS's
                           permission to use them granted (Linux arch_prctl) */
    OPS_BEST = 100,     /* as ops_init's cap: whatever the CPU has */
};

/* The highest level this CPU supports (CPUID and the OS's saved state). */
enum ops_level ops_cpu_level(void);

/* Picks the best kernel set this CPU has, at most `cap` (tests lower it to
 * run each path). Thread-safe; cheap when the level does not change.
 * Returns the level chosen. */
enum ops_level ops_init(enum ops_level cap);

/* The chosen set, e.g. "avx512f+bw+vl+vnni+bf16+amx", "avx2+fma+f16c", "portable". */
const char *ops_simd_name(void);

/* Matrix product over a block of output features:
 *   y[t][o] = (accumulate ? y[t][o] : 0) + bias[o] + sum_i x[t][i] * W[o][i]
 * for t < T and o0 <= o < o1. x is [T][I] (row stride I), y is [T][O] (row
 * stride O), W is [O][I] in `wt` (the output-major layout: each row of W is
 * one output's weights), bias may be NULL. The caller splits [0, O) among
 * threads; a block is read from memory once for all T rows. */
void ops_matmul(float *y, const float *x, const void *w, enum ckpt_dtype wt, const float *bias,
                int T, int I, int O, int o0, int o1, bool accumulate);

/* The packed layout of the cache-blocked product (ops_gemm.c), for 2-64
 * rows and more and used at one row too: panels of OPS_PANEL outputs; in
 * panel p, for each input i, the weights W[OPS_PANEL p + j][i] of its
 * OPS_PANEL outputs j are contiguous, in the weight type; outputs past O are
 * zeros. BF16 is in AMX's B-tile form (tdpbf16ps): per group of 32 inputs
 * (I padded with zeros to a multiple of 32), for each 16 outputs, 16 rows
 * r of [W[j][2r], W[j][2r + 1]] for its outputs j (ops_gemm.c). ops_packed() says whether the chosen level has a packed kernel
 * that beats the output-major one (the engine packs its matrices at load
 * then, and keeps no output-major copy). */
#define OPS_PANEL 64
bool ops_packed(void);

/* Bytes of O x I weights of type wt packed (O rounded up to OPS_PANEL, I to 32 for BF16). */
size_t ops_pack_bytes(enum ckpt_dtype wt, int I, int O);

/* Packs output-major rows o0 <= o < o1 of W (w points at row o0, [o1 - o0][I])
 * into dst, the whole packed matrix of O outputs (ops_pack_bytes). o0 is a
 * multiple of OPS_PANEL; when o1 reaches the last panel its padding is
 * zeroed too. */
void ops_pack(void *dst, const void *w, enum ckpt_dtype wt, int I, int O, int o0, int o1);

/* Output o's I weights read back from a packed matrix, as F32 (the embedding
 * lookup of a tied, packed table). */
void ops_packed_row(float *dst, const void *wp, enum ckpt_dtype wt, int I, int o);

/* What a packed product is tuned for. The caller picks it once per model
 * (llm.h's llm_tuning, fixed at load) and passes it to every product of
 * that model, never by row count, so a row's result never depends on how
 * many rows share the product:
 *   OPS_LATENCY     the kernel fastest at one row: at the AMX level F16 on
 *                   the AVX-512 FMA kernel (ops_matmul_packed_amx_bf16)
 *   OPS_THROUGHPUT  the kernel fastest at many rows: at the AMX level F16
 *                   on the tiles too (ops_matmul_packed_amx; F32 wherever
 *                   it sends it)
 * Below the AMX level both are the same kernel. */
enum ops_tuning { OPS_LATENCY, OPS_THROUGHPUT };

/* Does the level ops_init chose have different packed kernels for the two
 * tunings (the AMX level)? */
bool ops_tuning_matters(void);

/* ops_matmul over a packed W (ops_pack), on the kernel tuned as asked. o0
 * and o1 may be anywhere; the threads should split at multiples of
 * OPS_PANEL so each streams its own panels. A row's result does not depend
 * on T (for one tuning). */
void ops_matmul_packed(float *y, const float *x, const void *wp, enum ckpt_dtype wt, const float *bias, int T, int I,
                       int O, int o0, int o1, bool accumulate, enum ops_tuning tuning);

/* LayerNorm of one row: y = (x - mean) / sqrt(var + eps) * g + b, var the biased variance. */
void ops_layernorm(float *y, const float *x, const float *g, const float *b, int n, float eps);

enum ops_act { OPS_GELU_TANH, OPS_GELU_ERF, OPS_RELU, OPS_QUICK_GELU };

/* In place on n values:
 *   GELU_TANH (gelu_new): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
 *   GELU_ERF:             0.5 x (1 + erf(x / sqrt 2))
 *   RELU:                 max(x, 0)
 *   QUICK_GELU:           x * sigmoid(1.702 x) */
void ops_activate(float *x, int n, enum ops_act act);

/* sum_i a[i] b[i] */
float ops_dot(const float *a, const float *b, int n);

/* y[i] += a * x[i] */
void ops_axpy(float *y, float a, const float *x, int n);

/* Attention over n keys (or values) that sit `stride` floats apart (the
 * positions of a KV block), d values each (a head):
 *   ops_scores: s[k] = (q . K_k) * scale
 *   ops_mix:    out_i[j] += sum_k a_i[k] V_k[j] for nq queries i: out_i at
 *               out + i * ldo, a_i at a + i * lda
 * One call per KV block; AVX-512 keeps q or the outputs in registers across
 * the block's keys instead of a dot/axpy call per key, and loads each V row
 * once for up to 4 queries. A query's result does not depend on nq. */
void ops_scores(float *s, const float *q, const float *k, size_t stride, int n, int d, float scale);
void ops_mix(float *out, size_t ldo, const float *a, size_t lda, int nq, const float *v, size_t stride, int n, int d);

/* The same over an F16 KV cache: k and v hold F16 values, `stride` of them
 * apart, each widened to F32 as it is read (vcvtph2ps in registers, never
 * an F32 copy), then the same sums as above; the same independence (a key's
 * score does not depend on the keys beside it, a query's output not on nq). */
void ops_scores_f16(float *s, const float *q, const uint16_t *k, size_t stride, int n, int d, float scale);
void ops_mix_f16(float *out, size_t ldo, const float *a, size_t lda, int nq, const uint16_t *v, size_t stride, int n,
                 int d);

/* ops_scores (ops_scores_f16) for nq queries over the same n keys (prefill:
 * a group of new tokens and the keys they all see): query i at q + i x ldq,
 * its scores at s + i x lds; each score bit-identical to ops_scores' for
 * that query alone. AVX2 loads (and widens) each K vector once for 4. */
void ops_scores_q(float *s, size_t lds, const float *q, size_t ldq, int nq, const float *k, size_t stride, int n, int d,
                  float scale);
void ops_scores_q_f16(float *s, size_t lds, const float *q, size_t ldq, int nq, const uint16_t *k, size_t stride, int n,
                      int d, float scale);

/* One query's whole attention over n keys in blocks of B positions (decode:
 * one new token of a sequence), for nh heads one after another: k[b] and v[b]
 * are block b's K and V rows of the first head, d values apart (F32, or F16
 * when half); head i's rows are i x hstride values further on, its query
 * q + i x d, its output out + i x d; s scratch for n scores.
 *   out_i[0..d) = sum_k softmax(q_i . K_ik * scale)_k V_ik
 * The first head's K and V of every block are prefetched at the start (a
 * head's rows of a block are one run of B x d values, the blocks far apart,
 * so the hardware prefetcher sees only short runs), each next head's while
 * the head before it is computed; then the same calls as ops_scores,
 * ops_softmax and ops_mix (nq = 1) per block and head, so a head's output is
 * bit-identical to theirs, whatever nh and the heads beside it. */
void ops_attend1(float *out, float *s, const float *q, const void *const *k, const void *const *v, int n, int B, int d,
                 int nh, size_t hstride, float scale, bool half);

/* dst[i] = x[i] rounded to F16 (nearest, ties to even; ckpt_f32_to_f16): how
 * K and V rows are written into an F16 KV cache. */
void ops_to_f16(uint16_t *dst, const float *x, size_t n);

/* x = softmax(x) in place over n values (n >= 1). */
void ops_softmax(float *x, int n);

/* int8 weights and activations in llama.cpp's Q8_0 layout: blocks of 32
 * values, each block an F16 scale d then 32 int8 q, value = d * q. A row of
 * I values takes ceil(I / 32) blocks (the last one zero-padded). */
#define OPS_Q8_BLOCK 32
struct ops_q8_block {
    uint16_t d;                     /* F16 */
    int8_t q[OPS_Q8_BLOCK];
};

/* Bytes of one quantized row of I values. */
size_t ops_q8_row_bytes(int I);

/* Quantizes a row of I floats into ops_q8_row_bytes(I) bytes at dst:
 * d = max|x| / 127 per block, q = round(x / d). */
void ops_q8_quantize_row(void *dst, const float *x, int I);

/* The layout ops_matmul_q8 reads W in at this level. Where the level has
 * AVX-512 VNNI and I <= 4096 (128 blocks): groups of 16 rows (the last one
 * padded with zero rows), per group and pair of blocks (an odd last block
 * paired with a zero block) the 16 rows' 64 bytes of q, row after row, then
 * the 32 F16 scales (row r's two at words 2r, 2r + 1): 1,088 bytes, 17
 * cache lines, the bytes of 16 rows' two Q8_0 blocks, so the one-row
 * product streams one run of whole lines and the tile products read their
 * 16 rows' block and scales without gathers. Elsewhere the Q8_0 rows as
 * they are. ops_q8_mat_bytes: the bytes of O rows of I values so laid out
 * (O * ops_q8_row_bytes(I) when not grouped, at most 15 rows and one
 * block a row more when grouped). */
size_t ops_q8_mat_bytes(int I, int O);

/* Whether this level's int8 products read a matrix of I inputs a row
 * grouped (ops.h's grouped layout, ops_q8_pack_rows) rather than as plain
 * Q8_0 rows. */
bool ops_q8_grouped(int I);

/* Lays out rows o0 .. o0 + n - 1 of a matrix of O rows of I values (src: n
 * rows of ops_q8_quantize_row, stride ops_q8_row_bytes(I)) into dst, the
 * whole matrix's ops_q8_mat_bytes(I, O): o0 a multiple of 16 and n too
 * unless o0 + n == O (the last rows, whose group's padding it zeroes).
 * dst 64-byte aligned puts each group's pair on whole cache lines (any
 * alignment works, more slowly). */
void ops_q8_pack_rows(void *dst, const void *src, int I, int O, int o0, int n);

/* ops_matmul over int8: x is T quantized rows (ops_q8_quantize_row, row
 * stride ops_q8_row_bytes(I)), W is O quantized rows laid out by
 * ops_q8_pack_rows; per block the integer dot product of the two times both
 * scales. */
void ops_matmul_q8(float *y, const void *xq, const void *wq, const float *bias, int T, int I, int O, int o0,
                   int o1, bool accumulate);

/* x prepared once per int8 product for all of its tasks (ops_matmul_q8x):
 * the T rows quantized (ops_q8_quantize_row, stride ops_q8_row_bytes(I))
 * and, where this level's product of T rows reads x in a form of its own
 * too (AMX tiles, 5+ rows), that form after them, so no task makes it
 * again. ops_q8_x_bytes: the bytes (dst 64-byte aligned; the most for
 * T <= S rows of I <= J values is ops_q8_x_bytes(S, J)); the preparation
 * is ops_q8_x_parts(T, I) independent parts, any order, any thread
 * (ops_q8_prepare_x makes part `part`), all done before the product. */
size_t ops_q8_x_bytes(int T, int I);
int ops_q8_x_parts(int T, int I);
void ops_q8_prepare_x(void *dst, const float *x, int T, int I, int part);

/* ops_matmul_q8 over x so prepared: the same bits. */
void ops_matmul_q8x(float *y, const void *xp, const void *wq, const float *bias, int T, int I, int O, int o0,
                    int o1, bool accumulate);

/* Converts n values of type t starting at src to float. */
void ops_to_f32(float *dst, const void *src, enum ckpt_dtype t, size_t n);

#endif
