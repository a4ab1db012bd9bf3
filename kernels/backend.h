/* backend.h -- what each backend (cpu/, cuda/) gives llm.c: load, free, forward, greedy choice on the device; the checks common to all live in llm.c. */
#ifndef LLMCGI_BACKEND_H
#define LLMCGI_BACKEND_H

#include "llm.h"

#ifdef __cplusplus
extern "C" {
#endif

struct llm_backend {
    const char *name;
    /* Builds the backend's model from ck; fills the backend's part of *info
     * (weight_dtype, weight_bytes, step_weight_bytes, kv_block_bytes,
     * device_name, threads); the sizes in *info (kv_block_tokens, kv_blocks,
     * max_step_tokens, max_step_logits) are already decided. *impl is owned
     * by the caller and freed with free_model. Returns 0 or -1 with err. */
    int (*load)(const struct gpt2_checkpoint *ck, const struct llm_load_opts *o, struct llm_info *info,
                void **impl, char *err, size_t errlen);
    void (*free_model)(void *impl);
    /* A step already checked by llm_forward. Returns 0 or -1 with err. */
    int (*forward)(void *impl, const struct llm_seq *seqs, int n_seqs, float *logits, float *const *hidden,
                   char *err, size_t errlen);  /* hidden: llm_forward_hidden's (NULL: none) */
    /* A step already checked by llm_forward_greedy, its rows chosen where
     * the model runs; NULL: llm.c runs forward into the caller's scratch and
     * ksample_greedy_ref on each row (the CPU backend's way). Returns 0 or
     * -1 with err. */
    int (*forward_greedy)(void *impl, const struct llm_seq *seqs, int n_seqs, const struct ksample_row *rows,
                          struct ksample_out *out, char *err, size_t errlen);
};

/* What o->dtype asks of a backend's matrices; gpu: auto means half precision
 * (llm.h). Q8 leaves the embeddings in the file's type (CKPT_PICK_FILE). */
enum ckpt_pick llm_dtype_pick(enum llm_dtype dt, bool gpu);

/* Whether the CPU backend keeps ck's K and V in F16 under o (llm.h's
 * llm_kv_dtype, auto resolved from the matrices' type). */
bool llm_cpu_kv_half(const struct gpt2_checkpoint *ck, const struct llm_load_opts *o);

extern const struct llm_backend llm_cpu_backend;
/* kernels/cuda/gpt2_cuda.cu: linked only when built with CUDA (HAVE_CUDA). */
extern const struct llm_backend llm_cuda_backend;

#ifdef __cplusplus
}
#endif

#endif
