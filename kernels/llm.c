/* llm.c -- the backend-independent half of llm.h: picks the backend, sizes the KV pool and scratch, and checks every step before a backend sees it. */
#include "config.h"
#include "backend.h"
#include "gpu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* CUDA builds link the CUDA backend; `make fuzz` compiles the kernels' C
 * sources alone (no .cu) and says so with LLMCGI_NO_CUDA_BACKEND. */
#if defined(HAVE_CUDA) && !defined(LLMCGI_NO_CUDA_BACKEND)
#define LLM_WITH_CUDA 1
#endif

struct llm_model {
    const struct llm_backend *be;
    void *impl;
    struct llm_info info;
};

int llm_device_parse(const char *s, enum llm_device *dev, int *index)
{
    *index = 0;
    if (!strcmp(s, "auto"))
        *dev = LLM_DEVICE_AUTO;
    else if (!strcmp(s, "cpu"))
        *dev = LLM_DEVICE_CPU;
    else if (!strcmp(s, "cuda"))
        *dev = LLM_DEVICE_CUDA;
    else if (!strncmp(s, "cuda:", 5) && s[5] >= '0' && s[5] <= '9') {
        char *end;
        long n = strtol(s + 5, &end, 10);
        if (*end || n > 64)
            return -1;
        *dev = LLM_DEVICE_CUDA;
        *index = (int)n;
    } else
        return -1;
    return 0;
}

int llm_dtype_parse(const char *s, enum llm_dtype *dt)
{
    static const char *const names[] = {[LLM_DTYPE_AUTO] = "auto", [LLM_DTYPE_F32] = "f32", [LLM_DTYPE_F16] = "f16",
                                        [LLM_DTYPE_BF16] = "bf16", [LLM_DTYPE_Q8] = "q8"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(s, names[i])) {
            *dt = (enum llm_dtype)i;
            return 0;
        }
    return -1;
}

int llm_kv_dtype_parse(const char *s, enum llm_kv_dtype *kt)
{
    static const char *const names[] = {[LLM_KV_AUTO] = "auto", [LLM_KV_F32] = "f32", [LLM_KV_F16] = "f16"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(s, names[i])) {
            *kt = (enum llm_kv_dtype)i;
            return 0;
        }
    return -1;
}

static const char *const tuning_names[] = {[LLM_TUNING_AUTO] = "auto", [LLM_TUNING_LATENCY] = "latency",
                                           [LLM_TUNING_THROUGHPUT] = "throughput"};

int llm_tuning_parse(const char *s, enum llm_tuning *tu)
{
    for (size_t i = 0; i < sizeof tuning_names / sizeof tuning_names[0]; i++)
        if (!strcmp(s, tuning_names[i])) {
            *tu = (enum llm_tuning)i;
            return 0;
        }
    return -1;
}

const char *llm_tuning_name(enum llm_tuning t)
{
    return (unsigned)t < sizeof tuning_names / sizeof tuning_names[0] ? tuning_names[t] : "?";
}

bool llm_cpu_kv_half(const struct gpt2_checkpoint *ck, const struct llm_load_opts *o)
{
    if (o->kv_dtype != LLM_KV_AUTO)
        return o->kv_dtype == LLM_KV_F16;
    enum ckpt_dtype t = CKPT_F32;
    switch (o->dtype) {
    case LLM_DTYPE_F32: return false;
    case LLM_DTYPE_F16: case LLM_DTYPE_BF16: case LLM_DTYPE_Q8: return true;
    case LLM_DTYPE_AUTO: break;
    }
    /* the CPU's auto: the file's own type (CKPT_PICK_FILE reads no values) */
    return ckpt_matrix_dtype(ck, CKPT_PICK_FILE, &t, NULL, 0) == 0 && t != CKPT_F32;
}

/* Blocks in the pool: o->kv_blocks; else as many as o->kv_bytes hold in the
 * backend's KV type (the CPU's per llm_cpu_kv_half; CUDA's, the matrices'
 * type, counted as F32, at most twice what it needs); else one full
 * context. Never fewer than one full context, nor more than 2^24. */
