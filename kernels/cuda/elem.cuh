/* elem.cuh -- device helpers shared by the CUDA kernel files (kernels.cu, attention.cu): element conversions, the dtype dispatch, warp reductions and aligned vector loads and stores. Included only by .cu files. */
#ifndef LLMCGI_CUDA_ELEM_CUH
#define LLMCGI_CUDA_ELEM_CUH

#include "cuda/kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>

static __device__ __forceinline__ float to_f(float v) { return v; }
static __device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
static __device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }

/* Round to nearest even, as ckpt_f32_to_f16 / ckpt_f32_to_bf16 do on the host. */
template <typename T> static __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f<__half>(float v)
{
    /* saturate rather than overflow to infinity (kernels.h); comparisons with NaN are false, so NaN stays NaN */
    if (fabsf(v) > KCU_F16_MAX)
        v = copysignf(KCU_F16_MAX, v);
    return __float2half_rn(v);
}
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

/* Runs the statement with E bound to the element type of dt; an unknown dt returns
 * cudaErrorInvalidValue from the enclosing wrapper. */
#define KCU_DISPATCH(dt, ...)                                                                                          \
    switch (dt) {                                                                                                      \
    case CKPT_F32: { typedef float E; __VA_ARGS__; } break;                                                            \
    case CKPT_F16: { typedef __half E; __VA_ARGS__; } break;                                                           \
    case CKPT_BF16: { typedef __nv_bfloat16 E; __VA_ARGS__; } break;                                                   \
    default: return cudaErrorInvalidValue;                                                                             \
    }

/* The sum of v over the warp, in every lane. */
static __device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

static __device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* NV elements of E as one aligned access: 16 bytes (8 halves, 4 floats)
 * is one 128-bit load or store (ld.global.v4), 32 bytes two. The address
 * must be a multiple of sizeof(E) * NV. */
template <typename E, int NV> struct alignas(sizeof(E) * NV) kvec {
    E v[NV];
};

template <typename E, int NV> static __device__ __forceinline__ void vload(float *f, const E *p)
{
    kvec<E, NV> t = *reinterpret_cast<const kvec<E, NV> *>(p);
#pragma unroll
    for (int i = 0; i < NV; i++)
        f[i] = to_f(t.v[i]);
}

template <typename E, int NV> static __device__ __forceinline__ void vstore(E *p, const float *f)
{
    kvec<E, NV> t;
#pragma unroll
    for (int i = 0; i < NV; i++)
        t.v[i] = from_f<E>(f[i]);
    *reinterpret_cast<kvec<E, NV> *>(p) = t;
}

/* Whether p is a multiple of a bytes. */
static inline bool kcu_aligned(const void *p, size_t a)
{
    return ((uintptr_t)p & (a - 1)) == 0;
}

#endif
