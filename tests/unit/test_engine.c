/* test_engine.c -- the engine thread (fcgi_app/engine/engine.c) against a plain generation loop: continuous batching, chunked prefill, preemption, sampling, admission, cancellation, deadlines, prompt logprobs, shutdown, the prefix cache.
 *
 * A tiny deterministic GPT-2 (tools/gen_gpt2_lib.c: 2 layers, 64 wide, 128
 * positions, GPT-2's vocabulary) is written to a temporary directory. The
 * reference for every sequence is the loop llmcgi-generate runs: the whole
 * prompt in one llm_forward step, then one token per step through
 * gen_seq_next, on a model of its own. Whatever the engine does (batching,
 * chunks, preemption and re-prefill), each sequence must yield exactly the
 * reference's tokens and text. Waits are bounded (poll with a timeout); no
 * duration is asserted. */
#include "config.h"
#include "checkpoint.h"
#include "engine.h"
#include "generation.h"
#include "llm.h"
#include "scratch.h"
#include "tap.h"
#include "tokenizer.h"
#include "util.h"
#include "vocab_trie.h"
#include "../../tools/gen_gpt2.h"

#include <json-c/json.h>
#include <math.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NPOS 128        /* the model's context */
#define BT 16           /* positions per KV block */
#define MAXBLK (NPOS / BT)
#define MAXS 32         /* sequences in one test */
#define TEXT_CAP 8192

static char tmpdir_root[256], model_dir[512];
static struct tokenizer *tok;
static struct llm_model *ref;       /* the reference loop's own model */
static int V;
static int32_t EOS;
static double wait_s = 60;          /* bound on any wait (not an assertion) */
static struct ebatch evb;           /* reused by every take */
static bool prefix_cache = true;    /* engines start with the prefix cache on unless a test says */

/* ------------------------------------------------------------------ helpers */

static struct llm_model *load_model(int kv_blocks, int step_tokens)
{
    struct gpt2_checkpoint *ck;
    char err[512];
    if (gpt2_checkpoint_open(model_dir, &ck, err, sizeof err) != 0) {
        printf("# %s\n", err);
        return NULL;
    }
    /* One thread: the caller's (no workers spinning on a loaded 2-core machine). */
    struct llm_load_opts lo = {.device = LLM_DEVICE_CPU, .threads = 1, .kv_block_tokens = BT, .kv_blocks = kv_blocks,
                               .max_step_tokens = step_tokens, .max_step_logits = step_tokens};
    struct llm_model *m = NULL;
    if (llm_load(ck, &lo, &m, err, sizeof err) != 0)
        printf("# llm_load: %s\n", err);
    gpt2_checkpoint_close(ck);
    return m;
}

static struct engine *start_engine(int kv_blocks, int max_concurrent, int max_queue, int max_batch_tokens,
                                   const char *name)
{
    struct llm_model *m = load_model(kv_blocks, max_batch_tokens);
    if (!m)
        return NULL;
    struct engine_opts o = {max_concurrent, max_queue, max_batch_tokens, .prefix_cache = prefix_cache,
                            .mask_cache = VTRIE_MASK_BYTES};
    struct engine *e;
    char err[512];
    if (engine_start(&e, m, tok, &o, name, err, sizeof err) != 0) {
        printf("# engine_start: %s\n", err);
        llm_free(m);
        return NULL;
    }
    return e;
}

/* Deterministic prompt ids, never <|endoftext|>. */
static void make_prompt(int32_t *ids, int n, uint64_t seed)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 12345;
    for (int i = 0; i < n; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        ids[i] = (int32_t)((x >> 33) % (uint64_t)(V - 1));
        if (ids[i] == EOS)
            ids[i] = 0;
    }
}

struct spec {
    int32_t prompt[NPOS];
    int n;
    struct gen_params gp;
    bool prompt_logprobs;
    int64_t deadline_ns;
};

static void spec_greedy(struct spec *s, int n, int max_new, uint64_t seed)
{
    memset(s, 0, sizeof *s);
    s->n = n;
    make_prompt(s->prompt, n, seed);
    s->gp.sampling = sampler_params_default();
    s->gp.max_new_tokens = max_new;
    s->gp.ignore_eos = true;
}

static void spec_sampled(struct spec *s, int n, int max_new, uint64_t seed)
{
    spec_greedy(s, n, max_new, seed);
    s->gp.sampling.do_sample = true;
    s->gp.sampling.temperature = 0.9f;
    s->gp.sampling.top_k = 40;
    s->gp.sampling.top_p = 0.95f;
    s->gp.sampling.top_n = 3;
    s->gp.sampling.seed = 1000 + seed;
}

static struct eseq_req spec_req(const struct spec *s, int index)
{
    return (struct eseq_req){.prompt = s->prompt, .n_prompt = s->n, .params = s->gp, .index = index,
                             .prompt_logprobs = s->prompt_logprobs, .deadline_ns = s->deadline_ns};
}

/* What a sequence yielded: from the reference loop or from the engine's events. */
struct res {
    int32_t ids[NPOS];
    float lp[NPOS];
    int n_top[NPOS];
    int32_t top0[NPOS];
    struct sample_logprob top[NPOS][SAMPLER_TOP_N_MAX];  /* every alternative (greedy_exact compares them) */
    int n;
    enum finish finish;
    bool done;
    int status;                 /* EV_ERROR's */
    char msg[512];
    int late;                   /* events after the sequence's end */
    int bad;                    /* malformed events (queued_ns, kinds) */
    char text[TEXT_CAP];
    size_t tlen;
    int n_pf;
    int32_t pf_id[NPOS];
    float pf_lp[NPOS];
    int pf_late;                /* EV_PREFILL after an EV_TOKEN */
    int cached;                 /* the first EV_TOKEN's cached_tokens */
};

static void text_add(struct res *r, const char *t, size_t n)
{
    if (r->tlen + n >= TEXT_CAP) {
        r->bad++;
        return;
    }
    memcpy(r->text + r->tlen, t, n);
    r->tlen += n;
    r->text[r->tlen] = '\0';
}

/* The reference: llmcgi-generate's loop on the reference model. */
static int reference(const struct spec *s, struct res *r)
{
    memset(r, 0, sizeof *r);
    char err[512];
    struct gen_seq g;
    if (gen_seq_init(&g, tok, s->prompt, s->n, V, NPOS, &s->gp, err, sizeof err) != 0) {
        printf("# gen_seq_init: %s\n", err);
        return -1;
    }
    int32_t blocks[MAXBLK];
    for (int i = 0; i < MAXBLK; i++)
        blocks[i] = i;
    float *logits = malloc(sizeof *logits * (size_t)V);
    int rc = -1;
    struct llm_seq q = {s->prompt, s->n, 0, blocks, MAXBLK, LLM_LOGITS_LAST};
    if (!logits || llm_forward(ref, &q, 1, logits, err, sizeof err) != 0)
        goto out;
    for (;;) {
        struct gen_event ev;
        if (gen_seq_next(&g, logits, &ev, err, sizeof err) != 0)
            goto out;
        r->ids[r->n] = ev.tok.id;
        r->lp[r->n] = ev.tok.logprob;
        r->n_top[r->n] = ev.tok.n_top;
        r->top0[r->n] = ev.tok.n_top ? ev.tok.top[0].id : -1;
        memcpy(r->top[r->n], ev.tok.top, sizeof r->top[0]);
        r->n++;
        text_add(r, ev.text, ev.len);
        if (ev.finish != FIN_NONE) {
            r->finish = ev.finish;
            r->done = true;
            break;
        }
        int32_t last = g.ids[g.n_ids - 1];
        q = (struct llm_seq){&last, 1, g.n_ids - 1, blocks, MAXBLK, LLM_LOGITS_LAST};
        if (llm_forward(ref, &q, 1, logits, err, sizeof err) != 0)
            goto out;
    }
    rc = 0;
out:
    if (rc != 0)
        printf("# reference: %s\n", err);
    free(logits);
    gen_seq_free(&g);
    return rc;
}

static void on_event(struct res *res, int nres, const struct ebatch *b, const struct eevent *ev)
{
    if (ev->index < 0 || ev->index >= nres) {
        printf("# event for index %d (of %d)\n", ev->index, nres);
        res[0].bad++;
        return;
    }
    struct res *r = &res[ev->index];
    if (r->done) {
        r->late++;
        return;
    }
    switch (ev->kind) {
    case EV_PREFILL:
        if (r->n > 0)
            r->pf_late++;
        if (r->n_pf < NPOS) {
            r->pf_id[r->n_pf] = ev->tok.id;
            r->pf_lp[r->n_pf] = ev->tok.logprob;
        }
        r->n_pf++;
        break;
    case EV_TOKEN:
        if (r->n >= NPOS) {
            r->bad++;
            break;
        }
        if (ev->queued_ns < 0 || (r->n > 0 && ev->queued_ns != 0) || (r->n > 0 && ev->cached_tokens != 0))
            r->bad++;
        if (r->n == 0)
            r->cached = ev->cached_tokens;
        r->ids[r->n] = ev->tok.id;
        r->lp[r->n] = ev->tok.logprob;
        r->n_top[r->n] = ev->tok.n_top;
        r->top0[r->n] = ev->tok.n_top ? ev->tok.top[0].id : -1;
        memcpy(r->top[r->n], ev->tok.top, sizeof r->top[0]);
        r->n++;
        if (strlen(ebatch_text(b, ev)) != ev->text_len)
            r->bad++;
        text_add(r, ebatch_text(b, ev), ev->text_len);
        if (ev->finish != FIN_NONE) {
            r->finish = ev->finish;
            r->done = true;
        }
        break;
    case EV_ERROR:
        r->status = ev->status;
        snprintf(r->msg, sizeof r->msg, "%s", ebatch_text(b, ev));
        r->done = true;
        break;
    default:
        r->bad++;
    }
}

