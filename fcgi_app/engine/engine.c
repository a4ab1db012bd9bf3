/* engine.c -- one loaded model's engine thread: continuous batching over paged KV blocks, chunked prefill, admission control, cancellation. */
#include "config.h"
#include "engine.h"
#include "kvcache.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* ------------------------------------------------------------------ channels */

struct echan {
    atomic_int refs;
    atomic_bool cancelled;
    pthread_mutex_t mu;
    struct ebatch pending;      /* guarded by mu */
    int efd;                    /* eventfd: non-zero while events wait */
};

struct echan *echan_new(void)
{
    struct echan *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (c->efd < 0) {
        free(c);
        return NULL;
    }
    atomic_init(&c->refs, 1);
    atomic_init(&c->cancelled, false);
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

static struct echan *echan_ref(struct echan *c)
{
    atomic_fetch_add(&c->refs, 1);
    return c;
}

void echan_put(struct echan *c)
{
    if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    close(c->efd);
    pthread_mutex_destroy(&c->mu);
    ebatch_free(&c->pending);
    free(c);
}

void echan_cancel(struct echan *c)
{
    atomic_store(&c->cancelled, true);
}

int echan_fd(const struct echan *c)
{
    return c->efd;
}

int ebatch_scores(const struct ebatch *b, const struct eevent *ev, float *out, int n)
{
    int have = ev->kind == EV_SCORES ? (int)(ev->text_len / sizeof(float)) : 0;
    if (have > n)
        have = n;
    if (have > 0)
        memcpy(out, b->text + ev->text_off, (size_t)have * sizeof(float));
    return have;
}

void ebatch_free(struct ebatch *b)
{
    free(b->ev);
    free(b->text);
    memset(b, 0, sizeof *b);
}

/* No system call runs under c->mu, so neither side can stall the other in
 * one (the engine thread would otherwise wait out a responder preempted
 * inside a read). The eventfd is read back to zero before the swap: an
 * event posted after the read and before the swap is taken now and leaves
 * one spare wake-up (a take that finds nothing); an event posted after the
 * swap finds the batch empty and writes the eventfd again. No wake-up is
 * lost either way. */
size_t echan_take(struct echan *c, struct ebatch *b)
{
    uint64_t v;
    ssize_t rd = read(c->efd, &v, sizeof v);   /* back to "nothing waits" */
    (void)rd;
    pthread_mutex_lock(&c->mu);
    struct ebatch t = c->pending;
    c->pending = *b;
    c->pending.n = 0;
    c->pending.text_len = 0;
    *b = t;
    pthread_mutex_unlock(&c->mu);
    return b->n;
}

/* Appends one event (and its text) for the responder and wakes it: one
 * eventfd write when the batch was empty, none for the events that join a
 * batch not yet taken (its first one's wake-up is still due). Returns 0,
 * or -1 when out of memory (the event is lost; the caller fails the
 * sequence). Events for a cancelled channel are dropped. */
static int echan_post(struct echan *c, const struct eevent *ev, const char *text, size_t len)
{
    if (atomic_load(&c->cancelled))
        return 0;
    pthread_mutex_lock(&c->mu);
    struct ebatch *b = &c->pending;
    int rc = 0;
    bool wake = false;
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16;
        struct eevent *g = realloc(b->ev, cap * sizeof *g);
        if (!g) {
            rc = -1;
            goto out;
        }
        b->ev = g;
        b->cap = cap;
    }
    if (b->text_len + len + 1 > b->text_cap) {
        size_t cap = b->text_cap ? b->text_cap : 256;
        while (cap < b->text_len + len + 1)
            cap *= 2;
        char *g = realloc(b->text, cap);
        if (!g) {
            rc = -1;
            goto out;
        }
        b->text = g;
        b->text_cap = cap;
    }
    struct eevent *e = &b->ev[b->n++];
    *e = *ev;
    e->text_off = b->text_len;
    e->text_len = len;
    if (len)
        memcpy(b->text + b->text_len, text, len);
    b->text[b->text_len + len] = '\0';
    b->text_len += len + 1;
    wake = b->n == 1;
out:
    pthread_mutex_unlock(&c->mu);
    if (wake) {
        uint64_t one = 1;
        ssize_t wr = write(c->efd, &one, sizeof one);
        (void)wr;
    }
    return rc;
}

/* ------------------------------------------------------------------ sequences */

struct engine;
static const struct vtrie *engine_trie(struct engine *e);

struct eseq {
    struct eseq *next;          /* in the queue */
    struct echan *chan;         /* referenced */
    int index;
    struct gen_seq g;
    int32_t *blocks;            /* block table; capacity max_blocks */
    int n_blocks;
    int n_cached;               /* tokens of g.ids whose K/V are in the blocks */
    struct kvc_chain chain;     /* its full blocks in the prefix cache's index */
    int cached_tokens;          /* prompt tokens its first admission found in the prefix cache */
    bool prompt_logprobs;
    bool classify;              /* read the prompt, post its last row (EV_SCORES), done */
    enum emb_pool embed;        /* read the prompt pooling its hidden rows, post the vector (EV_SCORES), done */
    double *acc;                /* embed: the pool so far, n_embd; owned */
    int prefill_reported;       /* prompt tokens reported with EV_PREFILL */
    bool sent_first;            /* an EV_TOKEN went out */
    bool preempted;             /* was preempted at least once */
    int prompt_counted;         /* prompt tokens counted in the stats (not again when recomputed) */
    int64_t deadline_ns, submitted_ns, admitted_ns;
    uint64_t order;             /* admission order: the newest is preempted first */
};