static int kv_blocks_of(const struct gpt2_checkpoint *ck, const struct llm_load_opts *o, int block_tokens, bool cpu)
{
    const struct gpt2_config *cfg = &ck->cfg;
    long per_ctx = (cfg->n_positions + block_tokens - 1) / block_tokens;
    if (o->kv_blocks > 0)
        return o->kv_blocks;
    if (!o->kv_bytes)
        return (int)per_ctx;
    size_t es = cpu && llm_cpu_kv_half(ck, o) ? 2 : 4;
    size_t block_bytes = (size_t)cfg->n_layer * 2 * (size_t)block_tokens * (size_t)cfg->n_embd * es;
    size_t n = block_bytes ? o->kv_bytes / block_bytes : 0;
    if (n < (size_t)per_ctx)
        n = (size_t)per_ctx;
    return n > (size_t)1 << 24 ? 1 << 24 : (int)n;
}

enum ckpt_pick llm_dtype_pick(enum llm_dtype dt, bool gpu)
{
    switch (dt) {
    case LLM_DTYPE_F32: return CKPT_PICK_F32;
    case LLM_DTYPE_F16: return CKPT_PICK_F16;
    case LLM_DTYPE_BF16: return CKPT_PICK_BF16;
    case LLM_DTYPE_AUTO: return gpu ? CKPT_PICK_HALF : CKPT_PICK_FILE;
    case LLM_DTYPE_Q8: break;
    }
    return CKPT_PICK_FILE;
}

/* Whether CUDA device `index` can take a model; when not, why (in why). */
static bool cuda_usable(int index, char *why, size_t len)
{
#ifdef LLM_WITH_CUDA
    struct gpu_info g;
    if (gpu_probe(&g, false) != 0) {
        snprintf(why, len, "the CUDA probe failed: %s", g.error);
        return false;
    }
    if (g.devices == 0) {
        if (!strcmp(g.error, "no CUDA device") || !g.error[0])
            snprintf(why, len, "no CUDA device");
        else
            snprintf(why, len, "no CUDA device (%s)", g.error);
        return false;
    }
    if (index >= g.devices) {
        snprintf(why, len, "no CUDA device %d (%d device%s)", index, g.devices, g.devices == 1 ? "" : "s");
        return false;
    }
    return true;
#else
    (void)index;
    snprintf(why, len, "this build has no CUDA backend (configure --with-cuda)");
    return false;
#endif
}