/* Takes whatever waits on the channels. */
static void drain(struct echan **ch, int nch, struct res *res, int nres)
{
    for (int k = 0; k < nch; k++) {
        if (!ch[k])
            continue;
        size_t n = echan_take(ch[k], &evb);
        for (size_t i = 0; i < n; i++)
            on_event(res, nres, &evb, &evb.ev[i]);
    }
}

/* Takes events into res[ev.index] until every res[0..nres) is done or, when
 * stop_idx >= 0, until res[stop_idx] has stop_n tokens (or is done). False
 * when the bound ran out first. */
static bool pump(struct echan **ch, int nch, struct res *res, int nres, int stop_idx, int stop_n)
{
    int64_t end = util_now_ns() + (int64_t)(wait_s * 1e9);
    for (;;) {
        drain(ch, nch, res, nres);
        bool all = true;
        if (stop_idx >= 0)
            all = res[stop_idx].done || res[stop_idx].n >= stop_n;
        else
            for (int i = 0; i < nres; i++)
                all = all && res[i].done;
        if (all)
            return true;
        if (util_now_ns() > end)
            return false;
        struct pollfd pf[MAXS];
        int np = 0;
        for (int k = 0; k < nch && np < MAXS; k++)
            if (ch[k])
                pf[np++] = (struct pollfd){.fd = echan_fd(ch[k]), .events = POLLIN};
        poll(pf, (nfds_t)np, 100);
    }
}

/* Waits (bounded) until the engine has nothing running, queued or held. */
static bool wait_idle(struct engine *e, struct engine_stats *st)
{
    int64_t end = util_now_ns() + (int64_t)(wait_s * 1e9);
    for (;;) {
        engine_get_stats(e, st);
        if (st->running == 0 && st->queued == 0 && st->kv_blocks_used == 0)
            return true;
        if (util_now_ns() > end)
            return false;
        usleep(2000);
    }
}

/* Does r hold exactly want's tokens, finish and text (and nothing odd)? */
static bool same(const struct res *r, const struct res *want, int idx)
{
    if (r->status || !r->done || r->late || r->bad) {
        printf("# seq %d: status %d (%s), done %d, late events %d, bad events %d\n", idx, r->status, r->msg, r->done,
               r->late, r->bad);
        return false;
    }
    int k = 0;
    while (k < r->n && k < want->n && r->ids[k] == want->ids[k])
        k++;
    if (k < r->n || k < want->n) {
        printf("# seq %d: %d tokens, reference %d; first difference at %d: %d vs %d\n", idx, r->n, want->n, k,
               k < r->n ? r->ids[k] : -1, k < want->n ? want->ids[k] : -1);
        return false;
    }
    if (r->finish != want->finish) {
        printf("# seq %d: finish %s, reference %s\n", idx, finish_name(r->finish), finish_name(want->finish));
        return false;
    }
    if (r->tlen != want->tlen || memcmp(r->text, want->text, r->tlen) != 0) {
        printf("# seq %d: text \"%s\", reference \"%s\"\n", idx, r->text, want->text);
        return false;
    }
    for (int i = 0; i < r->n; i++)
        if (fabsf(r->lp[i] - want->lp[i]) > 1e-3f || r->n_top[i] != want->n_top[i] || r->top0[i] != want->top0[i]) {
            printf("# seq %d token %d: logprob %g (reference %g), n_top %d (%d), top %d (%d)\n", idx, i, r->lp[i],
                   want->lp[i], r->n_top[i], want->n_top[i], r->top0[i], want->top0[i]);
            return false;
        }
    return true;
}

static int count_same(const struct res *got, const struct res *want, int n)
{
    int c = 0, exact = 0, toks = 0;
    for (int i = 0; i < n; i++) {
        c += same(&got[i], &want[i], i);
        for (int k = 0; k < got[i].n && k < want[i].n; k++, toks++)
            exact += got[i].lp[k] == want[i].lp[k];
    }
    printf("# %d of %d logprobs bit-identical\n", exact, toks);
    return c;
}

static void put_all(struct echan **ch, int n)
{
    for (int k = 0; k < n; k++) {
        echan_put(ch[k]);
        ch[k] = NULL;
    }
}

/* Submits sequence i of specs on a channel of its own. */
static int submit_one(struct engine *e, struct echan **ch, const struct spec *s, int i)
{
    char err[512];
    ch[i] = echan_new();
    struct eseq_req q = spec_req(s, i);
    int rc = engine_submit(e, ch[i], &q, 1, err, sizeof err);
    if (rc != ENGINE_OK)
        printf("# engine_submit %d: %d %s\n", i, rc, err);
    return rc;
}

/* log_softmax(row)[t] in double. */
static double logprob_of(const float *row, int n, int32_t t)
{
    double mx = -INFINITY, sum = 0;
    for (int i = 0; i < n; i++)
        mx = row[i] > mx ? row[i] : mx;
    for (int i = 0; i < n; i++)
        sum += exp((double)row[i] - mx);
    return (double)row[t] - mx - log(sum);
}

/* The EV_PREFILL events r got for s: one per prompt token, in order, before
 * any token, the first NAN, the others log_softmax of the reference's
 * full-prompt forward (LLM_LOGITS_ALL). */
static void check_prompt_logprobs(const struct spec *s, const struct res *r, const char *how)
{
    is_int(r->n_pf, s->n, "prompt_logprobs (%s, %d tokens): an EV_PREFILL per prompt token", how, s->n);
    ok(r->pf_late == 0, "prompt_logprobs (%s): all before the first EV_TOKEN", how);
    int order = 0;
    for (int k = 0; k < r->n_pf && k < s->n; k++)
        order += r->pf_id[k] == s->prompt[k];
    is_int(order, s->n, "prompt_logprobs (%s): the prompt's tokens in order", how);
    ok(r->n_pf > 0 && isnan(r->pf_lp[0]), "prompt_logprobs (%s): the first is NAN", how);
    int32_t blocks[MAXBLK];
    for (int i = 0; i < MAXBLK; i++)
        blocks[i] = i;
    float *rows = malloc(sizeof *rows * (size_t)V * (size_t)s->n);
    char err[512];
    struct llm_seq q = {s->prompt, s->n, 0, blocks, MAXBLK, LLM_LOGITS_ALL};
    bool fwd = rows && llm_forward(ref, &q, 1, rows, err, sizeof err) == 0;
    if (ok(fwd, "prompt_logprobs (%s): reference forward", how)) {
        double worst = 0;
        int bad = 0;
        for (int k = 1; k < r->n_pf && k < s->n; k++) {
            double d = fabs(r->pf_lp[k] - logprob_of(rows + (size_t)(k - 1) * V, V, s->prompt[k]));
            if (!(d <= worst))
                worst = d;
            bad += !(d <= 1e-4) || !isfinite(r->pf_lp[k]);
        }
        ok(bad == 0 && r->n_pf == s->n, "prompt_logprobs (%s): values are log_softmax of the reference (worst %.2g)",
           how, worst);
    }
    free(rows);
}

/* ------------------------------------------------------------------ the tests */

/* 1. One greedy sequence yields the reference's tokens. */
static void test_single(struct engine *e)
{
    static struct spec s;
    static struct res want, got;
    spec_greedy(&s, 12, 40, 1);
    if (!ok(reference(&s, &want) == 0, "single: the reference loop runs"))
        return;
    memset(&got, 0, sizeof got);
    struct echan *ch[1] = {NULL};
    ok(submit_one(e, ch, &s, 0) == ENGINE_OK, "single: submitted");
    ok(pump(ch, 1, &got, 1, -1, 0), "single: the sequence ends");
    ok(same(&got, &want, 0), "single: one greedy sequence yields the reference's %d tokens and text", want.n);
    is_int(got.finish, FIN_LENGTH, "single: finish is length (max_new_tokens, ignore_eos)");
    is_int(got.n, 40, "single: max_new_tokens tokens");
    is_int(got.n_pf, 0, "single: no EV_PREFILL without prompt_logprobs");
    put_all(ch, 1);
}

/* 2. 16 prompts of many lengths (several longer than max_batch_tokens),
 * together then staggered. */
