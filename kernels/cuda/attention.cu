/* attention.cu -- the CUDA backend's second attention kernels: decode attention split over the KV sequence (flash-decoding) with its combine, and a tiled causal prefill attention that loads each K/V tile once for a tile of query rows.
 *
 * Both read the paged KV pool of kernels.h with aligned vector loads (16
 * bytes per lane where head_dim allows), keep every sum and the online
 * softmax in F32 and give kcu_attention's result; kernels/cuda/kref.c holds
 * their CPU references (same slices, tiles and merges), which
 * tests/unit/test_cuda.c checks against the CPU backend and, on a GPU,
 * against these kernels. doc/cuda-kernels.md has their predicted times. */
#include "cuda/elem.cuh"
#include "cuda/kref.h"

/* Records the first read of a KV position no step wrote (kernels.h, LLMCGI_CUDA_CHECK_KV). */
static __device__ __forceinline__ void kv_check(const struct kcu_kv_layout &kl, int layer, int block, int j, int row,
                                                int pos)
{
    if (kl.written && !kl.written[((size_t)block * kl.n_layer + layer) * kl.block_tokens + j] &&
        atomicCAS(kl.fault, 0, 1) == 0) {
        kl.fault[1] = row;
        kl.fault[2] = pos;
        kl.fault[3] = block;
    }
}

/* Elements per vector access for head_dim hd: the largest of 8, 4, 2, 1 that
 * divides hd (every row of q, K and V starts at a multiple of hd elements,
 * so the accesses stay aligned) and, when lanes_cap > 0, leaves at most
 * lanes_cap lanes per head row. 0 when none does. */
static int pick_nv(int hd, int lanes_cap)
{
    for (int nv = 8; nv >= 1; nv /= 2)
        if (hd % nv == 0 && (lanes_cap <= 0 || hd / nv <= lanes_cap))
            return nv;
    return 0;
}

/* ------------------------------------------------------------------ decode: split over the KV sequence */

enum { DEC_THREADS = 128, DEC_UNROLL = 4, COMB_THREADS = 64 };

/* Block (r, h, s): split s of row r's keys for head h (kref_split_slice of
 * ctx = row_pos[r] + 1). Lanes go in groups of G (a power of two, G * NV >=
 * head_dim): a group takes DEC_UNROLL keys per iteration (their K and V
 * loads all issued before the first is used, so that enough bytes are in
 * flight to reach the copy bandwidth with a few blocks per multiprocessor),
 * each lane NV elements of q, K and V, a key's dot product summed by G-wide
 * xor shuffles. Every group keeps its own online softmax (m, l, o); all
 * threads run the same number of iterations (an invalid key changes
 * nothing, padding lanes hold zeros), so the shuffles never diverge. The
 * groups' states merge through shared memory into the split's (m, l, o):
 * written to out normalised when n_split == 1, else to work:
 *   ml [T][H][n_split][2], then o [T][H][n_split][hd]   (floats).
 * Shared memory: m [NG], l [NG], o [NG][hd], NG = DEC_THREADS / G. */
