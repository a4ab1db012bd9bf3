/* routes_local.c -- generation on local models: requests in any client dialect (OpenAI chat and completions, TGI, the older model_id/prompt shape) run on the model's engine and are answered whole or streamed; GET /info and POST /tokenize.
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
#include "answer.h"
#include "auth.h"
#include "catalog.h"
#include "chat_template.h"
#include "conf.h"
#include "engine.h"
#include "gateway.h"
#include "log.h"
#include "metrics.h"
#include "registry.h"
#include "response.h"
#include "server.h"
#include "sse.h"
#include "structured.h"
#include "util.h"

#include <limits.h>
#include <json-c/printbuf.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_SEQS 128            /* prompts x choices in one request */
#define MAX_PROMPTS 64

/* ------------------------------------------------------------------ services */

/* What this route family uses of the server (struct server): the local
 * models. (GET /info also reports the responder thread count.) */
static struct registry *models(const struct req *r)
{
    return r->srv->reg;
}

/* ------------------------------------------------------------------ state of one request */

struct tokrec {
    int32_t id;
    float logprob;
    int n_top;
    struct sample_logprob top[SAMPLER_TOP_N_MAX];
};

struct tokvec {
    struct tokrec *v;
    size_t n, cap;
};

struct choice {
    int prompt;                 /* which of the request's prompts */
    struct strbuf text;         /* the text released so far */
    struct tokvec toks;         /* generated tokens (kept when logprobs or details are asked for) */
    struct tokvec prefill;      /* prompt tokens with their logprobs */
    int generated;
    int cached;                 /* prompt tokens the engine found in its prefix cache */
    int64_t last_ns;            /* when its last token came (inter-token latency) */
    enum finish finish;
    bool done;
    int err_status;
    char err[400];
};

struct prompt {
    int32_t *ids;               /* owned; NULL when refused unencoded (at_least) */
    int n;
    bool at_least;              /* too long to encode: n is the least it makes */
    const char *text;           /* borrowed from the body, or the rendered chat; NULL for token-id prompts */
};

struct lcall {
    struct req *r;
    enum client_kind kind;
    int variant;
    struct gen *g;
    const char *model;
    struct lmodel *m;
    const struct tokenizer *tok;

    char *chat_text;            /* the rendered chat prompt, owned */
    struct prompt prompts[MAX_PROMPTS];
    int n_prompts, n_per_prompt, n_seqs;
    struct choice *ch;          /* n_seqs */
    int n_done;

    struct gen_params gp;
    struct structured st;       /* the request's constraint (response_format, guided_*, grammar, tools) */
    bool sampling;
    uint64_t seed;
    int top_n;
    bool want_logprobs;         /* OpenAI logprobs */
    bool keep_tokens;           /* record every token (logprobs, TGI details) */
    bool prompt_logprobs;

    bool stream;
    bool submitted;             /* the engine took the sequences: their tokens count */
    struct sse sse;
    bool started;
    int tgi_index;

    char id[40];
    int64_t created;
    char fingerprint[64];
    int64_t t0, t_validated, t_first, queued_ns;
    int64_t deadline_ns;
    struct echan *chan;
    struct ebatch eb;
};

