/* kernels.h -- the CUDA backend's kernels, each behind a small C-callable launch wrapper so that a test can run it alone.
 *
 * Types. Weights, activations that feed a matrix product, and the KV blocks
 * are in the model's dtype `dt` (F32, F16 or BF16: enum ckpt_dtype); the
 * residual stream, the products' outputs, LayerNorm parameters, biases and
 * position embeddings are F32. Every sum is accumulated in F32.
 *
 * Every wrapper launches on `st` and returns cudaGetLastError() after the
 * launch (cudaErrorInvalidValue for a dtype it does not know); kcu_gemm
 * returns cuBLAS's status. Pointers are device pointers and stay the
 * caller's; nothing here allocates. Row-major everywhere: a [T][N] matrix
 * has row stride N. */
#ifndef LLMCGI_CUDA_KERNELS_H
#define LLMCGI_CUDA_KERNELS_H

#include "checkpoint.h"
#include "cuda/kref.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __CUDACC__
#define KCU_HD __host__ __device__
#else
#define KCU_HD
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ paged KV layout
 *
 * The one place the layout of the KV pool is decided. The pool is n_blocks
 * blocks of block_tokens positions; in dt elements, block b is
 *
 *     [n_layer][2 (K, V)][n_head][block_tokens][head_dim]
 *
 * so one head's keys (or values) for the whole block are one contiguous
 * block_tokens x head_dim tile: a warp reading one position's head reads
 * head_dim consecutive elements, and a later tiled kernel can load a whole
 * tile at once. Position p of a sequence lives in block table[p / block_tokens]
 * at j = p % block_tokens (llm.h: block i holds positions [i*B, (i+1)*B)). */
struct kcu_kv_layout {
    int n_layer, n_head, head_dim, block_tokens;
    /* The debug check (NULL when off; gpt2_cuda sets them under
     * LLMCGI_CUDA_CHECK_KV=1): written holds one byte per (block, layer,
     * position in the block), [n_blocks][n_layer][block_tokens], zeroed at
     * load; kcu_kv_store sets the bytes it writes, and kcu_attention, for
     * every position it reads whose byte is 0, records the first such read in
     * fault: fault[0] = 1, then the row, the position and the block. */
    uint8_t *written;
    int32_t *fault;
};

/* Elements in one block (all layers, K and V). */
static inline KCU_HD size_t kcu_kv_block_elems(struct kcu_kv_layout k)
{
    return (size_t)k.n_layer * 2 * k.n_head * k.block_tokens * k.head_dim;
}

/* Index (in elements) of element 0 of head `head` at position j of `block`
 * for `layer`; which = 0 for K, 1 for V. */
static inline KCU_HD size_t kcu_kv_index(struct kcu_kv_layout k, int block, int layer, int which, int head, int j)
{
    return ((((size_t)block * k.n_layer + layer) * 2 + which) * k.n_head + head) * (size_t)k.block_tokens * k.head_dim +
           (size_t)j * k.head_dim;
}

/* The largest head_dim the attention kernel takes (registers per lane). */
#define KCU_MAX_HEAD_DIM 256

/* ------------------------------------------------------------------ per-row step metadata
 *
 * A step's rows are the new tokens of all its sequences, in order. For row r:
 * row_pos[r] is its absolute position in its sequence, and
 * tables + row_tab[r] is its sequence's block table. */

/* x[t][c] = wte[tokens[t]][c] + wpe[pos[t]][c], t < T, c < C.
 * x is F32 [T][C]; wte is [V][C] in wdt; wpe is F32 [P][C]. */
cudaError_t kcu_embed(float *x, const int32_t *tokens, const int32_t *pos, const void *wte, enum ckpt_dtype wdt,
                      const float *wpe, int T, int C, cudaStream_t st);

/* The residual add fused with the next LayerNorm, per row t < T:
 *   when r != NULL:  x[t] = x[t] + r[t] + rbias      (rbias may be NULL)
 *   out[t] = (x[t] - mean) / sqrt(var + eps) * g + b  (var the biased variance)
 * x, r, rbias, g, b are F32; out is [T][C] in odt. x keeps the sum. */
cudaError_t kcu_residual_layernorm(float *x, const float *r, const float *rbias, void *out, enum ckpt_dtype odt,
                                   const float *g, const float *b, int T, int C, float eps, cudaStream_t st);

/* Half-precision outputs: every kernel that writes F16 saturates to
 * +-65504 (F16's largest finite value) instead of rounding to infinity, as
 * an activation the CPU backend keeps in F32 can outgrow F16 (NaN stays
 * NaN). BF16 has F32's range. */
#define KCU_F16_MAX 65504.0f

