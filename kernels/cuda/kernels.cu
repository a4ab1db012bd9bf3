/* kernels.cu -- the CUDA backend's kernels (embedding, residual + LayerNorm, bias + activation, paged-KV store and attention, row gather) and the cuBLAS product, with their C launch wrappers.
 *
 * First versions: each kernel is written to be plainly right and reasonably
 * parallel, not tuned; kernels.h documents the types and layouts. Each
 * template is instantiated for float, __half and __nv_bfloat16, picked at
 * run time from the model's enum ckpt_dtype. */
#include "cuda/elem.cuh"

/* Grid-stride launches: blocks of 256 threads, at most this many blocks. */
enum { EW_THREADS = 256, EW_MAX_BLOCKS = 65535, ROW_THREADS = 128 };

/* ------------------------------------------------------------------ reductions */

/* The sum of v over the block (blockDim.x a multiple of 32), in every
 * thread. sh holds 32 floats; the leading barrier makes it reusable. */
static __device__ float block_sum(float v, float *sh)
{
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0)
        sh[warp] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.0f;
    return warp_sum(v);
}

/* ------------------------------------------------------------------ embedding */

/* x[t][c] = wte[tokens[t]][c] + wpe[pos[t]][c]: one block per row t. */
template <typename T>
static __global__ void embed_kernel(float *x, const int32_t *tokens, const int32_t *pos, const T *wte,
                                    const float *wpe, int C)
{
    size_t t = blockIdx.x;
    const T *e = wte + (size_t)tokens[t] * C;
    const float *pe = wpe + (size_t)pos[t] * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        x[t * C + c] = to_f(e[c]) + pe[c];
}

/* The same, 4 columns per thread (C a multiple of 4, aligned rows): wte as
 * 4 elements, wpe and x as float4. */
template <typename T>
static __global__ void embed4_kernel(float *x, const int32_t *tokens, const int32_t *pos, const T *wte,
                                     const float *wpe, int C)
{
    size_t t = blockIdx.x;
    const T *e = wte + (size_t)tokens[t] * C;
    const float4 *pe = reinterpret_cast<const float4 *>(wpe + (size_t)pos[t] * C);
    float4 *xr = reinterpret_cast<float4 *>(x + t * C);
    for (int c4 = threadIdx.x; c4 < C / 4; c4 += blockDim.x) {
        float w[4];
        vload<T, 4>(w, e + 4 * c4);
        float4 p = pe[c4];
        xr[c4] = make_float4(w[0] + p.x, w[1] + p.y, w[2] + p.z, w[3] + p.w);
    }
}

extern "C" cudaError_t kcu_embed(float *x, const int32_t *tokens, const int32_t *pos, const void *wte,
                                 enum ckpt_dtype wdt, const float *wpe, int T, int C, cudaStream_t st)
{
    if (T <= 0)
        return cudaSuccess;
    if (C % 4 == 0 && kcu_aligned(x, 16) && kcu_aligned(wpe, 16) && kcu_aligned(wte, 4 * ckpt_dtype_size(wdt))) {
        KCU_DISPATCH(wdt, embed4_kernel<E><<<T, ROW_THREADS, 0, st>>>(x, tokens, pos, (const E *)wte, wpe, C));
        return cudaGetLastError();
    }
    KCU_DISPATCH(wdt, embed_kernel<E><<<T, ROW_THREADS, 0, st>>>(x, tokens, pos, (const E *)wte, wpe, C));
    return cudaGetLastError();
}

/* ------------------------------------------------------------------ residual + LayerNorm */

/* One block per row:
 *   v = x + (r + rbias)          (when r is given; x keeps v)
 *   mean = sum v / C;  var = sum (v - mean)^2 / C      (two passes, F32)
 *   out = (v - mean) / sqrt(var + eps) * g + b */