static int tv_add(struct tokvec *t, const struct sample_out *o)
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
static int answer_error(struct lcall *lc, int status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int answer_error(struct lcall *lc, int status, const char *param, const char *fmt, ...)
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
static struct lmodel *acquire_model(struct lcall *lc)
{
    struct req *r = lc->r;
    int status = 0;
    char err[400];
    struct lmodel *m = registry_get(models(r), r->cfg, lc->model, &status, err, sizeof err);
    if (!m) {
        if (status == 404)
            resp_model_not_found(r, lc->model);
        else
            answer_error(lc, status, NULL, "%s", err);
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
        answer_error(lc, 503, NULL, "model %s is still loading; try again", lc->model);
        return NULL;
    }
    if (registry_state(models(r), m) == LM_FAILED) {
        answer_error(lc, 503, NULL, "model %s could not be loaded: %s", lc->model, m->error);
        registry_put(models(r), m);
        return NULL;
    }
    return m;
}

/* ------------------------------------------------------------------ reading the request */

static json_object *field(json_object *o, const char *key)
{
    json_object *v = NULL;
    if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
        return NULL;
    return v;
}

/* Refuses what the local engine does not do, rather than ignoring it. */
static int check_unsupported(struct lcall *lc, json_object *body)
{
    json_object *v;
    if (lc->kind == CK_CHAT || lc->kind == CK_COMPLETION) {
        if ((v = field(body, "logit_bias")) && !json_object_is_type(v, json_type_object))
            return answer_error(lc, 400, "logit_bias", "`logit_bias` must be an object of token ids to biases"), -1;
        if (v && json_object_object_length(v) > 0)
            return answer_error(lc, 400, "logit_bias", "`logit_bias` is not supported by local models"), -1;
        /* tools, tool_choice and response_format: structured_read. The legacy function calling
         * fields: function_call "none" asks for what a local model does anyway */
        if ((v = field(body, "functions")) && !json_object_is_type(v, json_type_array))
            return answer_error(lc, 400, "functions", "`functions` must be an array"), -1;
        if (v && json_object_array_length(v) > 0)
            return answer_error(lc, 400, "functions", "`functions` are not supported by local GPT-2 models"), -1;
        static const char *const choices[] = {"function_call"};
        for (size_t i = 0; i < ARRAY_LEN(choices); i++) {
            if (!(v = field(body, choices[i])))
                continue;
            if (!json_object_is_type(v, json_type_string) && !json_object_is_type(v, json_type_object))
                return answer_error(lc, 400, choices[i], "`%s` must be a string or an object", choices[i]), -1;
            if (!json_object_is_type(v, json_type_string) || strcmp(json_object_get_string(v), "none") != 0)
                return answer_error(lc, 400, choices[i], "`%s` is not supported by local GPT-2 models (only \"none\")",
                                    choices[i]), -1;
        }
        if ((v = field(body, "suffix")))
            return answer_error(lc, 400, "suffix", "`suffix` is not supported by local models"), -1;
        if ((v = field(body, "best_of")) && !(json_object_is_type(v, json_type_int) && json_object_get_int64(v) == 1))
            return answer_error(lc, 400, "best_of", "`best_of` other than 1 is not supported by local models"), -1;
        if ((v = field(body, "user")) && !json_object_is_type(v, json_type_string))
            return answer_error(lc, 400, "user", "`user` must be a string"), -1;
        return 0;
    }
    json_object *p = field(body, "parameters");
    if (!p)
        return 0;
    if ((v = field(p, "best_of")) && !(json_object_is_type(v, json_type_int) && json_object_get_int64(v) == 1))
        return answer_error(lc, 422, NULL, "`best_of` other than 1 is not supported by local models"), -1;
    if ((v = field(p, "watermark")) && json_object_get_boolean(v))
        return answer_error(lc, 422, NULL, "`watermark` is not supported by local models"), -1;
    if (field(p, "adapter_id"))
        return answer_error(lc, 422, NULL, "`adapter_id` is not supported by local models"), -1;
    return 0;
}

/* Encodes text[0..len) for model m, unless it is sure to make more than
 * `limit` tokens (0: no limit): a text longer than limit times the most
 * bytes one token stands for is refused before it is encoded, so an
 * oversized input costs its parse and nothing more (encoding peaks at
 * under 20 times the text). Returns TOKENIZER_OK with *ids (the caller
 * frees) and *n; 1 when refused, with *ids NULL and *n the fewest tokens
 * the text makes; or a tokenizer error. */
static int encode_bounded(const struct lmodel *m, const char *text, size_t len, int limit, int32_t **ids, size_t *n)
{
    size_t cover = tokenizer_max_cover(m->tok);
    if (limit > 0 && cover && len / cover > (size_t)limit) {
        *ids = NULL;
        *n = (len + cover - 1) / cover;
        return 1;
    }
    return tokenizer_encode(m->tok, text, len, true, ids, n);
}

/* Tokenizes text into prompt p; a text sure to exceed the model's input
 * (with no TGI `truncate` to cut it) is left unencoded, at_least set. */
static int tokenize_prompt(struct lcall *lc, struct prompt *p, const char *text)
{
    size_t n = 0;
    p->text = text;
    int limit = lc->kind == CK_TGI && lc->g->truncate > 0 ? 0 : lc->m->max_input;
    int rc = encode_bounded(lc->m, text, strlen(text), limit, &p->ids, &n);
    if (rc < 0)
        return answer_error(lc, 500, NULL, "cannot tokenize the prompt"), -1;
    p->at_least = rc == 1;
    p->n = n > INT_MAX ? INT_MAX : (int)n;
    return 0;
}

/* A prompt given as token ids (OpenAI completions). */
static int ids_prompt(struct lcall *lc, struct prompt *p, json_object *arr, size_t which)
{
    size_t n = json_object_array_length(arr);
    int vocab = tokenizer_vocab_size(lc->tok);
    p->ids = malloc(sizeof *p->ids * (n ? n : 1));
    if (!p->ids)
        return answer_error(lc, 500, NULL, "out of memory"), -1;
    for (size_t i = 0; i < n; i++) {
        json_object *t = json_object_array_get_idx(arr, i);
        int64_t id = json_object_get_int64(t);
        if (!json_object_is_type(t, json_type_int) || id < 0 || id >= vocab ||
            !tokenizer_token_bytes(lc->tok, (int32_t)id, &(size_t){0}))
            return answer_error(lc, 400, "prompt", "`prompt[%zu][%zu]` must be a token id from 0 to %d", which, i,
                                vocab - 1), -1;
        p->ids[i] = (int32_t)id;
    }
    p->n = (int)n;
    return 0;
}

/* Fills lc->prompts from the request. */
static int read_prompts(struct lcall *lc)
{
    struct gen *g = lc->g;
    if (lc->kind == CK_CHAT) {
        enum chat_template t = CHAT_TEMPLATE_AUTO;
        chat_template_parse(lc->m->set.chat_template, &t);
        t = chat_template_resolve(t, lc->m->dir);
        const char *const *stops = NULL;
        size_t n_stops = 0;
        char err[400];
        int32_t eos = lc->m->eos;
        size_t eos_len = 0;
        const char *eos_bytes = eos >= 0 ? tokenizer_token_bytes(lc->tok, eos, &eos_len) : NULL;
        char eos_text[64] = "";
        if (eos_bytes && eos_len < sizeof eos_text)
            memcpy(eos_text, eos_bytes, eos_len), eos_text[eos_len] = '\0';
        int rc = chat_template_render(t, g->messages, eos_text, &lc->chat_text, &stops, &n_stops, err, sizeof err);
        if (rc != CHAT_TEMPLATE_OK)
            return answer_error(lc, rc == CHAT_TEMPLATE_EINVAL ? 400 : 500, "messages", "%s", err), -1;
        size_t user = g->stop ? json_object_array_length(g->stop) : 0;
        if (user + n_stops > STOPSEQ_MAX)
            return answer_error(lc, 400, "stop",
                                "at most %zu stop strings with this model: its chat template adds %zu of its own",
                                STOPSEQ_MAX - n_stops, n_stops), -1;
        for (size_t i = 0; i < n_stops; i++)
            lc->gp.stop[lc->gp.n_stop++] = stops[i];
        lc->n_prompts = 1;
        return tokenize_prompt(lc, &lc->prompts[0], lc->chat_text);
    }
    if (lc->kind == CK_COMPLETION && g->prompts) {
        json_object *list = g->prompts;
        size_t n = json_object_array_length(list);
        if (n == 0)
            return answer_error(lc, 400, "prompt", "`prompt` must not be an empty list"), -1;
        bool all_ints = true;
        for (size_t i = 0; i < n; i++)
            all_ints &= json_object_is_type(json_object_array_get_idx(list, i), json_type_int);
        if (all_ints) {                         /* one prompt as token ids */
            lc->n_prompts = 1;
            return ids_prompt(lc, &lc->prompts[0], list, 0);
        }
        if (n > MAX_PROMPTS)
            return answer_error(lc, 400, "prompt", "at most %d prompts in one request (got %zu)", MAX_PROMPTS, n), -1;
        for (size_t i = 0; i < n; i++) {
            json_object *p = json_object_array_get_idx(list, i);
            lc->n_prompts = (int)i + 1;
            if (json_object_is_type(p, json_type_string)) {
                if (tokenize_prompt(lc, &lc->prompts[i], json_object_get_string(p)) < 0)
                    return -1;
            } else if (json_object_is_type(p, json_type_array)) {
                if (ids_prompt(lc, &lc->prompts[i], p, i) < 0)
                    return -1;
            } else {
                return answer_error(lc, 400, "prompt",
                                    "`prompt[%zu]` must be a string or a list of token ids", i), -1;
            }
        }
        return 0;
    }
    if (!g->prompt)
        return answer_error(lc, 400, "prompt", "`prompt` is required"), -1;
    lc->n_prompts = 1;
    return tokenize_prompt(lc, &lc->prompts[0], g->prompt);
}

/* The sampling settings, in each API's own semantics. */
static int read_sampling(struct lcall *lc)
{
    struct gen *g = lc->g;
    struct sampler_params *s = &lc->gp.sampling;
    *s = sampler_params_default();
    switch (lc->kind) {
    case CK_CHAT:
    case CK_COMPLETION:                 /* OpenAI: sampling unless temperature is 0; default temperature 1 */
        lc->sampling = !(g->has_temperature && g->temperature == 0);
        s->temperature = g->has_temperature && lc->sampling ? (float)g->temperature : 1.0f;
        if (g->has_top_p)
            s->top_p = g->top_p > 0 ? (float)g->top_p : 1e-9f;    /* 0: only the most likely token */
        if (g->has_freq)
            s->frequency_penalty = (float)g->freq;
        if (g->has_pres)
            s->presence_penalty = (float)g->pres;
        lc->want_logprobs = g->logprobs;
        lc->top_n = g->logprobs ? (int)g->top_logprobs : 0;
        lc->prompt_logprobs = lc->kind == CK_COMPLETION && g->echo && g->logprobs && !lc->stream;
        break;
    case CK_TGI:                        /* TGI: sampling when do_sample or a warper that changes anything */
        lc->sampling = dialect_tgi_samples(g);
        if (g->has_temperature)
            s->temperature = (float)g->temperature;
        if (g->has_top_k)
            s->top_k = (int)g->top_k;
        if (g->has_top_p)
            s->top_p = (float)g->top_p;
        if (g->has_typical)
            s->typical_p = (float)g->typical;
        if (g->has_rep)
            s->repetition_penalty = (float)g->rep;
        if (g->has_freq)
            s->frequency_penalty = (float)g->freq;
        lc->top_n = (int)g->top_logprobs;
        lc->prompt_logprobs = g->decoder_input_details;
        lc->keep_tokens = g->details || lc->top_n > 0;
        break;
    case CK_LEGACY:                     /* the older shape: sampling when a temperature or top_p is given */
        lc->sampling = g->has_temperature || g->has_top_p;
        if (g->has_temperature)
            s->temperature = (float)g->temperature;
        if (g->has_top_p)
            s->top_p = (float)g->top_p;
        if (g->has_rep)
            s->repetition_penalty = (float)g->rep;
        break;
    }
    s->do_sample = lc->sampling;
    s->top_n = lc->top_n;
    lc->seed = g->has_seed ? (uint64_t)g->seed : util_random_u64() >> 1;
    s->seed = lc->seed;
    lc->keep_tokens |= lc->want_logprobs;
    char err[300];
    if (sampler_params_check(s, err, sizeof err) != SAMPLER_OK)
        return answer_error(lc, 400, NULL, "%s", err), -1;
    if (g->stop)
        for (size_t i = 0; i < json_object_array_length(g->stop) && lc->gp.n_stop < STOPSEQ_MAX; i++)
            lc->gp.stop[lc->gp.n_stop++] = json_object_get_string(json_object_array_get_idx(g->stop, i));
    return 0;
}

/* max_new_tokens and the length limits, with each API's wording. */
static int check_lengths(struct lcall *lc)
{
    struct lmodel *m = lc->m;
    struct gen *g = lc->g;
    bool openai = lc->r->dialect == DIALECT_OPENAI;
    for (int i = 0; i < lc->n_prompts; i++) {
        struct prompt *p = &lc->prompts[i];
        if (lc->kind == CK_TGI && g->truncate > 0 && p->n > g->truncate) {
            memmove(p->ids, p->ids + p->n - g->truncate, sizeof *p->ids * (size_t)g->truncate);
            p->n = (int)g->truncate;
        }
        if (p->n == 0) {
            if (lc->kind == CK_TGI)
                return answer_error(lc, 422, NULL, "`inputs` cannot be empty"), -1;
            if (m->eos < 0)
                return answer_error(lc, 400, "prompt", "the prompt is empty"), -1;
            p->ids[0] = m->eos;                 /* GPT-2 starts a text after <|endoftext|> */
            p->n = 1;
        }
        if (p->n > m->max_input) {
            if (openai)
                return resp_error_openai(lc->r, 400, NULL, lc->kind == CK_CHAT ? "messages" : "prompt",
                                         "context_length_exceeded",
                                         "This model's maximum context length is %d tokens (%d for the input). "
                                         "However, your %s resulted in %s%d tokens. Please reduce the length of the %s.",
                                         m->max_total, m->max_input, lc->kind == CK_CHAT ? "messages" : "prompt",
                                         p->at_least ? "at least " : "", p->n,
                                         lc->kind == CK_CHAT ? "messages" : "prompt"), -1;
            return answer_error(lc, 422, NULL, "`inputs` must have less than %d tokens. Given: %s%d", m->max_input + 1,
                                p->at_least ? "at least " : "", p->n), -1;
        }
    }
    int longest = 0;
    for (int i = 0; i < lc->n_prompts; i++)
        longest = lc->prompts[i].n > longest ? lc->prompts[i].n : longest;
    long max_new;
    if (g->max_tokens > 0) {
        max_new = g->max_tokens;
        if (longest + max_new > m->max_total) {
            if (openai)
                return resp_error_openai(lc->r, 400, NULL, "max_tokens", "context_length_exceeded",
                                         "This model's maximum context length is %d tokens. However, you requested "
                                         "%ld tokens (%d in the %s, %ld in the completion). Please reduce the length "
                                         "of the %s or completion.", m->max_total, longest + max_new, longest,
                                         lc->kind == CK_CHAT ? "messages" : "prompt", max_new,
                                         lc->kind == CK_CHAT ? "messages" : "prompt"), -1;
            return answer_error(lc, 422, NULL,
                                "`inputs` tokens + `max_new_tokens` must be <= %d. Given: %d `inputs` tokens and "
                                "%ld `max_new_tokens`", m->max_total, longest, max_new), -1;
        }
    } else {
        max_new = lc->kind == CK_COMPLETION ? 16 : m->set.max_new_tokens;   /* OpenAI's completions default */
        if (max_new > m->max_total - longest)
            max_new = m->max_total - longest;
        if (max_new < 1)
            return answer_error(lc, openai ? 400 : 422, NULL,
                                "the prompt (%d tokens) leaves no room to generate within max_total_tokens %d",
                                longest, m->max_total), -1;
    }
    lc->gp.max_new_tokens = (int)max_new;
    return 0;
}

/* ------------------------------------------------------------------ building answers */

static void add_str(json_object *o, const char *k, const char *v)
{
    json_object_object_add(o, k, json_object_new_string(v ? v : ""));
}

/* One token's text on its own (invalid UTF-8 shown as U+FFFD), new string. */
static char *token_text(const struct tokenizer *t, int32_t id)
{
    char *s = NULL;
    size_t len;
    if (tokenizer_decode(t, &id, 1, &s, &len) != TOKENIZER_OK)
        return strdup("");
    return s;
}

static json_object *token_bytes(const struct tokenizer *t, int32_t id)
{
    json_object *a = json_object_new_array();
    size_t len = 0;
    const char *b = tokenizer_token_bytes(t, id, &len);
    for (size_t i = 0; a && b && i < len; i++)
        json_object_array_add(a, json_object_new_int((unsigned char)b[i]));
    return a;
}

static json_object *lp_value(float lp)
{
    return isfinite(lp) ? json_object_new_double(lp) : isnan(lp) ? NULL : json_object_new_double(-9999.0);
}

/* A whole answer with logprobs holds, per token, a tree of up to 60 JSON
 * objects (top_logprobs 20, each with its bytes): n = 16 x 100 tokens took
 * 69 MB for a 2.8 MB answer. frozen() replaces such a tree, once built, by
 * one small node that prints the tree's text, so the answer's working
 * memory is its text and not many times that. */
struct frozen_text {
    size_t len;
    char s[];
};

static int frozen_print(json_object *o, struct printbuf *pb, int level, int flags)
{
    (void)level;
    (void)flags;
    const struct frozen_text *f = json_object_get_userdata(o);
    return printbuf_memappend(pb, f->s, (int)f->len) < 0 ? -1 : 0;
}

static void frozen_free(json_object *o, void *ud)
{
    (void)o;
    free(ud);
}

/* Takes o and returns a node that prints as o printed with the flags of
 * resp_json and sse_json (plain, no slash escapes), o freed; o itself when out
 * of memory, NULL for NULL. */
static json_object *frozen(json_object *o)
{
    size_t len = 0;
    const char *s = o ? json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE,
                                                          &len) : NULL;
    struct frozen_text *f = s && len < INT_MAX ? malloc(sizeof *f + len) : NULL;
    json_object *n = f ? json_object_new_boolean(0) : NULL;
    if (!n) {
        free(f);
        return o;
    }
    f->len = len;
    memcpy(f->s, s, len);
    json_object_set_serializer(n, frozen_print, f, frozen_free);
    json_object_put(o);
    return n;
}