static void test_batching(struct engine *e, int max_batch_tokens)
{
    enum { N = 16 };
    static const int lens[N] = {1, 2, 5, 9, 16, 17, 31, 32, 33, 40, 47, 64, 70, 75, 90, 100};
    static struct spec s[N];
    static struct res want[N], got[N];
    int refs = 0, total_new = 0, total_prompt = 0, chunked = 0;
    for (int i = 0; i < N; i++) {
        int max_new = 6 + (i * 7) % 23;
        if (lens[i] + max_new > NPOS)
            max_new = NPOS - lens[i];
        spec_greedy(&s[i], lens[i], max_new, 100 + (uint64_t)i);
        refs += reference(&s[i], &want[i]) == 0;
        total_new += max_new;
        total_prompt += lens[i];
        chunked += lens[i] > max_batch_tokens;
    }
    if (!ok(refs == N, "batch: %d references run", N))
        return;
    ok(chunked >= 4, "batch: %d prompts are longer than max_batch_tokens (%d)", chunked, max_batch_tokens);

    struct engine_stats st0, st;
    engine_get_stats(e, &st0);
    struct echan *ch[N] = {NULL};
    memset(got, 0, sizeof got);
    int subs = 0;
    for (int i = 0; i < N; i++)
        subs += submit_one(e, ch, &s[i], i) == ENGINE_OK;
    is_int(subs, N, "batch: %d sequences submitted together", N);
    ok(pump(ch, N, got, N, -1, 0), "batch: every sequence ends");
    is_int(count_same(got, want, N), N, "batch: submitted together, each yields exactly its reference");
    int lengths = 0;
    for (int i = 0; i < N; i++)
        lengths += got[i].finish == FIN_LENGTH && got[i].n == s[i].gp.max_new_tokens;
    is_int(lengths, N, "batch: each ends with finish length after max_new_tokens");
    put_all(ch, N);
    ok(wait_idle(e, &st), "batch: the engine goes idle, every block back");
    is_int(st.generated_tokens - st0.generated_tokens, total_new, "batch: generated_tokens counts them");
    is_int(st.prompt_tokens - st0.prompt_tokens, total_prompt, "batch: prompt_tokens counts every prompt token once");
    is_int(st.requests - st0.requests, N, "batch: requests counts them");
    ok(st.steps - st0.steps < (uint64_t)total_new,
       "batch: sequences share steps (%llu steps for %d tokens)", (unsigned long long)(st.steps - st0.steps),
       total_new);
    is_int(st.preempted - st0.preempted, 0, "batch: a big pool preempts nothing");

    /* Staggered: each next sequence goes in once the one before it has
     * produced a token, so new prompts join a batch that is decoding. */
    memset(got, 0, sizeof got);
    subs = 0;
    bool flowing = true;
    for (int i = 0; i < N; i++) {
        int j = (i * 5) % N;           /* a shuffled order: long and short prompts interleave */
        subs += submit_one(e, ch, &s[j], j) == ENGINE_OK;
        if (i >= 3)
            flowing = pump(ch, N, got, N, j, 1) && flowing;
    }
    is_int(subs, N, "batch: %d sequences submitted staggered", N);
    ok(flowing && pump(ch, N, got, N, -1, 0), "batch: every staggered sequence ends");
    is_int(count_same(got, want, N), N, "batch: staggered, each yields exactly its reference");
    put_all(ch, N);
    ok(wait_idle(e, &st), "batch: idle again, every block back");
}

/* 3. A pool just above one context: many long sequences preempt each other. */
static void test_preemption(void)
{
    enum { N = 10 };
    int kv = MAXBLK + 1;
    struct engine *e = start_engine(kv, 6, 16, 32, "preempt");
    if (!ok(e != NULL, "preempt: engine with a pool of %d blocks (one context is %d)", kv, MAXBLK))
        return;
    static struct spec s[N];
    static struct res want[N], got[N];
    int refs = 0;
    for (int i = 0; i < N; i++) {
        int n = 20 + 4 * i;
        if (i == 3 || i == 6)       /* seeded sampling: the sampler's state survives preemption */
            spec_sampled(&s[i], n, NPOS - n, 300 + (uint64_t)i);
        else
            spec_greedy(&s[i], n, NPOS - n - (i % 3) * 5, 300 + (uint64_t)i);
        if (i >= N - 2) {           /* long prompts with prompt_logprobs, submitted last */
            spec_greedy(&s[i], 90 + i, 20, 300 + (uint64_t)i);
            s[i].prompt_logprobs = true;
        }
        refs += reference(&s[i], &want[i]) == 0;
    }
    ok(refs == N, "preempt: %d references run", N);
    struct echan *ch[N] = {NULL};
    memset(got, 0, sizeof got);
    int subs = 0;
    for (int i = 0; i < N; i++)
        subs += submit_one(e, ch, &s[i], i) == ENGINE_OK;
    is_int(subs, N, "preempt: %d long sequences submitted", N);
    ok(pump(ch, N, got, N, -1, 0), "preempt: every sequence ends");
    is_int(count_same(got, want, N), N, "preempt: each yields exactly its reference despite preemption");
    for (int i = N - 2; i < N; i++)
        check_prompt_logprobs(&s[i], &got[i], "preempted");
    struct engine_stats st;
    bool idle = wait_idle(e, &st);
    ok(st.preempted > 0, "preempt: sequences were preempted (%llu times; %llu steps, %llu prompt tokens read)",
       (unsigned long long)st.preempted, (unsigned long long)st.steps, (unsigned long long)st.prompt_tokens);
    ok(idle && st.kv_blocks_used == 0 && st.kv_blocks_total == kv, "preempt: at the end no block is used (%d of %d)",
       st.kv_blocks_used, st.kv_blocks_total);
    put_all(ch, N);
    engine_stop(e);
}

/* 4. Seeded sampling: alone or in a batch, the same tokens (and the reference's). */
static void test_sampling(struct engine *e)
{
    enum { N = 6 };
    static struct spec s[N];
    static struct res want[N], alone[N], batch[N];
    int refs = 0;
    for (int i = 0; i < N; i++) {
        spec_sampled(&s[i], 3 + 9 * i, 30, 500 + (uint64_t)i);
        refs += reference(&s[i], &want[i]) == 0;
    }
    ok(refs == N, "sampling: %d references run", N);
    struct echan *ch[N] = {NULL};
    memset(alone, 0, sizeof alone);
    bool ended = true;
    for (int i = 0; i < N; i++) {
        submit_one(e, ch, &s[i], i);
        ended = pump(ch, N, alone, N, i, NPOS) && ended;
        echan_put(ch[i]);
        ch[i] = NULL;
    }
    ok(ended, "sampling: each sequence run alone ends");
    is_int(count_same(alone, want, N), N, "sampling: alone, each yields the reference loop's tokens");
    memset(batch, 0, sizeof batch);
    for (int i = 0; i < N; i++)
        submit_one(e, ch, &s[i], i);
    ok(pump(ch, N, batch, N, -1, 0), "sampling: the batch ends");
    is_int(count_same(batch, alone, N), N, "sampling: in a batch, each yields the tokens it yielded alone");
    int differ = 0;
    for (int i = 1; i < N; i++)
        differ += memcmp(batch[i].ids, batch[0].ids, sizeof(int32_t) * 30) != 0;
    is_int(differ, N - 1, "sampling: different seeds and prompts give different tokens");
    put_all(ch, N);
    struct engine_stats st;
    ok(wait_idle(e, &st), "sampling: idle again");
}