/* Does s need the hidden row or logits of every one of its tokens (so it
 * takes nothing from the prefix cache)? */
static bool every_row(const struct eseq *s)
{
    return s->prompt_logprobs || s->embed == EMB_MEAN;
}

struct engine {
    char name[128];
    int metrics_model;          /* metrics_model_id(name) */
    struct llm_model *m;
    const struct llm_info *info;
    const struct tokenizer *tok;
    struct engine_opts o;
    int B;                      /* positions per KV block */
    int max_blocks;             /* blocks one full context needs */

    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;              /* guarded by mu */
    bool waiting;               /* guarded by mu: the thread waits for work (the pool is still) */
    struct eseq *qhead, *qtail; /* guarded by mu */
    int n_queued;               /* guarded by mu */

    /* the engine thread's own */
    struct eseq **run;          /* running, in admission order */
    int n_run;
    struct kvcache *kv;         /* the block pool and its prefix cache */
    uint64_t order;
    struct llm_seq *step;       /* one step's sequences ... */
    struct eseq **step_seq;     /* ... and whose they are ... */
    float **step_hidden;        /* ... and where their hidden rows go (embeddings; NULL: none) */
    float *logits;              /* max_batch_tokens rows of info->out_dim */
    /* greedy steps (step_greedy): the backend chooses the tokens */
    bool greedy_on;             /* a language model, and LLMCGI_DEVICE_SAMPLING is 1, or unset and
                                 * the backend chooses on the device (llm_greedy_on_device) */
    struct ksample_row *g_rows; /* max_concurrent + 1: one request per logits row ... */
    struct ksample_out *g_out;  /* ... and its choice */
    int32_t *g_ids;             /* the requests' id arrays; g_cap ints, grown as contexts grow */
    size_t g_cap;
    float *hidden;              /* max_batch_tokens rows of n_embd: embeddings' hidden rows; made by
                                 * engine_submit (under mu) when a first embedding comes */

    /* the vocabulary trie of constrained decoding: built by the first
     * constrained request (engine_submit, under trie_mu), then read only */
    pthread_mutex_t trie_mu;
    struct vtrie *trie;

    atomic_int st_running, st_queued, st_used, st_cached;
    atomic_ullong st_pc_queries, st_pc_hits;
    atomic_ullong st_greedy_steps;
    atomic_ullong st_steps, st_prompt, st_generated, st_requests, st_cancelled, st_rejected, st_preempted,
        st_expired;
};

static void seq_free(struct eseq *s)
{
    if (!s)
        return;
    gen_seq_free(&s->g);
    free(s->blocks);
    free(s->acc);
    echan_put(s->chan);
    free(s);
}

static void pool_stats(struct engine *e)
{
    atomic_store(&e->st_used, kvc_held(e->kv));
    atomic_store(&e->st_cached, kvc_idle_cached(e->kv));
}

/* Releases s's blocks: those shared with others stay theirs, its indexed
 * full blocks stay in the prefix cache, the rest are free. */
static void give_blocks(struct engine *e, struct eseq *s)
{
    kvc_release(e->kv, s->blocks, s->n_blocks);
    s->n_blocks = 0;
    s->n_cached = 0;
    kvc_chain_reset(&s->chain);
    pool_stats(e);
}

