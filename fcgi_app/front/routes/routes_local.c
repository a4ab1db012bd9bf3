/* routes_local.c -- generation on local models: requests in any client dialect (OpenAI chat and completions, the Responses API, TGI, the older model_id/prompt shape) run on the model's engine and are answered whole or streamed (reading: local_read.c; answers: local_answer.c).
 *
 * A request is read once (dialect.c), its prompts rendered (chat
 * templates) and tokenized on the responder thread, checked against the
 * model's limits, and submitted to the model's engine as one sequence per
 * prompt and choice. The responder thread then waits on the request's
 * channel and the client's connection at once (poll): events become stream
 * events as they come, or are gathered into one answer; a connection that
 * closes cancels the sequences, whose KV blocks the engine frees at its
 * next step. Only this thread writes to the FastCGI stream. */
#include "config.h"
#include "routes_local.h"
#include "local_call.h"
#include "answer.h"
#include "engine.h"
#include "log.h"
#include "metrics.h"
#include "registry.h"
#include "response.h"
#include "server.h"
#include "sse.h"
#include "structured.h"
#include "util.h"

#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------------ services */

/* What this route family uses of the server (struct server): the local
 * models. (GET /info also reports the responder thread count.) */
static struct registry *models(const struct req *r)
{
    return r->srv->reg;
}

/* ------------------------------------------------------------------ state of one request */

int lcall_tokvec_add(struct tokvec *t, const struct sample_out *o)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        struct tokrec *g = realloc(t->v, cap * sizeof *g);
        if (!g)
            return -1;
        t->v = g;
        t->cap = cap;
    }
    struct tokrec *r = &t->v[t->n++];
    r->id = o->id;
    r->logprob = o->logprob;
    r->n_top = o->n_top;
    memcpy(r->top, o->top, sizeof r->top[0] * (size_t)o->n_top);
    return 0;
}

/* ------------------------------------------------------------------ errors */

/* An error answer in the route's dialect; TGI's validation errors are 422. */
int lcall_error(struct lcall *lc, int status, const char *param, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (lc->r->dialect != DIALECT_OPENAI && status == 500)
        status = 424;                           /* TGI's "generation" error */
    return resp_error_model(lc->r, lc->r->dialect, status, param, NULL, msg);
}

/* ------------------------------------------------------------------ routing */

/* The model for a request, waited for while it loads. NULL after
 * answering the error (or when the client went away). */
struct lmodel *lcall_acquire_model(struct lcall *lc)
{
    struct req *r = lc->r;
    int status = 0;
    char err[400];
    struct lmodel *m = registry_get(models(r), r->cfg, lc->model, &status, err, sizeof err);
    if (!m) {
        if (status == 404)
            resp_model_not_found(r, lc->model);
        else
            lcall_error(lc, status, NULL, "%s", err);
        return NULL;
    }
    r->model_label = metrics_model_id(lc->model);  /* a local model: a bounded label value */
    int64_t deadline = util_now_ns() + m->set.timeout_ms * 1000000;
    if (registry_wait(models(r), m, deadline, r->fcgi->ipcFd) < 0) {
        registry_put(models(r), m);
        if (util_now_ns() < deadline) {
            r->client_gone = true;
            return NULL;
        }
        lcall_error(lc, 503, NULL, "model %s is still loading; try again", lc->model);
        return NULL;
    }
    if (registry_state(models(r), m) == LM_FAILED) {
        lcall_error(lc, 503, NULL, "model %s could not be loaded: %s", lc->model, m->error);
        registry_put(models(r), m);
        return NULL;
    }
    return m;
}

/* ------------------------------------------------------------------ running */

/* Takes one event. Returns 0, or -1 when the client went away. */
static int on_event(struct lcall *lc, const struct eevent *ev, const char *text)
{
    if (ev->index < 0 || ev->index >= lc->n_seqs)
        return 0;
    struct choice *c = &lc->ch[ev->index];
    if (c->done)
        return 0;
    switch (ev->kind) {
    case EV_PREFILL:
        lcall_tokvec_add(&c->prefill, &ev->tok);
        return 0;
    case EV_ERROR:
        c->done = true;
        lc->n_done++;
        c->err_status = ev->status;
        snprintf(c->err, sizeof c->err, "%s", text);
        log_warn("request %s: model %s: %s", lc->r->id, lc->model, text);
        return 0;
    case EV_SCORES:                     /* a classifier's: never submitted from here */
        return 0;
    case EV_TOKEN:
        break;
    }
    if (!lc->t_first) {
        lc->t_first = ev->at_ns;
        lc->queued_ns = ev->queued_ns;
        metrics_ttft(lc->r->model_label, ev->at_ns - lc->t0);
    }
    if (!c->generated)
        c->cached = ev->cached_tokens;
    if (c->last_ns)
        metrics_itl(lc->r->model_label, ev->at_ns - c->last_ns);
    c->last_ns = ev->at_ns;
    c->generated++;
    strbuf_add(&c->text, text, ev->text_len);
    if (c->text.nomem || (lc->keep_tokens && lcall_tokvec_add(&c->toks, &ev->tok) < 0)) {
        c->err_status = 500;
        snprintf(c->err, sizeof c->err, "out of memory");
    }
    if (ev->finish != FIN_NONE) {
        c->finish = ev->finish;
        c->done = true;
        lc->n_done++;
    }
    if (lc->stream && !c->err_status && lcall_stream_token(lc, ev->index, ev, text) < 0)
        return -1;
    return 0;
}

