/* exp_poly.h -- the constants of the one exp(x <= 0) the samplers use (Cephes expf: range reduction by ln 2, a degree-5 polynomial in Estrin's scheme), shared (also by the CPU kernels' vector exps, kernels/cpu/ops.c exp8 and ops_avx512.c exp16) so that the engine's sampler (fcgi_app/engine/sampler_select.c), its CPU reference for a device (kernels/sample.c) and the device itself (kernels/cuda/sample.cu) compute the same bits.
 *
 * Plain macros: included from C and from CUDA. */
#ifndef LLMCGI_EXP_POLY_H
#define LLMCGI_EXP_POLY_H

#define EXP_UNDER (-87.33654475f)   /* exp(EXP_UNDER) ~ FLT_MIN; anything below gives 0 */
#define EXP_MAGIC 12582912.0f       /* 1.5 * 2^23: adding it rounds to an integer */
#define EXP_LOG2E 1.44269504088896341f
#define EXP_C1 0.693359375f         /* ln 2 = C1 + C2, C1 exact in few bits */
#define EXP_C2 (-2.12194440e-4f)
#define EXP_P0 1.9875691500e-4f
#define EXP_P1 1.3981999507e-3f
#define EXP_P2 8.3334519073e-3f
#define EXP_P3 4.1665795894e-2f
#define EXP_P4 1.6666665459e-1f
#define EXP_P5 5.0000001201e-1f
#define EXP_BLOCK 64                /* a sum of exps: each block summed in float, then the blocks in double */

#endif