/* 5 and 6. Admission (max_concurrent 1, max_queue 1) and cancellation. */
static void test_admission_cancel(void)
{
    struct engine *e = start_engine(0, 1, 1, 16, "admit");
    if (!ok(e != NULL, "admission: engine with max_concurrent 1, max_queue 1"))
        return;
    enum { N = 5 };
    static struct spec s[N];
    static struct res got[N];
    for (int i = 0; i < N; i++)
        spec_greedy(&s[i], 8, 110, 700 + (uint64_t)i);
    memset(got, 0, sizeof got);
    struct echan *ch[N] = {NULL};
    char err[512];
    /* The first joins the batch (it streams before the others are
     * submitted), the second waits in the queue, the third finds both
     * places taken. */
    is_int(submit_one(e, ch, &s[0], 0), ENGINE_OK, "admission: the 1st sequence is taken");
    ok(pump(ch, 1, got, 2, 0, 1) && got[0].n >= 1, "admission: the 1st streams");
    is_int(submit_one(e, ch, &s[1], 1), ENGINE_OK, "admission: the 2nd sequence is queued");
    ch[2] = echan_new();
    struct eseq_req q = spec_req(&s[2], 2);
    is_int(engine_submit(e, ch[2], &q, 1, err, sizeof err), ENGINE_EFULL, "admission: the 3rd gets ENGINE_EFULL");
    echan_put(ch[2]);
    ch[2] = NULL;
    struct engine_stats st;
    engine_get_stats(e, &st);
    is_int(st.rejected, 1, "admission: rejected counts it");
    is_int(st.requests, 2, "admission: requests counts the two taken");

    /* 6. Cancel the running one after a few tokens: the queued one takes its place. */
    bool streamed = pump(ch, 2, got, 2, 0, 3);
    ok(streamed && got[0].n >= 3 && !got[0].done, "cancel: the 1st streams (%d tokens so far)", got[0].n);
    ok(got[1].n == 0, "cancel: the 2nd waits meanwhile");
    echan_cancel(ch[0]);
    echan_put(ch[0]);
    ch[0] = NULL;
    ok(pump(ch, 2, got, 2, 1, 2) && got[1].n >= 2, "cancel: the queued one runs once the 1st is cancelled");
    engine_get_stats(e, &st);
    is_int(st.cancelled, 1, "cancel: cancelled is 1");
    /* cancel the running one: nothing left */
    echan_cancel(ch[1]);
    echan_put(ch[1]);
    ch[1] = NULL;
    bool idle = wait_idle(e, &st);
    ok(idle && st.running == 0 && st.kv_blocks_used == 0, "cancel: running 0, no block used (%d running, %d used)",
       st.running, st.kv_blocks_used);
    is_int(st.cancelled, 2, "cancel: cancelled is 2");

    /* A queued sequence cancelled before it ran. */
    memset(got, 0, sizeof got);
    submit_one(e, ch, &s[3], 0);
    submit_one(e, ch, &s[4], 1);
    ok(pump(ch, 2, got, 2, 0, 1), "cancel: a new sequence runs");
    echan_cancel(ch[1]);        /* the queued one */
    /* keep our reference to ch[1] to see that nothing comes on it */
    echan_cancel(ch[0]);
    echan_put(ch[0]);
    ch[0] = NULL;
    idle = wait_idle(e, &st);
    ok(idle && st.running == 0 && st.queued == 0 && st.kv_blocks_used == 0,
       "cancel: a cancelled queued sequence leaves the queue");
    is_int(st.cancelled, 4, "cancel: cancelled counts queued sequences too");
    drain(&ch[1], 1, got, 2);
    is_int(got[1].n + got[1].done, 0, "cancel: the cancelled queued sequence posted nothing");
    echan_put(ch[1]);
    ch[1] = NULL;

    /* Back to back into an idle engine: the first counts against the free
     * place whether or not the engine thread took it yet. */
    struct eseq_req qs[3] = {spec_req(&s[0], 0), spec_req(&s[1], 1), spec_req(&s[2], 2)};
    struct echan *c = echan_new();
    int rcs[3];
    for (int i = 0; i < 3; i++)
        rcs[i] = engine_submit(e, c, &qs[i], 1, err, sizeof err);
    ok(rcs[0] == ENGINE_OK && rcs[1] == ENGINE_OK && rcs[2] == ENGINE_EFULL,
       "admission: back to back, 1st and 2nd taken, 3rd ENGINE_EFULL (%d %d %d)", rcs[0], rcs[1], rcs[2]);
    echan_cancel(c);
    echan_put(c);
    idle = wait_idle(e, &st);
    ok(idle && st.rejected == 2 && st.cancelled == 6, "admission: rejected 2, cancelled 6 (%llu, %llu)",
       (unsigned long long)st.rejected, (unsigned long long)st.cancelled);

    /* All or none: 3 at once into an idle engine with 1 + 1 places. */
    c = echan_new();
    is_int(engine_submit(e, c, qs, 3, err, sizeof err), ENGINE_EFULL,
           "admission: 3 sequences at once do not fit 1 running + 1 queued");
    engine_get_stats(e, &st);
    is_int(st.rejected, 5, "admission: rejected counts the 3 refused");
    ok(st.queued == 0 && st.running == 0, "admission: none of them was queued");
    is_int(engine_submit(e, c, qs, 2, err, sizeof err), ENGINE_OK, "admission: 2 at once fit");
    echan_cancel(c);
    echan_put(c);
    idle = wait_idle(e, &st);
    ok(idle, "admission: idle after cancelling them");
    is_int(st.cancelled, 8, "admission: both counted as cancelled");
    engine_stop(e);
}

/* 7. Deadlines. */
static void test_deadline(struct engine *e)
{
    static struct spec s[2];
    static struct res got[2];
    struct engine_stats st0, st;
    engine_get_stats(e, &st0);
    spec_greedy(&s[0], 10, 100, 800);
    s[0].deadline_ns = util_now_ns() - 1000000;
    spec_greedy(&s[1], 10, 110, 801);
    s[1].deadline_ns = util_now_ns() + 2000000;     /* 2 ms for 110 tokens */
    memset(got, 0, sizeof got);
    struct echan *ch[2] = {NULL};
    submit_one(e, ch, &s[0], 0);
    submit_one(e, ch, &s[1], 1);
    ok(pump(ch, 2, got, 2, -1, 0), "deadline: both sequences end");
    is_int(got[0].status, 504, "deadline: a deadline in the past gives an EV_ERROR 504");
    has_str(got[0].msg, "deadline", "deadline: the error says why");
    is_int(got[0].n, 0, "deadline: and no token");
    is_int(got[1].status, 504, "deadline: a deadline 2 ms away gives an EV_ERROR 504 (after %d tokens)", got[1].n);
    ok(got[1].n < 110 && got[0].late + got[1].late == 0, "deadline: nothing after the error");
    put_all(ch, 2);
    ok(wait_idle(e, &st), "deadline: idle, blocks back");
    is_int(st.expired - st0.expired, 2, "deadline: expired counts both");
}

/* 8. prompt_logprobs, whole and chunked, next to a sequence without. */
static void test_prompt_logprobs(struct engine *e, int max_batch_tokens)
{
    enum { N = 4 };
    static const int lens[N] = {10, 70, 1, 45};
    static struct spec s[N];
    static struct res want[N], got[N];
    for (int i = 0; i < N; i++) {
        spec_greedy(&s[i], lens[i], 12, 900 + (uint64_t)i);
        s[i].prompt_logprobs = i < N - 1;
        reference(&s[i], &want[i]);
    }
    struct echan *ch[N] = {NULL};
    memset(got, 0, sizeof got);
    for (int i = 0; i < N; i++)
        submit_one(e, ch, &s[i], i);
    ok(pump(ch, N, got, N, -1, 0), "prompt_logprobs: the sequences end");
    is_int(count_same(got, want, N), N, "prompt_logprobs: each yields its reference tokens");
    for (int i = 0; i < N - 1; i++)
        check_prompt_logprobs(&s[i], &got[i],
                              lens[i] > max_batch_tokens ? "chunked" : lens[i] == 1 ? "one token" : "whole");
    is_int(got[N - 1].n_pf, 0, "prompt_logprobs: none for the sequence that did not ask");
    put_all(ch, N);
    struct engine_stats st;
    ok(wait_idle(e, &st), "prompt_logprobs: idle again");
}

/* 9. Two sequences on one channel. */
static void test_two_on_one(struct engine *e)
{
    static struct spec s[2];
    static struct res want[2], got[2];
    for (int i = 0; i < 2; i++) {
        spec_sampled(&s[i], 5 + 11 * i, 40, 950 + (uint64_t)i);
        s[i].gp.ignore_eos = false;
        s[i].gp.sampling.temperature = 1.0f;
        s[i].gp.sampling.top_k = 0;
        s[i].gp.sampling.top_p = 1.0f;
        reference(&s[i], &want[i]);
    }
    struct echan *c = echan_new();
    struct eseq_req q[2] = {spec_req(&s[0], 0), spec_req(&s[1], 1)};
    char err[512];
    memset(got, 0, sizeof got);
    is_int(engine_submit(e, c, q, 2, err, sizeof err), ENGINE_OK, "one channel: 2 sequences submitted at once");
    ok(pump(&c, 1, got, 2, -1, 0), "one channel: both end");
    ok(got[0].bad == 0, "one channel: every event carries index 0 or 1");
    is_int(count_same(got, want, 2), 2, "one channel: each yields its reference");
    for (int i = 0; i < 2; i++) {
        int32_t ids[NPOS];
        size_t n = 0;
        for (int k = 0; k < got[i].n; k++)
            if (got[i].ids[k] != EOS)
                ids[n++] = got[i].ids[k];
        char *text = NULL;
        size_t len = 0;
        int rc = tokenizer_decode(tok, ids, n, &text, &len);
        ok(rc == 0 && len == got[i].tlen && memcmp(text, got[i].text, len) == 0,
           "one channel: seq %d's EV_TOKEN text joined is tokenizer_decode of its %zu tokens", i, n);
        if (rc == 0 && (len != got[i].tlen || memcmp(text, got[i].text, len) != 0))
            printf("#   got \"%s\"\n#  want \"%s\"\n", got[i].text, text);
        free(text);
    }
    echan_put(c);
    struct engine_stats st;
    ok(wait_idle(e, &st), "one channel: idle again");
}

/* Four sequences on one channel post four events a step, with one eventfd
 * write (the batch's first): a responder that waits on the fd alone, as
 * the routes do, still hears of every event. A poll that runs out its
 * time while events wait is a lost wake-up. */
static void test_wakeups(struct engine *e)
{
    enum { N = 4 };
    static struct spec s[N];
    static struct res want[N], got[N];
    for (int i = 0; i < N; i++) {
        spec_greedy(&s[i], 6 + 3 * i, 24, 970 + (uint64_t)i);
        reference(&s[i], &want[i]);
    }
    struct echan *c = echan_new();
    struct eseq_req q[N];
    for (int i = 0; i < N; i++)
        q[i] = spec_req(&s[i], i);
    char err[512];
    memset(got, 0, sizeof got);
    is_int(engine_submit(e, c, q, N, err, sizeof err), ENGINE_OK, "wake-ups: %d sequences on one channel", N);
    int lost = 0, timeouts = 0, wakes = 0;
    int64_t end = util_now_ns() + (int64_t)(wait_s * 1e9);
    bool all = false;
    while (!all && util_now_ns() < end) {
        struct pollfd pf = {.fd = echan_fd(c), .events = POLLIN};
        int rc = poll(&pf, 1, 2000);
        size_t n = echan_take(c, &evb);
        if (rc == 0) {
            timeouts++;
            lost += n > 0;
        } else {
            wakes++;
        }
        for (size_t i = 0; i < n; i++)
            on_event(got, N, &evb, &evb.ev[i]);
        all = true;
        for (int i = 0; i < N; i++)
            all = all && got[i].done;
    }
    ok(all, "wake-ups: every sequence ends (%d wake-ups, %d quiet polls)", wakes, timeouts);
    is_int(lost, 0, "wake-ups: no poll ran out its time with events waiting");
    is_int(count_same(got, want, N), N, "wake-ups: each yields its reference");
    echan_put(c);
    struct engine_stats st;
    ok(wait_idle(e, &st), "wake-ups: idle again");
}