/* OpenAI chat logprobs entry: {"token","logprob","bytes","top_logprobs":[...]} */
static json_object *chat_logprob(const struct lcall *lc, const struct tokrec *t)
{
    json_object *o = json_object_new_object(), *top = json_object_new_array();
    char *s = token_text(lc->tok, t->id);
    add_str(o, "token", s);
    free(s);
    json_object_object_add(o, "logprob", lp_value(t->logprob));
    json_object_object_add(o, "bytes", token_bytes(lc->tok, t->id));
    for (int i = 0; i < t->n_top && i < lc->top_n; i++) {
        json_object *e = json_object_new_object();
        char *ts = token_text(lc->tok, t->top[i].id);
        add_str(e, "token", ts);
        free(ts);
        json_object_object_add(e, "logprob", lp_value(t->top[i].logprob));
        json_object_object_add(e, "bytes", token_bytes(lc->tok, t->top[i].id));
        json_object_array_add(top, e);
    }
    json_object_object_add(o, "top_logprobs", top);
    return o;
}

/* OpenAI completions logprobs: {"tokens","token_logprobs","top_logprobs","text_offset"} over recs. */
static json_object *completion_logprobs(const struct lcall *lc, const struct tokrec *recs, size_t n, long *offset)
{
    json_object *o = json_object_new_object(), *toks = json_object_new_array(), *lps = json_object_new_array(),
                *tops = json_object_new_array(), *offs = json_object_new_array();
    for (size_t i = 0; i < n; i++) {
        char *s = token_text(lc->tok, recs[i].id);
        json_object_array_add(toks, json_object_new_string(s));
        json_object_array_add(lps, lp_value(recs[i].logprob));
        json_object_array_add(offs, json_object_new_int64(*offset));
        for (const char *p = s; *p; p++)     /* offsets count characters, as Python sees the text */
            *offset += ((unsigned char)*p & 0xc0) != 0x80;
        free(s);
        if (isnan(recs[i].logprob)) {
            json_object_array_add(tops, NULL);
            continue;
        }
        json_object *d = json_object_new_object();
        for (int k = 0; k < recs[i].n_top && k < lc->top_n; k++) {
            char *ts = token_text(lc->tok, recs[i].top[k].id);
            json_object_object_add(d, ts, lp_value(recs[i].top[k].logprob));
            free(ts);
        }
        json_object_array_add(tops, frozen(d));
    }
    json_object_object_add(o, "tokens", toks);
    json_object_object_add(o, "token_logprobs", lps);
    json_object_object_add(o, "top_logprobs", tops);
    json_object_object_add(o, "text_offset", offs);
    return o;
}

