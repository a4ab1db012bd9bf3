/* generation.c -- one sequence's generation on top of the engine parts: prompt and generated ids, sampler, streaming detokenizer, stop strings, finish reason. */
#include "generation.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int gen_seq_init(struct gen_seq *g, const struct tokenizer *tok, const int32_t *prompt, int n_prompt, int n_vocab,
                 int context, const struct gen_params *p, char *err, size_t errlen)
{
    memset(g, 0, sizeof *g);
    detok_init(&g->detok, tok);
    if (n_prompt < 1) {
        snprintf(err, errlen, "the prompt has no tokens");
        return -1;
    }
    if (p->max_new_tokens < 1) {
        snprintf(err, errlen, "max_new_tokens must be at least 1 (got %d)", p->max_new_tokens);
        return -1;
    }
    if ((long)n_prompt + p->max_new_tokens > context) {
        snprintf(err, errlen,
                 "the prompt (%d tokens) plus max_new_tokens (%d) is %ld tokens, more than the model's context of %d",
                 n_prompt, p->max_new_tokens, (long)n_prompt + p->max_new_tokens, context);
        return -1;
    }
    if (sampler_params_check(&p->sampling, err, errlen) != SAMPLER_OK)
        return -1;
    if (stopseq_validate(p->stop, p->stop_len, p->n_stop, err, errlen) != STOPSEQ_OK)
        return -1;
    g->ids = malloc(sizeof *g->ids * (size_t)(n_prompt + p->max_new_tokens));
    g->sampler = sampler_new(&p->sampling, n_vocab);
    g->stop = stopseq_new(p->stop, p->stop_len, p->n_stop);
    if (!g->ids || !g->sampler || !g->stop) {
        snprintf(err, errlen, "out of memory");
        gen_seq_free(g);
        return -1;
    }
    memcpy(g->ids, prompt, sizeof *g->ids * (size_t)n_prompt);
    g->n_prompt = g->n_ids = n_prompt;
    g->max_new = p->max_new_tokens;
    g->eos = tokenizer_eos_id(tok);
    g->ignore_eos = p->ignore_eos;
    g->n_vocab = n_vocab;
    g->cons = cdfa_ref(p->constraint);
    g->cstate = g->cons ? cdfa_start(g->cons) : 0;
    return 0;
}

void gen_seq_free(struct gen_seq *g)
{
    free(g->ids);
    sampler_free(g->sampler);
    stopseq_free(g->stop);
    cdfa_put(g->cons);
    if (g->detok.t)
        detok_free(&g->detok);
    strbuf_free(&g->out);
    memset(g, 0, sizeof *g);
}

/* Appends to the event text (g->out). */
static int out_add(struct gen_seq *g, const char *s, size_t n)
{
    strbuf_add(&g->out, s, n);
    return g->out.nomem ? -1 : 0;
}

/* The text that ends the sequence: whatever the detokenizer and the stop
 * matcher still hold. */
static int drain(struct gen_seq *g)
{
    const char *t;
    size_t n;
    struct stopseq_result r;
    if (detok_flush(&g->detok, &t, &n) != 0)
        return -1;
    if (n) {
        if (stopseq_feed(g->stop, t, n, &r) != STOPSEQ_OK || out_add(g, r.text, r.len) != 0)
            return -1;
        if (r.stopped) {
            g->finish = FIN_STOP_SEQUENCE;
            return 0;
        }
    }
    stopseq_finish(g->stop, &r);
    return out_add(g, r.text, r.len);
}