template <typename T>
static __global__ void residual_layernorm_kernel(float *x, const float *r, const float *rbias, T *out,
                                                 const float *g, const float *b, int C, float eps)
{
    __shared__ float sh[32];
    size_t row = blockIdx.x;
    float *xr = x + row * C;
    float s = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float v = xr[c];
        if (r) {
            v += r[row * C + c] + (rbias ? rbias[c] : 0.0f);
            xr[c] = v;          /* read back below by this same thread */
        }
        s += v;
    }
    float mean = block_sum(s, sh) / (float)C;
    float ss = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float d = xr[c] - mean;
        ss += d * d;
    }
    float var = block_sum(ss, sh) / (float)C;
    float rstd = 1.0f / sqrtf(var + eps);
    T *o = out + row * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        o[c] = from_f<T>((xr[c] - mean) * rstd * g[c] + b[c]);
}

/* Warp-per-row version (LN_WARPS rows per block), for C a multiple of 4 up
 * to 32 * 4 * LN_MAXV and 16-byte aligned rows: each lane keeps its
 * C / 128 float4 of the row in registers (x, r and rbias read as float4),
 * so x is read once and written once, the mean and variance are warp sums
 * (two passes over the registers, as kref_residual_layernorm), and the
 * output goes out 4 elements per store. No shared memory, no barrier. */
enum { LN_WARPS = 8, LN_MAXV = 16 };

template <typename T>
static __global__ void __launch_bounds__(LN_WARPS * 32)
    layernorm_warp_kernel(float *x, const float *r, const float *rbias, T *out, const float *g, const float *b, int rows,
                          int C, float eps)
{
    const int row = blockIdx.x * LN_WARPS + threadIdx.x / 32, lane = threadIdx.x % 32, nv = C / 4;
    if (row >= rows)
        return;     /* the whole warp: no barrier below */
    float4 *xr = reinterpret_cast<float4 *>(x + (size_t)row * C);
    float4 v[LN_MAXV];
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < LN_MAXV; i++) {
        const int c4 = lane + 32 * i;
        if (c4 < nv) {
            float4 a = xr[c4];
            if (r) {
                float4 rr = reinterpret_cast<const float4 *>(r + (size_t)row * C)[c4];
                float4 bb = rbias ? reinterpret_cast<const float4 *>(rbias)[c4] : make_float4(0.f, 0.f, 0.f, 0.f);
                a.x = a.x + (rr.x + bb.x);
                a.y = a.y + (rr.y + bb.y);
                a.z = a.z + (rr.z + bb.z);
                a.w = a.w + (rr.w + bb.w);
                xr[c4] = a;
            }
            v[i] = a;
            s += (a.x + a.y) + (a.z + a.w);
        }
    }
    const float mean = warp_sum(s) / (float)C;
    float ss = 0.0f;
#pragma unroll
    for (int i = 0; i < LN_MAXV; i++)
        if (lane + 32 * i < nv) {
            float dx = v[i].x - mean, dy = v[i].y - mean, dz = v[i].z - mean, dw = v[i].w - mean;
            ss += (dx * dx + dy * dy) + (dz * dz + dw * dw);
        }
    const float rstd = 1.0f / sqrtf(warp_sum(ss) / (float)C + eps);
    T *o = out + (size_t)row * C;
#pragma unroll
    for (int i = 0; i < LN_MAXV; i++) {
        const int c4 = lane + 32 * i;
        if (c4 < nv) {
            float4 gg = reinterpret_cast<const float4 *>(g)[c4], bb = reinterpret_cast<const float4 *>(b)[c4];
            float y[4] = {(v[i].x - mean) * rstd * gg.x + bb.x, (v[i].y - mean) * rstd * gg.y + bb.y,
                          (v[i].z - mean) * rstd * gg.z + bb.z, (v[i].w - mean) * rstd * gg.w + bb.w};
            vstore<T, 4>(o + 4 * c4, y);
        }
    }
}

