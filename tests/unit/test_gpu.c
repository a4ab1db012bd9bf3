/* test_gpu.c -- the GPU probe: without a device it says why; with one, its kernel's output is checked exactly. */
#include "config.h"
#include "gpu.h"
#include "tap.h"

int main(void)
{
    struct gpu_info g;
    int rc = gpu_probe(&g, true);
#ifndef HAVE_CUDA
    ok(rc == 0 && !g.built && g.devices == 0, "a build without CUDA reports no backend");
    has_str(g.error, "without CUDA", "  and says why");
    return tap_done();
#else
    ok(g.built, "the CUDA backend is built in");
    ok(g.runtime_version >= 11000, "CUDA runtime version %d", g.runtime_version);
    if (g.devices == 0) {
        ok(rc == 0 && g.error[0], "no device: the probe says why (%s)", g.error);
        tap_diag("no CUDA device here: the kernel check runs on a GPU machine");
        return tap_done();
    }
    ok(rc == 0, "the probe ran: %s", g.error[0] ? g.error : "no error");
    ok(g.kernel_ran, "the probe kernel wrote the expected pattern on %s (sm_%d%d)", g.name, g.cc_major, g.cc_minor);
    ok(g.memory_bytes > 0, "device memory reported");
    return tap_done();
#endif
}