/* Posts an error event for s (its last). */
static void seq_fail(struct eseq *s, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void seq_fail(struct eseq *s, int status, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct eevent ev = {.kind = EV_ERROR, .index = s->index, .status = status, .at_ns = util_now_ns()};
    echan_post(s->chan, &ev, msg, strlen(msg));
}

/* Takes s out of the running set (keeping the order of the others). */
static void unrun(struct engine *e, struct eseq *s)
{
    for (int i = 0; i < e->n_run; i++)
        if (e->run[i] == s) {
            memmove(&e->run[i], &e->run[i + 1], sizeof *e->run * (size_t)(e->n_run - i - 1));
            e->n_run--;
            break;
        }
    atomic_store(&e->st_running, e->n_run);
}

static void finish_seq(struct engine *e, struct eseq *s)
{
    give_blocks(e, s);
    unrun(e, s);
    seq_free(s);
}

/* ------------------------------------------------------------------ submitting */

/* Places in the running batch not taken (sequences submitted to an idle
 * engine join it at once, so they do not count against max_queue). */
static int free_slots(struct engine *e)
{
    int free = e->o.max_concurrent - atomic_load(&e->st_running);
    return free > 0 ? free : 0;
}

int engine_submit(struct engine *e, struct echan *c, const struct eseq_req *reqs, int n, char *err, size_t errlen)
{
    err[0] = '\0';
    if (n < 1)
        return ENGINE_EINVAL;
    /* A first look at the room, before building n samplers (about 1.5 MB
     * each for GPT-2) for a request that would be refused anyway. */
    pthread_mutex_lock(&e->mu);
    bool full = e->n_queued + n > e->o.max_queue + free_slots(e);
    pthread_mutex_unlock(&e->mu);
    if (full) {
        atomic_fetch_add(&e->st_rejected, (unsigned long long)n);
        return ENGINE_EFULL;
    }
    bool embed = false;
    for (int i = 0; i < n; i++)
        embed |= reqs[i].embed != EMB_NONE;
    if (embed) {                /* the step's hidden rows: made once, when a first embedding comes */
        pthread_mutex_lock(&e->mu);
        if (!e->hidden)
            e->hidden = malloc(sizeof *e->hidden * (size_t)e->o.max_batch_tokens * (size_t)e->info->cfg.n_embd);
        bool ok = e->hidden != NULL;
        pthread_mutex_unlock(&e->mu);
        if (!ok)
            return ENGINE_ENOMEM;
    }
    const struct vtrie *trie = NULL;
    for (int i = 0; i < n && !trie; i++)
        if (!reqs[i].classify && !reqs[i].embed && reqs[i].params.constraint && !(trie = engine_trie(e)))
            return ENGINE_ENOMEM;
    struct eseq **made = calloc((size_t)n, sizeof *made);
    if (!made)
        return ENGINE_ENOMEM;
    int rc = ENGINE_OK;
    int64_t now = util_now_ns();
    for (int i = 0; i < n && rc == ENGINE_OK; i++) {
        const struct eseq_req *q = &reqs[i];
        struct eseq *s = calloc(1, sizeof *s);
        if (!s) {
            rc = ENGINE_ENOMEM;
            break;
        }
        made[i] = s;
        s->chan = echan_ref(c);
        s->index = q->index;
        s->prompt_logprobs = q->prompt_logprobs && !q->classify;
        s->classify = q->classify && !q->embed;
        s->embed = q->embed;
        s->deadline_ns = q->deadline_ns;
        s->submitted_ns = now;
        kvc_chain_reset(&s->chain);
        s->blocks = malloc(sizeof *s->blocks * (size_t)e->max_blocks);
        if (!s->blocks) {
            rc = ENGINE_ENOMEM;
            break;
        }
        for (int k = 0; k < q->n_prompt; k++)
            if (q->prompt[k] < 0 || q->prompt[k] >= e->info->cfg.vocab_size) {
                /* caught here, not by llm_forward, which would fail the whole step */
                snprintf(err, errlen, "prompt token %d has id %d, outside the vocabulary of %d", k, (int)q->prompt[k],
                         e->info->cfg.vocab_size);
                rc = ENGINE_EINVAL;
                break;
            }
        if (rc == ENGINE_OK && !q->embed && q->classify != e->info->cfg.classifier) {
            snprintf(err, errlen, q->classify ? "this model is not a sequence classifier"
                                              : "this model is a sequence classifier: it does not generate");
            rc = ENGINE_EINVAL;
        } else if (rc == ENGINE_OK && (q->classify || q->embed)) {
            /* only the ids: no sampler, detokenizer or stop strings */
            if (q->embed && !(s->acc = calloc((size_t)e->info->cfg.n_embd, sizeof *s->acc))) {
                rc = ENGINE_ENOMEM;
            } else if (q->n_prompt < 1 || q->n_prompt > e->info->cfg.n_positions) {
                snprintf(err, errlen, "a text of %d tokens does not fit the model's context of %d", q->n_prompt,
                         e->info->cfg.n_positions);
                rc = ENGINE_EINVAL;
            } else if (!(s->g.ids = malloc(sizeof *s->g.ids * (size_t)q->n_prompt))) {
                rc = ENGINE_ENOMEM;
            } else {
                memcpy(s->g.ids, q->prompt, sizeof *s->g.ids * (size_t)q->n_prompt);
                s->g.n_prompt = s->g.n_ids = q->n_prompt;
                s->g.eos = -1;
            }
        } else if (rc == ENGINE_OK && gen_seq_init(&s->g, e->tok, q->prompt, q->n_prompt, e->info->cfg.vocab_size,
                                                   e->info->cfg.n_positions, &q->params, err, errlen) != 0)
            rc = strcmp(err, "out of memory") == 0 ? ENGINE_ENOMEM : ENGINE_EINVAL;
        else if (rc == ENGINE_OK)
            s->g.trie = trie;
    }
    if (rc == ENGINE_OK) {
        pthread_mutex_lock(&e->mu);
        if (e->stopping)
            rc = ENGINE_ESTOPPED;
        else if (e->n_queued + n > e->o.max_queue + free_slots(e))
            rc = ENGINE_EFULL;
        if (rc == ENGINE_OK) {
            for (int i = 0; i < n; i++) {
                if (e->qtail)
                    e->qtail->next = made[i];
                else
                    e->qhead = made[i];
                e->qtail = made[i];
            }
            e->n_queued += n;
            atomic_store(&e->st_queued, e->n_queued);
            pthread_cond_signal(&e->cv);
        }
        pthread_mutex_unlock(&e->mu);
    }
    if (rc == ENGINE_OK) {
        atomic_fetch_add(&e->st_requests, (unsigned long long)n);
    } else {
        if (rc == ENGINE_EFULL)
            atomic_fetch_add(&e->st_rejected, (unsigned long long)n);
        for (int i = 0; i < n; i++)
            seq_free(made[i]);
    }
    free(made);
    return rc;
}

/* ------------------------------------------------------------------ the engine thread */

/* Is s to be dropped before this step: cancelled (silently) or past its
 * deadline (with an error)? */
static bool dropped(struct engine *e, struct eseq *s, int64_t now)
{
    if (atomic_load(&s->chan->cancelled)) {
        atomic_fetch_add(&e->st_cancelled, 1);
        return true;
    }
    if (s->deadline_ns && now > s->deadline_ns) {
        atomic_fetch_add(&e->st_expired, 1);
        seq_fail(s, 504, "the request ran past its deadline (the model's timeout) after %d generated tokens",
                 gen_seq_generated(&s->g));
        return true;
    }
    return false;
}

/* Sweeps the queue (under mu) and the running set for dropped sequences,
 * then admits from the queue while the batch has room. */
static void sweep_and_admit(struct engine *e)
{
    int64_t now = util_now_ns();
    for (int i = e->n_run - 1; i >= 0; i--)
        if (dropped(e, e->run[i], now))
            finish_seq(e, e->run[i]);

    struct eseq *gone = NULL;
    pthread_mutex_lock(&e->mu);
    for (struct eseq **pp = &e->qhead; *pp;) {
        struct eseq *s = *pp;
        if (atomic_load(&s->chan->cancelled) || (s->deadline_ns && now > s->deadline_ns)) {
            *pp = s->next;
            s->next = gone;
            gone = s;
            e->n_queued--;
            continue;
        }
        pp = &s->next;
    }
    e->qtail = NULL;
    for (struct eseq *s = e->qhead; s; s = s->next)
        e->qtail = s;
    /* The admission time, read under mu: every sequence in the queue was
     * stamped (submitted_ns) before it was queued under mu, so this is
     * never earlier. `now` above was read before the lock, and a sequence
     * queued in between was reported a negative time in the queue. */
    int64_t admit_ns = util_now_ns();
    while (e->qhead && e->n_run < e->o.max_concurrent) {
        struct eseq *s = e->qhead;
        /* The full blocks of its tokens already in the prefix cache (not
         * with prompt logprobs or mean pooling, which need every prompt row), leaving at
         * least its last token to run for the logits to sample from. */
        int hit_max = every_row(s) ? 0 : (s->g.n_ids - 1) / e->B, idle = 0;
        int hit = kvc_peek(e->kv, s->g.ids, hit_max, &idle);
        int rest = s->g.n_ids - hit * e->B;
        /* Blocks for its first chunk and a block of growth for every running
         * sequence, or the next steps would preempt it again at once. A
         * preempted sequence waits until all its tokens fit, plus that growth.
         * Idle cached blocks it would take no longer count as room. */
        int first = s->preempted ? rest + 1 : rest < e->o.max_batch_tokens ? rest : e->o.max_batch_tokens;
        if (e->n_run > 0 && (first + e->B - 1) / e->B + e->n_run > kvc_avail(e->kv) - idle)
            break;
        kvc_follow(e->kv, &s->chain, s->g.ids, hit, s->blocks, &s->n_blocks);
        s->n_cached = s->n_blocks * e->B;
        if (!s->admitted_ns) {          /* its first admission: what the answer reports */
            s->cached_tokens = s->n_cached;
            if (e->o.prefix_cache && !s->prompt_logprobs) {
                atomic_fetch_add(&e->st_pc_queries, (unsigned long long)s->g.n_prompt);
                atomic_fetch_add(&e->st_pc_hits, (unsigned long long)s->n_cached);
            }
        }
        e->qhead = s->next;
        if (!e->qhead)
            e->qtail = NULL;
        s->next = NULL;
        e->n_queued--;
        if (!s->admitted_ns)
            s->admitted_ns = admit_ns;
        s->order = ++e->order;
        e->run[e->n_run++] = s;
    }
    if (!gone)
        atomic_store(&e->st_queued, e->n_queued);
    atomic_store(&e->st_running, e->n_run);
    pthread_mutex_unlock(&e->mu);
    pool_stats(e);

    if (!gone)
        return;
    while (gone) {
        struct eseq *s = gone;
        gone = s->next;
        dropped(e, s, now);                 /* counts it and sends the deadline error */
        seq_free(s);
    }
    /* The queue's size is published only once the sequences it lost are
     * counted (cancelled, expired): a reader that sees the queue empty sees
     * them counted too (test_engine's admission test waits on exactly that). */
    pthread_mutex_lock(&e->mu);
    atomic_store(&e->st_queued, e->n_queued);
    pthread_mutex_unlock(&e->mu);
}

/* Puts s back at the head of the queue with its blocks freed: it will be
 * prefilled again (prompt and generated tokens) when there is room. */
static void preempt(struct engine *e, struct eseq *s)
{
    give_blocks(e, s);
    unrun(e, s);
    if (s->acc)                         /* read again from the start: pooled again */
        memset(s->acc, 0, sizeof *s->acc * (size_t)e->info->cfg.n_embd);
    s->preempted = true;
    atomic_fetch_add(&e->st_preempted, 1);
    log_debug("model %s: KV pool full, sequence preempted after %d tokens", e->name, s->g.n_ids);
    pthread_mutex_lock(&e->mu);
    s->next = e->qhead;
    e->qhead = s;
    if (!e->qtail)
        e->qtail = s;
    e->n_queued++;
    atomic_store(&e->st_queued, e->n_queued);
    pthread_mutex_unlock(&e->mu);
}

static bool in_step(struct engine *e, int n_step, const struct eseq *s)
{
    for (int i = 0; i < n_step; i++)
        if (e->step_seq[i] == s)
            return true;
    return false;
}

/* Makes sure s has blocks for `want` positions, preempting newer sequences
 * that are not in this step when the pool is dry. Returns how many
 * positions s can hold now (<= want). */
static int reserve(struct engine *e, struct eseq *s, int want, int n_step)
{
    int need = (want + e->B - 1) / e->B - s->n_blocks;
    while (need > kvc_avail(e->kv)) {
        struct eseq *victim = NULL;
        for (int i = 0; i < e->n_run; i++) {
            struct eseq *v = e->run[i];
            if (v != s && v->order > s->order && !in_step(e, n_step, v) && (!victim || v->order > victim->order))
                victim = v;
        }
        if (!victim)
            break;
        preempt(e, victim);
    }
    for (int32_t b; need > 0 && (b = kvc_alloc(e->kv)) >= 0; need--)
        s->blocks[s->n_blocks++] = b;
    pool_stats(e);
    int cap = s->n_blocks * e->B;
    return cap < want ? cap : want;
}

/* log p(token) under one row of logits: log_softmax(row)[token]. */
static float row_logprob(const float *row, int n, int32_t token)
{
    float mx = -INFINITY;
    for (int i = 0; i < n; i++)
        if (row[i] > mx)
            mx = row[i];
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += exp((double)(row[i] - mx));
    return (float)((double)(row[token] - mx) - log(sum));
}

static void post_prefill(struct eseq *s, int pos, float logprob)
{
    struct eevent ev = {.kind = EV_PREFILL, .index = s->index, .at_ns = util_now_ns()};
    ev.tok.id = s->g.ids[pos];
    ev.tok.logprob = logprob;
    echan_post(s->chan, &ev, "", 0);
}

/* A sequence about to read a chunk of its prompt, with nothing past its
 * chain of full blocks written, takes what sequences ahead of it with the
 * same prefix (admitted with it, or since) have written meanwhile. */
static void catch_up(struct engine *e, struct eseq *s)
{
    int max = every_row(s) ? 0 : (s->g.n_ids - 1) / e->B;
    if (s->chain.n >= max || s->n_cached != s->chain.n * e->B)
        return;
    int took = kvc_follow(e->kv, &s->chain, s->g.ids, max, s->blocks, &s->n_blocks) * e->B;
    if (!took)
        return;
    s->n_cached += took;
    if (!s->sent_first && !s->preempted) {
        s->cached_tokens += took;
        atomic_fetch_add(&e->st_pc_hits, (unsigned long long)took);
    }
    pool_stats(e);
}

/* Can the backend choose every token of this step (llm_forward_greedy)?
 * Only when each sequence that gets a row is a greedy, unconstrained
 * generation taking its last row: no prompt logprobs (every row), no
 * classification or embedding (scores, hidden rows), no sampling (the
 * warpers and the draw stay with the engine's sampler), no constraint (its
 * mask). logit_bias and the like never reach a local model. If so, fills
 * e->g_rows (and e->g_ids) in row order and returns true. */
static bool step_greedy(struct engine *e, int n_step, int hid_rows)
{
    if (!e->greedy_on || hid_rows > 0)
        return false;
    size_t need = 0;
    int rows = 0;
    for (int i = 0; i < n_step; i++) {
        const struct eseq *s = e->step_seq[i];
        if (e->step[i].logits == LLM_LOGITS_NONE)
            continue;
        if (e->step[i].logits != LLM_LOGITS_LAST || s->classify || s->embed || !gen_seq_greedy_ok(&s->g))
            return false;
        need += gen_seq_greedy_ints(&s->g);
        rows++;
    }
    if (rows == 0)
        return false;
    if (need > e->g_cap) {
        size_t cap = need > 2 * e->g_cap ? need : 2 * e->g_cap;
        int32_t *p = realloc(e->g_ids, cap * sizeof *p);
        if (!p)
            return false;                       /* the engine's sampler does without */
        e->g_ids = p;
        e->g_cap = cap;
    }
    size_t used = 0;
    for (int i = 0, r = 0; i < n_step; i++) {
        if (e->step[i].logits == LLM_LOGITS_NONE)
            continue;
        int k = gen_seq_greedy_row(&e->step_seq[i]->g, e->g_ids + used, &e->g_rows[r++]);
        if (k < 0)
            return false;
        used += (size_t)k;
    }
    return true;
}

/* The engine's form of a backend's choice. */
static void greedy_token(const struct ksample_out *o, struct sample_out *t)
{
    memset(t, 0, sizeof *t);
    t->id = o->id;
    t->logprob = o->logprob;
    t->n_top = o->id >= 0 ? o->n_top : 0;
    for (int j = 0; j < t->n_top; j++)
        t->top[j] = (struct sample_logprob){o->top_id[j], o->top_logprob[j]};
}

/* One step: plan it, run the model, sample, post. Returns false when there
 * was nothing to run. */
static bool step(struct engine *e)
{
    int budget = e->o.max_batch_tokens, n_step = 0, rows = 0, hid_rows = 0, C = e->info->cfg.n_embd;
    /* Decoding sequences first (one token each), then prompt chunks. */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < e->n_run && budget > 0; i++) {
            struct eseq *s = e->run[i];
            if (pass == 1 && s->g.n_ids - s->n_cached > 1 && !in_step(e, n_step, s))
                catch_up(e, s);
            int feed = s->g.n_ids - s->n_cached;
            if ((feed == 1) != (pass == 0) || in_step(e, n_step, s))
                continue;
            int n = feed < budget ? feed : budget;
            int fit = reserve(e, s, s->n_cached + n, n_step) - s->n_cached;
            if (fit < 1) {
                if (pass == 0 || e->n_run == 1) {
                    /* A decoder that cannot grow: nothing newer can make room. */
                    preempt(e, s);
                    i--;
                }
                continue;
            }
            n = fit;
            bool report = s->prompt_logprobs && s->prefill_reported < s->g.n_prompt;
            int mode = report ? LLM_LOGITS_ALL : n == feed && !s->embed ? LLM_LOGITS_LAST : LLM_LOGITS_NONE;
            if (report && s->prefill_reported == 0) {
                post_prefill(s, 0, NAN);
                s->prefill_reported = 1;
            }
            e->step[n_step] = (struct llm_seq){s->g.ids + s->n_cached, n, s->n_cached, s->blocks, s->n_blocks, mode};
            e->step_hidden[n_step] = s->embed ? e->hidden + (size_t)hid_rows * C : NULL;
            hid_rows += s->embed ? n : 0;
            e->step_seq[n_step++] = s;
            rows += mode == LLM_LOGITS_ALL ? n : mode == LLM_LOGITS_LAST;
            budget -= n;
        }
    }
    if (n_step == 0)
        return false;

    char err[300];
    bool greedy = step_greedy(e, n_step, hid_rows);
    int rc = greedy ? llm_forward_greedy(e->m, e->step, n_step, e->g_rows, e->g_out, e->logits, err, sizeof err)
                    : llm_forward_hidden(e->m, e->step, n_step, e->logits, hid_rows ? e->step_hidden : NULL, err,
                                         sizeof err);
    if (rc != 0) {
        log_error("model %s: forward step failed: %s", e->name, err);
        for (int i = 0; i < n_step; i++) {
            seq_fail(e->step_seq[i], 500, "the model failed: %s", err);
            finish_seq(e, e->step_seq[i]);
        }
        return true;
    }
    atomic_fetch_add(&e->st_steps, 1);
    if (greedy)
        atomic_fetch_add(&e->st_greedy_steps, 1);
    metrics_batch(e->metrics_model, n_step);
    int V = e->info->out_dim, row = 0;
    (void)rows;
    for (int i = 0; i < n_step; i++) {
        struct eseq *s = e->step_seq[i];
        const struct llm_seq *q = &e->step[i];
        int feed = s->g.n_ids - s->n_cached;
        int prompt_end = q->pos + q->n_tokens < s->g.n_prompt ? q->pos + q->n_tokens : s->g.n_prompt;
        if (prompt_end > s->prompt_counted) {
            atomic_fetch_add(&e->st_prompt, (unsigned long long)(prompt_end - s->prompt_counted));
            s->prompt_counted = prompt_end;
        }
        if (q->logits == LLM_LOGITS_ALL) {
            for (int j = 0; j < q->n_tokens; j++) {
                int next = q->pos + j + 1;      /* the token row j predicts */
                if (next == s->prefill_reported && next < s->g.n_prompt) {
                    post_prefill(s, next, row_logprob(e->logits + (size_t)(row + j) * V, V, s->g.ids[next]));
                    s->prefill_reported++;
                }
            }
        }
        float *last = q->logits == LLM_LOGITS_ALL ? e->logits + (size_t)(row + q->n_tokens - 1) * V
                                                  : e->logits + (size_t)row * V;
        row += q->logits == LLM_LOGITS_ALL ? q->n_tokens : q->logits == LLM_LOGITS_LAST;
        if (s->embed)
            emb_pool_rows(s->embed, s->acc, e->step_hidden[i], q->n_tokens, C);
        s->n_cached += q->n_tokens;
        /* its blocks filled by this step can now be shared */
        kvc_commit(e->kv, &s->chain, s->g.ids, s->blocks, s->n_cached / e->B);
        if (q->n_tokens < feed)
            continue;                           /* more prompt to read first */
        if (s->classify || s->embed) {          /* read: its row, or its pool, is the answer */
            struct eevent out = {.kind = EV_SCORES, .index = s->index, .at_ns = util_now_ns(),
                                 .queued_ns = s->admitted_ns - s->submitted_ns, .cached_tokens = s->cached_tokens};
            give_blocks(e, s);
            unrun(e, s);
            size_t bytes = sizeof(float) * (size_t)V;
            if (s->embed) {                     /* the pooled vector, over this step's hidden rows (read) */
                emb_pool_finish(s->embed, s->acc, s->g.n_prompt, C, e->step_hidden[i]);
                last = e->step_hidden[i];
                bytes = sizeof(float) * (size_t)C;
            }
            if (echan_post(s->chan, &out, (const char *)last, bytes) != 0)
                log_warn("model %s: out of memory posting a classification", e->name);
            seq_free(s);
            continue;
        }
        struct gen_event ev;
        struct sample_out chosen;
        if (greedy)                             /* rows: one per sequence that reads its last token */
            greedy_token(&e->g_out[row - 1], &chosen);
        if ((greedy ? gen_seq_take(&s->g, &chosen, &ev, err, sizeof err)
                    : gen_seq_next(&s->g, last, &ev, err, sizeof err)) != 0) {
            seq_fail(s, 500, "%s", err);
            finish_seq(e, s);
            continue;
        }
        atomic_fetch_add(&e->st_generated, 1);
        struct eevent out = {.kind = EV_TOKEN, .index = s->index, .tok = ev.tok, .finish = ev.finish,
                             .at_ns = util_now_ns()};
        if (!s->sent_first) {
            out.queued_ns = s->admitted_ns - s->submitted_ns;
            out.cached_tokens = s->cached_tokens;
            s->sent_first = true;
        }
        bool ended = ev.finish != FIN_NONE;
        if (ended) {                            /* free its place before the responder hears of the end */
            give_blocks(e, s);
            unrun(e, s);
        }
        if (echan_post(s->chan, &out, ev.text, ev.len) != 0 && !ended) {
            finish_seq(e, s);                   /* out of memory: the responder sees no end and times out */
            continue;
        }
        if (ended)
            seq_free(s);
    }
    return true;
}