template <typename E, int NV>
static __global__ void __launch_bounds__(DEC_THREADS)
    decode_split_kernel(E *out, float *work, const E *qkv, const E *kv, const int32_t *row_pos, const int32_t *row_tab,
                        const int32_t *tables, int layer, struct kcu_kv_layout kl, float scale, int n_split, int G)
{
    extern __shared__ float sm[];
    const int hd = kl.head_dim, C = kl.n_head * hd, B = kl.block_tokens;
    const size_t r = blockIdx.x;
    const int h = blockIdx.y, s = blockIdx.z, T = gridDim.x;
    const int sub = threadIdx.x & (G - 1), grp = threadIdx.x / G, NG = DEC_THREADS / G;
    const int d0 = sub * NV;
    const bool lane_on = d0 < hd;
    float *gm = sm, *gl = gm + NG, *go = gl + NG;

    const int p = row_pos[r];
    int k0, k1;
    kref_split_slice(p + 1, n_split, s, &k0, &k1);
    const int32_t *tab = tables + row_tab[r];

    float q[NV], o[NV], m = -INFINITY, l = 0.0f;
#pragma unroll
    for (int i = 0; i < NV; i++)
        q[i] = o[i] = 0.0f;
    if (lane_on) {
        vload<E, NV>(q, qkv + r * 3 * C + (size_t)h * hd + d0);
#pragma unroll
        for (int i = 0; i < NV; i++)
            q[i] *= scale;
    }
    for (int kb = k0; kb < k1; kb += NG * DEC_UNROLL) {
        /* all DEC_UNROLL keys' loads first: that many K and V rows in flight per group */
        float kf[DEC_UNROLL][NV], vf[DEC_UNROLL][NV];
#pragma unroll
        for (int u = 0; u < DEC_UNROLL; u++) {
            const int k = kb + grp + u * NG;
#pragma unroll
            for (int i = 0; i < NV; i++)
                kf[u][i] = vf[u][i] = 0.0f;
            if (k < k1 && lane_on) {
                const int block = tab[k / B], j = k % B;
                if (kl.written && sub == 0 && h == 0)
                    kv_check(kl, layer, block, j, (int)r, k);
                vload<E, NV>(kf[u], kv + kcu_kv_index(kl, block, layer, 0, h, j) + d0);
                vload<E, NV>(vf[u], kv + kcu_kv_index(kl, block, layer, 1, h, j) + d0);
            }
        }
#pragma unroll
        for (int u = 0; u < DEC_UNROLL; u++) {
            const bool valid = kb + grp + u * NG < k1;
            float dot = 0.0f;
#pragma unroll
            for (int i = 0; i < NV; i++)
                dot += q[i] * kf[u][i];
            for (int w = G / 2; w > 0; w >>= 1)
                dot += __shfl_xor_sync(0xffffffffu, dot, w);
            if (valid) {
                float mn = fmaxf(m, dot), corr = expf(m - mn), e = expf(dot - mn);
                l = l * corr + e;
#pragma unroll
                for (int i = 0; i < NV; i++)
                    o[i] = o[i] * corr + e * vf[u][i];
                m = mn;
            }
        }
    }
    if (sub == 0) {
        gm[grp] = m;
        gl[grp] = l;
    }
    if (lane_on) {
#pragma unroll
        for (int i = 0; i < NV; i++)
            go[grp * hd + d0 + i] = o[i];
    }
    __syncthreads();

    float M = -INFINITY;
    for (int g = 0; g < NG; g++)
        M = fmaxf(M, gm[g]);
    float L = 0.0f;
    for (int g = 0; g < NG; g++)
        L += gm[g] > -INFINITY ? gl[g] * expf(gm[g] - M) : 0.0f;
    const size_t part = ((size_t)r * kl.n_head + h) * n_split + s;
    if (n_split > 1 && threadIdx.x == 0) {
        work[part * 2] = M;
        work[part * 2 + 1] = L;
    }
    for (int d = threadIdx.x; d < hd; d += DEC_THREADS) {
        float A = 0.0f;
        for (int g = 0; g < NG; g++)
            A += gm[g] > -INFINITY ? go[g * hd + d] * expf(gm[g] - M) : 0.0f;
        if (n_split == 1)
            out[r * C + (size_t)h * hd + d] = from_f<E>(A / L);
        else
            work[(size_t)T * kl.n_head * n_split * 2 + part * hd + d] = A;
    }
}

/* Block (r, h): the splits' partials merged (kref.h):
 *   M = max_s m_s;  out = sum_s o_s e^(m_s - M) / sum_s l_s e^(m_s - M). */
template <typename E>
static __global__ void __launch_bounds__(COMB_THREADS)
    decode_combine_kernel(E *out, const float *work, int n_head, int hd, int n_split)
{
    const size_t r = blockIdx.x;
    const int h = blockIdx.y, T = gridDim.x;
    const size_t part0 = ((size_t)r * n_head + h) * n_split;
    const float *ml = work + part0 * 2, *po = work + (size_t)T * n_head * n_split * 2 + part0 * hd;
    float M = -INFINITY, L = 0.0f;
    for (int s = 0; s < n_split; s++)
        M = fmaxf(M, ml[2 * s]);
    for (int s = 0; s < n_split; s++)
        L += ml[2 * s] > -INFINITY ? ml[2 * s + 1] * expf(ml[2 * s] - M) : 0.0f;
    for (int d = threadIdx.x; d < hd; d += COMB_THREADS) {
        float A = 0.0f;
        for (int s = 0; s < n_split; s++)
            A += ml[2 * s] > -INFINITY ? po[(size_t)s * hd + d] * expf(ml[2 * s] - M) : 0.0f;
        out[r * (size_t)n_head * hd + (size_t)h * hd + d] = from_f<E>(A / L);
    }
}