/* TGI token object {"id","text","logprob","special"}; the token's own text when text is NULL. */
static json_object *tgi_token(const struct lcall *lc, int32_t id, float lp, const char *text)
{
    char *own = text ? NULL : token_text(lc->tok, id);
    json_object *o = answer_tgi_token(id, text ? text : own, true, lp, tokenizer_is_special(lc->tok, id));
    free(own);
    return o;
}

static json_object *tgi_top_tokens(const struct lcall *lc, const struct tokrec *t)
{
    json_object *a = json_object_new_array();
    for (int i = 0; i < t->n_top && i < lc->top_n; i++)
        json_object_array_add(a, tgi_token(lc, t->top[i].id, t->top[i].logprob, NULL));
    return a;
}

static long completion_tokens(const struct lcall *lc)
{
    long n = 0;
    for (int i = 0; i < lc->n_seqs; i++)
        n += lc->ch[i].generated;
    return n;
}

static long prompt_tokens(const struct lcall *lc)
{
    long n = 0;
    for (int i = 0; i < lc->n_prompts; i++)
        n += lc->prompts[i].n;
    return n;
}

/* Prompt tokens whose prefill the prefix cache saved: per prompt, the most
 * any of its sequences took (they share the prompt; usage counts it once). */
static long cached_tokens(const struct lcall *lc)
{
    long n = 0;
    for (int p = 0; p < lc->n_prompts; p++) {
        int most = 0;
        for (int i = 0; i < lc->n_seqs; i++)
            if (lc->ch[i].prompt == p && lc->ch[i].cached > most)
                most = lc->ch[i].cached;
        n += most;
    }
    return n;
}