static void *engine_main(void *arg)
{
    struct engine *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        while (!e->stopping && e->n_run == 0 && !e->qhead) {
            e->waiting = true;
            pthread_cond_wait(&e->cv, &e->mu);
        }
        e->waiting = false;
        bool stop = e->stopping;
        pthread_mutex_unlock(&e->mu);
        if (stop)
            break;
        sweep_and_admit(e);
        step(e);
    }
    /* Shutting down: every sequence left gets an error. */
    while (e->n_run > 0) {
        struct eseq *s = e->run[e->n_run - 1];
        seq_fail(s, 503, "the model %s was unloaded", e->name);
        finish_seq(e, s);
    }
    pthread_mutex_lock(&e->mu);
    struct eseq *q = e->qhead;
    e->qhead = e->qtail = NULL;
    e->n_queued = 0;
    pthread_mutex_unlock(&e->mu);
    while (q) {
        struct eseq *s = q;
        q = s->next;
        seq_fail(s, 503, "the model %s was unloaded", e->name);
        seq_free(s);
    }
    return NULL;
}

/* ------------------------------------------------------------------ lifecycle */

/* The tokenizer's trie, built on first use (about 0.1 s for GPT-2), or NULL when out of memory. */
static const struct vtrie *engine_trie(struct engine *e)
{
    pthread_mutex_lock(&e->trie_mu);
    if (!e->trie && (e->trie = vtrie_new(e->tok)))
        vtrie_set_mask_budget(e->trie, e->o.mask_cache);   /* before the engine thread sees it */
    const struct vtrie *t = e->trie;
    pthread_mutex_unlock(&e->trie_mu);
    return t;
}

