/* engine.c -- one loaded model's engine thread: continuous batching over paged KV blocks, chunked prefill, admission control, cancellation.
 *
 * Responder threads submit sequences with engine_submit() and read what
 * happens to them from a channel (struct echan) that they own; the engine
 * thread is the only one that runs the model. Every step it
 *   1. drops sequences whose channel was cancelled (the client went away)
 *      or whose deadline passed, and gives their KV blocks back;
 *   2. admits queued sequences while the batch has room (max_concurrent)
 *      and the block pool has blocks for their first chunk;
 *   3. runs one llm_forward step: one token for every decoding sequence,
 *      then chunks of prompts in admission order up to max_batch_tokens
 *      tokens, so running streams keep flowing while a long prompt is read;
 *   4. samples (generation.c) and posts the events.
 * KV blocks are taken from the pool as a sequence grows. When the pool runs
 * dry, the most recently admitted sequence is preempted: its blocks go back
 * and it returns to the head of the queue, to be prefilled again (prompt and
 * tokens so far) when there is room. Its sampler state is kept, so what it
 * generates does not change.
 *
 * With the prefix cache on (kvcache.c), full KV blocks stay indexed by their
 * content after their sequence ends, until a free block is needed: a new
 * sequence whose tokens start with cached blocks takes them (shared,
 * reference-counted) and runs only the rest, always at least its last token.
 *
 * A sequence classifier's engine (the model's cfg.classifier) runs
 * classification sequences instead: each is only read (prefilled, chunked
 * like a prompt) and, once its last token is in, its score-head row is
 * posted as one EV_SCORES event and it is over.
 *
 * Any model's engine also runs embedding sequences (eseq_req.embed): read
 * like a classification, with every token's final hidden state pooled as
 * the chunks go by (classify.h); the pooled vector (n_embd floats) is the
 * sequence's one EV_SCORES event. Mean pooling needs every token's row, so
 * such a sequence takes nothing from the prefix cache. */
#ifndef LLMCGI_ENGINE_H
#define LLMCGI_ENGINE_H

#include "classify.h"
#include "generation.h"
#include "llm.h"
#include "sampler.h"
#include "tokenizer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct engine;
struct echan;

/* Return codes of engine_submit. */
#define ENGINE_OK 0
#define ENGINE_EFULL (-1)       /* the queue is full: answer 429 */
#define ENGINE_EINVAL (-2)      /* a request the model cannot run (message in err): 400/422 */
#define ENGINE_ESTOPPED (-3)    /* the engine is shutting down (model unloaded): 503 */
#define ENGINE_ENOMEM (-4)

struct engine_opts {
    int max_concurrent;         /* sequences in the running batch, >= 1 */
    int max_queue;              /* sequences waiting to join it, >= 0 */
    int max_batch_tokens;       /* tokens one step carries, >= max_concurrent */
    bool prefix_cache;          /* keep full KV blocks for reuse by later sequences with the same prefix */
    size_t mask_cache;          /* bytes of constrained decoding's token masks kept (0: none) */
};

/* Starts the engine thread for model m (taken over: engine_stop frees it)
 * with tokenizer tok (borrowed: must outlive the engine). The model must
 * have been loaded with max_step_tokens and max_step_logits >= the
 * options' max_batch_tokens. `name` is used in log lines. Returns 0, or -1
 * with err. */
int engine_start(struct engine **out, struct llm_model *m, const struct tokenizer *tok,
                 const struct engine_opts *o, const char *name, char *err, size_t errlen);

/* Fails every sequence still queued or running with a 503 error event,
 * stops the thread and frees the engine and its model. NULL is fine. */
void engine_stop(struct engine *e);

/* One sequence to run. */
struct eseq_req {
    const int32_t *prompt;      /* copied */
    int n_prompt;               /* >= 1 */
    struct gen_params params;   /* copied (stop strings too) */
    int index;                  /* tells the caller's sequences apart in events */
    bool prompt_logprobs;       /* post EV_PREFILL events: each prompt token's logprob */
    int64_t deadline_ns;        /* CLOCK_MONOTONIC; 0 = none */
    bool classify;              /* a classifier's sequence: the prompt is read, its last row is the
                                 * answer (EV_SCORES); params are not used. A classifier takes only
                                 * these, a language model none of them (ENGINE_EINVAL). */
    enum emb_pool embed;        /* an embedding sequence (any model): the prompt is read and its final
                                 * hidden states pooled so; the vector is the answer (EV_SCORES) */
};

