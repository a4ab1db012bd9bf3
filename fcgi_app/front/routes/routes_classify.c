/* routes_classify.c -- classification on local GPT-2 sequence classifiers: POST /classify (Hugging Face's text-classification shape), POST /v1/moderations (OpenAI), and the moderation service's POST /generate {"input_text"}; and embeddings of local models, POST /v1/embeddings, read the same way.
 *
 * One request's texts are read and checked, tokenized on the responder
 * thread, cut at their pooling position (classify.h) and submitted to the
 * model's engine together as classification sequences, so they run in the
 * same steps as one batch (with whatever else the engine carries). The
 * responder waits on the request's channel and the client's connection;
 * a client that leaves cancels the texts not yet read. Each EV_SCORES
 * event is one text's score-head logits; the answer is built once all are in.
 *
 * Embeddings run the same way with embedding sequences (engine.h): each
 * text (or list of token ids) is read whole, its final hidden states
 * pooled by the engine (the model's pooling, mean or last) and, with the
 * model's normalize, scaled to unit length here. dispatch.c hands them
 * over once it has checked the key and reserved tokens/min. */
#include "config.h"
#include "routes_classify.h"
#include "answer.h"
#include "auth.h"
#include "classify.h"
#include "conf.h"
#include "engine.h"
#include "json_obj.h"
#include "log.h"
#include "metrics.h"
#include "ratelimit.h"
#include "registry.h"
#include "response.h"
#include "server.h"
#include "util.h"

#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HARD_MAX_INPUTS 4096    /* refused before any model is looked at (max_inputs is at most this) */

enum shape {
    SH_CLASSIFY,                /* POST /classify */
    SH_OPENAI,                  /* POST /v1/moderations */
    SH_SERVICE,                 /* POST /generate {"input_text"} */
    SH_EMBED,                   /* POST /v1/embeddings */
};

struct ccall {
    struct req *r;
    enum shape shape;
    const char *param;          /* the request's field holding the texts: "inputs", "input", "input_text" */
    char model[160];
    struct lmodel *m;

    int n;                      /* texts */
    bool list;                  /* they came as a list */
    const char **texts;         /* borrowed from the body (or `joined`); n; owned array; NULL entries:
                                 * token ids given (embeddings), already in ids */
    size_t *lens;               /* owned; n: each text's length (a text may hold NUL: JSON's \u0000) */
    char *joined;               /* owned: OpenAI content parts read as one text */
    int32_t **ids;              /* owned; n */
    int *n_ids;                 /* owned; n */
    float *logits;              /* owned; n x width: score-head logits, or (embeddings) the vectors */
    int width;                  /* floats per text: n_labels, or n_embd */
    bool base64;                /* embeddings: encoding_format base64 */
    bool *got;                  /* owned; n */
    int n_got;
    long tokens;                /* tokens read (the texts, cut at their pooling positions) */

    int top_k;                  /* /classify: 0 = every label */
    enum clf_fn fn;             /* /classify may ask for another function_to_apply */
    bool fn_set;

    struct echan *chan;
    struct ebatch eb;
    int64_t deadline_ns;
};

/* ------------------------------------------------------------------ services */

/* What this route family uses of the server (struct server): the local
 * models (classifiers). */
static struct registry *models(const struct req *r)
{
    return r->srv->reg;
}

/* ------------------------------------------------------------------ errors */

/* An error in the route's shape: OpenAI for /v1/moderations, TGI's
 * {"error","error_type"} (validation errors are 422) otherwise. Returns 0,
 * or -1 when the client went away. */
