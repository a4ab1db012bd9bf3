/* probe.cu -- the CUDA side of the GPU probe: count devices, read device 0, run one checked kernel.
 *
 * The first CUDA code of the project: it proves the build path (nvcc,
 * gencode targets, static cudart, linking into a C program) and gives the
 * server and `llmcgi --version` an honest answer about the GPU. */
#include "gpu.h"

#include <cuda_runtime.h>
#include <stdio.h>
#include <string.h>

/* out[i] = i * 3 + seed for i < n: a pattern the host can check exactly. */
__global__ static void fill_pattern(int *out, int n, int seed)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        out[i] = i * 3 + seed;
}

/* The reference for fill_pattern, checked element by element. */
static int check_pattern(const int *v, int n, int seed)
{
    for (int i = 0; i < n; i++)
        if (v[i] != i * 3 + seed)
            return -1;
    return 0;
}

#define CUDA_TRY(call)                                                                        \
    do {                                                                                      \
        cudaError_t e_ = (call);                                                              \
        if (e_ != cudaSuccess) {                                                              \
            snprintf(info->error, sizeof info->error, "%s: %s", #call, cudaGetErrorString(e_)); \
            goto fail;                                                                        \
        }                                                                                     \
    } while (0)

static int run_pattern_kernel(struct gpu_info *info)
{
    enum { N = 4096, SEED = 7 };
    static int host[N];
    int *dev = NULL;
    memset(host, 0xff, sizeof host);            /* poisoned: unwritten elements show */
    CUDA_TRY(cudaSetDevice(0));
    CUDA_TRY(cudaMalloc((void **)&dev, sizeof host));
    CUDA_TRY(cudaMemset(dev, 0xff, sizeof host));
    fill_pattern<<<(N + 255) / 256, 256>>>(dev, N, SEED);
    CUDA_TRY(cudaGetLastError());
    CUDA_TRY(cudaMemcpy(host, dev, sizeof host, cudaMemcpyDeviceToHost));
    CUDA_TRY(cudaFree(dev));
    dev = NULL;
    if (check_pattern(host, N, SEED) < 0) {
        snprintf(info->error, sizeof info->error, "the probe kernel wrote wrong values");
        return -1;
    }
    info->kernel_ran = true;
    return 0;
fail:
    if (dev)
        cudaFree(dev);
    return -1;
}

extern "C" int gpu_probe(struct gpu_info *info, bool run_kernel)
{
    memset(info, 0, sizeof *info);
    info->built = true;
    cudaRuntimeGetVersion(&info->runtime_version);
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        /* no driver or no device: a normal state for a CUDA build on a CPU host */
        snprintf(info->error, sizeof info->error, "%s", cudaGetErrorString(e));
        cudaGetLastError();
        return 0;
    }
    if (n == 0) {
        snprintf(info->error, sizeof info->error, "no CUDA device");
        return 0;
    }
    cudaDeviceProp prop;
    CUDA_TRY(cudaGetDeviceProperties(&prop, 0));
    info->devices = n;              /* only once device 0 has answered */
    snprintf(info->name, sizeof info->name, "%s", prop.name);
    info->cc_major = prop.major;
    info->cc_minor = prop.minor;
    info->memory_bytes = prop.totalGlobalMem;
    if (run_kernel)
        return run_pattern_kernel(info);
    return 0;
fail:
    return -1;
}