static struct answer_usage usage(const struct lcall *lc)
{
    return (struct answer_usage){.prompt = prompt_tokens(lc), .completion = completion_tokens(lc),
                                 .cached = cached_tokens(lc)};
}

/* What every OpenAI object of this call shares. */
static struct answer_meta meta(const struct lcall *lc)
{
    return (struct answer_meta){.kind = lc->kind, .id = lc->id, .created = lc->created, .model = lc->model,
                                .fingerprint = lc->fingerprint};
}

/* The prompt text for echo / return_full_text ("" for token-id prompts). */
static char *prompt_text(const struct lcall *lc, int i)
{
    const struct prompt *p = &lc->prompts[i];
    if (p->text)
        return strdup(p->text);
    char *s = NULL;
    size_t len;
    if (tokenizer_decode(lc->tok, p->ids, (size_t)p->n, &s, &len) != TOKENIZER_OK)
        return strdup("");
    return s;
}

/* A choice's text, its prompt first when with_prompt (echo,
 * return_full_text). New string. */
static char *joined_text(struct lcall *lc, const struct choice *c, bool with_prompt)
{
    char *prefix = with_prompt ? prompt_text(lc, c->prompt) : NULL;
    size_t a = prefix ? strlen(prefix) : 0;
    char *s = malloc(a + c->text.len + 1);
    if (s) {
        memcpy(s, prefix ? prefix : "", a);
        memcpy(s + a, c->text.s ? c->text.s : "", c->text.len);
        s[a + c->text.len] = '\0';
    }
    free(prefix);
    return s;
}

static json_object *whole_openai(struct lcall *lc)
{
    bool chat = lc->kind == CK_CHAT;
    struct answer_choice *ac = calloc((size_t)lc->n_seqs, sizeof *ac);
    char **texts = calloc((size_t)lc->n_seqs, sizeof *texts);
    if (!ac || !texts) {
        free(ac);
        free(texts);
        return NULL;
    }
    for (int i = 0; i < lc->n_seqs; i++) {
        struct choice *c = &lc->ch[i];
        ac[i].finish = c->finish;
        if (chat) {
            ac[i].text = c->text.s;
            /* tool_choice required / named: the text is the call */
            ac[i].tool_calls = lc->st.tool ? structured_tool_calls(&lc->st, c->text.s ? c->text.s : "", c->text.len,
                                                                   false) : NULL;
            if (lc->want_logprobs) {
                json_object *lp = json_object_new_object();
                json_object *content = json_object_new_array();
                for (size_t t = 0; t < c->toks.n; t++)
                    json_object_array_add(content, frozen(chat_logprob(lc, &c->toks.v[t])));
                json_object_object_add(lp, "content", content);
                ac[i].logprobs = lp;
            }
        } else {
            texts[i] = joined_text(lc, c, lc->g->echo);
            ac[i].text = texts[i];
            if (lc->want_logprobs) {
                long off = 0;
                struct tokvec all = {0};
                if (lc->g->echo)
                    for (size_t t = 0; t < c->prefill.n; t++)
                        tv_add(&all, &(struct sample_out){.id = c->prefill.v[t].id, .logprob = c->prefill.v[t].logprob});
                for (size_t t = 0; t < c->toks.n; t++) {
                    struct sample_out so = {.id = c->toks.v[t].id, .logprob = c->toks.v[t].logprob,
                                            .n_top = c->toks.v[t].n_top};
                    memcpy(so.top, c->toks.v[t].top, sizeof so.top);
                    tv_add(&all, &so);
                }
                ac[i].logprobs = completion_logprobs(lc, all.v, all.n, &off);
                free(all.v);
            }
        }
    }
    struct answer_meta m = meta(lc);
    struct answer_usage u = usage(lc);
    json_object *o = answer_openai(&m, ac, (size_t)lc->n_seqs, &u);
    for (int i = 0; i < lc->n_seqs; i++)
        free(texts[i]);
    free(texts);
    free(ac);
    return o;
}

