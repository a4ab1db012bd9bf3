/* sample.cu -- greedy next-token choice on the device: penalties, argmax, log-softmax normaliser and top-n in the engine sampler's order of float operations (kernels/sample.c is the reference; every product and sum rounded on its own, no fused multiply-add). */
#include "cuda/sample_cuda.h"
#include "exp_poly.h"

#include <float.h>
#include <math.h>

#define SAMPLE_THREADS 256

/* sample.c's exp_neg, operation for operation. */
static __device__ float exp_neg(float x)
{
    const float under_c = EXP_UNDER, magic = EXP_MAGIC;
    bool under = x < under_c;
    x = fmaxf(x, under_c);
    float t = __fadd_rn(__fmul_rn(x, EXP_LOG2E), magic);
    int n = (int)(__float_as_uint(t) - __float_as_uint(magic));
    float fn = __fsub_rn(t, magic);
    float r = __fsub_rn(x, __fmul_rn(fn, EXP_C1));
    r = __fsub_rn(r, __fmul_rn(fn, EXP_C2));
    float r2 = __fmul_rn(r, r), r4 = __fmul_rn(r2, r2);
    float a = __fadd_rn(EXP_P5, __fmul_rn(EXP_P4, r));
    float b = __fadd_rn(EXP_P3, __fmul_rn(EXP_P2, r));
    float c = __fadd_rn(EXP_P1, __fmul_rn(EXP_P0, r));
    float y = __fadd_rn(__fadd_rn(a, __fmul_rn(b, r2)), __fmul_rn(c, r4));
    y = __fadd_rn(__fadd_rn(__fmul_rn(y, r2), r), 1.0f);
    y = __fmul_rn(y, __uint_as_float((unsigned)(n + 127) << 23));
    return under ? 0.0f : y;
}

/* (v, i) comes before (w, j): larger value first, lower id among equals. */
static __device__ bool before(float v, int i, float w, int j)
{
    return v > w || (v == w && i < j);
}

/* The block's first (value, id) under before(); every thread gets it. */
static __device__ void block_best(float *v, int *i, float *sv, int *si)
{
    int t = threadIdx.x;
    sv[t] = *v;
    si[t] = *i;
    __syncthreads();
    for (int s = SAMPLE_THREADS / 2; s > 0; s >>= 1) {
        if (t < s && si[t + s] >= 0 && (si[t] < 0 || before(sv[t + s], si[t + s], sv[t], si[t]))) {
            sv[t] = sv[t + s];
            si[t] = si[t + s];
        }
        __syncthreads();
    }
    *v = sv[0];
    *i = si[0];
    __syncthreads();
}