/* Stop strings go through engine_submit copied: the engine ends the
 * sequence where the reference loop does, though the caller's buffer
 * changed after the call. */
static void test_stop_string(struct engine *e)
{
    static struct spec s;
    static struct res plain, want, got;
    spec_greedy(&s, 7, 60, 1300);
    if (!ok(reference(&s, &plain) == 0 && plain.tlen > 20, "stop string: a reference without one"))
        return;
    /* Three bytes from the middle of its text, on character boundaries. */
    size_t a = plain.tlen / 2, b;
    while (a < plain.tlen && ((unsigned char)plain.text[a] & 0xc0) == 0x80)
        a++;
    b = a + 3 < plain.tlen ? a + 3 : plain.tlen;
    while (b < plain.tlen && ((unsigned char)plain.text[b] & 0xc0) == 0x80)
        b++;
    char stop[64];
    snprintf(stop, sizeof stop, "%.*s", (int)(b - a), plain.text + a);
    s.gp.stop[0] = stop;
    s.gp.n_stop = 1;
    if (!ok(reference(&s, &want) == 0 && want.finish == FIN_STOP_SEQUENCE, "stop string: the reference stops at \"%s\"", stop))
        return;
    struct echan *ch[1] = {NULL};
    memset(&got, 0, sizeof got);
    submit_one(e, ch, &s, 0);
    memset(stop, 'x', sizeof stop - 1);     /* the engine has its own copy */
    stop[sizeof stop - 1] = '\0';
    ok(pump(ch, 1, &got, 1, -1, 0), "stop string: the sequence ends");
    ok(same(&got, &want, 0), "stop string: the engine stops where the reference does (%d tokens, finish %s)", got.n,
       finish_name(got.finish));
    ok(got.n < 60, "stop string: before max_new_tokens");
    put_all(ch, 1);
}

/* A prompt token outside the vocabulary is the request's fault: it must be
 * refused at submission (ENGINE_EINVAL), not fail the step it would join and
 * with it every other sequence there. */
static void test_bad_token(struct engine *e)
{
    static struct spec s[2];
    static struct res want, got[2];
    spec_greedy(&s[0], 9, 60, 1400);
    reference(&s[0], &want);
    spec_greedy(&s[1], 5, 10, 1401);
    s[1].prompt[2] = V;             /* one past the last id */
    struct echan *ch[2] = {NULL};
    memset(got, 0, sizeof got);
    submit_one(e, ch, &s[0], 0);
    ok(pump(ch, 1, got, 2, 0, 2), "bad token: a sequence streams");
    char err[512];
    ch[1] = echan_new();
    struct eseq_req q = spec_req(&s[1], 1);
    int rc = engine_submit(e, ch[1], &q, 1, err, sizeof err), taken = rc == ENGINE_OK;
    ok(rc == ENGINE_EINVAL, "bad token: a prompt id outside the vocabulary is ENGINE_EINVAL (got %d: %s)",
       rc, err);
    s[1].prompt[2] = -1;
    q = spec_req(&s[1], 1);
    rc = engine_submit(e, ch[1], &q, 1, err, sizeof err);
    taken += rc == ENGINE_OK;
    ok(rc == ENGINE_EINVAL, "bad token: a negative prompt id is ENGINE_EINVAL (got %d: %s)", rc, err);
    ok(pump(ch, 2, got, 2, 0, NPOS), "bad token: the good sequence ends");
    ok(same(&got[0], &want, 0), "bad token: the good sequence is not hurt (status %d: %s)", got[0].status,
       got[0].msg);
    if (taken)                      /* the bad ones, taken, end somehow */
        pump(ch, 2, got, 2, 1, NPOS);
    put_all(ch, 2);
    struct engine_stats st;
    ok(wait_idle(e, &st), "bad token: idle again");
}

/* 10. engine_stop with sequences running and queued. */
static void test_stop(void)
{
    enum { N = 5 };
    struct engine *e = start_engine(0, 2, 8, 16, "stop");
    if (!ok(e != NULL, "stop: engine with max_concurrent 2"))
        return;
    static struct spec s[N];
    static struct res got[N];
    struct echan *ch[N] = {NULL};
    memset(got, 0, sizeof got);
    int subs = 0;
    for (int i = 0; i < N; i++) {
        spec_greedy(&s[i], 6 + i, 100, 1100 + (uint64_t)i);
        subs += submit_one(e, ch, &s[i], i) == ENGINE_OK;
    }
    is_int(subs, N, "stop: %d sequences submitted", N);
    ok(pump(ch, N, got, N, 0, 2) && pump(ch, N, got, N, 1, 2), "stop: two of them stream");
    struct engine_stats st;
    engine_get_stats(e, &st);
    ok(st.running == 2 && st.queued == 3, "stop: 2 running, 3 queued (%d, %d)", st.running, st.queued);
    engine_stop(e);
    drain(ch, N, got, N);
    int errs = 0, late = 0;
    for (int i = 0; i < N; i++) {
        errs += got[i].done && got[i].status == 503;
        late += got[i].late;
    }
    is_int(errs, N, "stop: every sequence, running or queued, ends with an EV_ERROR 503");
    is_int(late, 0, "stop: nothing after it");
    has_str(got[4].msg, "unloaded", "stop: the message says the model was unloaded");
    is_int(got[4].n, 0, "stop: a queued one had no token");
    put_all(ch, N);
}

/* Requests the engine refuses, and options engine_start refuses. */
static void test_refusals(struct engine *e)
{
    char err[512];
    static struct spec s;
    spec_greedy(&s, 100, 29, 1200);     /* 129 > 128 */
    struct echan *c = echan_new();
    struct eseq_req q = spec_req(&s, 0);
    is_int(engine_submit(e, c, &q, 1, err, sizeof err), ENGINE_EINVAL, "refuse: prompt + max_new_tokens > context");
    has_str(err, "context", "refuse: err says why");
    is_int(engine_submit(e, c, &q, 0, err, sizeof err), ENGINE_EINVAL, "refuse: no sequences");
    q.n_prompt = 0;
    is_int(engine_submit(e, c, &q, 1, err, sizeof err), ENGINE_EINVAL, "refuse: an empty prompt");
    s.gp.max_new_tokens = 28;
    s.gp.sampling.top_p = 2;
    q = spec_req(&s, 0);
    is_int(engine_submit(e, c, &q, 1, err, sizeof err), ENGINE_EINVAL, "refuse: a bad sampling parameter");
    has_str(err, "top_p", "refuse: err names it");
    echan_put(c);

    struct llm_model *m = load_model(0, 16);
    struct engine *e2 = NULL;
    struct engine_opts o = {4, 4, 32, false, 0};
    ok(m && engine_start(&e2, m, tok, &o, "x", err, sizeof err) == -1 && e2 == NULL,
       "refuse: max_batch_tokens above the model's step size: %s", err);
    o = (struct engine_opts){4, 4, 2, false, 0};
    ok(m && engine_start(&e2, m, tok, &o, "x", err, sizeof err) == -1, "refuse: max_batch_tokens < max_concurrent: %s",
       err);
    llm_free(m);
    m = load_model(MAXBLK - 1, 16);
    o = (struct engine_opts){1, 1, 16, false, 0};
    ok(m && engine_start(&e2, m, tok, &o, "x", err, sizeof err) == -1, "refuse: a pool smaller than one context: %s",
       err);
    llm_free(m);
}

/* ------------------------------------------------------------------ prefix cache */

/* engine_check_pool once the engine thread has gone back to waiting (it
 * may still be on its way there just after wait_idle). */
static int check_pool(struct engine *e, char *err, size_t errlen)
{
    int64_t end = util_now_ns() + (int64_t)(wait_s * 1e9);
    int rc;
    while ((rc = engine_check_pool(e, err, errlen)) != 0 && !strcmp(err, "the engine is busy") && util_now_ns() < end)
        usleep(2000);
    return rc;
}

/* A spec whose first `shared` tokens are pre[0..shared), the rest its own. */
static void spec_prefixed(struct spec *s, const int32_t *pre, int shared, int n, int max_new, uint64_t seed,
                          bool sampled)
{
    if (sampled)
        spec_sampled(s, n, max_new, seed);
    else
        spec_greedy(s, n, max_new, seed);
    memcpy(s->prompt, pre, sizeof *pre * (size_t)shared);
}

/* What the prefix cache can give a prompt of n tokens whose first `shared`
 * are cached: whole blocks, and never the last token. */
static int cacheable(int shared, int n)
{
    int lim = (n - 1) / BT * BT, sh = shared / BT * BT;
    return sh < lim ? sh : lim;
}

/* 13. Outputs with the prefix cache on are the reference's (the cache off),
 * for prompts sharing 0, 1 and many blocks with a cached one, one at a time
 * and 16 at once; cached_tokens and the counters say what was reused. */