template <typename E, int NV>
static cudaError_t launch_decode(E *out, float *work, const E *qkv, const E *kv, const int32_t *row_pos,
                                 const int32_t *row_tab, const int32_t *tables, int T, int layer,
                                 struct kcu_kv_layout kl, float scale, int n_split, cudaStream_t st)
{
    int G = 1;
    while (G * NV < kl.head_dim)
        G *= 2;
    int NG = DEC_THREADS / G;
    size_t shared = sizeof(float) * ((size_t)NG * (2 + kl.head_dim));
    dim3 grid((unsigned)T, (unsigned)kl.n_head, (unsigned)n_split);
    decode_split_kernel<E, NV><<<grid, DEC_THREADS, shared, st>>>(out, work, qkv, kv, row_pos, row_tab, tables, layer,
                                                                  kl, scale, n_split, G);
    if (n_split > 1)
        decode_combine_kernel<E><<<dim3((unsigned)T, (unsigned)kl.n_head), COMB_THREADS, 0, st>>>(
            out, work, kl.n_head, kl.head_dim, n_split);
    return cudaGetLastError();
}

extern "C" int kcu_decode_splits(int rows_heads, int max_ctx, int sms)
{
    return kref_decode_splits(rows_heads, max_ctx, sms);
}

extern "C" size_t kcu_decode_work_floats(int rows_heads, int head_dim, int sms)
{
    return kref_decode_work_floats(rows_heads, head_dim, sms);
}

extern "C" cudaError_t kcu_attention_decode(void *out, const void *qkv, const void *kv, enum ckpt_dtype dt,
                                            const int32_t *row_pos, const int32_t *row_tab, const int32_t *tables,
                                            int T, int layer, struct kcu_kv_layout kl, float scale, int n_split,
                                            float *work, cudaStream_t st)
{
    if (T <= 0)
        return cudaSuccess;
    if (kl.head_dim < 1 || kl.head_dim > KCU_MAX_HEAD_DIM || kl.n_head < 1 || kl.block_tokens < 1 || n_split < 1 ||
        n_split > KREF_MAX_SPLITS || (n_split > 1 && !work) || kl.n_head > 65535)
        return cudaErrorInvalidValue;
    int nv = pick_nv(kl.head_dim, 32);
    if (nv == 0)        /* an odd head_dim over 32: the one-warp-per-row kernel */
        return kcu_attention(out, qkv, kv, dt, row_pos, row_tab, tables, T, layer, kl, scale, st);
    KCU_DISPATCH(dt, switch (nv) {
        case 8: return launch_decode<E, 8>((E *)out, work, (const E *)qkv, (const E *)kv, row_pos, row_tab, tables, T,
                                           layer, kl, scale, n_split, st);
        case 4: return launch_decode<E, 4>((E *)out, work, (const E *)qkv, (const E *)kv, row_pos, row_tab, tables, T,
                                           layer, kl, scale, n_split, st);
        case 2: return launch_decode<E, 2>((E *)out, work, (const E *)qkv, (const E *)kv, row_pos, row_tab, tables, T,
                                           layer, kl, scale, n_split, st);
        default: return launch_decode<E, 1>((E *)out, work, (const E *)qkv, (const E *)kv, row_pos, row_tab, tables,
                                            T, layer, kl, scale, n_split, st);
    });
    return cudaErrorInvalidValue;
}

/* ------------------------------------------------------------------ prefill: tiled causal attention */

enum { PF_BQ = KREF_PF_BQ, PF_BK = KREF_PF_BK, PF_WARPS = 4, PF_RPW = PF_BQ / PF_WARPS,
       PF_DPL = KCU_MAX_HEAD_DIM / 32 };