static json_object *tgi_details(struct lcall *lc, const struct choice *c, bool stream)
{
    struct answer_tgi_details d = {.finish = c->finish, .generated = c->generated, .has_seed = lc->sampling,
                                   .seed = lc->seed, .stream = stream, .input_length = lc->prompts[0].n};
    if (!stream) {
        d.prefill = json_object_new_array();
        d.tokens = json_object_new_array();
        for (size_t i = 0; i < c->prefill.n; i++)
            json_object_array_add(d.prefill, frozen(tgi_token(lc, c->prefill.v[i].id, c->prefill.v[i].logprob, NULL)));
        for (size_t i = 0; i < c->toks.n; i++)
            json_object_array_add(d.tokens, frozen(tgi_token(lc, c->toks.v[i].id, c->toks.v[i].logprob, NULL)));
        if (lc->top_n > 0) {
            d.top_tokens = json_object_new_array();
            for (size_t i = 0; i < c->toks.n; i++)
                json_object_array_add(d.top_tokens, frozen(tgi_top_tokens(lc, &c->toks.v[i])));
        }
    }
    return answer_tgi_details(&d);
}

static json_object *whole_tgi(struct lcall *lc)
{
    struct choice *c = &lc->ch[0];
    struct answer_meta m = meta(lc);
    char *text = joined_text(lc, c, lc->g->return_full_text);
    json_object *details = lc->kind != CK_LEGACY && lc->g->details ? tgi_details(lc, c, false) : NULL;
    json_object *o = answer_tgi(&m, text, details, lc->variant == 2);   /* POST / answers a list */
    free(text);
    return o;
}

/* TGI's timing headers. */
static void tgi_headers(struct lcall *lc, bool whole)
{
    struct req *r = lc->r;
    int64_t now = util_now_ns();
    resp_header(r, "x-compute-type", "%s", lc->m->info->backend);
    resp_header(r, "x-model-id", "%s", lc->model);
    if (!whole)
        return;
    long gen = completion_tokens(lc);
    double total = (double)(now - lc->t0) / 1e6, valid = (double)(lc->t_validated - lc->t0) / 1e6,
           queue = (double)lc->queued_ns / 1e6, infer = total - valid - queue;
    resp_header(r, "x-compute-time", "%.6f", total / 1e3);
    resp_header(r, "x-compute-characters", "%zu", lc->prompts[0].text ? strlen(lc->prompts[0].text) : 0);
    resp_header(r, "x-total-time", "%.0f", total);
    resp_header(r, "x-validation-time", "%.0f", valid);
    resp_header(r, "x-queue-time", "%.0f", queue);
    resp_header(r, "x-inference-time", "%.0f", infer);
    resp_header(r, "x-time-per-token", "%.0f", gen ? infer / (double)gen : 0.0);
    resp_header(r, "x-prompt-tokens", "%ld", prompt_tokens(lc));
    resp_header(r, "x-generated-tokens", "%ld", gen);
}

/* ------------------------------------------------------------------ streaming */

static int send_json(struct lcall *lc, json_object *o)
{
    if (!o)
        return -1;
    int rc = sse_json(&lc->sse, NULL, o);
    json_object_put(o);
    return rc;
}

/* One OpenAI stream chunk with one choice: the chat delta (taken over) or
 * the completion's text, with logprobs (taken over, may be NULL). */
static json_object *chunk(struct lcall *lc, int index, json_object *delta, const char *text, json_object *logprobs,
                          enum finish f, bool tool_calls)
{
    struct answer_meta m = meta(lc);
    return answer_chunk(&m, index, delta, text, logprobs, f, tool_calls);
}

/* The stream's headers and opening events. */
static int stream_begin(struct lcall *lc)
{
    lc->started = true;
    if (lc->r->dialect == DIALECT_TGI)
        tgi_headers(lc, false);
    if (sse_begin(&lc->sse, lc->r, lc->r->cfg->sse_keepalive_ms) < 0)
        return -1;
    for (int i = 0; i < lc->n_seqs; i++) {
        if (lc->kind == CK_CHAT) {
            if (send_json(lc, chunk(lc, i, answer_delta("assistant", "", NULL), NULL, NULL, FIN_NONE, false)) < 0)
                return -1;
        } else if (lc->kind == CK_COMPLETION && lc->g->echo) {
            char *t = prompt_text(lc, lc->ch[i].prompt);
            int rc = send_json(lc, chunk(lc, i, NULL, t, NULL, FIN_NONE, false));
            free(t);
            if (rc < 0)
                return -1;
        }
    }
    return 0;
}

/* One generated token as a stream event. */
static int stream_token(struct lcall *lc, int i, const struct eevent *ev, const char *text)
{
    struct choice *c = &lc->ch[i];
    bool finish = ev->finish != FIN_NONE;
    struct tokrec rec = {.id = ev->tok.id, .logprob = ev->tok.logprob, .n_top = ev->tok.n_top};
    memcpy(rec.top, ev->tok.top, sizeof rec.top[0] * (size_t)ev->tok.n_top);
    if (lc->kind == CK_CHAT && lc->st.tool) {  /* the call is sent whole once the text is complete */
        if (!finish)
            return 0;
        json_object *calls = structured_tool_calls(&lc->st, c->text.s ? c->text.s : "", c->text.len, true);
        bool is_call = calls != NULL;
        json_object *d = answer_delta(NULL, calls ? NULL : c->text.s ? c->text.s : "", calls);
        if (send_json(lc, chunk(lc, i, d, NULL, NULL, FIN_NONE, false)) < 0)
            return -1;
        return send_json(lc, chunk(lc, i, NULL, NULL, NULL, ev->finish, is_call));
    }
    if (lc->kind == CK_CHAT) {
        if (ev->text_len || lc->want_logprobs) {
            json_object *lp = NULL;
            if (lc->want_logprobs) {
                lp = json_object_new_object();
                json_object *content = json_object_new_array();
                json_object_array_add(content, chat_logprob(lc, &rec));
                json_object_object_add(lp, "content", content);
            }
            if (send_json(lc, chunk(lc, i, answer_delta(NULL, text ? text : "", NULL), NULL, lp, FIN_NONE, false)) < 0)
                return -1;
        }
        if (finish && send_json(lc, chunk(lc, i, NULL, NULL, NULL, ev->finish, false)) < 0)
            return -1;
        return 0;
    }
    if (lc->kind == CK_COMPLETION) {
        if (ev->text_len || lc->want_logprobs || finish) {
            long off = 0;
            json_object *lp = lc->want_logprobs ? completion_logprobs(lc, &rec, 1, &off) : NULL;
            if (send_json(lc, chunk(lc, i, NULL, text, lp, ev->finish, false)) < 0)
                return -1;
        }
        return 0;
    }
    /* TGI: one event per token; the last carries generated_text and details. */
    bool special = tokenizer_is_special(lc->tok, ev->tok.id);     /* TGI shows <|endoftext|> as its own text */
    json_object *token = tgi_token(lc, ev->tok.id, ev->tok.logprob, special ? NULL : text);
    json_object *top = lc->top_n > 0 ? tgi_top_tokens(lc, &rec) : NULL;
    char *full = finish ? joined_text(lc, c, lc->g->return_full_text) : NULL;
    json_object *o = answer_tgi_event(++lc->tgi_index, token, true, top, full ? full : finish ? "" : NULL,
                                      finish ? tgi_details(lc, c, true) : NULL);
    free(full);
    return send_json(lc, o);
}