static void test_prefix_equal(void)
{
    enum { N = 16, PRE = 80 };
    static int32_t pre[PRE];
    static struct spec warm, s[N];
    static struct res want[N], got[N], wres;
    static int shared[N];
    make_prompt(pre, PRE, 7000);
    spec_prefixed(&warm, pre, PRE, PRE + 3, 4, 7001, false);
    int refs = 0;
    for (int i = 0; i < N; i++) {
        int kind = i % 3, n;
        shared[i] = kind == 0 ? 0 : kind == 1 ? BT : PRE;
        n = shared[i] + 5 + i;
        if (i == 15)                /* exactly two full blocks of the prefix: the last token is still run */
            n = shared[i] = 2 * BT;
        spec_prefixed(&s[i], pre, shared[i], n, 12 + i % 5, 7100 + (uint64_t)i, i % 4 == 3);
        refs += reference(&s[i], &want[i]) == 0;
    }
    ok(refs == N, "prefix: %d references run", N);
    struct engine *on = start_engine(MAXS * MAXBLK, N, 2 * N, 32, "prefix-on");
    prefix_cache = false;
    struct engine *off = start_engine(MAXS * MAXBLK, N, 2 * N, 32, "prefix-off");
    prefix_cache = true;
    if (!ok(on && off, "prefix: engines with the cache on and off start")) {
        engine_stop(on);
        engine_stop(off);
        return;
    }
    struct echan *ch[N] = {NULL};
    struct engine_stats st;
    char err[512];

    /* a sequence with the whole prefix runs first: its full blocks stay cached */
    memset(&wres, 0, sizeof wres);
    submit_one(on, ch, &warm, 0);
    ok(pump(ch, 1, &wres, 1, -1, 0) && wres.cached == 0, "prefix: the first sequence finds nothing cached (%d)",
       wres.cached);
    put_all(ch, 1);
    ok(wait_idle(on, &st), "prefix: idle after the first");
    is_int(st.kv_blocks_cached, (PRE + 3 + 4 - 1) / BT, "prefix: its full blocks stay cached, held by nobody");
    ok(st.prefix_cache, "prefix: stats say the cache is on");

    /* batch 1 */
    memset(got, 0, sizeof got);
    int right = 0, cached = 0, sum = 0, qsum = warm.n;
    for (int i = 0; i < N; i++) {
        submit_one(on, ch, &s[i], i);
        pump(ch, N, got, N, i, NPOS);
        echan_put(ch[i]);
        ch[i] = NULL;
        right += got[i].cached == cacheable(shared[i], s[i].n);
        sum += got[i].cached;
        qsum += s[i].n;
        if (got[i].cached != cacheable(shared[i], s[i].n))
            printf("# seq %d: cached_tokens %d, want %d\n", i, got[i].cached, cacheable(shared[i], s[i].n));
    }
    is_int(count_same(got, want, N), N, "prefix: batch 1, cache on: each yields its reference (cache off)");
    is_int(right, N, "prefix: batch 1: cached_tokens is the shared whole blocks (0, 1 or 5), never the last token");
    ok(wait_idle(on, &st), "prefix: idle after batch 1");
    ok(st.prefix_cache_hits == (uint64_t)sum && st.prefix_cache_queries == (uint64_t)qsum,
       "prefix: counters: %llu hit tokens of %llu queried (want %d of %d)", (unsigned long long)st.prefix_cache_hits,
       (unsigned long long)st.prefix_cache_queries, sum, qsum);

    /* batch 16, on both engines: every prompt's own blocks are now cached too */
    for (int pass = 0; pass < 2; pass++) {
        struct engine *e = pass ? off : on;
        memset(got, 0, sizeof got);
        int subs = 0;
        for (int i = 0; i < N; i++)
            subs += submit_one(e, ch, &s[i], i) == ENGINE_OK;
        ok(subs == N && pump(ch, N, got, N, -1, 0), "prefix: batch 16 (cache %s) ends", pass ? "off" : "on");
        put_all(ch, N);
        is_int(count_same(got, want, N), N, "prefix: batch 16, cache %s: each yields its reference",
               pass ? "off" : "on");
        cached = 0;
        for (int i = 0; i < N; i++)
            cached += got[i].cached == (pass ? 0 : (s[i].n - 1) / BT * BT);
        is_int(cached, N, "prefix: batch 16, cache %s: cached_tokens %s", pass ? "off" : "on",
               pass ? "0 everywhere" : "every whole block of the prompt but the last token's");
        ok(wait_idle(e, &st), "prefix: idle after batch 16 (cache %s)", pass ? "off" : "on");
        ok(check_pool(e, err, sizeof err) == 0, "prefix: pool books whole (cache %s): %s", pass ? "off" : "on",
           err);
    }
    ok(!st.prefix_cache && st.kv_blocks_cached == 0 && st.prefix_cache_hits == 0 && st.prefix_cache_queries == 0,
       "prefix: cache off: nothing cached, nothing counted");

    /* prompt logprobs need every prompt row: such a sequence takes nothing from the cache */
    static struct spec lp;
    static struct res lres;
    spec_prefixed(&lp, pre, PRE, PRE + 9, 5, 7200, false);
    lp.prompt_logprobs = true;
    memset(&lres, 0, sizeof lres);
    submit_one(on, ch, &lp, 0);
    ok(pump(ch, 1, &lres, 1, -1, 0) && lres.cached == 0, "prefix: with prompt_logprobs nothing is taken (%d)",
       lres.cached);
    check_prompt_logprobs(&lp, &lres, "prefix cached");
    put_all(ch, 1);
    engine_stop(on);
    engine_stop(off);
}

/* 14. Sequences sharing a prefix that arrive together (admitted in one
 * sweep, max_batch_tokens 32): the first reads the prefix in two steps, the
 * others take its blocks once written (the step after), never before (a
 * block taken while being written would change their tokens); a later one
 * finds the prefix whole. */
static void test_prefix_together(void)
{
    enum { N = 4, PRE = 64 };
    static int32_t pre[PRE];
    static struct spec s[N + 1];
    static struct res want[N + 1], got[N + 1];
    make_prompt(pre, PRE, 7300);
    int refs = 0;
    for (int i = 0; i <= N; i++) {
        spec_prefixed(&s[i], pre, PRE, PRE + 3 + i, 10, 7301 + (uint64_t)i, false);
        refs += reference(&s[i], &want[i]) == 0;
    }
    ok(refs == N + 1, "together: references run");
    struct engine *e = start_engine(MAXS * MAXBLK, 8, 8, 32, "together");
    if (!ok(e != NULL, "together: engine starts"))
        return;
    struct eseq_req q[N];
    for (int i = 0; i < N; i++)
        q[i] = spec_req(&s[i], i);
    struct echan *ch[1] = {echan_new()};
    char err[512];
    memset(got, 0, sizeof got);
    ok(engine_submit(e, ch[0], q, N, err, sizeof err) == ENGINE_OK, "together: %d sequences submitted at once", N);
    ok(pump(ch, 1, got, N, -1, 0), "together: they end");
    is_int(count_same(got, want, N), N, "together: each yields its reference");
    int followed = 0;
    for (int i = 1; i < N; i++)
        followed += got[i].cached == PRE;
    ok(got[0].cached == 0 && followed == N - 1,
       "together: the first read the prefix (cached %d), the other %d took it once written (%d did)", got[0].cached,
       N - 1, followed);
    put_all(ch, 1);
    struct engine_stats st;
    ok(wait_idle(e, &st), "together: idle");
    ok(check_pool(e, err, sizeof err) == 0, "together: pool books whole after duplicate blocks: %s", err);
    submit_one(e, ch, &s[N], 0);
    ok(pump(ch, 1, &got[N], 1, -1, 0), "together: a later one ends");
    ok(same(&got[N], &want[N], N) && got[N].cached == PRE, "together: the later one takes the whole prefix (%d)",
       got[N].cached);
    put_all(ch, 1);
    engine_stop(e);
}

/* 15. Stress: many sequences over a few overlapping prefixes, a pool small
 * enough to preempt and evict, a third cancelled (queued or running). At
 * the end no block is held and free + cached is the pool; those not
 * cancelled yield their references. */