/* Frees the engine's own memory (not the model, not the thread). */
static void free_engine(struct engine *e)
{
    pthread_mutex_destroy(&e->trie_mu);
    vtrie_free(e->trie);
    free(e->run);
    kvc_free(e->kv);
    free(e->step);
    free(e->step_seq);
    free(e->step_hidden);
    free(e->logits);
    free(e->g_rows);
    free(e->g_out);
    free(e->g_ids);
    free(e->hidden);
    free(e);
}

int engine_start(struct engine **out, struct llm_model *m, const struct tokenizer *tok, const struct engine_opts *o,
                 const char *name, char *err, size_t errlen)
{
    *out = NULL;
    const struct llm_info *info = llm_get_info(m);
    if (o->max_concurrent < 1 || o->max_queue < 0 || o->max_batch_tokens < o->max_concurrent) {
        snprintf(err, errlen, "max_batch_tokens (%d) must be at least max_concurrent (%d)", o->max_batch_tokens,
                 o->max_concurrent);
        return -1;
    }
    if (info->max_step_tokens < o->max_batch_tokens || info->max_step_logits < o->max_batch_tokens) {
        snprintf(err, errlen, "the model was loaded for steps of %d tokens, fewer than max_batch_tokens (%d)",
                 info->max_step_tokens, o->max_batch_tokens);
        return -1;
    }
    int max_blocks = (info->cfg.n_positions + info->kv_block_tokens - 1) / info->kv_block_tokens;
    if (info->kv_blocks < max_blocks) {
        snprintf(err, errlen, "the KV pool (%d blocks of %d tokens) cannot hold one full context of %d tokens",
                 info->kv_blocks, info->kv_block_tokens, info->cfg.n_positions);
        return -1;
    }
    struct engine *e = calloc(1, sizeof *e);
    if (!e) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    pthread_mutex_init(&e->trie_mu, NULL);
    snprintf(e->name, sizeof e->name, "%s", name);
    e->metrics_model = metrics_model_id(name);
    e->m = m;
    e->info = info;
    e->tok = tok;
    e->o = *o;
    e->B = info->kv_block_tokens;
    e->max_blocks = max_blocks;
    e->run = calloc((size_t)o->max_concurrent, sizeof *e->run);
    e->step = calloc((size_t)o->max_concurrent + 1, sizeof *e->step);
    e->step_seq = calloc((size_t)o->max_concurrent + 1, sizeof *e->step_seq);
    e->step_hidden = calloc((size_t)o->max_concurrent + 1, sizeof *e->step_hidden);
    e->logits = malloc(sizeof *e->logits * (size_t)o->max_batch_tokens * (size_t)info->out_dim);
    e->g_rows = calloc((size_t)o->max_concurrent + 1, sizeof *e->g_rows);
    e->g_out = calloc((size_t)o->max_concurrent + 1, sizeof *e->g_out);
    const char *ds = getenv("LLMCGI_DEVICE_SAMPLING");
    e->greedy_on = !info->cfg.classifier && (ds && *ds ? strcmp(ds, "0") != 0 : llm_greedy_on_device(m));
    if (!e->run || kvc_new(&e->kv, info->kv_blocks, e->B, o->prefix_cache) != 0 || !e->step || !e->step_seq || !e->step_hidden ||
        !e->logits || !e->g_rows || !e->g_out) {
        snprintf(err, errlen, "out of memory for the engine's scratch");
        goto fail;
    }
    atomic_init(&e->st_used, 0);
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    int rc = pthread_create(&e->thread, NULL, engine_main, e);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the engine thread: %s", strerror(rc));
        pthread_mutex_destroy(&e->mu);
        pthread_cond_destroy(&e->cv);
        goto fail;
    }
    *out = e;
    return 0;