extern "C" cudaError_t kcu_residual_layernorm(float *x, const float *r, const float *rbias, void *out,
                                              enum ckpt_dtype odt, const float *g, const float *b, int T, int C,
                                              float eps, cudaStream_t st)
{
    if (T <= 0)
        return cudaSuccess;
    bool warp = C % 4 == 0 && C <= 32 * 4 * LN_MAXV && kcu_aligned(x, 16) && (!r || kcu_aligned(r, 16)) &&
                (!rbias || kcu_aligned(rbias, 16)) && kcu_aligned(g, 16) && kcu_aligned(b, 16) &&
                kcu_aligned(out, 4 * ckpt_dtype_size(odt));
    if (warp) {
        unsigned blocks = (unsigned)((T + LN_WARPS - 1) / LN_WARPS);
        KCU_DISPATCH(odt, layernorm_warp_kernel<E><<<blocks, LN_WARPS * 32, 0, st>>>(x, r, rbias, (E *)out, g, b, T, C,
                                                                                       eps));
        return cudaGetLastError();
    }
    KCU_DISPATCH(odt, residual_layernorm_kernel<E><<<T, ROW_THREADS, 0, st>>>(x, r, rbias, (E *)out, g, b, C, eps));
    return cudaGetLastError();
}

/* ------------------------------------------------------------------ bias + activation */

/* The activations of kernels/cpu/ops.c, same formulas. */
static __device__ __forceinline__ float act_f(float v, int act)
{
    switch (act) {
    case KCU_ACT_GELU_TANH: {
        /* Past |v| = 10, tanh(...) is +-1 in F32: GELU is v or -0 exactly, and v^3
         * (which overflows F32 past |v| = 7e12, then inf * 0 = NaN) is not formed. */
        if (fabsf(v) > 10.0f)
            return v > 0.0f ? v : -0.0f;
        const float k = 0.7978845608028654f; /* sqrt(2/pi) */
        return 0.5f * v * (1.0f + tanhf(k * (v + 0.044715f * v * v * v)));
    }
    case KCU_ACT_GELU_ERF: return 0.5f * v * (1.0f + erff(v * 0.7071067811865476f));
    case KCU_ACT_RELU: return v > 0.0f ? v : 0.0f;
    case KCU_ACT_QUICK_GELU: return v / (1.0f + expf(-1.702f * v));
    default: return v;
    }
}

/* out[i] = act(in[i] + bias[i % N]) over n = T * N elements, grid-stride. */
template <typename T>
static __global__ void bias_act_kernel(T *out, const float *in, const float *bias, size_t n, int N, int act)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float v = in[i] + (bias ? bias[i % N] : 0.0f);
        out[i] = from_f<T>(act_f(v, act));
    }
}

/* The same, 4 elements per thread (N a multiple of 4, aligned rows): in and
 * bias as float4, out 4 elements per store; n4 = n / 4. */
template <typename T>
static __global__ void bias_act4_kernel(T *out, const float *in, const float *bias, size_t n4, int N, int act)
{
    const float4 *in4 = reinterpret_cast<const float4 *>(in);
    const float4 *b4 = reinterpret_cast<const float4 *>(bias);
    const size_t N4 = (size_t)N / 4;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n4; i += (size_t)gridDim.x * blockDim.x) {
        float4 v = in4[i];
        if (bias) {
            float4 bb = b4[i % N4];
            v.x += bb.x;
            v.y += bb.y;
            v.z += bb.z;
            v.w += bb.w;
        }
        float y[4] = {act_f(v.x, act), act_f(v.y, act), act_f(v.z, act), act_f(v.w, act)};
        vstore<T, 4>(out + 4 * i, y);
    }
}

static unsigned ew_blocks(size_t n)
{
    size_t b = (n + EW_THREADS - 1) / EW_THREADS;
    return (unsigned)(b < (size_t)EW_MAX_BLOCKS ? b : (size_t)EW_MAX_BLOCKS);
}