/* An error after the stream started: an error event, then a clean end. */
static void stream_error(struct lcall *lc, const char *msg)
{
    json_object *o = json_object_new_object();
    if (lc->r->dialect == DIALECT_OPENAI) {
        json_object *e = json_object_new_object();
        add_str(e, "message", msg);
        add_str(e, "type", "server_error");
        json_object_object_add(e, "param", NULL);
        json_object_object_add(e, "code", NULL);
        json_object_object_add(o, "error", e);
    } else {
        add_str(o, "error", msg);
        add_str(o, "error_type", "generation");
    }
    if (send_json(lc, o) == 0 && lc->r->dialect == DIALECT_OPENAI)
        sse_event(&lc->sse, NULL, "[DONE]", 6);
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
        tv_add(&c->prefill, &ev->tok);
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
    if (c->text.nomem || (lc->keep_tokens && tv_add(&c->toks, &ev->tok) < 0)) {
        c->err_status = 500;
        snprintf(c->err, sizeof c->err, "out of memory");
    }
    if (ev->finish != FIN_NONE) {
        c->finish = ev->finish;
        c->done = true;
        lc->n_done++;
    }
    if (lc->stream && !c->err_status && stream_token(lc, ev->index, ev, text) < 0)
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
            return answer_error(lc, 429, NULL, "Model is overloaded"), -1;
        return answer_error(lc, 429, NULL,
                            "model %s is at capacity (max_concurrent %ld running, max_queue %ld waiting); retry "
                            "after a moment", lc->model, (long)lc->m->max_concurrent, lc->m->set.max_queue), -1;
    case ENGINE_EINVAL:
        return answer_error(lc, 400, NULL, "%s", err), -1;
    case ENGINE_ESTOPPED:
        return answer_error(lc, 503, NULL, "model %s is being unloaded; try again", lc->model), -1;
    default:
        return answer_error(lc, 500, NULL, "out of memory"), -1;
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
    if (check_unsupported(lc, body) < 0)
        return 0;
    int st_status = 0;
    const char *st_param = NULL;
    char st_err[600];
    if (structured_read(body, lc->kind, &lc->st, &st_status, &st_param, st_err, sizeof st_err) < 0)
        return answer_error(lc, st_status, st_param, "%s", st_err);
    lc->gp.constraint = lc->st.dfa;
    if (!(lc->m = acquire_model(lc)))
        return 0;
    lc->tok = lc->m->tok;
    answer_fingerprint(lc->fingerprint, sizeof lc->fingerprint, lc->m->info->backend);
    if (read_prompts(lc) < 0 || read_sampling(lc) < 0 || check_lengths(lc) < 0)
        return 0;
    lc->n_per_prompt = lc->kind == CK_CHAT || lc->kind == CK_COMPLETION ? (int)lc->g->n : 1;
    lc->n_seqs = lc->n_prompts * lc->n_per_prompt;
    /* One request takes at most the running batch, so it never holds the queue too. */
    int cap = lc->m->max_concurrent < MAX_SEQS ? lc->m->max_concurrent : MAX_SEQS;
    if (lc->n_seqs > cap)
        return answer_error(lc, 400, "n", "%d sequences (prompts x n) in one request; this model takes at most %d",
                            lc->n_seqs, cap);
    lc->ch = calloc((size_t)lc->n_seqs, sizeof *lc->ch);
    lc->chan = echan_new();
    if (!lc->ch || !lc->chan)
        return answer_error(lc, 500, NULL, "out of memory");
    lc->t_validated = util_now_ns();
    lc->deadline_ns = lc->t_validated + lc->m->set.timeout_ms * 1000000;
    if (submit(lc) < 0)
        return 0;
    lc->submitted = true;
    if (lc->stream && stream_begin(lc) < 0)
        return -1;
    if (pump(lc) < 0) {
        r->client_gone = true;
        log_info("request %s: the client went away; its %d sequence(s) are cancelled", r->id, lc->n_seqs);
        return -1;
    }
    struct choice *bad = failed(lc);
    if (lc->stream) {
        if (bad) {
            stream_error(lc, bad->err);
        } else if (lc->r->dialect == DIALECT_OPENAI) {
            if (lc->g->include_usage) {
                struct answer_meta m = meta(lc);
                struct answer_usage u = usage(lc);
                if (send_json(lc, answer_usage_chunk(&m, &u)) < 0)
                    return -1;
            }
            sse_event(&lc->sse, NULL, "[DONE]", 6);
        }
        return r->client_gone ? -1 : 0;
    }
    if (bad)
        return answer_error(lc, bad->err_status, NULL, "%s", bad->err);
    json_object *o;
    if (r->dialect == DIALECT_OPENAI) {
        o = whole_openai(lc);
    } else {
        tgi_headers(lc, true);
        o = whole_tgi(lc);
    }
    if (!o)
        return answer_error(lc, 500, NULL, "out of memory");
    int rc = resp_json(r, 200, o);
    json_object_put(o);
    return rc;
}