/* Block (tile, h): rows [t0, t0 + PF_BQ) for head h, PF_WARPS warps of
 * PF_RPW rows each. For each segment of the tile (rows sharing a block
 * table, kref.h) the block loads key tiles of PF_BK positions of K and V
 * into shared memory (vector loads, F32 there; K rows padded to an odd
 * stride so that lane k reading K[k][d] hits 32 different banks) and every
 * warp runs the online softmax of its rows over the tile: lane k scores key
 * k, the tile's max and sum are warp reductions, and each lane accumulates
 * o[d] for d = lane + 32 i with the keys' weights broadcast by shuffles.
 * Shared memory: K [PF_BK][ks], V [PF_BK][hd], q [PF_BQ][hd] (scaled). */
template <typename E, int NV>
static __global__ void __launch_bounds__(PF_WARPS * 32)
    prefill_kernel(E *out, const E *qkv, const E *kv, const int32_t *row_pos, const int32_t *row_tab,
                   const int32_t *tables, int T, int layer, struct kcu_kv_layout kl, float scale)
{
    extern __shared__ float sm[];
    const int hd = kl.head_dim, C = kl.n_head * hd, B = kl.block_tokens, ks = hd | 1, nvr = hd / NV;
    const int h = blockIdx.y, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int t0 = blockIdx.x * PF_BQ, t1 = min(t0 + PF_BQ, T);
    float *Ks = sm, *Vs = Ks + PF_BK * ks, *Qs = Vs + PF_BK * hd;

    for (int i = threadIdx.x; i < (t1 - t0) * nvr; i += blockDim.x) {
        int row = i / nvr, d = (i % nvr) * NV;
        float f[NV];
        vload<E, NV>(f, qkv + (size_t)(t0 + row) * 3 * C + (size_t)h * hd + d);
#pragma unroll
        for (int v = 0; v < NV; v++)
            Qs[row * hd + d + v] = f[v] * scale;
    }

    for (int seg0 = t0, seg1; seg0 < t1; seg0 = seg1) {
        int pmax = row_pos[seg0];
        for (seg1 = seg0 + 1; seg1 < t1 && row_tab[seg1] == row_tab[seg0]; seg1++)
            pmax = max(pmax, row_pos[seg1]);
        const int32_t *tab = tables + row_tab[seg0];

        float m[PF_RPW], l[PF_RPW], o[PF_RPW][PF_DPL];
#pragma unroll
        for (int rr = 0; rr < PF_RPW; rr++) {
            m[rr] = -INFINITY;
            l[rr] = 0.0f;
#pragma unroll
            for (int i = 0; i < PF_DPL; i++)
                o[rr][i] = 0.0f;
        }
        for (int kt = 0; kt <= pmax; kt += PF_BK) {
            const int nk = min(PF_BK, pmax + 1 - kt);
            __syncthreads();        /* the last tile is consumed (and, the first time, q is stored) */
            for (int i = threadIdx.x; i < nk * nvr; i += blockDim.x) {
                int kk = i / nvr, d = (i % nvr) * NV, k = kt + kk;
                int block = tab[k / B], j = k % B;
                if (kl.written && d == 0 && h == 0)
                    kv_check(kl, layer, block, j, seg0, k);
                float f[NV];
                vload<E, NV>(f, kv + kcu_kv_index(kl, block, layer, 0, h, j) + d);
#pragma unroll
                for (int v = 0; v < NV; v++)
                    Ks[kk * ks + d + v] = f[v];
                vload<E, NV>(f, kv + kcu_kv_index(kl, block, layer, 1, h, j) + d);
#pragma unroll
                for (int v = 0; v < NV; v++)
                    Vs[kk * hd + d + v] = f[v];
            }
            __syncthreads();
#pragma unroll
            for (int rr = 0; rr < PF_RPW; rr++) {
                const int t = t0 + warp * PF_RPW + rr;
                if (t < seg0 || t >= seg1)
                    continue;       /* warp-uniform */
                const int p = row_pos[t];
                if (kt > p)
                    continue;       /* warp-uniform: the whole tile is in this row's future */
                const float *qr = Qs + (t - t0) * hd;
                float sc = -INFINITY;
                if (lane < nk && kt + lane <= p) {
                    float dot = 0.0f;
                    for (int d = 0; d < hd; d++)
                        dot += qr[d] * Ks[lane * ks + d];
                    sc = dot;
                }
                const float mn = fmaxf(m[rr], warp_max(sc)), corr = expf(m[rr] - mn);
                const float e = sc > -INFINITY ? expf(sc - mn) : 0.0f;
                l[rr] = l[rr] * corr + warp_sum(e);
#pragma unroll
                for (int i = 0; i < PF_DPL; i++)
                    o[rr][i] *= corr;
                for (int kk = 0; kk < nk; kk++) {
                    const float w = __shfl_sync(0xffffffffu, e, kk);
#pragma unroll
                    for (int i = 0; i < PF_DPL; i++) {
                        const int d = lane + 32 * i;
                        if (d < hd)
                            o[rr][i] += w * Vs[kk * hd + d];
                    }
                }
                m[rr] = mn;
            }
        }
#pragma unroll
        for (int rr = 0; rr < PF_RPW; rr++) {
            const int t = t0 + warp * PF_RPW + rr;
            if (t < seg0 || t >= seg1)
                continue;
#pragma unroll
            for (int i = 0; i < PF_DPL; i++) {
                const int d = lane + 32 * i;
                if (d < hd)
                    out[(size_t)t * C + (size_t)h * hd + d] = from_f<E>(o[rr][i] / l[rr]);
            }
        }
    }
}