static __global__ void sample_greedy_kernel(float *logits, int n, const struct kcu_sample_row *reqs,
                                            const int32_t *ids, struct ksample_out *out, double *work)
{
    __shared__ float sv[SAMPLE_THREADS];
    __shared__ int si[SAMPLE_THREADS];
    __shared__ double acc[4];
    int row = blockIdx.x, t = threadIdx.x;
    float *l = logits + (size_t)row * n;
    const struct kcu_sample_row q = reqs[row];
    int nb = n / EXP_BLOCK;
    double *blk = work + (size_t)row * (nb > 0 ? nb : 1) * 4;

    /* 1-2. penalties: the ids are distinct, so no two threads touch one logit */
    if (q.repetition_penalty != 1.0f)
        for (int k = t; k < q.n_rep; k += SAMPLE_THREADS) {
            int id = ids[q.rep_off + k];
            if (id >= 0 && id < n)
                l[id] = l[id] < 0 ? __fmul_rn(l[id], q.repetition_penalty) : __fdiv_rn(l[id], q.repetition_penalty);
        }
    __syncthreads();
    if (q.frequency_penalty != 0.0f || q.presence_penalty != 0.0f)
        for (int k = t; k < q.n_gen; k += SAMPLE_THREADS) {
            int id = ids[q.gen_off + k];
            if (id >= 0 && id < n) {
                float f = __fmul_rn((float)ids[q.gen_off + q.n_gen + k], q.frequency_penalty);
                l[id] = __fsub_rn(l[id], __fadd_rn(f, q.presence_penalty));
            }
        }
    __syncthreads();

    /* 3-4. sanitise, maximum and its first index */
    float bv = -INFINITY;
    int bi = -1;
    for (int i = t; i < n; i += SAMPLE_THREADS) {
        float v = l[i];
        v = v != v ? -INFINITY : v > FLT_MAX ? FLT_MAX : v;
        l[i] = v;
        if (v > -INFINITY && (bi < 0 || before(v, i, bv, bi))) {
            bv = v;
            bi = i;
        }
    }
    block_best(&bv, &bi, sv, si);
    if (bi < 0) {
        if (t == 0) {
            out[row].id = -1;
            out[row].n_top = 0;
        }
        return;
    }
    const float mx = bv;
    const int arg = bi;

    /* 5. the blocks' lane sums in parallel, then the accumulators in block order */
    for (int b = t; b < nb; b += SAMPLE_THREADS) {
        float f[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int k = 0; k < EXP_BLOCK; k += 8)
            for (int j = 0; j < 8; j++)
                f[j] = __fadd_rn(f[j], exp_neg(__fsub_rn(l[b * EXP_BLOCK + k + j], mx)));
        for (int j = 0; j < 4; j++)
            blk[b * 4 + j] = __dadd_rn((double)f[j], (double)f[j + 4]);
    }
    __syncthreads();
    if (t < 4) {
        double a = 0;
        for (int b = 0; b < nb; b++)
            a = __dadd_rn(a, blk[b * 4 + t]);
        if (t == 0)
            for (int i = nb * EXP_BLOCK; i < n; i++)
                a = __dadd_rn(a, (double)exp_neg(__fsub_rn(l[i], mx)));
        acc[t] = a;
    }
    __syncthreads();
    const double logz = log(__dadd_rn(__dadd_rn(acc[0], acc[1]), __dadd_rn(acc[2], acc[3])));
    if (t == 0) {
        out[row].id = arg;
        out[row].logprob = (float)__dsub_rn((double)__fsub_rn(l[arg], mx), logz);
    }

    /* 6. top_n: one block-wide pass per entry, each taking the first (value, id) after the last */
    float pv = INFINITY;
    int pi = -1, cnt = 0;
    for (int j = 0; j < q.top_n; j++) {
        bv = -INFINITY;
        bi = -1;
        for (int i = t; i < n; i += SAMPLE_THREADS) {
            float v = l[i];
            if (v > -INFINITY && (pi < 0 || before(pv, pi, v, i)) && (bi < 0 || before(v, i, bv, bi))) {
                bv = v;
                bi = i;
            }
        }
        block_best(&bv, &bi, sv, si);
        if (bi < 0)
            break;
        if (t == 0) {
            out[row].top_id[j] = bi;
            out[row].top_logprob[j] = (float)__dsub_rn((double)__fsub_rn(bv, mx), logz);
        }
        pv = bv;
        pi = bi;
        cnt++;
    }
    if (t == 0)
        out[row].n_top = cnt;
}

extern "C" size_t kcu_sample_work_doubles(int rows, int n)
{
    int nb = n / EXP_BLOCK;
    return (size_t)rows * (size_t)(nb > 0 ? nb : 1) * 4;
}

extern "C" cudaError_t kcu_sample_greedy(float *logits, int rows, int n, const struct kcu_sample_row *reqs,
                                         const int32_t *ids, struct ksample_out *out, double *work, cudaStream_t st)
{
    if (rows <= 0)
        return cudaSuccess;
    sample_greedy_kernel<<<rows, SAMPLE_THREADS, 0, st>>>(logits, n, reqs, ids, out, work);
    return cudaGetLastError();
}