int local_generate(struct req *r, enum client_kind kind, int variant, json_object *body, struct gen *g,
                   const char *model)
{
    struct lcall lc = {.r = r, .kind = kind, .variant = variant, .g = g, .model = model, .t0 = r->start_ns,
                       .created = (int64_t)time(NULL), .stream = g->stream && kind != CK_LEGACY};
    util_random_hex(lc.id, 12);
    int rc = run(&lc, body);
    if (lc.submitted) {                         /* it reached the engine: report what it used */
        r->tokens_in = prompt_tokens(&lc);
        r->tokens_out = completion_tokens(&lc);
        metrics_tokens(r->model_label, r->tokens_in, r->tokens_out);
    }
    lcall_free(&lc);
    return r->client_gone ? -1 : rc;
}

/* ------------------------------------------------------------------ /info, /tokenize */

/* The model of /info and /tokenize: ?model= or "model" in the body, else the default. */
static const char *pick_model(struct req *r, json_object *body, char *buf, size_t len)
{
    json_object *v;
    if (req_query(r, "model", buf, len) && *buf)
        return buf;
    if (body && (v = field(body, "model")) && json_object_is_type(v, json_type_string)) {
        snprintf(buf, len, "%s", json_object_get_string(v));
        return buf;
    }
    return r->cfg->default_model;
}

static struct lmodel *model_for(struct req *r, json_object *body)
{
    char buf[REQ_PARAM_MAX];
    const char *name = pick_model(r, body, buf, sizeof buf);
    struct lcall lc = {.r = r, .model = name};
    if (!name) {
        resp_error(r, r->dialect == DIALECT_OPENAI ? 400 : 422,
                   "name a model (?model=NAME); this server has no default_model");
        return NULL;
    }
    if (auth_check_model(r, name) != FRONT_OK)
        return NULL;
    if (!registry_is_local(r->cfg, name)) {
        resp_model_not_found(r, name);
        return NULL;
    }
    return acquire_model(&lc);
}

int route_info(struct req *r)
{
    struct lmodel *m = model_for(r, NULL);
    if (!m)
        return r->client_gone ? -1 : 0;
    json_object *o = json_object_new_object();
    add_str(o, "model_id", m->name);
    json_object_object_add(o, "model_sha", NULL);
    add_str(o, "model_dtype", ckpt_dtype_name(m->info->weight_dtype));
    add_str(o, "model_device_type", m->info->backend);
    add_str(o, "model_pipeline_tag", "text-generation");
    json_object_object_add(o, "max_concurrent_requests", json_object_new_int64(m->max_concurrent + m->set.max_queue));
    json_object_object_add(o, "max_best_of", json_object_new_int(1));
    json_object_object_add(o, "max_stop_sequences", json_object_new_int(STOPSEQ_MAX));
    json_object_object_add(o, "max_input_tokens", json_object_new_int(m->max_input));
    json_object_object_add(o, "max_input_length", json_object_new_int(m->max_input));
    json_object_object_add(o, "max_total_tokens", json_object_new_int(m->max_total));
    json_object_object_add(o, "max_batch_total_tokens", json_object_new_int64(m->info->kv_blocks * (int64_t)m->info->kv_block_tokens));
    json_object_object_add(o, "max_batch_size", json_object_new_int64(m->max_concurrent));
    json_object_object_add(o, "max_client_batch_size", json_object_new_int(1));
    json_object_object_add(o, "max_waiting_tokens", json_object_new_int(0));
    json_object_object_add(o, "validation_workers", json_object_new_int(r->srv->threads));
    add_str(o, "router", "llmcgi");
    add_str(o, "version", PACKAGE_VERSION);
    json_object_object_add(o, "sha", NULL);
    json_object_object_add(o, "docker_label", NULL);
    registry_put(models(r), m);
    int rc = resp_json(r, 200, o);
    json_object_put(o);
    return rc;
}

/* POST /tokenize: the tokens of `inputs`, as TGI lists them. Bounded as
 * generation is: an input over the model's max_input_tokens is TGI's 422
 * (refused before encoding when its length alone proves it), so neither
 * the working memory nor the answer (at most max_input_tokens entries)
 * grows with what a client sends. */
int route_tokenize(struct req *r)
{
    json_object *body = req_json_body(r);
    if (!body)
        return r->client_gone ? -1 : 0;
    json_object *in = field(body, "inputs");
    if (!in || !json_object_is_type(in, json_type_string)) {
        json_object_put(body);
        return resp_error_tgi(r, 422, "validation", "`inputs` must be a string");
    }
    struct lmodel *m = model_for(r, body);
    if (!m) {
        json_object_put(body);
        return r->client_gone ? -1 : 0;
    }
    const char *text = json_object_get_string(in);
    size_t len = (size_t)json_object_get_string_len(in), n = 0;
    int32_t *ids = NULL;
    int rc = encode_bounded(m, text, len, m->max_input, &ids, &n);
    if (rc < 0) {
        rc = resp_error_tgi(r, 500, NULL, "cannot tokenize the input");
    } else if (rc == 1 || n > (size_t)m->max_input) {
        rc = resp_error_tgi(r, 422, "validation", "`inputs` must have less than %d tokens. Given: %s%zu",
                            m->max_input + 1, rc == 1 ? "at least " : "", n);
    } else {
        json_object *list = json_object_new_array_ext((int)n);
        size_t at = 0;
        for (size_t i = 0; list && i < n; i++) {
            json_object *t = json_object_new_object();
            size_t bl = 0;
            tokenizer_token_bytes(m->tok, ids[i], &bl);
            char *s = token_text(m->tok, ids[i]);
            size_t stop = at + bl > len ? len : at + bl;
            json_object_object_add(t, "id", json_object_new_int(ids[i]));
            add_str(t, "text", s);
            json_object_object_add(t, "start", json_object_new_int64((int64_t)at));
            json_object_object_add(t, "stop", json_object_new_int64((int64_t)stop));
            free(s);
            at = stop;
            json_object_array_add(list, t);
        }
        rc = list ? resp_json(r, 200, list) : resp_error_tgi(r, 500, NULL, "out of memory");
        json_object_put(list);
    }
    free(ids);
    registry_put(models(r), m);
    json_object_put(body);
    return rc;
}
