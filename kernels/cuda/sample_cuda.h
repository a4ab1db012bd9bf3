/* sample_cuda.h -- greedy next-token choice on the device (kernels/cuda/sample.cu): kernels/sample.h's steps, one block per logits row, only ids and log-probabilities coming back. */
#ifndef LLMCGI_SAMPLE_CUDA_H
#define LLMCGI_SAMPLE_CUDA_H

#include "sample.h"

#include <cuda_runtime.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One row's request in device memory: ksample_row with its three arrays as
 * offsets into one int32 array (rep ids, generated ids, their counts). */
struct kcu_sample_row {
    float repetition_penalty, frequency_penalty, presence_penalty;
    int rep_off, n_rep;
    int gen_off, n_gen;     /* gen ids at ids[gen_off..], their counts at ids[gen_off + n_gen..] */
    int top_n;
};

/* Doubles of work kcu_sample_greedy needs for `rows` rows of n logits. */
size_t kcu_sample_work_doubles(int rows, int n);

/* ksample_greedy_ref on each of `rows` rows of logits (device, [rows][n],
 * overwritten with the penalised, sanitised logits), the requests in reqs
 * and ids (device), into out (device, rows entries; id -1 when a row has
 * nothing to choose). work: kcu_sample_work_doubles(rows, n) doubles. The
 * same ids and log-probability bits as the reference, but for log() in
 * double (CUDA's is within 1 ulp of the C library's), which can move a
 * log-probability by one float ulp in rare cases. */
cudaError_t kcu_sample_greedy(float *logits, int rows, int n, const struct kcu_sample_row *reqs, const int32_t *ids,
                              struct ksample_out *out, double *work, cudaStream_t st);

#ifdef __cplusplus
}
#endif

#endif