static void test_prefix_stress(void)
{
    enum { N = 48, NPRE = 4, PRE = 96 };
    static int32_t pre[NPRE][PRE];
    static struct spec s[N];
    static struct res want[N], got[N];
    static bool cancel[N];
    static int cut[N];
    for (int k = 0; k < NPRE; k++)
        make_prompt(pre[k], PRE, 7400 + (uint64_t)k);
    uint64_t x = 99;
    int refs = 0;
    for (int i = 0; i < N; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        int k = (int)((x >> 33) % NPRE), shared = (int)((x >> 40) % (PRE + 1)), n = shared + 1 + (int)((x >> 20) % 12);
        if (k == 0)                 /* prefix 0 is extended by several: chains within chains */
            shared = PRE;
        if (n > 110)
            n = 110;
        if (shared > n)
            shared = n;
        spec_prefixed(&s[i], pre[k], shared, n, 1 + (int)((x >> 50) % 16), 7500 + (uint64_t)i, i % 5 == 4);
        cancel[i] = i % 3 == 1;
        cut[i] = (int)((x >> 8) % 4);   /* cancelled after this many tokens (0: possibly still queued) */
        if (!cancel[i])
            refs += reference(&s[i], &want[i]) == 0;
    }
    ok(refs == N - N / 3, "stress: references run");
    int kv = MAXBLK + 4;
    struct engine *e = start_engine(kv, 6, N, 32, "stress");
    if (!ok(e != NULL, "stress: engine with a pool of %d blocks", kv))
        return;
    static struct echan *ch[N];
    memset(got, 0, sizeof got);
    int subs = 0;
    for (int wave = 0; wave < 3; wave++) {
        for (int i = wave * N / 3; i < (wave + 1) * N / 3; i++)
            subs += submit_one(e, ch, &s[i], i) == ENGINE_OK;
        int64_t end = util_now_ns() + (int64_t)(wait_s * 1e9);
        for (;;) {
            drain(ch, N, got, N);
            bool all = true;
            for (int i = 0; i < (wave + 1) * N / 3; i++) {
                if (cancel[i] && ch[i] && (got[i].n >= cut[i] || got[i].done)) {
                    echan_cancel(ch[i]);
                    echan_put(ch[i]);
                    ch[i] = NULL;
                    got[i].done = true;
                }
                all = all && got[i].done;
            }
            if (all || util_now_ns() > end)
                break;
            struct pollfd pf[MAXS];
            int np = 0;
            for (int i = 0; i < N && np < MAXS; i++)
                if (ch[i])
                    pf[np++] = (struct pollfd){.fd = echan_fd(ch[i]), .events = POLLIN};
            poll(pf, (nfds_t)np, 20);
        }
    }
    is_int(subs, N, "stress: %d sequences submitted in 3 waves", N);
    int right = 0, hits = 0;
    for (int i = 0; i < N; i++)
        if (!cancel[i]) {
            right += same(&got[i], &want[i], i);
            hits += got[i].cached > 0;
        }
    is_int(right, N - N / 3, "stress: every sequence not cancelled yields its reference");
    ok(hits > 0, "stress: %d of them took cached blocks", hits);
    for (int i = 0; i < N; i++)
        if (ch[i]) {
            echan_put(ch[i]);
            ch[i] = NULL;
        }
    struct engine_stats st;
    char err[512];
    ok(wait_idle(e, &st), "stress: idle at the end");
    printf("# stress: %llu preempted, %llu cancelled, %d blocks cached, %llu of %llu prompt tokens hit\n",
           (unsigned long long)st.preempted, (unsigned long long)st.cancelled, st.kv_blocks_cached,
           (unsigned long long)st.prefix_cache_hits, (unsigned long long)st.prefix_cache_queries);
    ok(st.kv_blocks_used == 0 && st.kv_blocks_cached > 0 && st.kv_blocks_cached <= kv,
       "stress: no block held, %d cached", st.kv_blocks_cached);
    ok(check_pool(e, err, sizeof err) == 0, "stress: every reference count 0, free + cached == %d: %s", kv,
       err);
    engine_stop(e);
}

/* 16. The shipped model (models/llmcgi-tiny) on its golden prompts
 * (tests/golden/llmcgi_tiny_golden.json: transformers' 64 greedy tokens):
 * with the cache on, cold, then warm (each prompt's own whole blocks cached:
 * prompts sharing 0, 1 and many blocks), one at a time and all at once;
 * with the cache off, all at once. Every run yields the golden tokens, and
 * the warm runs' logprobs are the cache-off run's within 1e-3. */
static void test_prefix_golden(const char *src)
{
    enum { NG = 20, NEW = 64 };
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/tests/golden/llmcgi_tiny_golden.json", src);
    json_object *g = json_object_from_file(path), *models, *prompts;
    if (!ok(g && json_object_object_get_ex(g, "models", &models) &&
                json_object_object_get_ex(json_object_array_get_idx(models, 0), "prompts", &prompts),
            "golden: %s reads", path)) {
        json_object_put(g);
        return;
    }
    static struct spec s[NG];
    static int32_t gold[NG][NEW];
    static struct res runs[4][NG];
    int n = (int)json_object_array_length(prompts);
    if (n > NG)
        n = NG;
    for (int i = 0; i < n; i++) {
        json_object *p = json_object_array_get_idx(prompts, (size_t)i), *ids, *greedy;
        json_object_object_get_ex(p, "ids", &ids);
        json_object_object_get_ex(p, "greedy", &greedy);
        memset(&s[i], 0, sizeof s[i]);
        s[i].gp.sampling = sampler_params_default();
        s[i].gp.max_new_tokens = NEW;
        s[i].gp.ignore_eos = true;
        s[i].n = (int)json_object_array_length(ids);
        for (int k = 0; k < s[i].n && k < NPOS; k++)
            s[i].prompt[k] = (int32_t)json_object_get_int(json_object_array_get_idx(ids, (size_t)k));
        for (int k = 0; k < NEW; k++)
            gold[i][k] = (int32_t)json_object_get_int(json_object_array_get_idx(greedy, (size_t)k));
    }
    json_object_put(g);

    snprintf(path, sizeof path, "%s/models/llmcgi-tiny", src);
    struct tokenizer *gtok = NULL;
    struct gpt2_checkpoint *ck = NULL;
    struct llm_model *m[2] = {NULL, NULL};
    struct engine *e[2] = {NULL, NULL};
    bool loaded = tokenizer_load_dir(path, &gtok, err, sizeof err) == 0;
    for (int k = 0; k < 2 && loaded; k++) {
        struct llm_load_opts lo = {.device = LLM_DEVICE_CPU, .threads = 1, .kv_block_tokens = BT, .kv_blocks = 400,
                                   .max_step_tokens = 64, .max_step_logits = 64};
        struct engine_opts o = {16, 32, 64, .prefix_cache = k == 0};
        loaded = gpt2_checkpoint_open(path, &ck, err, sizeof err) == 0 && llm_load(ck, &lo, &m[k], err, sizeof err) == 0;
        gpt2_checkpoint_close(ck);
        ck = NULL;
        if (loaded && engine_start(&e[k], m[k], gtok, &o, k ? "golden-off" : "golden-on", err, sizeof err) != 0) {
            llm_free(m[k]);
            loaded = false;
        }
    }
    if (!ok(loaded, "golden: %s loads into engines with the cache on and off", path)) {
        printf("# %s\n", err);
        goto out;
    }
    /* runs: 0 on cold one at a time, 1 on warm one at a time, 2 on warm all at once, 3 off all at once */
    static const char *const how[4] = {"cache on, cold, batch 1", "cache on, warm, batch 1",
                                       "cache on, warm, batch 16", "cache off, batch 16"};
    struct echan *ch[NG] = {NULL};
    for (int r = 0; r < 4; r++) {
        struct engine *en = e[r == 3];
        memset(runs[r], 0, sizeof runs[r]);
        bool ended = true;
        for (int i = 0; i < n; i++) {
            submit_one(en, ch, &s[i], i);
            if (r < 2) {
                ended = pump(ch, n, runs[r], n, i, NPOS) && ended;
                echan_put(ch[i]);
                ch[i] = NULL;
            }
        }
        if (r >= 2) {
            ended = pump(ch, n, runs[r], n, -1, 0);
            put_all(ch, n);
        }
        int right = 0, sh0 = 0, sh1 = 0, shmany = 0, cached_ok = 0;
        for (int i = 0; i < n; i++) {
            bool same_ids = runs[r][i].n == NEW && !runs[r][i].status;
            for (int k = 0; same_ids && k < NEW; k++)
                same_ids = runs[r][i].ids[k] == gold[i][k];
            right += same_ids;
            int want = r == 0 || r == 3 ? 0 : (s[i].n - 1) / BT * BT;
            cached_ok += runs[r][i].cached == want;
            sh0 += want == 0;
            sh1 += want == BT;
            shmany += want > BT;
        }
        ok(ended && right == n, "golden (%s): all %d prompts yield transformers' %d greedy tokens (%d do)", how[r], n,
           NEW, right);
        ok(cached_ok == n && (r == 0 || r == 3 || (sh0 > 0 && sh1 > 0 && shmany > 0)),
           "golden (%s): cached_tokens right for all (%d sharing 0 blocks, %d one, %d many)", how[r], sh0, sh1,
           shmany);
    }
    for (int r = 1; r <= 2; r++) {
        double worst = 0;
        for (int i = 0; i < n; i++)
            for (int k = 0; k < runs[r][i].n && k < runs[3][i].n; k++) {
                double d = fabs((double)runs[r][i].lp[k] - (double)runs[3][i].lp[k]);
                if (!(d <= worst))
                    worst = d;
            }
        ok(worst <= 1e-3, "golden (%s): logprobs within 1e-3 of the cache off (worst %.2g)", how[r], worst);
    }
out:
    engine_stop(e[0]);
    engine_stop(e[1]);
    if (!e[0])
        llm_free(m[0]);
    if (!e[1])
        llm_free(m[1]);
    tokenizer_free(gtok);
}

/* 12. Greedy steps chosen by the backend (llm_forward_greedy; on the CPU
 * ksample_greedy_ref on its logits) against the engine's own sampler
 * (LLMCGI_DEVICE_SAMPLING=0): the same ids, logprobs (bit for bit),
 * alternatives, text and finish, with and without penalties and top_n; a
 * step with a sampled, constrained or prompt-logprobs row falls back. */