template <typename E, int NV>
static cudaError_t launch_prefill(E *out, const E *qkv, const E *kv, const int32_t *row_pos, const int32_t *row_tab,
                                  const int32_t *tables, int T, int layer, struct kcu_kv_layout kl, float scale,
                                  cudaStream_t st)
{
    const int hd = kl.head_dim;
    size_t shared = sizeof(float) * ((size_t)PF_BK * (hd | 1) + (size_t)PF_BK * hd + (size_t)PF_BQ * hd);
    if (shared > 48 * 1024) {   /* head_dim over ~150: opt in to more than the default 48 KiB */
        cudaError_t e = cudaFuncSetAttribute(prefill_kernel<E, NV>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             (int)shared);
        if (e != cudaSuccess)
            return e;
    }
    dim3 grid((unsigned)((T + PF_BQ - 1) / PF_BQ), (unsigned)kl.n_head);
    prefill_kernel<E, NV><<<grid, PF_WARPS * 32, shared, st>>>(out, qkv, kv, row_pos, row_tab, tables, T, layer, kl,
                                                               scale);
    return cudaGetLastError();
}

extern "C" cudaError_t kcu_attention_prefill(void *out, const void *qkv, const void *kv, enum ckpt_dtype dt,
                                             const int32_t *row_pos, const int32_t *row_tab, const int32_t *tables,
                                             int T, int layer, struct kcu_kv_layout kl, float scale, cudaStream_t st)
{
    if (T <= 0)
        return cudaSuccess;
    if (kl.head_dim < 1 || kl.head_dim > KCU_MAX_HEAD_DIM || kl.n_head < 1 || kl.block_tokens < 1 ||
        kl.n_head > 65535)
        return cudaErrorInvalidValue;
    int nv = pick_nv(kl.head_dim, 0);
    KCU_DISPATCH(dt, switch (nv) {
        case 8: return launch_prefill<E, 8>((E *)out, (const E *)qkv, (const E *)kv, row_pos, row_tab, tables, T,
                                            layer, kl, scale, st);
        case 4: return launch_prefill<E, 4>((E *)out, (const E *)qkv, (const E *)kv, row_pos, row_tab, tables, T,
                                            layer, kl, scale, st);
        case 2: return launch_prefill<E, 2>((E *)out, (const E *)qkv, (const E *)kv, row_pos, row_tab, tables, T,
                                            layer, kl, scale, st);
        default: return launch_prefill<E, 1>((E *)out, (const E *)qkv, (const E *)kv, row_pos, row_tab, tables, T,
                                             layer, kl, scale, st);
    });
    return cudaErrorInvalidValue;
}