static int fail(struct ccall *cc, int status, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int fail(struct ccall *cc, int status, const char *param, const char *code, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    bool openai = cc->shape == SH_OPENAI || cc->shape == SH_EMBED;
    int rc = resp_error_model(cc->r, openai ? DIALECT_OPENAI : DIALECT_TGI, status, param, code, msg);
    return cc->r->client_gone ? -1 : rc;
}

/* ------------------------------------------------------------------ reading the request */

/* One text of the request: a string (or, for OpenAI, {"type":"text","text"}),
 * into *out and *len (it may hold NUL, carried like generation's prompt). */
static int read_text(struct ccall *cc, json_object *v, size_t i, const char **out, size_t *len)
{
    char where[48];
    if (cc->list)
        snprintf(where, sizeof where, "`%s[%zu]`", cc->param, i);
    else
        snprintf(where, sizeof where, "`%s`", cc->param);
    if (json_object_is_type(v, json_type_string)) {
        *out = json_object_get_string(v);
        *len = (size_t)json_object_get_string_len(v);
        return 0;
    }
    if (cc->shape == SH_OPENAI && json_object_is_type(v, json_type_object)) {
        json_object *t = json_field(v, "type");
        const char *type = t && json_object_is_type(t, json_type_string) ? json_object_get_string(t) : "";
        if (!strcmp(type, "text")) {
            json_object *s = json_field(v, "text");
            if (s && json_object_is_type(s, json_type_string)) {
                *out = json_object_get_string(s);
                *len = (size_t)json_object_get_string_len(s);
                return 0;
            }
            return fail(cc, 400, cc->param, NULL, "%s.text must be a string", where), -1;
        }
        if (!strcmp(type, "image_url"))
            return fail(cc, 400, cc->param, NULL, "%s: images are not supported by local moderation models", where),
                   -1;
        return fail(cc, 400, cc->param, NULL, "%s must be a string or {\"type\": \"text\", \"text\": ...}", where), -1;
    }
    return fail(cc, 400, cc->param, NULL, "%s must be a string%s", where,
                cc->list ? "" : " or a list of strings"), -1;
}

/* OpenAI's multi-modal input: a list of content parts is one input, with
 * one result; its text parts are read as one text, joined by newlines.
 * Strings and parts may not be mixed (OpenAI's schema takes one or the other). */
static int read_parts(struct ccall *cc, json_object *v, size_t n)
{
    struct strbuf b = {0};
    for (size_t i = 0; i < n; i++) {
        json_object *part = json_object_array_get_idx(v, i);
        const char *t;
        size_t tl;
        if (!json_object_is_type(part, json_type_object)) {
            free(b.s);
            return fail(cc, 400, cc->param, NULL, "`%s` mixes strings and content parts: send a list of strings "
                        "(one result each) or a list of parts (one input)", cc->param), -1;
        }
        if (read_text(cc, part, i, &t, &tl) < 0) {
            free(b.s);
            return -1;
        }
        if (i)
            strbuf_add(&b, "\n", 1);
        strbuf_add(&b, t, tl);
    }
    cc->texts = calloc(1, sizeof *cc->texts);
    cc->lens = calloc(1, sizeof *cc->lens);
    if (b.nomem || !b.s || !cc->texts || !cc->lens) {
        free(b.s);
        return fail(cc, 500, NULL, NULL, "out of memory"), -1;
    }
    cc->joined = b.s;
    cc->texts[0] = cc->joined;
    cc->lens[0] = b.len;
    cc->n = 1;
    cc->list = false;                           /* one result */
    return 0;
}

/* Is v a list of token ids (whole numbers), as embeddings take? */
static bool is_id_list(json_object *v)
{
    return json_object_is_type(v, json_type_array) && json_object_array_length(v) > 0 &&
           json_object_is_type(json_object_array_get_idx(v, 0), json_type_int);
}

/* Embeddings' token-id input i (a list of ids, checked once the model's
 * vocabulary is known: tokenize()). */
static int read_ids(struct ccall *cc, json_object *v, size_t i)
{
    size_t n = json_object_array_length(v);
    if (!cc->ids && (!(cc->ids = calloc((size_t)cc->n, sizeof *cc->ids)) ||
                     !(cc->n_ids = calloc((size_t)cc->n, sizeof *cc->n_ids))))
        return fail(cc, 500, NULL, NULL, "out of memory"), -1;
    if (n == 0)
        return fail(cc, 400, "input", NULL, "`input[%zu]` is an empty list of token ids", i), -1;
    if (n > 1 << 20)
        return fail(cc, 400, "input", "context_length_exceeded", "`input[%zu]` has %zu tokens", i, n), -1;
    if (!(cc->ids[i] = malloc(sizeof *cc->ids[i] * n)))
        return fail(cc, 500, NULL, NULL, "out of memory"), -1;
    for (size_t k = 0; k < n; k++) {
        json_object *t = json_object_array_get_idx(v, k);
        int64_t id = json_object_get_int64(t);
        if (!json_object_is_type(t, json_type_int) || id < 0 || id > INT32_MAX)
            return fail(cc, 400, "input", NULL, "item %zu of token-id input %zu is not a token id (a whole number "
                        "from 0)", k, i), -1;
        cc->ids[i][k] = (int32_t)id;
    }
    cc->n_ids[i] = (int)n;
    cc->texts[i] = NULL;
    return 0;
}

/* Embeddings' input: a string, a list of strings, a list of token ids, or
 * a list of lists of token ids (OpenAI's four shapes). */
static int read_embed_inputs(struct ccall *cc, json_object *v)
{
    if (is_id_list(v)) {                        /* one text as ids */
        cc->n = 1;
        cc->texts = calloc(1, sizeof *cc->texts);
        cc->lens = calloc(1, sizeof *cc->lens);
        if (!cc->texts || !cc->lens)
            return fail(cc, 500, NULL, NULL, "out of memory"), -1;
        return read_ids(cc, v, 0);
    }
    size_t n = cc->list ? json_object_array_length(v) : 1;
    cc->texts = calloc(n, sizeof *cc->texts);
    cc->lens = calloc(n, sizeof *cc->lens);
    if (!cc->texts || !cc->lens)
        return fail(cc, 500, NULL, NULL, "out of memory"), -1;
    cc->n = (int)n;
    bool ids = cc->list && json_object_is_type(json_object_array_get_idx(v, 0), json_type_array);
    for (size_t i = 0; i < n; i++) {
        json_object *e = cc->list ? json_object_array_get_idx(v, i) : v;
        if (ids != json_object_is_type(e, json_type_array))
            return fail(cc, 400, "input", NULL, "`input` mixes texts and token-id lists: send one or the other"), -1;
        if (ids ? read_ids(cc, e, i) < 0 : read_text(cc, e, i, &cc->texts[i], &cc->lens[i]) < 0)
            return -1;
    }
    return 0;
}

/* The texts of the request, checked for type and count (the model's
 * max_inputs is checked once the model is known). */
static int read_texts(struct ccall *cc, json_object *body)
{
    json_object *v = json_field(body, cc->param);
    if (!v)
        return fail(cc, 400, cc->param, NULL, "`%s` is required: a string or a list of strings", cc->param), -1;
    cc->list = json_object_is_type(v, json_type_array);
    size_t n = cc->list ? json_object_array_length(v) : 1;
    if (cc->list && n == 0)
        return fail(cc, 400, cc->param, NULL, "`%s` must not be an empty list", cc->param), -1;
    if (n > HARD_MAX_INPUTS)
        return fail(cc, 400, cc->param, NULL, "at most %d texts in one request (got %zu)", HARD_MAX_INPUTS, n), -1;
    if (cc->shape == SH_EMBED)
        return read_embed_inputs(cc, v);
    if (cc->shape == SH_OPENAI && cc->list && json_object_is_type(json_object_array_get_idx(v, 0), json_type_object))
        return read_parts(cc, v, n);
    cc->texts = calloc(n, sizeof *cc->texts);
    cc->lens = calloc(n, sizeof *cc->lens);
    if (!cc->texts || !cc->lens)
        return fail(cc, 500, NULL, NULL, "out of memory"), -1;
    cc->n = (int)n;
    for (size_t i = 0; i < n; i++)
        if (read_text(cc, cc->list ? json_object_array_get_idx(v, i) : v, i, &cc->texts[i], &cc->lens[i]) < 0)
            return -1;
    return 0;
}

/* /classify's options: parameters.top_k (or top_k) and parameters.function_to_apply. */
static int read_options(struct ccall *cc, json_object *body)
{
    json_object *p = json_field(body, "parameters");
    if (p && !json_object_is_type(p, json_type_object))
        return fail(cc, 422, NULL, NULL, "`parameters` must be an object"), -1;
    json_object *k = NULL;
    bool in_params = p && json_object_object_get_ex(p, "top_k", &k);   /* present, maybe null: every label */
    if (!in_params)
        k = json_field(body, "top_k");
    if (k && !json_object_is_type(k, json_type_null)) {
        int64_t v = json_object_get_int64(k);
        if (!json_object_is_type(k, json_type_int) || v < 1 || v > 1 << 20)
            return fail(cc, 422, NULL, NULL, "`top_k` must be a positive integer (or null: every label)"), -1;
        cc->top_k = (int)v;
    }
    json_object *f = json_field(p, "function_to_apply");
    if (f) {
        const char *s = json_object_is_type(f, json_type_string) ? json_object_get_string(f) : "";
        if (!strcmp(s, "softmax"))
            cc->fn = CLF_SOFTMAX;
        else if (!strcmp(s, "sigmoid"))
            cc->fn = CLF_SIGMOID;
        else if (!strcmp(s, "none"))
            cc->fn = CLF_NONE;
        else if (strcmp(s, "default") != 0)
            return fail(cc, 422, NULL, NULL, "`function_to_apply` must be default, softmax, sigmoid or none"), -1;
        cc->fn_set = strcmp(s, "default") != 0;
    }
    return 0;
}

/* Embeddings' options: encoding_format float or base64; dimensions refused
 * (GPT-2 has no Matryoshka training: a cut vector would mean nothing). */
static int read_embed_options(struct ccall *cc, json_object *body)
{
    json_object *f = json_field(body, "encoding_format"), *d = json_field(body, "dimensions");
    const char *fs = f && json_object_is_type(f, json_type_string) ? json_object_get_string(f) : NULL;
    if (f && (!fs || (strcmp(fs, "float") != 0 && strcmp(fs, "base64") != 0)))
        return fail(cc, 400, "encoding_format", NULL, "`encoding_format` must be float or base64"), -1;
    cc->base64 = fs && !strcmp(fs, "base64");
    if (d)
        return fail(cc, 400, "dimensions", NULL, "`dimensions` is not supported: GPT-2 models were not trained to "
                    "give shorter embeddings (Matryoshka); leave it out for the model's full width"), -1;
    json_object *u = json_field(body, "user");
    if (u && !json_object_is_type(u, json_type_string))
        return fail(cc, 400, "user", NULL, "`user` must be a string"), -1;
    return 0;
}

/* The model the request names ("model", "model_id" for the service shape,
 * ?model= for /classify), else the configured default. */
static int pick_model(struct ccall *cc, json_object *body)
{
    struct req *r = cc->r;
    const char *key = cc->shape == SH_SERVICE ? "model_id" : "model";
    json_object *v = json_field(body, key);
    if (v) {
        if (!json_object_is_type(v, json_type_string) || json_object_get_string_len(v) == 0 ||
            (size_t)json_object_get_string_len(v) >= sizeof cc->model)
            return fail(cc, 400, key, NULL, "`%s` must be a model name", key), -1;
        snprintf(cc->model, sizeof cc->model, "%s", json_object_get_string(v));
        return 0;
    }
    int q = cc->shape == SH_CLASSIFY ? req_query(r, "model", cc->model, sizeof cc->model) : 0;
    if (q < 0)
        return fail(cc, 422, "model", NULL, "the query parameter `model` is malformed: a model name of at most %zu "
                    "bytes, %%-escaped as %%XX, without %%00", sizeof cc->model - 1), -1;
    if (q > 0 && cc->model[0])
        return 0;
    if (cc->shape == SH_EMBED) {                /* dispatch.c found it local: named, or the default */
        const char *def = config_default_model(r->cfg);     /* as dispatch.c picks it: the one model, too */
        if (!def)
            return fail(cc, 400, key, NULL, "`model` is required (this server serves several models and has no "
                        "default_model)"), -1;
        snprintf(cc->model, sizeof cc->model, "%s", def);
        return 0;
    }
    const char *def = config_classifier_default(r->cfg, cc->shape != SH_CLASSIFY);
    if (!def)
        return fail(cc, 400, key, NULL, "name a model (`%s`): this server has no %s model configured", key,
                    cc->shape == SH_CLASSIFY ? "classification" : "moderation"), -1;
    snprintf(cc->model, sizeof cc->model, "%s", def);
    return 0;
}

/* The model, loaded (waited for while it loads) and of the right task. */
static int acquire(struct ccall *cc)
{
    struct req *r = cc->r;
    int status = 0;
    char err[400];
    if (!registry_is_local(r->cfg, cc->model))
        return fail(cc, 404, "model", NULL, "The model `%s` does not exist", cc->model), -1;
    struct lmodel *m = registry_get(models(r), r->cfg, cc->model, &status, err, sizeof err);
    if (!m) {
        if (status == 404)
            return fail(cc, 404, "model", NULL, "The model `%s` does not exist", cc->model), -1;
        return fail(cc, status, NULL, NULL, "%s", err), -1;
    }
    cc->m = m;
    r->model_label = metrics_model_id(cc->model);
    int64_t deadline = util_now_ns() + m->set.timeout_ms * 1000000;
    if (registry_wait(models(r), m, deadline, r->fcgi->ipcFd) < 0) {
        if (util_now_ns() < deadline) {
            r->client_gone = true;
            return -1;
        }
        return fail(cc, 503, NULL, NULL, "model %s is still loading; try again", cc->model), -1;
    }
    if (registry_state(models(r), m) == LM_FAILED)
        return fail(cc, 503, NULL, NULL, "model %s could not be loaded: %s", cc->model, m->error), -1;
    cc->width = cc->shape == SH_EMBED ? m->info->cfg.n_embd : m->n_labels;
    if (cc->shape == SH_EMBED)                  /* any model has final hidden states */
        return 0;
    if (m->task == TASK_GENERATE)
        return fail(cc, 400, "model", NULL, "model %s generates text; classification needs a sequence classifier "
                    "(task = classify or moderate)", cc->model), -1;
    if (cc->shape != SH_CLASSIFY && m->task != TASK_MODERATE)
        return fail(cc, 400, "model", NULL, "model %s is a classifier without moderation categories; set its task = "
                    "moderate, or use POST /classify", cc->model), -1;
    return 0;
}

/* Tokenizes the texts and checks them against the model's limits. */
static int tokenize(struct ccall *cc)
{
    struct lmodel *m = cc->m;
    if (cc->n > m->max_inputs)
        return fail(cc, 400, cc->param, NULL, "at most %d texts in one request for model %s (got %d)", m->max_inputs,
                    cc->model, cc->n), -1;
    if (!cc->ids)
        cc->ids = calloc((size_t)cc->n, sizeof *cc->ids);
    if (!cc->n_ids)
        cc->n_ids = calloc((size_t)cc->n, sizeof *cc->n_ids);
    cc->logits = calloc((size_t)cc->n * (size_t)cc->width, sizeof *cc->logits);
    cc->got = calloc((size_t)cc->n, sizeof *cc->got);
    if (!cc->ids || !cc->n_ids || !cc->logits || !cc->got)
        return fail(cc, 500, NULL, NULL, "out of memory"), -1;
    for (int i = 0; i < cc->n; i++) {
        char where[48];
        if (cc->list)
            snprintf(where, sizeof where, "`%s[%d]`", cc->param, i);
        else
            snprintf(where, sizeof where, "`%s`", cc->param);
        size_t n = (size_t)cc->n_ids[i];
        if (!cc->texts[i]) {                    /* embeddings' token ids */
            int vocab = tokenizer_vocab_size(m->tok);
            for (size_t k = 0; k < n; k++)
                if (cc->ids[i][k] >= vocab)
                    return fail(cc, 400, cc->param, NULL, "%s[%zu] is %d: model %s's token ids go from 0 to %d",
                                where, k, (int)cc->ids[i][k], cc->model, vocab - 1), -1;
        } else if (tokenizer_encode(m->tok, cc->texts[i], cc->lens[i], true, &cc->ids[i], &n) !=
                   TOKENIZER_OK)
            return fail(cc, 500, NULL, NULL, "cannot tokenize %s", where), -1;
        if (n == 0)
            return fail(cc, 400, cc->param, NULL, "%s is empty: there is nothing to %s", where,
                        cc->shape == SH_EMBED ? "embed" : "classify"), -1;
        if (n > (size_t)m->max_input)
            return fail(cc, 400, cc->param, "context_length_exceeded",
                        "%s has %zu tokens; model %s reads at most %d", where, n, cc->model, m->max_input), -1;
        cc->n_ids[i] = cc->shape == SH_EMBED ? (int)n : clf_pool_tokens(cc->ids[i], (int)n, m->pad);
        cc->tokens += cc->n_ids[i];
    }
    return 0;
}

/* ------------------------------------------------------------------ running */

static int submit(struct ccall *cc)
{
    struct eseq_req *reqs = calloc((size_t)cc->n, sizeof *reqs);
    cc->chan = echan_new();
    if (!reqs || !cc->chan) {
        free(reqs);
        return fail(cc, 500, NULL, NULL, "out of memory"), -1;
    }
    cc->deadline_ns = util_now_ns() + cc->m->set.timeout_ms * 1000000;
    enum emb_pool pool = cc->shape != SH_EMBED ? EMB_NONE : cc->m->set.pool_last ? EMB_LAST : EMB_MEAN;
    for (int i = 0; i < cc->n; i++)
        reqs[i] = (struct eseq_req){.prompt = cc->ids[i], .n_prompt = cc->n_ids[i], .index = i,
                                    .classify = pool == EMB_NONE, .embed = pool, .deadline_ns = cc->deadline_ns};
    char err[400];
    int rc = engine_submit(cc->m->engine, cc->chan, reqs, cc->n, err, sizeof err);
    free(reqs);
    switch (rc) {
    case ENGINE_OK:
        return 0;
    case ENGINE_EFULL:
        return fail(cc, 429, NULL, NULL, "model %s is at capacity (max_concurrent %d running, max_queue %ld "
                    "waiting); retry after a moment", cc->model, cc->m->max_concurrent, cc->m->set.max_queue), -1;
    case ENGINE_EINVAL:
        return fail(cc, 400, NULL, NULL, "%s", err), -1;
    case ENGINE_ESTOPPED:
        return fail(cc, 503, NULL, NULL, "model %s is being unloaded; try again", cc->model), -1;
    default:
        return fail(cc, 500, NULL, NULL, "out of memory"), -1;
    }
}

/* Waits for every text's row. Returns 0 when all are in; -1 after
 * answering an error, or when the client went away. */
static int pump(struct ccall *cc)
{
    struct req *r = cc->r;
    int64_t guard = cc->deadline_ns + 30 * (int64_t)1000000000;
    int NL = cc->width;
    while (cc->n_got < cc->n) {
        struct pollfd p[2] = {{.fd = echan_fd(cc->chan), .events = POLLIN},
                              {.fd = r->fcgi->ipcFd, .events = POLLRDHUP}};
        int n = poll(p, 2, 1000);
        if (n > 0 && (p[1].revents & (POLLRDHUP | POLLHUP | POLLERR))) {
            r->client_gone = true;
            log_info("request %s: the client went away; its %d text(s) are cancelled", r->id, cc->n);
            return -1;
        }
        if (n > 0 && (p[0].revents & POLLIN)) {
            echan_take(cc->chan, &cc->eb);
            for (size_t i = 0; i < cc->eb.n; i++) {
                const struct eevent *ev = &cc->eb.ev[i];
                if (ev->index < 0 || ev->index >= cc->n || cc->got[ev->index])
                    continue;
                if (ev->kind == EV_ERROR) {
                    const char *msg = ebatch_text(&cc->eb, ev);
                    log_warn("request %s: model %s: %s", r->id, cc->model, msg);
                    return fail(cc, ev->status ? ev->status : 500, NULL, NULL, "%s", msg), -1;
                }
                if (ev->kind != EV_SCORES ||
                    ebatch_scores(&cc->eb, ev, cc->logits + (size_t)ev->index * NL, NL) != NL)
                    continue;
                cc->got[ev->index] = true;
                cc->n_got++;
            }
            continue;
        }
        if (util_now_ns() > guard)
            return fail(cc, 504, NULL, NULL, "the %s did not finish in time",
                        cc->shape == SH_EMBED ? "embedding" : "classification"), -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ answers */

/* One text's labels and scores, best first, at most k (0: all): a new
 * array the caller owns (NULL when out of memory). */
static json_object *ranked(const struct ccall *cc, const double *s, int k)
{
    int NL = cc->m->n_labels, *order = malloc(sizeof *order * (size_t)NL);
    json_object *list = order ? json_object_new_array() : NULL;
    if (list)
        clf_rank(s, NL, order);
    for (int i = 0; list && i < NL && (k <= 0 || i < k); i++) {
        json_object *e = json_object_new_object();
        if (!e)
            break;
        json_object_object_add(e, "label", json_object_new_string(cc->m->labels[order[i]]));
        json_object_object_add(e, "score", json_object_new_double(s[order[i]]));
        json_object_array_add(list, e);
    }
    free(order);
    return list;
}

/* The moderation verdict of one text: whether it is flagged, and into
 * *cats / *scores two new objects the caller owns. */
static bool moderate(const struct ccall *cc, const double *s, json_object **cats, json_object **scores)
{
    const struct clf_categories *c = &cc->m->cats;
    bool flagged = false;
    *cats = json_object_new_object();
    *scores = json_object_new_object();
    for (int k = 0; k < c->n; k++) {
        double best = -INFINITY;
        for (int j = 0; j < c->cat[k].n_labels; j++)
            best = s[c->cat[k].labels[j]] > best ? s[c->cat[k].labels[j]] : best;
        bool f = best >= cc->m->set.flag_threshold;
        flagged |= f;
        json_object_object_add(*cats, c->cat[k].name, json_object_new_boolean(f));
        json_object_object_add(*scores, c->cat[k].name, json_object_new_double(best));
    }
    return flagged;
}

/* The embeddings: normalised when the model says so, checked finite. */
static int answer_embed(struct ccall *cc)
{
    struct req *r = cc->r;
    int C = cc->width;
    for (int i = 0; i < cc->n; i++) {
        float *v = cc->logits + (size_t)i * C;
        for (int c = 0; c < C; c++)
            if (!isfinite(v[c]))
                return fail(cc, 500, NULL, NULL, "model %s gave input %d a vector that is not finite (its hidden "
                            "states overflowed)", cc->m->name, i);
        if (cc->m->set.normalize)
            emb_normalize(v, C);
    }
    json_object *out = answer_embeddings(cc->model, cc->logits, cc->n, C, cc->base64, cc->tokens);
    if (!out)
        return fail(cc, 500, NULL, NULL, "out of memory");
    metrics_embedded(r->model_label, cc->n);
    resp_header(r, "x-model-id", "%s", cc->model);
    resp_header(r, "x-compute-type", "%s", cc->m->info->backend);
    int rc = resp_json(r, 200, out);
    json_object_put(out);
    return rc;
}

static int answer(struct ccall *cc)
{
    struct req *r = cc->r;
    if (cc->shape == SH_EMBED)
        return answer_embed(cc);
    int NL = cc->m->n_labels;
    double *s = calloc((size_t)NL, sizeof *s);
    json_object *out = cc->shape == SH_OPENAI ? json_object_new_object() : json_object_new_array();
    json_object *results = cc->shape == SH_OPENAI ? json_object_new_array() : out;
    if (!s || !out || !results) {
        free(s);
        json_object_put(out);
        if (cc->shape == SH_OPENAI)
            json_object_put(results);
        return fail(cc, 500, NULL, NULL, "out of memory");
    }
    long flagged_n = 0;
    enum clf_fn fn = cc->fn_set ? cc->fn : cc->m->fn;
    for (int i = 0; i < cc->n; i++) {
        clf_scores(fn, cc->logits + (size_t)i * NL, NL, s);
        for (int j = 0; j < NL; j++)
            if (!isfinite(s[j])) {              /* JSON has no NaN: an overflowing model is our error */
                free(s);
                json_object_put(out);
                if (cc->shape == SH_OPENAI)
                    json_object_put(results);
                return fail(cc, 500, NULL, NULL, "model %s gave text %d a score that is not a finite number "
                            "(its logits overflowed)", cc->m->name, i);
            }
        if (cc->shape == SH_CLASSIFY) {
            json_object_array_add(results, ranked(cc, s, cc->top_k));
            continue;
        }
        json_object *cats, *scores, *e = json_object_new_object();
        bool flagged = moderate(cc, s, &cats, &scores);
        flagged_n += flagged;
        if (cc->shape == SH_OPENAI) {
            json_object_object_add(e, "flagged", json_object_new_boolean(flagged));
            json_object_object_add(e, "categories", cats);
            json_object_object_add(e, "category_scores", scores);
        } else {
            int top = 0;                        /* the first of the highest, as clf_rank orders them */
            for (int j = 1; j < NL; j++)
                top = s[j] > s[top] ? j : top;
            json_object_object_add(e, "model_id", json_object_new_string(cc->model));
            json_object_object_add(e, "flagged", json_object_new_boolean(flagged));
            json_object_object_add(e, "label", json_object_new_string(cc->m->labels[top]));
            json_object_object_add(e, "score", json_object_new_double(s[top]));
            json_object_object_add(e, "scores", ranked(cc, s, 0));
            json_object_object_add(e, "categories", cats);
            json_object_object_add(e, "category_scores", scores);
        }
        json_object_array_add(results, e);
    }
    free(s);
    metrics_classified(r->model_label, cc->n, flagged_n);
    if (cc->shape == SH_OPENAI) {
        char id[40];
        util_random_hex(id, 12);
        char full[48];
        snprintf(full, sizeof full, "modr-%s", id);
        json_object_object_add(out, "id", json_object_new_string(full));
        json_object_object_add(out, "model", json_object_new_string(cc->model));
        json_object_object_add(out, "results", results);
    } else if (!cc->list) {
        json_object *one = json_object_get(json_object_array_get_idx(out, 0));
        json_object_put(out);
        out = one;
    }
    resp_header(r, "x-model-id", "%s", cc->model);
    resp_header(r, "x-compute-type", "%s", cc->m->info->backend);
    int rc = resp_json(r, 200, out);
    json_object_put(out);
    return rc;
}

/* ------------------------------------------------------------------ the routes */

static void ccall_free(struct ccall *cc)
{
    for (int i = 0; cc->ids && i < cc->n; i++)
        free(cc->ids[i]);
    free(cc->ids);
    free(cc->n_ids);
    free(cc->logits);
    free(cc->got);
    free(cc->texts);
    free(cc->lens);
    free(cc->joined);
    ebatch_free(&cc->eb);
    if (cc->chan) {
        echan_cancel(cc->chan);                 /* texts still queued or running stop */
        echan_put(cc->chan);
    }
    if (cc->m)
        registry_put(models(cc->r), cc->m);
}

/* Reads, runs and answers; every failure answered in the route's shape. */
static int run(struct ccall *cc, json_object *body)
{
    struct req *r = cc->r;
    if (!json_object_is_type(body, json_type_object))
        return fail(cc, 400, NULL, NULL, "the body must be a JSON object");
    if (read_texts(cc, body) < 0 || (cc->shape == SH_CLASSIFY && read_options(cc, body) < 0) ||
        (cc->shape == SH_EMBED && read_embed_options(cc, body) < 0) || pick_model(cc, body) < 0)
        return r->client_gone ? -1 : 0;
    if (cc->shape != SH_EMBED && auth_check_model(r, cc->model) != FRONT_OK)  /* embeddings: dispatch.c's */
        return r->client_gone ? -1 : 0;
    long estimate = (long)((r->body_len + 3) / 4);     /* corrected once the texts are tokenized */
    if (cc->shape != SH_EMBED && ratelimit_reserve(r, estimate, estimate) != FRONT_OK)
        return r->client_gone ? -1 : 0;
    if (acquire(cc) < 0 || tokenize(cc) < 0)
        return r->client_gone ? -1 : 0;
    if (submit(cc) < 0)
        return r->client_gone ? -1 : 0;
    r->tokens_in = cc->tokens;                  /* it reached the engine: what it reads counts */
    r->tokens_out = 0;
    metrics_tokens(r->model_label, cc->tokens, 0);
    if (pump(cc) < 0)
        return r->client_gone ? -1 : 0;
    return answer(cc);
}

static int route(struct req *r, enum shape shape, const char *param, json_object *body)
{
    struct ccall cc = {.r = r, .shape = shape, .param = param};
    int rc = run(&cc, body);
    ccall_free(&cc);
    return r->client_gone ? -1 : rc;
}

/* Reads the JSON body (answering 4xx when it is not one) and routes it. */
static int route_body(struct req *r, enum shape shape, const char *param)
{
    json_object *body = req_json_body(r);
    if (!body)
        return r->client_gone ? -1 : 0;
    int rc = route(r, shape, param, body);
    json_object_put(body);
    return rc;
}

int route_classify(struct req *r)
{
    return route_body(r, SH_CLASSIFY, "inputs");
}

int route_moderations(struct req *r)
{
    return route_body(r, SH_OPENAI, "input");
}

bool classify_is_input_text(json_object *body)
{
    return json_object_is_type(body, json_type_object) && json_object_object_get_ex(body, "input_text", NULL) &&
           !json_object_object_get_ex(body, "inputs", NULL) && !json_object_object_get_ex(body, "prompt", NULL);
}

int classify_input_text(struct req *r, json_object *body)
{
    return route(r, SH_SERVICE, "input_text", body);
}

int classify_embeddings(struct req *r, json_object *body)
{
    return route(r, SH_EMBED, "input", body);
}