/* Masks the row to the tokens the constraint allows next (see struct gen_seq). */
static int constrain(struct gen_seq *g, float *logits, char *err, size_t errlen)
{
    if (!g->trie) {
        snprintf(err, errlen, "a constrained sequence without its vocabulary trie");
        return -1;
    }
    int left = g->max_new - gen_seq_generated(g);       /* this token included */
    bool accepts = cdfa_accepts(g->cons, g->cstate);
    const uint64_t *mask = vtrie_mask(g->trie, g->cons, g->cstate, left - 1);
    if (mask && !accepts && left - 1 < cdfa_max_dist(g->cons)) {
        bool any = false;                   /* the budget rules out every token: too late to finish */
        for (size_t w = 0; w < vtrie_mask_words(g->trie) && !any; w++)
            any = mask[w] != 0;
        if (!any)
            mask = vtrie_mask(g->trie, g->cons, g->cstate, -1);
    }
    if (!mask) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int32_t covered = vtrie_vocab(g->trie) < g->n_vocab ? vtrie_vocab(g->trie) : g->n_vocab;
    bool has_eos = g->eos >= 0 && g->eos < g->n_vocab;
    float eos_logit = has_eos ? logits[g->eos] : 0.0f;
    vtrie_apply(mask, logits, covered);
    for (int32_t i = covered; i < g->n_vocab; i++)
        logits[i] = -INFINITY;
    bool eos_ok = accepts;                  /* not in the trie: allowed where the text is complete */
    for (size_t w = 0; eos_ok && g->ignore_eos && w < vtrie_mask_words(g->trie); w++)
        eos_ok = mask[w] == 0;              /* ignore_eos: only where no token can go on */
    if (has_eos)
        logits[g->eos] = eos_ok ? eos_logit : -INFINITY;
    return 0;
}

int gen_seq_next(struct gen_seq *g, float *logits, struct gen_event *ev, char *err, size_t errlen)
{
    memset(ev, 0, sizeof *ev);
    if (g->cons && constrain(g, logits, err, errlen) != 0)
        return -1;
    int rc = sampler_next(g->sampler, logits, g->ids, (size_t)g->n_ids, &ev->tok);
    if (rc != SAMPLER_OK) {
        if (rc != SAMPLER_ERR_NO_TOKEN)
            snprintf(err, errlen, "the sampler failed (%d)", rc);
        else
            snprintf(err, errlen, "no token can be sampled: %s", g->cons ? "the constraint allows none the model gives"
                                                                         : "every logit is -inf or NaN");
        return -1;
    }
    return gen_seq_take(g, &ev->tok, ev, err, errlen);
}

bool gen_seq_greedy_ok(const struct gen_seq *g)
{
    return !g->cons && sampler_greedy(g->sampler);
}

size_t gen_seq_greedy_ints(const struct gen_seq *g)
{
    return sampler_greedy_ints(g->sampler, (size_t)g->n_ids);
}

int gen_seq_greedy_row(struct gen_seq *g, int32_t *ids, struct ksample_row *r)
{
    return gen_seq_greedy_ok(g) ? sampler_greedy_row(g->sampler, g->ids, (size_t)g->n_ids, ids, r) : -1;
}

int gen_seq_take(struct gen_seq *g, const struct sample_out *tok, struct gen_event *ev, char *err, size_t errlen)
{
    if (&ev->tok != tok) {
        memset(ev, 0, sizeof *ev);
        ev->tok = *tok;
    }
    int32_t id = ev->tok.id;
    if (id < 0 || id >= g->n_vocab) {
        snprintf(err, errlen, "no token can be sampled: every logit is -inf or NaN");
        return -1;
    }
    if (g->cons && id != g->eos) {
        size_t len = 0;
        const char *b = tokenizer_token_bytes(g->detok.t, id, &len);
        g->cstate = cdfa_walk(g->cons, g->cstate, b, b ? len : 0);
    }
    sampler_accept(g->sampler, id);
    g->ids[g->n_ids++] = id;
    g->out.len = 0;                         /* a new event's text */
    if (out_add(g, "", 0) != 0)
        goto oom;

    if (id == g->eos && (!g->ignore_eos || g->cons)) {
        /* The end-of-text token's own text is not part of the answer. Under a
         * constraint it is sampled only where the text is complete (and, with
         * ignore_eos, cannot go on), so it ends the sequence either way. */
        g->finish = FIN_EOS;
        if (drain(g) != 0)
            goto oom;
    } else {
        const char *t;
        size_t n;
        if (detok_push(&g->detok, id, &t, &n) != 0)
            goto oom;
        struct stopseq_result r;
        if (stopseq_feed(g->stop, t, n, &r) != STOPSEQ_OK || out_add(g, r.text, r.len) != 0)
            goto oom;
        if (r.stopped)
            g->finish = FIN_STOP_SEQUENCE;
        else if (gen_seq_generated(g) >= g->max_new) {
            g->finish = FIN_LENGTH;
            if (drain(g) != 0)
                goto oom;
        }
    }
    ev->text = g->out.s;
    ev->len = g->out.len;
    ev->finish = g->finish;
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    return -1;
}