/* The first failed sequence, or NULL. */
static struct choice *failed(struct lcall *lc)
{
    for (int i = 0; i < lc->n_seqs; i++)
        if (lc->ch[i].err_status)
            return &lc->ch[i];
    return NULL;
}

/* Waits for the sequences' events and the client's connection at once.
 * Returns 0 when every sequence is over, -1 when the client went away. */
static int pump(struct lcall *lc)
{
    struct req *r = lc->r;
    int64_t guard = lc->deadline_ns + 30 * (int64_t)1000000000;  /* should the engine ever lose a sequence */
    while (lc->n_done < lc->n_seqs) {
        if (lc->stream && failed(lc))
            return 0;
        struct pollfd p[2] = {{.fd = echan_fd(lc->chan), .events = POLLIN},
                              {.fd = r->fcgi->ipcFd, .events = POLLRDHUP}};
        int timeout = 1000;
        if (lc->stream) {
            struct timespec ka = sse_next_keepalive(&lc->sse);
            int64_t left = ((int64_t)ka.tv_sec * 1000000000 + ka.tv_nsec - util_now_ns()) / 1000000;
            timeout = left < 0 ? 0 : left > 1000 ? 1000 : (int)left + 1;
        }
        int n = poll(p, 2, timeout);
        if (n > 0 && (p[1].revents & (POLLRDHUP | POLLHUP | POLLERR)))
            return -1;
        if (n > 0 && (p[0].revents & POLLIN)) {
            echan_take(lc->chan, &lc->eb);
            for (size_t i = 0; i < lc->eb.n; i++)
                if (on_event(lc, &lc->eb.ev[i], ebatch_text(&lc->eb, &lc->eb.ev[i])) < 0)
                    return -1;
            continue;
        }
        if (lc->stream && sse_keepalive(&lc->sse) < 0)
            return -1;
        if (util_now_ns() > guard) {
            for (int i = 0; i < lc->n_seqs; i++)
                if (!lc->ch[i].done) {
                    lc->ch[i].done = true;
                    lc->ch[i].err_status = 504;
                    snprintf(lc->ch[i].err, sizeof lc->ch[i].err, "the generation did not finish in time");
                    lc->n_done++;
                }
        }
    }
    return 0;
}

/* Submits the sequences; answers the error when that fails. */
static int submit(struct lcall *lc)
{
    struct eseq_req reqs[MAX_SEQS];
    int k = 0;
    for (int p = 0; p < lc->n_prompts; p++)
        for (int j = 0; j < lc->n_per_prompt; j++, k++) {
            reqs[k] = (struct eseq_req){.prompt = lc->prompts[p].ids, .n_prompt = lc->prompts[p].n,
                                        .params = lc->gp, .index = k, .prompt_logprobs = lc->prompt_logprobs,
                                        .deadline_ns = lc->deadline_ns};
            reqs[k].params.sampling.seed = lc->seed + (uint64_t)k;
            lc->ch[k].prompt = p;
        }
    char err[400];
    int rc = engine_submit(lc->m->engine, lc->chan, reqs, lc->n_seqs, err, sizeof err);
    switch (rc) {
    case ENGINE_OK:
        return 0;
    case ENGINE_EFULL:
        if (lc->r->dialect == DIALECT_TGI)
            return lcall_error(lc, 429, NULL, "Model is overloaded"), -1;
        return lcall_error(lc, 429, NULL,
                            "model %s is at capacity (max_concurrent %ld running, max_queue %ld waiting); retry "
                            "after a moment", lc->model, (long)lc->m->max_concurrent, lc->m->set.max_queue), -1;
    case ENGINE_EINVAL:
        return lcall_error(lc, 400, NULL, "%s", err), -1;
    case ENGINE_ESTOPPED:
        return lcall_error(lc, 503, NULL, "model %s is being unloaded; try again", lc->model), -1;
    default:
        return lcall_error(lc, 500, NULL, "out of memory"), -1;
    }
}

