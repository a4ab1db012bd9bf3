/* gpu_none.c -- the GPU probe of a build without CUDA: no backend, no devices. */
#include "config.h"
#include "gpu.h"

#include <stdio.h>
#include <string.h>

int gpu_probe(struct gpu_info *info, bool run_kernel)
{
    (void)run_kernel;
    memset(info, 0, sizeof *info);
    snprintf(info->error, sizeof info->error, "built without CUDA (configure --with-cuda)");
    return 0;
}