static bool greedy_exact(const struct res *a, const struct res *b, int idx)
{
    if (!same(a, b, idx))
        return false;
    for (int k = 0; k < a->n; k++) {
        bool tops = a->n_top[k] == b->n_top[k];
        for (int j = 0; tops && j < a->n_top[k]; j++)
            tops = a->top[k][j].id == b->top[k][j].id &&
                   memcmp(&a->top[k][j].logprob, &b->top[k][j].logprob, sizeof(float)) == 0;
        if (memcmp(&a->lp[k], &b->lp[k], sizeof(float)) != 0 || !tops) {
            printf("# seq %d token %d: logprob %.9g vs %.9g, or its %d alternatives differ\n", idx, k, a->lp[k],
                   b->lp[k], a->n_top[k]);
            return false;
        }
    }
    return true;
}

/* Runs specs s[0..n) together on e; res zeroed first. Returns how many
 * greedy steps the engine counted meanwhile, -1 when something did not end. */
static long run_batch(struct engine *e, const struct spec *s, struct res *res, int n)
{
    struct echan *ch[MAXS] = {NULL};
    struct engine_stats st0, st1;
    memset(res, 0, sizeof *res * (size_t)n);
    if (!wait_idle(e, &st0))
        return -1;
    for (int i = 0; i < n; i++)
        submit_one(e, ch, &s[i], i);
    bool ended = pump(ch, n, res, n, -1, 0);
    put_all(ch, n);
    if (!ended || !wait_idle(e, &st1))
        return -1;
    return (long)(st1.greedy_steps - st0.greedy_steps);
}

static void test_greedy_device(void)
{
    enum { N = 6 };
    static struct spec s[N], mix[N];
    static struct res dev[N], host[N], want[N];
    /* 1: on the CPU backend too (unset, only where the backend chooses on the device) */
    setenv("LLMCGI_DEVICE_SAMPLING", "1", 1);
    struct engine *ed = start_engine(MAXS * MAXBLK, 6, 32, 32, "greedy-dev");
    setenv("LLMCGI_DEVICE_SAMPLING", "0", 1);
    struct engine *eh = start_engine(MAXS * MAXBLK, 6, 32, 32, "greedy-host");
    unsetenv("LLMCGI_DEVICE_SAMPLING");
    struct engine *ea = start_engine(MAXS * MAXBLK, 6, 32, 32, "greedy-auto");
    struct cdfa *words = NULL;
    char err[256];
    if (!ok(ed && eh && ea, "greedy on the device: the engines start") ||
        !ok(cdfa_regex("[a-z ]*", 7, &words, err, sizeof err) == 0, "greedy on the device: a constraint builds")) {
        engine_stop(ed);
        engine_stop(eh);
        engine_stop(ea);
        return;
    }
    /* greedy, with each penalty and top_n; two may end on EOS or a stop string */
    static const float rep[N] = {1, 1, 1.3f, 1, 1.25f, 0.8f}, freq[N] = {0, 0, 0, 0.7f, 0.5f, -0.5f},
                       pres[N] = {0, 0, 0, 0.4f, -0.3f, 1.0f};
    static const int top_n[N] = {0, 5, 3, 20, 2, 1};
    int refs = 0;
    for (int i = 0; i < N; i++) {
        spec_greedy(&s[i], 4 + 7 * i, 24 + i, 700 + (uint64_t)i);
        s[i].gp.sampling.repetition_penalty = rep[i];
        s[i].gp.sampling.frequency_penalty = freq[i];
        s[i].gp.sampling.presence_penalty = pres[i];
        s[i].gp.sampling.top_n = top_n[i];
        if (i == 5) {                   /* greedy as TGI asks it: sampling on, temperature 0 */
            s[i].gp.sampling.do_sample = true;
            s[i].gp.sampling.temperature = 0.0f;
        }
        if (i == 4)
            s[i].gp.ignore_eos = false;
        refs += reference(&s[i], &want[i]) == 0;
    }
    static char stop[4];
    if (want[1].tlen > 8) {             /* a stop string: three bytes from the middle of its text */
        memcpy(stop, want[1].text + want[1].tlen / 2, 3);
        s[1].gp.stop[0] = stop;
        s[1].gp.stop_len[0] = 3;
        s[1].gp.n_stop = 1;
        refs -= 1 - (reference(&s[1], &want[1]) == 0);
    }
    ok(refs == N, "greedy on the device: %d references run", N);
    for (int i = 0; i < N; i++)
        printf("# greedy %d: %d tokens, finish %s\n", i, want[i].n, finish_name(want[i].finish));
    long gd = run_batch(ed, s, dev, N), gh = run_batch(eh, s, host, N);
    int exact = 0, vs_ref = 0;
    for (int i = 0; i < N; i++) {
        exact += greedy_exact(&dev[i], &host[i], i);
        vs_ref += greedy_exact(&dev[i], &want[i], i);
    }
    is_int(exact, N, "greedy on the device: penalties and top_n give the host sampler's tokens, logprobs, "
           "alternatives, text and finish, bit for bit");
    is_int(vs_ref, N, "greedy on the device: and the reference loop's");
    ok(gd > 0, "greedy on the device: the engine's steps went through llm_forward_greedy (%ld)", gd);
    is_int((int)gh, 0, "greedy on the device: LLMCGI_DEVICE_SAMPLING=0 keeps every step on the host");
    long ga = run_batch(ea, s, host, N);
    is_int((int)ga, 0, "greedy on the device: unset, the CPU backend leaves the choice to the engine's faster sampler");

    /* Mixed: a sampled row, then a constrained one, in every step (each is
     * first in the batch and outlives the others): every step falls back. */
    for (int what = 0; what < 2; what++) {
        for (int i = 0; i < N; i++)
            mix[i] = s[i];
        mix[0].n = 3;
        mix[0].gp.max_new_tokens = 60;
        if (what == 0) {
            spec_sampled(&mix[0], 3, 60, 42);
        } else {
            mix[0].gp.constraint = words;
            mix[0].gp.ignore_eos = true;
        }
        mix[2].prompt_logprobs = true;
        gd = run_batch(ed, mix, dev, N);
        gh = run_batch(eh, mix, host, N);
        exact = 0;
        for (int i = 0; i < N; i++)
            exact += greedy_exact(&dev[i], &host[i], i);
        is_int(exact, N, "greedy on the device, beside a %s row: every sequence as on the host",
               what ? "constrained" : "sampled");
        is_int((int)gd, 0, "greedy on the device, beside a %s row: no step chosen by the backend",
               what ? "constrained" : "sampled");
        is_int(dev[2].n_pf, mix[2].n, "greedy on the device: prompt logprobs still come (%d)", dev[2].n_pf);
    }
    cdfa_put(words);
    engine_stop(ed);
    engine_stop(eh);
    engine_stop(ea);
}

int main(void)
{
    const char *src = getenv("LLMCGI_SRCDIR");
    const char *san = getenv("LLMCGI_SANITIZERS");
    if (san && !strcmp(san, "yes"))
        wait_s = 240;
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/tests/fixtures/gpt2-tokenizer", src ? src : ".");
    if (!ok(tokenizer_load_dir(path, &tok, err, sizeof err) == 0, "tokenizer loads from %s", path)) {
        printf("# %s\n", err);
        return tap_done();
    }
    EOS = tokenizer_eos_id(tok);
    if (scratch_make(tmpdir_root, sizeof tmpdir_root, "llmcgi-engine") != 0)
        return printf("Bail out! mkdtemp failed\n"), 1;
    snprintf(model_dir, sizeof model_dir, "%s/tiny", tmpdir_root);
    struct gen_gpt2_opts go;
    gen_gpt2_defaults(&go);         /* 2 layers, 2 heads, 64 wide, 128 positions, GPT-2's vocabulary */
    go.out_dir = model_dir;
    go.n_positions = NPOS;
    go.seed = 4242;
    if (!ok(gen_gpt2_write(&go, err, sizeof err) == 0, "tiny checkpoint generated")) {
        printf("# %s\n", err);
        return tap_done();
    }
    ref = load_model(0, NPOS);
    if (!ok(ref != NULL, "reference model loads"))
        return tap_done();
    V = llm_get_info(ref)->cfg.vocab_size;

    int mbt = 32;
    struct engine *e = start_engine(MAXS * MAXBLK, 6, 32, mbt, "main");
    if (ok(e != NULL, "main engine starts (max_concurrent 6, max_batch_tokens %d)", mbt)) {
        is_int(engine_info(e)->cfg.n_positions, NPOS, "engine_info is the model's");
        test_single(e);
        test_batching(e, mbt);
        test_sampling(e);
        test_deadline(e);
        test_prompt_logprobs(e, mbt);
        test_two_on_one(e);
        test_wakeups(e);
        test_stop_string(e);
        test_bad_token(e);
        test_refusals(e);
        engine_stop(e);
    }
    test_preemption();
    test_admission_cancel();
    test_stop();
    test_prefix_equal();
    test_prefix_together();
    test_prefix_stress();
    test_prefix_golden(src ? src : ".");
    test_greedy_device();
    engine_stop(NULL);

    llm_free(ref);
    tokenizer_free(tok);
    ebatch_free(&evb);
    scratch_remove(tmpdir_root);
    return tap_done();
}