extern "C" cudaError_t kcu_bias_act(void *out, enum ckpt_dtype odt, const float *in, const float *bias, int T, int N,
                                    enum kcu_act act, cudaStream_t st)
{
    size_t n = (size_t)T * N;
    if (T <= 0 || N <= 0)
        return cudaSuccess;
    if (N % 4 == 0 && kcu_aligned(in, 16) && (!bias || kcu_aligned(bias, 16)) &&
        kcu_aligned(out, 4 * ckpt_dtype_size(odt))) {
        KCU_DISPATCH(odt, bias_act4_kernel<E><<<ew_blocks(n / 4), EW_THREADS, 0, st>>>((E *)out, in, bias, n / 4, N,
                                                                                        (int)act));
        return cudaGetLastError();
    }
    KCU_DISPATCH(odt, bias_act_kernel<E><<<ew_blocks(n), EW_THREADS, 0, st>>>((E *)out, in, bias, n, N, (int)act));
    return cudaGetLastError();
}

/* ------------------------------------------------------------------ paged KV: store */

/* One block per row r: its k and v (columns [C, 2C) and [2C, 3C) of qkv)
 * go to position row_pos[r] of its sequence's blocks, head by head. */
template <typename T>
static __global__ void kv_store_kernel(T *kv, const T *qkv, const int32_t *row_pos, const int32_t *row_tab,
                                       const int32_t *tables, int layer, struct kcu_kv_layout kl)
{
    size_t r = blockIdx.x;
    int hd = kl.head_dim, C = kl.n_head * hd, p = row_pos[r];
    int block = tables[row_tab[r] + p / kl.block_tokens], j = p % kl.block_tokens;
    const T *k = qkv + r * 3 * C + C, *v = k + C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        int h = c / hd, d = c % hd;
        kv[kcu_kv_index(kl, block, layer, 0, h, j) + d] = k[c];
        kv[kcu_kv_index(kl, block, layer, 1, h, j) + d] = v[c];
    }
    if (kl.written && threadIdx.x == 0)
        kl.written[((size_t)block * kl.n_layer + layer) * kl.block_tokens + j] = 1;
}

extern "C" cudaError_t kcu_kv_store(void *kv, const void *qkv, enum ckpt_dtype dt, const int32_t *row_pos,
                                    const int32_t *row_tab, const int32_t *tables, int T, int layer,
                                    struct kcu_kv_layout kl, cudaStream_t st)
{
    if (T <= 0)
        return cudaSuccess;
    KCU_DISPATCH(dt, kv_store_kernel<E><<<T, ROW_THREADS, 0, st>>>((E *)kv, (const E *)qkv, row_pos, row_tab, tables,
                                                                    layer, kl));
    return cudaGetLastError();
}

/* ------------------------------------------------------------------ paged KV: attention */

enum { ATT_WARPS = 4, ATT_PER_LANE = KCU_MAX_HEAD_DIM / 32 };

/* One block per (row r, head h), ATT_WARPS warps. Row r sits at position p.
 * Warp w takes keys k = w, w + ATT_WARPS, ... <= p and keeps an online
 * softmax over them (all F32):
 *   s = (q * scale) . K_k            lanes split head_dim, then a warp sum
 *   m' = max(m, s);  l = l e^(m - m') + e^(s - m');  acc = acc e^(m - m') + e^(s - m') V_k
 * and the warps' (m, l, acc) are merged at the end:
 *   M = max_w m_w;  out = sum_w acc_w e^(m_w - M) / sum_w l_w e^(m_w - M)
 * which is softmax(s) . V exactly, up to rounding. Warp 0 always has key 0,
 * so M is finite; a warp with no keys has m = -inf and adds nothing.
 * Shared memory: q [hd], m [W], l [W], acc [W][hd] floats. */