/* Activations (the ones kernels/cpu supports). */
enum kcu_act {
    KCU_ACT_NONE,
    KCU_ACT_GELU_TANH,   /* gelu_new: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
    KCU_ACT_GELU_ERF,    /* gelu:     0.5 x (1 + erf(x / sqrt 2)) */
    KCU_ACT_RELU,        /* max(x, 0) */
    KCU_ACT_QUICK_GELU   /* x * sigmoid(1.702 x) */
};

/* out[t][n] = act(in[t][n] + bias[n]), t < T, n < N. in and bias are F32
 * (bias may be NULL); out is in odt. */
cudaError_t kcu_bias_act(void *out, enum ckpt_dtype odt, const float *in, const float *bias, int T, int N,
                         enum kcu_act act, cudaStream_t st);

/* Writes the K and V of every row into its sequence's blocks for `layer`:
 * qkv is [T][3C] in dt (q, k, v; head h at columns h*head_dim of each),
 * C = n_head * head_dim. Row r goes to position row_pos[r]. */
cudaError_t kcu_kv_store(void *kv, const void *qkv, enum ckpt_dtype dt, const int32_t *row_pos,
                         const int32_t *row_tab, const int32_t *tables, int T, int layer, struct kcu_kv_layout kl,
                         cudaStream_t st);

/* Causal attention of each row over its sequence's KV blocks (run after
 * kcu_kv_store, so the rows of a prefill chunk see each other), per row r
 * at position p = row_pos[r] and head h:
 *   s_k = (q . K_k) * scale for k <= p;  a = softmax(s) in F32;  out = sum_k a_k V_k
 * q is read from qkv [T][3C]; out is [T][C]; both in dt. */
cudaError_t kcu_attention(void *out, const void *qkv, const void *kv, enum ckpt_dtype dt, const int32_t *row_pos,
                          const int32_t *row_tab, const int32_t *tables, int T, int layer, struct kcu_kv_layout kl,
                          float scale, cudaStream_t st);

/* Decode attention split over the KV sequence (flash-decoding;
 * kernels/cuda/attention.cu): kcu_attention's result for every row, each
 * (row, head) reduced by n_split blocks, each a slice of the row's keys read
 * with vector loads, then merged by a combine kernel when n_split > 1 (the
 * slices and the merge: kernels/cuda/kref.h, which also holds the CPU
 * reference). n_split is 1 .. KREF_MAX_SPLITS, from kcu_decode_splits (rows
 * x heads of the step, its longest context, the device's multiprocessors);
 * work holds the partials, T * n_head * n_split * (head_dim + 2) floats,
 * which kcu_decode_work_floats(max rows x heads, head_dim, sms) bounds for
 * every n_split kcu_decode_splits gives (NULL allowed when n_split == 1).
 * The KV check (kl.written) works as in kcu_attention. */
int kcu_decode_splits(int rows_heads, int max_ctx, int sms);
size_t kcu_decode_work_floats(int rows_heads, int head_dim, int sms);
cudaError_t kcu_attention_decode(void *out, const void *qkv, const void *kv, enum ckpt_dtype dt,
                                 const int32_t *row_pos, const int32_t *row_tab, const int32_t *tables, int T,
                                 int layer, struct kcu_kv_layout kl, float scale, int n_split, float *work,
                                 cudaStream_t st);

/* Tiled causal prefill attention (kernels/cuda/attention.cu; reference
 * kref_attention_prefill): kcu_attention's arguments and result, for steps
 * with prompt chunks: the rows go in tiles of KREF_PF_BQ, and each tile of
 * KREF_PF_BK keys of K and V is loaded once into shared memory for all the
 * tile's rows of the same sequence. */
cudaError_t kcu_attention_prefill(void *out, const void *qkv, const void *kv, enum ckpt_dtype dt,
                                  const int32_t *row_pos, const int32_t *row_tab, const int32_t *tables, int T,
                                  int layer, struct kcu_kv_layout kl, float scale, cudaStream_t st);

/* dst[i] = src[rows[i]] for i < R, rows of C elements in dt. */
cudaError_t kcu_gather_rows(void *dst, const void *src, enum ckpt_dtype dt, const int32_t *rows, int R, int C,
                            cudaStream_t st);

/* How a weight matrix is laid out. */
enum kcu_wlayout {
    KCU_W_IN_OUT,        /* [I][O]: Hugging Face's Conv1D (attn.c_attn, mlp.c_fc, ...) */
    KCU_W_OUT_IN         /* [O][I]: nn.Linear and embeddings (wte as the tied LM head, lm_head) */
};

/* y[T][O] (F32) = x[T][I] (dt) . W, W (dt) in layout wl; F32 accumulation,
 * no TF32. Runs on the handle's stream. */
cublasStatus_t kcu_gemm(cublasHandle_t h, float *y, const void *x, const void *w, enum ckpt_dtype dt,
                        enum kcu_wlayout wl, int T, int I, int O);

#ifdef __cplusplus
}
#endif

#endif