/* Queues n sequences whose events go to channel c (the engine takes a
 * reference to c per sequence). All or none are queued. Returns ENGINE_OK,
 * ENGINE_EFULL, ENGINE_EINVAL (err says why), ENGINE_ESTOPPED or
 * ENGINE_ENOMEM. */
int engine_submit(struct engine *e, struct echan *c, const struct eseq_req *reqs, int n, char *err, size_t errlen);

/* What the engine is doing, for /health and the tests. */
struct engine_stats {
    int running, queued;
    int kv_blocks_used, kv_blocks_total;
    uint64_t steps, prompt_tokens, generated_tokens;
    uint64_t requests;          /* sequences submitted */
    uint64_t cancelled;         /* dropped because the client went away */
    uint64_t rejected;          /* refused with ENGINE_EFULL */
    uint64_t preempted;
    uint64_t expired;           /* past their deadline */
    int kv_blocks_cached;       /* idle blocks kept by the prefix cache (held by no sequence) */
    bool prefix_cache;          /* the engine's prefix cache is on */
    uint64_t prefix_cache_queries; /* prompt tokens looked up in the prefix cache (first admissions) */
    uint64_t prefix_cache_hits; /* of those, tokens found: their prefill was skipped */
    uint64_t greedy_steps;      /* steps whose tokens the model's backend chose (llm_forward_greedy:
                                 * on a GPU only ids and logprobs came back), not the engine's sampler */
    bool mask_cache_built;      /* a constrained request has come: the masks below are counted */
    uint64_t mask_cache_hits;   /* constrained steps whose token mask was kept from before */
    uint64_t mask_cache_walks;  /* masks computed (not kept, or put out since) */
    size_t mask_cache_bytes;    /* what the kept masks take now */
};
void engine_get_stats(struct engine *e, struct engine_stats *st);

/* For the tests, while the engine is idle (nothing running or queued):
 * checks the block pool's books (kvc_check) and that no block is held.
 * Returns 0, or -1 with err (also when the engine is busy). */
int engine_check_pool(struct engine *e, char *err, size_t errlen);

const struct llm_info *engine_info(const struct engine *e);

/* ------------------------------------------------------------------ channels */

enum eevent_kind {
    EV_PREFILL,         /* a prompt token and its logprob (NAN for the first) */
    EV_TOKEN,           /* a generated token, the text it lets through, maybe the finish */
    EV_ERROR,           /* the sequence failed; it is over */
    EV_SCORES,          /* a classification sequence's score-head logits (out_dim floats), or an
                         * embedding sequence's pooled vector (n_embd floats), in the event's text
                         * bytes: read them with ebatch_scores; it is over */
};

struct eevent {
    enum eevent_kind kind;
    int index;                  /* eseq_req.index */
    struct sample_out tok;      /* EV_PREFILL (n_top 0) and EV_TOKEN */
    size_t text_off, text_len;  /* EV_TOKEN: released text; EV_ERROR: the message (in ebatch.text) */
    enum finish finish;     /* EV_TOKEN: FIN_NONE, or why it was the sequence's last */
    int status;                 /* EV_ERROR: HTTP status (500, 503, 504) */
    int64_t queued_ns;          /* EV_TOKEN, first of a sequence: time spent in the queue */
    int cached_tokens;          /* EV_TOKEN (first of a sequence), EV_SCORES: prompt tokens taken from the prefix cache */
    int64_t at_ns;              /* when the event was made */
};

/* Events taken from a channel in one go. Reused from call to call. */
struct ebatch {
    struct eevent *ev;
    size_t n, cap;
    char *text;                 /* the events' text, NUL-separated */
    size_t text_len, text_cap;
};
void ebatch_free(struct ebatch *b);

/* A new channel with one reference (the caller's). NULL when out of memory. */
struct echan *echan_new(void);

/* Drops a reference; the last one frees the channel. Drop yours after
 * echan_cancel when you stop early: the engine drops its own. */
void echan_put(struct echan *c);

/* The client went away: the engine stops c's sequences at its next step
 * and returns their blocks. No more events are posted. */
void echan_cancel(struct echan *c);

/* Readable (poll POLLIN) while events wait. */
int echan_fd(const struct echan *c);

/* Moves the waiting events into b (replacing b's contents; buffers are
 * swapped, not copied). Returns how many there are. */
size_t echan_take(struct echan *c, struct ebatch *b);

/* The text of event ev of batch b (NUL-terminated). */
static inline const char *ebatch_text(const struct ebatch *b, const struct eevent *ev)
{
    return b->text + ev->text_off;
}

/* Copies the logits of an EV_SCORES event into out (at most n floats);
 * returns how many it holds. */
int ebatch_scores(const struct ebatch *b, const struct eevent *ev, float *out, int n);

#endif
