/* ops.h -- the CPU backend's numeric kernels: matrix products over F32/F16/BF16 weights, LayerNorm, GELU, softmax, dot/axpy; AVX2+FMA chosen at run time, portable C otherwise.
 *
 * Every kernel has one portable C version and, where it pays, an AVX2+FMA
 * version picked once at start-up (ops_init). tests/unit/test_cpu_ops.c
 * checks both against double-precision references on random inputs. */
#ifndef LLMCGI_OPS_H
#define LLMCGI_OPS_H

#include "checkpoint.h"

#include <stdbool.h>

/* Picks the kernels for this CPU (idempotent, thread-safe). With
 * force_portable, the portable C versions even where AVX2 exists (tests). */
void ops_init(bool force_portable);

/* "avx2+fma+f16c" or "portable". */
const char *ops_simd_name(void);

/* Matrix product over a block of output features:
 *   y[t][o] = (accumulate ? y[t][o] : 0) + bias[o] + sum_i x[t][i] * W[o][i]
 * for t < T and o0 <= o < o1. x is [T][I] (row stride I), y is [T][O] (row
 * stride O), W is [O][I] in `wt` (the output-major layout: each row of W is
 * one output's weights), bias may be NULL. The caller splits [0, O) among
 * threads; a block is read from memory once for all T rows. */
void ops_matmul(float *y, const float *x, const void *w, enum ckpt_dtype wt, const float *bias,
                int T, int I, int O, int o0, int o1, bool accumulate);

/* LayerNorm of one row: y = (x - mean) / sqrt(var + eps) * g + b, var the biased variance. */
void ops_layernorm(float *y, const float *x, const float *g, const float *b, int n, float eps);

enum ops_act { OPS_GELU_TANH, OPS_GELU_ERF, OPS_RELU, OPS_QUICK_GELU };

/* In place on n values:
 *   GELU_TANH (gelu_new): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
 *   GELU_ERF:             0.5 x (1 + erf(x / sqrt 2))
 *   RELU:                 max(x, 0)
 *   QUICK_GELU:           x * sigmoid(1.702 x) */
void ops_activate(float *x, int n, enum ops_act act);

/* sum_i a[i] b[i] */
float ops_dot(const float *a, const float *b, int n);

/* y[i] += a * x[i] */
void ops_axpy(float *y, float a, const float *x, int n);

/* x = softmax(x) in place over n values (n >= 1). */
void ops_softmax(float *x, int n);

/* Converts n values of type t starting at src to float. */
void ops_to_f32(float *dst, const void *src, enum ckpt_dtype t, size_t n);

#endif