static void lcall_free(struct lcall *lc)
{
    for (int i = 0; i < lc->n_prompts; i++)
        free(lc->prompts[i].ids);
    for (int i = 0; lc->ch && i < lc->n_seqs; i++) {
        strbuf_free(&lc->ch[i].text);
        free(lc->ch[i].toks.v);
        free(lc->ch[i].prefill.v);
    }
    free(lc->ch);
    free(lc->chat_text);
    structured_free(&lc->st);
    ebatch_free(&lc->eb);
    if (lc->chan) {
        echan_cancel(lc->chan);                 /* whatever still runs stops */
        echan_put(lc->chan);
    }
    if (lc->m)
        registry_put(models(lc->r), lc->m);
}

static int run(struct lcall *lc, json_object *body)
{
    struct req *r = lc->r;
    if (lc->responses && lc->g->untranslatable)
        return lcall_error(lc, 400, lc->g->untranslatable, "`%s` is not supported by local models: llmcgi's Responses "
                           "API is stateless (store is false) and text-only; send the whole conversation as "
                           "messages in `input`", lc->g->untranslatable);
    if (lcall_check_unsupported(lc, body) < 0)
        return 0;
    int st_status = 0;
    const char *st_param = NULL;
    char st_err[600];
    if (structured_read(body, lc->kind, registry_constraints(models(r)), &lc->st, &st_status, &st_param, st_err, sizeof st_err) < 0)
        return lcall_error(lc, st_status, st_param, "%s", st_err);
    lc->gp.constraint = lc->st.dfa;
    if (!(lc->m = lcall_acquire_model(lc)))
        return 0;
    lc->tok = lc->m->tok;
    answer_fingerprint(lc->fingerprint, sizeof lc->fingerprint, lc->m->info->backend);
    if (lcall_read_request(lc) < 0)
        return 0;
    lc->n_per_prompt = lc->kind == CK_CHAT || lc->kind == CK_COMPLETION ? (int)lc->g->n : 1;
    lc->n_seqs = lc->n_prompts * lc->n_per_prompt;
    /* One request takes at most the running batch, so it never holds the queue too. */
    int cap = lc->m->max_concurrent < MAX_SEQS ? lc->m->max_concurrent : MAX_SEQS;
    if (lc->n_seqs > cap)
        return lcall_error(lc, 400, "n", "%d sequences (prompts x n) in one request; this model takes at most %d",
                            lc->n_seqs, cap);
    lc->ch = calloc((size_t)lc->n_seqs, sizeof *lc->ch);
    lc->chan = echan_new();
    if (!lc->ch || !lc->chan)
        return lcall_error(lc, 500, NULL, "out of memory");
    lc->t_validated = util_now_ns();
    lc->deadline_ns = lc->t_validated + lc->m->set.timeout_ms * 1000000;
    if (submit(lc) < 0)
        return 0;
    lc->submitted = true;
    if (lc->stream && lcall_stream_begin(lc) < 0)
        return -1;
    if (pump(lc) < 0) {
        r->client_gone = true;
        log_info("request %s: the client went away; its %d sequence(s) are cancelled", r->id, lc->n_seqs);
        return -1;
    }
    struct choice *bad = failed(lc);
    if (lc->stream)
        return lcall_stream_end(lc, bad);
    if (bad)
        return lcall_error(lc, bad->err_status, NULL, "%s", bad->err);
    json_object *o = lcall_whole(lc);
    if (!o)
        return lcall_error(lc, 500, NULL, "out of memory");
    int rc = resp_json(r, 200, o);
    json_object_put(o);
    return rc;
}

int local_generate(struct req *r, enum client_kind kind, int variant, json_object *body, struct gen *g,
                   const char *model)
{
    bool responses = kind == CK_RESPONSES;      /* the chat it means (dialect.c), answered as a response */
    struct lcall lc = {.r = r, .kind = responses ? CK_CHAT : kind, .variant = variant, .g = g, .model = model,
                       .t0 = r->start_ns, .created = (int64_t)time(NULL), .stream = g->stream && kind != CK_LEGACY,
                       .responses = responses};
    util_random_hex(lc.id, 12);
    int rc = run(&lc, body);
    if (lc.submitted) {                         /* it reached the engine: report what it used */
        r->tokens_in = lcall_prompt_tokens(&lc);
        r->tokens_out = lcall_completion_tokens(&lc);
        metrics_tokens(r->model_label, r->tokens_in, r->tokens_out);
    }
    lcall_free(&lc);
    return r->client_gone ? -1 : rc;
}
