/* kref.h -- CPU references of the CUDA backend's attention and LayerNorm kernels (kernels/cuda/attention.cu, kernels/cuda/kernels.cu), in plain C over F32, built in every build.
 *
 * Each reference runs the same algorithm as its device kernel: the same KV
 * slices and tiles, the same online softmax and the same merge, so that a
 * difference between a kernel and its reference is the kernel's bug, not a
 * different rounding order of a different method. tests/unit/test_cuda.c
 * checks every reference against the CPU backend's own ops (ops_dot,
 * ops_softmax, ops_axpy, ops_layernorm) in `make check`, where no device is
 * needed, and on a GPU each kernel against its reference.
 *
 * No CUDA headers here: the split and slice rules below are shared with the
 * device code (KREF_HD makes them __host__ __device__ under nvcc). Pointers
 * are host pointers and stay the caller's; nothing here allocates. */
#ifndef LLMCGI_CUDA_KREF_H
#define LLMCGI_CUDA_KREF_H

#include <stddef.h>
#include <stdint.h>

#ifdef __CUDACC__
#define KREF_HD __host__ __device__
#else
#define KREF_HD
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* The paged KV layout of kernels.h (struct kcu_kv_layout's first four
 * fields, same index formula): block b is [n_layer][2][n_head][block_tokens][head_dim]. */
struct kref_kv {
    int n_layer, n_head, head_dim, block_tokens;
};

/* The largest head_dim the references take (KCU_MAX_HEAD_DIM); they do nothing past it. */
#define KREF_MAX_HEAD_DIM 256

static inline size_t kref_kv_index(struct kref_kv k, int block, int layer, int which, int head, int j)
{
    return ((((size_t)block * k.n_layer + layer) * 2 + which) * k.n_head + head) * (size_t)k.block_tokens *
               k.head_dim + (size_t)j * k.head_dim;
}

/* ------------------------------------------------------------------ decode attention split over the KV sequence
 *
 * A row at position p has ctx = p + 1 keys. With n_split splits, split s
 * reduces keys [k0, k1) (kref_split_slice: ctx cut into n_split nearly equal
 * slices, the empty ones last), keeping the online softmax of its slice:
 *   m = max s_k,  l = sum e^(s_k - m),  o = sum e^(s_k - m) V_k     (s_k = scale q . K_k)
 * and the combine merges the splits:
 *   M = max_s m_s;  out = sum_s o_s e^(m_s - M) / sum_s l_s e^(m_s - M)
 * an empty split (m = -inf) adding nothing; split 0 always holds key 0, so M
 * is finite. The slice depends on the row's own ctx, so one grid of
 * n_split blocks per (row, head) serves every context length. */
#define KREF_SPLIT_MIN_KEYS 32 /* fewer keys per split than this is not worth a block */
#define KREF_MAX_SPLITS 64

static inline KREF_HD void kref_split_slice(int ctx, int n_split, int s, int *k0, int *k1)
{
    int chunk = (ctx + n_split - 1) / n_split;
    int a = s * chunk < ctx ? s * chunk : ctx;
    *k0 = a;
    *k1 = a + chunk < ctx ? a + chunk : ctx;
}

/* How many splits a step of rows_heads (rows x heads) attention problems
 * whose longest context is max_ctx gets on a device of sms multiprocessors:
 * enough blocks for two per multiprocessor, no split under
 * KREF_SPLIT_MIN_KEYS keys, at most KREF_MAX_SPLITS; 1 when the rows alone
 * fill the device. */
int kref_decode_splits(int rows_heads, int max_ctx, int sms);

/* Floats of partials a split step needs at most, whatever max_ctx is, for
 * kref_decode_splits(rows_heads, ., sms) splits: (2 + head_dim) per (row,
 * head, split), and rows_heads x splits <= 2 sms + rows_heads. */
size_t kref_decode_work_floats(int rows_heads, int head_dim, int sms);

/* Causal attention of T rows over the paged pool kv (F32, layout kl), per
 * row r at position p = row_pos[r] with block table tables + row_tab[r] and
 * head h, by n_split splits and the combine above. q is read from qkv
 * [T][3C] (columns [0, C)); out is [T][C], C = n_head * head_dim. */
void kref_attention_decode(float *out, const float *qkv, const float *kv, struct kref_kv kl, const int32_t *row_pos,
                           const int32_t *row_tab, const int32_t *tables, int T, int layer, float scale, int n_split);

/* ------------------------------------------------------------------ tiled causal prefill attention
 *
 * Rows go in tiles of KREF_PF_BQ consecutive rows; inside a tile, each run
 * of rows sharing a block table (one sequence's chunk) is one segment, and
 * its keys 0..max p go in tiles of KREF_PF_BK, loaded once for all its rows.
 * Per row and key tile (skipped when the tile starts past the row's p), the
 * online softmax over the tile's keys k <= p:
 *   m' = max(m, max_k s_k);  l = l e^(m - m') + sum_k e^(s_k - m');
 *   o = o e^(m - m') + sum_k e^(s_k - m') V_k;   out = o / l.
 * Same arguments and result as kref_attention_decode. */
#define KREF_PF_BQ 16
#define KREF_PF_BK 32

void kref_attention_prefill(float *out, const float *qkv, const float *kv, struct kref_kv kl, const int32_t *row_pos,
                            const int32_t *row_tab, const int32_t *tables, int T, int layer, float scale);

/* ------------------------------------------------------------------ residual + LayerNorm
 *
 * Per row t < T: when r != NULL, x[t] = x[t] + (r[t] + rbias) (rbias may be
 * NULL); then out[t] = (x[t] - mean) / sqrt(var + eps) * g + b, the mean
 * first, then the biased variance as the mean of (x - mean)^2 (two passes,
 * as the warp-per-row kernel does from its registers). */
void kref_residual_layernorm(float *x, const float *r, const float *rbias, float *out, const float *g, const float *b,
                             int T, int C, float eps);

#ifdef __cplusplus
}
#endif

#endif