int llm_load(const struct gpt2_checkpoint *ck, const struct llm_load_opts *o, struct llm_model **out,
             char *err, size_t errlen)
{
    static const struct llm_load_opts defaults;
    if (!o)
        o = &defaults;
    *out = NULL;
    const struct gpt2_config *cfg = &ck->cfg;
    const struct llm_backend *be = &llm_cpu_backend;
    char why[160] = "";
    if (o->dtype == LLM_DTYPE_Q8 && o->device == LLM_DEVICE_CUDA) {
        snprintf(err, errlen, "%s: dtype q8 runs on the CPU only; use device = cpu or auto", ck->dir);
        return -1;
    }
    if (o->kv_dtype != LLM_KV_AUTO && o->device == LLM_DEVICE_CUDA) {
        snprintf(err, errlen, "%s: kv_dtype %s is the CPU backend's (CUDA keeps K and V in the matrices' type); use "
                 "kv_dtype = auto, or device = cpu", ck->dir, o->kv_dtype == LLM_KV_F16 ? "f16" : "f32");
        return -1;
    }
    if (o->device == LLM_DEVICE_CUDA) {
        if (!cuda_usable(o->device_index, why, sizeof why)) {
            snprintf(err, errlen, "%s: device cuda:%d: %s; use device = cpu or auto", ck->dir, o->device_index, why);
            return -1;
        }
#ifdef LLM_WITH_CUDA
        be = &llm_cuda_backend;
#endif
    }
#ifdef LLM_WITH_CUDA
    /* auto: the GPU when one is usable; the reason it is not goes into
     * info.fallback (a build without CUDA stays quietly on the CPU). */
    if (o->device == LLM_DEVICE_AUTO && o->dtype == LLM_DTYPE_Q8)
        snprintf(why, sizeof why, "dtype q8 runs on the CPU only");
    else if (o->device == LLM_DEVICE_AUTO && o->kv_dtype != LLM_KV_AUTO)
        snprintf(why, sizeof why, "kv_dtype %s is the CPU backend's", o->kv_dtype == LLM_KV_F16 ? "f16" : "f32");
    else if (o->device == LLM_DEVICE_AUTO && cuda_usable(o->device_index, why, sizeof why))
        be = &llm_cuda_backend;
#endif
    struct llm_model *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    struct llm_info *in = &m->info;
    in->cfg = *cfg;
    in->kv_block_tokens = o->kv_block_tokens > 0 ? o->kv_block_tokens : 16;
    in->kv_blocks = kv_blocks_of(ck, o, in->kv_block_tokens, be == &llm_cpu_backend);
    in->max_step_tokens = o->max_step_tokens > 0 ? o->max_step_tokens : cfg->n_positions;
    in->max_step_logits = o->max_step_logits > 0 ? o->max_step_logits : in->max_step_tokens;
    if (in->max_step_logits > in->max_step_tokens)
        in->max_step_logits = in->max_step_tokens;
    in->out_dim = cfg->classifier ? cfg->num_labels : cfg->vocab_size;
    if (cfg->classifier && !ck->score.data) {
        snprintf(err, errlen, "%s: a sequence classifier without its score head", ck->dir);
        free(m);
        return -1;
    }
    struct llm_info sizes = *in;
    if (be == &llm_cpu_backend && o->device == LLM_DEVICE_AUTO && why[0])
        snprintf(in->fallback, sizeof in->fallback, "%s; using the CPU", why);
    int rc = be->load(ck, o, in, &m->impl, err, errlen);
    if (rc != 0 && be != &llm_cpu_backend && o->device == LLM_DEVICE_AUTO) {
        /* auto: a model the GPU cannot take (memory, a shape its kernels
         * refuse) still runs, on the CPU, and says why. */
        *in = sizes;
        in->kv_blocks = kv_blocks_of(ck, o, in->kv_block_tokens, true);
        snprintf(in->fallback, sizeof in->fallback, "the CUDA backend cannot load it (%s); using the CPU", err);
        be = &llm_cpu_backend;
        rc = be->load(ck, o, in, &m->impl, err, errlen);
    }
    if (rc != 0) {
        free(m);
        return -1;
    }
    m->be = be;
    in->backend = be->name;
    if (!in->weight_format[0])
        snprintf(in->weight_format, sizeof in->weight_format, "%s", ckpt_dtype_name(in->weight_dtype));
    if (!in->kv_format[0])      /* CUDA: K and V in the matrices' type */
        snprintf(in->kv_format, sizeof in->kv_format, "%s", ckpt_dtype_name(in->weight_dtype));
    *out = m;
    return 0;
}

void llm_free(struct llm_model *m)
{
    if (!m)
        return;
    m->be->free_model(m->impl);
    free(m);
}

const struct llm_info *llm_get_info(const struct llm_model *m)
{
    return &m->info;
}