template <typename T>
static __global__ void attention_kernel(T *out, const T *qkv, const T *kv, const int32_t *row_pos,
                                        const int32_t *row_tab, const int32_t *tables, int layer,
                                        struct kcu_kv_layout kl, float scale)
{
    extern __shared__ float sm[];
    const int hd = kl.head_dim, C = kl.n_head * hd, B = kl.block_tokens;
    const int h = blockIdx.y, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const size_t r = blockIdx.x;
    float *q = sm, *wm = q + hd, *wl = wm + ATT_WARPS, *wacc = wl + ATT_WARPS;
    const int p = row_pos[r];
    const int32_t *tab = tables + row_tab[r];

    const T *qrow = qkv + r * 3 * C + (size_t)h * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x)
        q[d] = to_f(qrow[d]) * scale;
    __syncthreads();

    float m = -INFINITY, l = 0.0f, acc[ATT_PER_LANE];
#pragma unroll
    for (int i = 0; i < ATT_PER_LANE; i++)
        acc[i] = 0.0f;
    for (int k = warp; k <= p; k += ATT_WARPS) {
        int block = tab[k / B], j = k % B;
        if (kl.written && lane == 0 && h == 0 && !kl.written[((size_t)block * kl.n_layer + layer) * B + j] &&
            atomicCAS(kl.fault, 0, 1) == 0) {
            kl.fault[1] = (int32_t)r;
            kl.fault[2] = k;
            kl.fault[3] = block;
        }
        const T *K = kv + kcu_kv_index(kl, block, layer, 0, h, j);
        const T *V = kv + kcu_kv_index(kl, block, layer, 1, h, j);
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < ATT_PER_LANE; i++) {
            int d = lane + 32 * i;
            if (d < hd)
                s += q[d] * to_f(K[d]);
        }
        s = warp_sum(s);
        float mn = fmaxf(m, s), corr = expf(m - mn), e = expf(s - mn);
        l = l * corr + e;
#pragma unroll
        for (int i = 0; i < ATT_PER_LANE; i++) {
            int d = lane + 32 * i;
            if (d < hd)
                acc[i] = acc[i] * corr + e * to_f(V[d]);
        }
        m = mn;
    }
    if (lane == 0) {
        wm[warp] = m;
        wl[warp] = l;
    }
#pragma unroll
    for (int i = 0; i < ATT_PER_LANE; i++) {
        int d = lane + 32 * i;
        if (d < hd)
            wacc[warp * hd + d] = acc[i];
    }
    __syncthreads();
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float M = -INFINITY, L = 0.0f, A = 0.0f;
        for (int w = 0; w < ATT_WARPS; w++)
            M = fmaxf(M, wm[w]);
        for (int w = 0; w < ATT_WARPS; w++) {
            float f = expf(wm[w] - M);
            L += wl[w] * f;
            A += wacc[w * hd + d] * f;
        }
        out[r * C + (size_t)h * hd + d] = from_f<T>(A / L);
    }
}

extern "C" cudaError_t kcu_attention(void *out, const void *qkv, const void *kv, enum ckpt_dtype dt,
                                     const int32_t *row_pos, const int32_t *row_tab, const int32_t *tables, int T,
                                     int layer, struct kcu_kv_layout kl, float scale, cudaStream_t st)
{
    if (T <= 0)
        return cudaSuccess;
    if (kl.head_dim < 1 || kl.head_dim > KCU_MAX_HEAD_DIM || kl.n_head < 1 || kl.block_tokens < 1)
        return cudaErrorInvalidValue;
    dim3 grid((unsigned)T, (unsigned)kl.n_head);
    size_t shared = sizeof(float) * ((size_t)kl.head_dim * (1 + ATT_WARPS) + 2 * ATT_WARPS);
    KCU_DISPATCH(dt, attention_kernel<E><<<grid, ATT_WARPS * 32, shared, st>>>(
                         (E *)out, (const E *)qkv, (const E *)kv, row_pos, row_tab, tables, layer, kl, scale));
    return cudaGetLastError();
}

/* ------------------------------------------------------------------ row gather */