fail:
    free_engine(e);
    return -1;
}

void engine_stop(struct engine *e)
{
    if (!e)
        return;
    pthread_mutex_lock(&e->mu);
    e->stopping = true;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    pthread_join(e->thread, NULL);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    llm_free(e->m);
    free_engine(e);
}

void engine_get_stats(struct engine *e, struct engine_stats *st)
{
    memset(st, 0, sizeof *st);
    st->running = atomic_load(&e->st_running);
    st->queued = atomic_load(&e->st_queued);
    st->kv_blocks_used = atomic_load(&e->st_used);
    st->kv_blocks_total = e->info->kv_blocks;
    st->steps = atomic_load(&e->st_steps);
    st->prompt_tokens = atomic_load(&e->st_prompt);
    st->generated_tokens = atomic_load(&e->st_generated);
    st->requests = atomic_load(&e->st_requests);
    st->cancelled = atomic_load(&e->st_cancelled);
    st->rejected = atomic_load(&e->st_rejected);
    st->preempted = atomic_load(&e->st_preempted);
    st->expired = atomic_load(&e->st_expired);
    st->kv_blocks_cached = atomic_load(&e->st_cached);
    st->prefix_cache = e->o.prefix_cache;
    st->prefix_cache_queries = atomic_load(&e->st_pc_queries);
    st->prefix_cache_hits = atomic_load(&e->st_pc_hits);
    st->greedy_steps = atomic_load(&e->st_greedy_steps);
    pthread_mutex_lock(&e->trie_mu);
    if (e->trie) {
        struct vtrie_stats vs;
        vtrie_get_stats(e->trie, &vs);
        st->mask_cache_built = true;
        st->mask_cache_hits = vs.hits;
        st->mask_cache_walks = vs.walks;
        st->mask_cache_bytes = vs.bytes;
    }
    pthread_mutex_unlock(&e->trie_mu);
}

int engine_check_pool(struct engine *e, char *err, size_t errlen)
{
    pthread_mutex_lock(&e->mu);
    int rc = -1;
    if (!e->waiting)
        snprintf(err, errlen, "the engine is busy");
    else if (kvc_check(e->kv, err, errlen) == 0) {
        if (kvc_held(e->kv) != 0)
            snprintf(err, errlen, "%d blocks held with nothing running", kvc_held(e->kv));
        else
            rc = 0;
        for (int32_t b = 0; b < e->info->kv_blocks; b++)
            if (kvc_refs(e->kv, b) != 0) {
                snprintf(err, errlen, "block %d has reference count %d with nothing running", b, kvc_refs(e->kv, b));
                rc = -1;
                break;
            }
    }
    pthread_mutex_unlock(&e->mu);
    return rc;
}

const struct llm_info *engine_info(const struct engine *e)
{
    return e->info;
}