/* Everything a backend relies on, checked once here. */
static int check_step(const struct llm_info *in, const struct llm_seq *seqs, int n_seqs, char *err, size_t errlen)
{
    long tokens = 0, rows = 0;
    if (n_seqs < 1) {
        snprintf(err, errlen, "a step needs at least one sequence");
        return -1;
    }
    for (int i = 0; i < n_seqs; i++) {
        const struct llm_seq *s = &seqs[i];
        if (s->n_tokens < 1 || !s->tokens) {
            snprintf(err, errlen, "sequence %d: no tokens", i);
            return -1;
        }
        if (s->pos < 0 || (long)s->pos + s->n_tokens > in->cfg.n_positions) {
            snprintf(err, errlen, "sequence %d: positions %d..%d are past the model's context of %d", i, s->pos,
                     s->pos + s->n_tokens - 1, in->cfg.n_positions);
            return -1;
        }
        if (!s->blocks || (long)s->n_blocks * in->kv_block_tokens < (long)s->pos + s->n_tokens) {
            snprintf(err, errlen, "sequence %d: %d KV blocks of %d positions do not cover %d positions", i,
                     s->n_blocks, in->kv_block_tokens, s->pos + s->n_tokens);
            return -1;
        }
        int used = (s->pos + s->n_tokens + in->kv_block_tokens - 1) / in->kv_block_tokens;
        for (int b = 0; b < used; b++)
            if (s->blocks[b] < 0 || s->blocks[b] >= in->kv_blocks) {
                snprintf(err, errlen, "sequence %d: KV block %d is not in the pool of %d", i, s->blocks[b],
                         in->kv_blocks);
                return -1;
            }
        for (int t = 0; t < s->n_tokens; t++)
            if (s->tokens[t] < 0 || s->tokens[t] >= in->cfg.vocab_size) {
                snprintf(err, errlen, "sequence %d: token id %d is outside the vocabulary of %d", i, s->tokens[t],
                         in->cfg.vocab_size);
                return -1;
            }
        if (s->logits != LLM_LOGITS_NONE && s->logits != LLM_LOGITS_LAST && s->logits != LLM_LOGITS_ALL) {
            snprintf(err, errlen, "sequence %d: logits mode %d is unknown", i, s->logits);
            return -1;
        }
        tokens += s->n_tokens;
        rows += s->logits == LLM_LOGITS_ALL ? s->n_tokens : s->logits == LLM_LOGITS_LAST ? 1 : 0;
    }
    if (tokens > in->max_step_tokens) {
        snprintf(err, errlen, "a step of %ld tokens is more than the %d this model was loaded for", tokens,
                 in->max_step_tokens);
        return -1;
    }
    if (rows > in->max_step_logits) {
        snprintf(err, errlen, "a step asking for %ld logits rows is more than the %d this model was loaded for",
                 rows, in->max_step_logits);
        return -1;
    }
    return 0;
}

int llm_forward(struct llm_model *m, const struct llm_seq *seqs, int n_seqs, float *logits, char *err, size_t errlen)
{
    return llm_forward_hidden(m, seqs, n_seqs, logits, NULL, err, errlen);
}

int llm_forward_hidden(struct llm_model *m, const struct llm_seq *seqs, int n_seqs, float *logits,
                       float *const *hidden, char *err, size_t errlen)
{
    if (check_step(&m->info, seqs, n_seqs, err, errlen) != 0)
        return -1;
    return m->be->forward(m->impl, seqs, n_seqs, logits, hidden, err, errlen);
}

bool llm_greedy_on_device(const struct llm_model *m)
{
    return m->be->forward_greedy != NULL;
}

int llm_forward_greedy(struct llm_model *m, const struct llm_seq *seqs, int n_seqs, const struct ksample_row *rows,
                       struct ksample_out *out, float *scratch, char *err, size_t errlen)
{
    if (check_step(&m->info, seqs, n_seqs, err, errlen) != 0)
        return -1;
    if (m->info.cfg.classifier) {
        snprintf(err, errlen, "a classifier's rows are scores, not tokens to choose");
        return -1;
    }
    int R = 0;
    for (int i = 0; i < n_seqs; i++) {
        if (seqs[i].logits == LLM_LOGITS_ALL) {
            snprintf(err, errlen, "sequence %d: a greedy step takes at most its last row", i);
            return -1;
        }
        if (seqs[i].logits != LLM_LOGITS_LAST)
            continue;
        const struct ksample_row *r = &rows[R++];
        if (r->top_n < 0 || r->top_n > KSAMPLE_TOP_N_MAX || r->n_rep < 0 || r->n_gen < 0 ||
            (r->n_rep && !r->rep_ids) || (r->n_gen && (!r->gen_ids || !r->gen_counts)) ||
            !(r->repetition_penalty > 0.0f)) {
            snprintf(err, errlen, "sequence %d: its greedy request is out of range", i);
            return -1;
        }
    }
    if (m->be->forward_greedy)
        return m->be->forward_greedy(m->impl, seqs, n_seqs, rows, out, err, errlen);
    if (!scratch) {
        snprintf(err, errlen, "a greedy step on the %s backend needs room for its logits", m->be->name);
        return -1;
    }
    if (m->be->forward(m->impl, seqs, n_seqs, scratch, NULL, err, errlen) != 0)
        return -1;
    int V = m->info.out_dim;
    for (int r = 0; r < R; r++)
        if (ksample_greedy_ref(scratch + (size_t)r * V, V, &rows[r], &out[r]) != 0) {
            out[r].id = -1;
            out[r].n_top = 0;
        }
    return 0;
}