/* dst[i] = src[rows[i]]: one block per output row. */
template <typename T>
static __global__ void gather_rows_kernel(T *dst, const T *src, const int32_t *rows, int C)
{
    size_t i = blockIdx.x, from = (size_t)rows[i];
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        dst[i * C + c] = src[from * C + c];
}

/* The same in 16-byte pieces (rows a multiple of 16 bytes, aligned): W of them per row. */
static __global__ void gather_rows16_kernel(uint4 *dst, const uint4 *src, const int32_t *rows, int W)
{
    size_t i = blockIdx.x, from = (size_t)rows[i];
    for (int c = threadIdx.x; c < W; c += blockDim.x)
        dst[i * W + c] = src[from * W + c];
}

extern "C" cudaError_t kcu_gather_rows(void *dst, const void *src, enum ckpt_dtype dt, const int32_t *rows, int R,
                                       int C, cudaStream_t st)
{
    if (R <= 0)
        return cudaSuccess;
    size_t row_bytes = (size_t)C * ckpt_dtype_size(dt);
    if ((dt == CKPT_F32 || dt == CKPT_F16 || dt == CKPT_BF16) && row_bytes % 16 == 0 && kcu_aligned(dst, 16) &&
        kcu_aligned(src, 16)) {
        gather_rows16_kernel<<<R, ROW_THREADS, 0, st>>>((uint4 *)dst, (const uint4 *)src, rows, (int)(row_bytes / 16));
        return cudaGetLastError();
    }
    KCU_DISPATCH(dt, gather_rows_kernel<E><<<R, ROW_THREADS, 0, st>>>((E *)dst, (const E *)src, rows, C));
    return cudaGetLastError();
}

/* ------------------------------------------------------------------ matrix product (cuBLAS)
 *
 * cuBLAS is column-major; a row-major [R][N] matrix is, to cuBLAS, the
 * column-major N x R matrix (its transpose) with leading dimension N. So the
 * row-major y[T][O] = x[T][I] . W is computed as the column-major
 *   y^T (O x T, ld O) = op(A) (O x I) . x^T (I x T, ld I)
 * where op(A) must be W^T:
 *   KCU_W_IN_OUT, W row-major [I][O]: column-major it already is W^T (O x I,
 *     ld O), so A = W with CUBLAS_OP_N, lda = O. Hugging Face's Conv1D
 *     weights are used as the file stores them, no transpose at load.
 *   KCU_W_OUT_IN, W row-major [O][I] (wte as the LM head): column-major it is
 *     W (I x O, ld I), so A = W with CUBLAS_OP_T, lda = I.
 * Both are ordinary cuBLAS layouts (NN and TN); which one is faster for
 * decode-sized T is for the benchmarks to say.
 * The compute type is CUBLAS_COMPUTE_32F: F32 accumulation for every input
 * type, and no TF32 for F32 inputs (the handle's math mode is
 * CUBLAS_DEFAULT_MATH, which the backend sets). */
static cudaDataType_t cuda_type(enum ckpt_dtype dt)
{
    return dt == CKPT_F16 ? CUDA_R_16F : dt == CKPT_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

extern "C" cublasStatus_t kcu_gemm(cublasHandle_t h, float *y, const void *x, const void *w, enum ckpt_dtype dt,
                                   enum kcu_wlayout wl, int T, int I, int O)
{
    const float one = 1.0f, zero = 0.0f;
    if (T <= 0)
        return CUBLAS_STATUS_SUCCESS;
    if (dt != CKPT_F32 && dt != CKPT_F16 && dt != CKPT_BF16)
        return CUBLAS_STATUS_INVALID_VALUE;
    cudaDataType_t t = cuda_type(dt);
    bool in_out = wl == KCU_W_IN_OUT;
    return cublasGemmEx(h, in_out ? CUBLAS_OP_N : CUBLAS_OP_T, CUBLAS_OP_N, O, T, I, &one, w, t, in_out ? O : I, x, t,
                        I, &zero, y, CUDA_R_32F, O, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}
