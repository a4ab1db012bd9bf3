/* gpu.h -- what the numerics layer can tell about the GPU: a probe run once at start-up.
 *
 * Implemented by kernels/cuda/probe.cu when llmcgi is built with CUDA and by
 * kernels/gpu_none.c otherwise. The full backend interface (load a model,
 * run a batched forward step) joins this header with the local engine. */
#ifndef LLMCGI_GPU_H
#define LLMCGI_GPU_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct gpu_info {
    bool built;                 /* this binary has the CUDA backend */
    int devices;                /* usable CUDA devices (0 when none or on error) */
    char name[128];             /* device 0 */
    int cc_major, cc_minor;     /* device 0 compute capability */
    size_t memory_bytes;        /* device 0 global memory */
    int runtime_version;        /* e.g. 13000 */
    bool kernel_ran;            /* run_kernel was asked and a kernel ran and checked out */
    char error[160];            /* why there is no device, or what failed */
};

/* Fills *info. With run_kernel, also launches a small kernel on device 0 and
 * checks what it wrote (this creates a CUDA context, so the server does not
 * do it on every start). Returns 0 when the probe itself worked (also with
 * no device), -1 when a CUDA call failed; info->error says which. */
int gpu_probe(struct gpu_info *info, bool run_kernel);

#ifdef __cplusplus
}
#endif

#endif
