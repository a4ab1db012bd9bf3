/* dialect.c -- translation between the APIs clients speak and the APIs upstreams speak: which upstream call serves a client request, and the client's request read into struct gen (the upstream's request: dialect_upstream.c; its answers: dialect_answer.c). */
#include "config.h"
#include "dialect.h"
#include "json_obj.h"
#include "json_strict.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
enum upstream_call dialect_call_for(enum client_kind k, enum upstream_type t)
{
    if (k == CK_EMBEDDINGS)
        return UK_EMBEDDINGS;
    if (k == CK_RESPONSES)                              /* TGI has no Responses API: chat */
        return t == UPSTREAM_TGI ? UK_CHAT : UK_RESPONSES;
    if (k == CK_CHAT || t == UPSTREAM_TRANSFORMERS)     /* transformers serve has no /v1/completions */
        return UK_CHAT;
    if (t == UPSTREAM_TGI)
        return UK_TGI;
    return UK_COMPLETION;
}

bool dialect_same(enum client_kind k, enum upstream_call c)
{
    return (k == CK_CHAT && c == UK_CHAT) || (k == CK_COMPLETION && c == UK_COMPLETION) ||
           (k == CK_TGI && c == UK_TGI) || (k == CK_RESPONSES && c == UK_RESPONSES) ||
           (k == CK_EMBEDDINGS && c == UK_EMBEDDINGS);
}

void gen_free(struct gen *g)
{
    json_object_put(g->owned);
    g->owned = NULL;
    g->messages = NULL;
}

/* ------------------------------------------------------------------ reading client requests */

static bool is_number(json_object *v)
{
    return json_object_is_type(v, json_type_double) || json_object_is_type(v, json_type_int);
}

/* A number in [lo, hi] (or (lo, hi) when open), when present. */
static int read_number(json_object *o, const char *key, bool *has, double *out, double lo, double hi, bool open,
                       char *err, size_t errlen)
{
    json_object *v = json_field(o, key);
    if (!v)
        return 0;
    double d = is_number(v) ? json_object_get_double(v) : NAN;
    if (!is_number(v) || isnan(d) || (open ? (d <= lo || d >= hi) : (d < lo || d > hi))) {
        snprintf(err, errlen, "`%s` must be a number %s %g %s %g%s", key, open ? "strictly between" : "from", lo,
                 open ? "and" : "to", hi, open ? "" : " (inclusive)");
        return -1;
    }
    *has = true;
    *out = d;
    return 0;
}

static int read_int(json_object *o, const char *key, bool *has, int64_t *out, int64_t lo, int64_t hi, char *err,
                    size_t errlen)
{
    json_object *v = json_field(o, key);
    if (!v)
        return 0;
    int64_t i = json_object_get_int64(v);
    if (!json_object_is_type(v, json_type_int) || i < lo || i > hi) {
        snprintf(err, errlen, "`%s` must be a whole number from %lld to %lld", key, (long long)lo, (long long)hi);
        return -1;
    }
    *has = true;
    *out = i;
    return 0;
}

static int read_bool(json_object *o, const char *key, bool *has, bool *out, char *err, size_t errlen)
{
    json_object *v = json_field(o, key);
    if (!v)
        return 0;
    if (!json_object_is_type(v, json_type_boolean)) {
        snprintf(err, errlen, "`%s` must be true or false", key);
        return -1;
    }
    if (has)
        *has = true;
    *out = json_object_get_boolean(v);
    return 0;
}

/* stop: a string or an array of at most 4 strings; kept as an array. */
static int read_stop(json_object *o, const char *key, struct gen *g, char *err, size_t errlen)
{
    json_object *v = json_field(o, key);
    if (!v)
        return 0;
    if (json_object_is_type(v, json_type_string)) {
        g->stop = json_object_new_array();      /* owned by the body: attached below */
        if (!g->stop)
            return -1;
        json_object_array_add(g->stop, json_object_get(v));
        json_object_object_add(o, "\x01stop", g->stop);     /* freed with the body */
        return 0;
    }
    size_t n = json_object_is_type(v, json_type_array) ? json_object_array_length(v) : 0;
    bool ok = json_object_is_type(v, json_type_array) && n <= 4;
    for (size_t i = 0; ok && i < n; i++)
        ok = json_object_is_type(json_object_array_get_idx(v, i), json_type_string) &&
             json_object_get_string_len(json_object_array_get_idx(v, i)) > 0;
    if (!ok) {
        snprintf(err, errlen, "`%s` must be a string or a list of at most 4 non-empty strings", key);
        return -1;
    }
    g->stop = n ? v : NULL;
    return 0;
}

/* A whole number into *out, left alone when absent; sets *has when given. */
static int read_long(json_object *o, const char *key, long *out, bool *has, int64_t lo, int64_t hi, char *err,
                     size_t errlen)
{
    bool given = false;
    int64_t i;
    if (read_int(o, key, &given, &i, lo, hi, err, errlen) < 0)
        return -1;
    if (given)
        *out = (long)i;
    if (has)
        *has |= given;
    return 0;
}

static int read_common_openai(json_object *b, struct gen *g, char *err, size_t errlen)
{
    if (read_long(b, "max_tokens", &g->max_tokens, NULL, 1, 1 << 30, err, errlen) < 0 ||
        read_long(b, "max_completion_tokens", &g->max_tokens, NULL, 1, 1 << 30, err, errlen) < 0 ||
        read_long(b, "n", &g->n, NULL, 1, 128, err, errlen) < 0)
        return -1;
    if (read_number(b, "temperature", &g->has_temperature, &g->temperature, 0, 2, false, err, errlen) < 0 ||
        read_number(b, "top_p", &g->has_top_p, &g->top_p, 0, 1, false, err, errlen) < 0 ||
        read_number(b, "frequency_penalty", &g->has_freq, &g->freq, -2, 2, false, err, errlen) < 0 ||
        read_number(b, "presence_penalty", &g->has_pres, &g->pres, -2, 2, false, err, errlen) < 0 ||
        read_int(b, "seed", &g->has_seed, &g->seed, INT64_MIN, INT64_MAX, err, errlen) < 0 ||
        read_bool(b, "stream", NULL, &g->stream, err, errlen) < 0 || read_stop(b, "stop", g, err, errlen) < 0)
        return -1;
    /* not read here, but checked, so that an upstream never gets what llmcgi would refuse */
    json_object *lb = json_field(b, "logit_bias");
    if (lb && !json_object_is_type(lb, json_type_object)) {
        snprintf(err, errlen, "`logit_bias` must be an object of token ids to biases from -100 to 100");
        return -1;
    }
    if (lb) {
        json_object_object_foreach(lb, tok, bias) {
            double d = json_object_get_double(bias);
            if (!*tok || strspn(tok, "0123456789") != strlen(tok) ||
                !(json_object_is_type(bias, json_type_int) || json_object_is_type(bias, json_type_double)) ||
                d < -100 || d > 100) {
                snprintf(err, errlen, "`logit_bias` must be an object of token ids to biases from -100 to 100");
                return -1;
            }
        }
    }
    static const struct { const char *key; json_type type; const char *what; } shapes[] = {
        {"user", json_type_string, "a string"}, {"tools", json_type_array, "an array"},
        {"functions", json_type_array, "an array"},
        {"response_format", json_type_object, "an object"}, {"metadata", json_type_object, "an object"},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        json_object *f = json_field(b, shapes[i].key);
        if (f && !json_object_is_type(f, shapes[i].type)) {
            snprintf(err, errlen, "`%s` must be %s", shapes[i].key, shapes[i].what);
            return -1;
        }
    }
    static const char *const choices[] = {"tool_choice", "function_call"};
    for (size_t i = 0; i < sizeof choices / sizeof *choices; i++) {
        json_object *f = json_field(b, choices[i]);
        if (f && !json_object_is_type(f, json_type_string) && !json_object_is_type(f, json_type_object)) {
            snprintf(err, errlen, "`%s` must be a string or an object", choices[i]);
            return -1;
        }
    }
    json_object *so = json_field(b, "stream_options");
    if (so && (!json_object_is_type(so, json_type_object) ||
               read_bool(so, "include_usage", NULL, &g->include_usage, err, errlen) < 0)) {
        if (!err[0])
            snprintf(err, errlen, "`stream_options` must be an object");
        return -1;
    }
    return 0;
}

static int read_tgi_parameters(json_object *p, struct gen *g, char *err, size_t errlen)
{
    if (!p)
        return 0;
    if (!json_object_is_type(p, json_type_object)) {
        snprintf(err, errlen, "`parameters` must be an object");
        return -1;
    }
    if (read_long(p, "max_new_tokens", &g->max_tokens, NULL, 1, 1 << 30, err, errlen) < 0 ||
        read_long(p, "top_k", &g->top_k, &g->has_top_k, 1, 1 << 30, err, errlen) < 0)
        return -1;
    if (read_number(p, "temperature", &g->has_temperature, &g->temperature, 0, 1e6, true, err, errlen) < 0 ||
        read_number(p, "top_p", &g->has_top_p, &g->top_p, 0, 1, true, err, errlen) < 0 ||
        read_number(p, "repetition_penalty", &g->has_rep, &g->rep, 0, 1e6, true, err, errlen) < 0 ||
        read_number(p, "frequency_penalty", &g->has_freq, &g->freq, -2, 2, false, err, errlen) < 0 ||
        read_int(p, "seed", &g->has_seed, &g->seed, 0, INT64_MAX, err, errlen) < 0 ||
        read_bool(p, "do_sample", &g->do_sample_given, &g->do_sample, err, errlen) < 0 ||
        read_bool(p, "details", NULL, &g->details, err, errlen) < 0 ||
        read_bool(p, "return_full_text", NULL, &g->return_full_text, err, errlen) < 0 ||
        read_stop(p, "stop", g, err, errlen) < 0 ||
        read_number(p, "typical_p", &g->has_typical, &g->typical, 0, 1, true, err, errlen) < 0 ||
        read_bool(p, "decoder_input_details", NULL, &g->decoder_input_details, err, errlen) < 0 ||
        read_long(p, "top_n_tokens", &g->top_logprobs, NULL, 0, 20, err, errlen) < 0 ||
        read_long(p, "truncate", &g->truncate, NULL, 1, 1 << 24, err, errlen) < 0)
        return -1;
    long best_of = 1;                           /* checked only: TGI upstreams read it themselves */
    bool wm = false;
    if (read_long(p, "best_of", &best_of, NULL, 1, 128, err, errlen) < 0 ||
        read_bool(p, "watermark", NULL, &wm, err, errlen) < 0)
        return -1;
    return 0;
}

static int read_string(json_object *b, const char *key, const char **out, size_t *len, bool required, char *err,
                       size_t errlen)
{
    json_object *v = json_field(b, key);
    if (!v) {
        if (required)
            snprintf(err, errlen, "`%s` is required", key);
        return required ? -1 : 0;
    }
    if (!json_object_is_type(v, json_type_string)) {
        snprintf(err, errlen, "`%s` must be a string", key);
        return -1;
    }
    *out = json_object_get_string(v);
    *len = (size_t)json_object_get_string_len(v);
    return 0;
}


/* One Responses API message's content: a string, or a list of text parts
 * (input_text, output_text) joined by newlines, into out (the caller frees
 * it with strbuf_free; it may hold NUL). Returns 0, or -1 with err (or
 * *untranslatable set, for parts a chat request cannot carry). */
static int responses_content(json_object *c, size_t i, struct strbuf *out, const char **untranslatable, char *err,
                             size_t errlen)
{
    if (json_object_is_type(c, json_type_string)) {
        strbuf_add(out, json_object_get_string(c), (size_t)json_object_get_string_len(c));
    } else if (!json_object_is_type(c, json_type_array)) {
        snprintf(err, errlen, "`input[%zu].content` must be a string or a list of content parts", i);
        return -1;
    }
    size_t n = json_object_is_type(c, json_type_array) ? json_object_array_length(c) : 0;
    for (size_t j = 0; j < n; j++) {
        json_object *part = json_object_array_get_idx(c, j), *text = json_field(part, "text");
        const char *type = json_str(json_field(part, "type"));
        if (type && (!strcmp(type, "input_image") || !strcmp(type, "input_file") || !strcmp(type, "input_audio"))) {
            *untranslatable = "input";          /* images and files: no text model reads them */
            continue;
        }
        if (!type || (strcmp(type, "input_text") && strcmp(type, "output_text") && strcmp(type, "text")) ||
            !json_object_is_type(text, json_type_string)) {
            snprintf(err, errlen, "`input[%zu].content[%zu]` must be {\"type\": \"input_text\", \"text\": ...}", i, j);
            return -1;
        }
        if (out->len)
            strbuf_add(out, "\n", 1);
        strbuf_add(out, json_object_get_string(text), (size_t)json_object_get_string_len(text));
    }
    if (out->nomem)
        return snprintf(err, errlen, "out of memory"), -1;
    return 0;
}

static int add_message(json_object *msgs, const char *role, const char *content, size_t len)
{
    json_object *m = json_object_new_object();
    if (!m || json_object_array_add(msgs, m) != 0) {
        json_object_put(m);
        return -1;
    }
    json_add_str(m, "role", role);
    json_add_strn(m, "content", content, len);
    return 0;
}

/* text.format -> response_format. */
static int responses_format(json_object *text, json_object *chat, char *err, size_t errlen)
{
    if (!text)
        return 0;
    json_object *f = json_field(text, "format");
    if (!json_object_is_type(text, json_type_object) || (f && !json_object_is_type(f, json_type_object))) {
        snprintf(err, errlen, "`text` must be an object, its `format` an object");
        return -1;
    }
    const char *type = f ? json_str(json_field(f, "type")) : "text";
    if (!type || (strcmp(type, "text") && strcmp(type, "json_object") && strcmp(type, "json_schema"))) {
        snprintf(err, errlen, "`text.format.type` must be text, json_object or json_schema");
        return -1;
    }
    if (!strcmp(type, "text"))
        return 0;
    json_object *rf = json_object_new_object();
    json_object_object_add(chat, "response_format", rf);
    json_add_str(rf, "type", type);
    if (!strcmp(type, "json_schema")) {         /* Responses: flat; chat: under json_schema */
        json_object *js = json_object_new_object();
        json_object_object_add(rf, "json_schema", js);
        static const char *const keys[] = {"name", "schema", "strict", "description"};
        for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
            json_object *v = json_field(f, keys[i]);
            if (v)
                json_object_object_add(js, keys[i], json_object_get(v));
        }
    }
    return 0;
}

/* POST /v1/responses: the chat request it means, into g->owned. */
static int read_responses(json_object *b, struct gen *g, char *err, size_t errlen)
{
    json_object *chat = json_object_new_object(), *msgs = json_object_new_array();
    g->owned = chat;
    if (!chat || !msgs || json_object_object_add(chat, "messages", msgs) != 0) {
        json_object_put(msgs);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    g->messages = msgs;
    size_t ilen = 0;
    if (read_string(b, "instructions", &g->instructions, &ilen, false, err, errlen) < 0)
        return -1;
    if (g->instructions && add_message(msgs, "system", g->instructions, ilen) < 0)
        return snprintf(err, errlen, "out of memory"), -1;
    json_object *in = json_field(b, "input");
    if (!in || (!json_object_is_type(in, json_type_string) && !json_object_is_type(in, json_type_array))) {
        snprintf(err, errlen, "`input` must be a string or a list of messages");
        return -1;
    }
    if (json_object_is_type(in, json_type_string) &&
        add_message(msgs, "user", json_object_get_string(in), (size_t)json_object_get_string_len(in)) < 0)
        return snprintf(err, errlen, "out of memory"), -1;
    for (size_t i = 0; json_object_is_type(in, json_type_array) && i < json_object_array_length(in); i++) {
        json_object *m = json_object_array_get_idx(in, i);
        const char *type = json_str(json_field(m, "type")), *role = json_str(json_field(m, "role"));
        if (!json_object_is_type(m, json_type_object)) {
            snprintf(err, errlen, "`input[%zu]` must be a message object", i);
            return -1;
        }
        if (type && strcmp(type, "message")) {  /* function calls, their outputs, reasoning, references */
            g->untranslatable = "input";
            continue;
        }
        if (!role || (strcmp(role, "user") && strcmp(role, "assistant") && strcmp(role, "system") &&
                      strcmp(role, "developer"))) {
            snprintf(err, errlen, "`input[%zu].role` must be user, assistant, system or developer", i);
            return -1;
        }
        struct strbuf content = {0};
        if (responses_content(json_field(m, "content"), i, &content, &g->untranslatable, err, errlen) < 0) {
            strbuf_free(&content);
            return -1;
        }
        int rc = add_message(msgs, !strcmp(role, "developer") ? "system" : role, content.s ? content.s : "",
                             content.len);
        strbuf_free(&content);
        if (rc < 0)
            return snprintf(err, errlen, "out of memory"), -1;
    }
    if (json_object_array_length(msgs) == 0 && !g->untranslatable) {
        snprintf(err, errlen, "`input` must not be empty");
        return -1;
    }
    if (read_long(b, "max_output_tokens", &g->max_tokens, NULL, 1, 1 << 30, err, errlen) < 0 ||
        read_number(b, "temperature", &g->has_temperature, &g->temperature, 0, 2, false, err, errlen) < 0 ||
        read_number(b, "top_p", &g->has_top_p, &g->top_p, 0, 1, false, err, errlen) < 0 ||
        read_bool(b, "stream", NULL, &g->stream, err, errlen) < 0 ||
        responses_format(json_field(b, "text"), chat, err, errlen) < 0)
        return -1;
    /* what a stateless server, or a chat request, cannot carry */
    static const char *const stateful[] = {"previous_response_id", "conversation", "prompt", "reasoning"};
    for (size_t i = 0; i < sizeof stateful / sizeof *stateful; i++)
        if (json_field(b, stateful[i]))
            g->untranslatable = stateful[i];
    json_object *tools = json_field(b, "tools");
    if (tools && (!json_object_is_type(tools, json_type_array) || json_object_array_length(tools) > 0))
        g->untranslatable = "tools";
    json_object *bg = json_field(b, "background");
    if (bg && json_object_get_boolean(bg))
        g->untranslatable = "background";
    g->include_usage = true;                    /* the Responses API always reports usage */
    return 0;
}

int dialect_read_request(enum client_kind k, json_object *b, struct gen *g, char *err, size_t errlen)
{
    memset(g, 0, sizeof *g);
    g->max_tokens = -1;
    g->n = 1;
    err[0] = '\0';
    json_object *v;
    switch (k) {
    case CK_CHAT:
        v = json_field(b, "messages");
        if (!v || !json_object_is_type(v, json_type_array) || json_object_array_length(v) == 0) {
            snprintf(err, errlen, "`messages` must be a non-empty list of messages");
            return -1;
        }
        for (size_t i = 0; i < json_object_array_length(v); i++) {
            json_object *m = json_object_array_get_idx(v, i), *role = NULL, *content = NULL;
            if (!json_object_is_type(m, json_type_object)) {
                snprintf(err, errlen, "`messages[%zu]` must be an object with a role and content", i);
                return -1;
            }
            /* what a message must hold is the chat template's business (or the upstream's);
             * the types of what it holds are checked here, before anything is passed on */
            if (json_object_object_get_ex(m, "role", &role) && role && !json_object_is_type(role, json_type_string)) {
                snprintf(err, errlen, "`messages[%zu].role` must be a string", i);
                return -1;
            }
            if (json_object_object_get_ex(m, "content", &content) && content &&
                !json_object_is_type(content, json_type_string) && !json_object_is_type(content, json_type_array)) {
                snprintf(err, errlen, "`messages[%zu].content` must be a string or a list of content parts", i);
                return -1;
            }
        }
        g->messages = v;
        if (read_common_openai(b, g, err, errlen) < 0 || read_bool(b, "logprobs", NULL, &g->logprobs, err, errlen) < 0)
            return -1;
        bool has_top = false;
        if (read_long(b, "top_logprobs", &g->top_logprobs, &has_top, 0, 20, err, errlen) < 0)
            return -1;
        if (has_top && !g->logprobs) {
            snprintf(err, errlen, "`top_logprobs` needs `logprobs` set to true");
            return -1;
        }
        return 0;
    case CK_COMPLETION:
        v = json_field(b, "prompt");
        if (!v) {
            snprintf(err, errlen, "`prompt` is required");
            return -1;
        }
        if (json_object_is_type(v, json_type_string)) {
            g->prompt = json_object_get_string(v);
            g->prompt_len = (size_t)json_object_get_string_len(v);
        } else if (json_object_is_type(v, json_type_array) && json_object_array_length(v) == 1 &&
                   json_object_is_type(json_object_array_get_idx(v, 0), json_type_string)) {
            g->prompt = json_object_get_string(json_object_array_get_idx(v, 0));
            g->prompt_len = (size_t)json_object_get_string_len(json_object_array_get_idx(v, 0));
        } else if (!json_object_is_type(v, json_type_array)) {
            snprintf(err, errlen, "`prompt` must be a string or a list");
            return -1;
        }                               /* other lists: passed through to OpenAI upstreams only */
        if (json_object_is_type(v, json_type_array))
            g->prompts = v;
        if (read_common_openai(b, g, err, errlen) < 0 || read_bool(b, "echo", NULL, &g->echo, err, errlen) < 0 ||
            read_long(b, "logprobs", &g->top_logprobs, &g->logprobs, 0, 5, err, errlen) < 0)
            return -1;
        return 0;
    case CK_TGI:
        if (read_string(b, "inputs", &g->prompt, &g->prompt_len, true, err, errlen) < 0)
            return -1;
        if (read_bool(b, "stream", NULL, &g->stream, err, errlen) < 0)
            return -1;
        return read_tgi_parameters(json_field(b, "parameters"), g, err, errlen);
    case CK_LEGACY: {
        if (read_string(b, "prompt", &g->prompt, &g->prompt_len, true, err, errlen) < 0)
            return -1;
        if (read_long(b, "max_new_tokens", &g->max_tokens, NULL, 1, 1 << 30, err, errlen) < 0)
            return -1;
        if (read_number(b, "temperature", &g->has_temperature, &g->temperature, 0, 1e6, false, err, errlen) < 0 ||
            read_number(b, "top_p", &g->has_top_p, &g->top_p, 0, 1, false, err, errlen) < 0 ||
            read_number(b, "repetition_penalty", &g->has_rep, &g->rep, 0, 1e6, true, err, errlen) < 0)
            return -1;
        if (g->has_temperature && g->temperature == 0)
            g->has_temperature = false, g->do_sample_given = true, g->do_sample = false;
        if (g->has_top_p && g->top_p >= 1)
            g->has_top_p = false;
        return 0;
    }
    case CK_RESPONSES:
        return read_responses(b, g, err, errlen);
    case CK_EMBEDDINGS:                         /* the upstream checks the rest */
        if (!json_field(b, "input")) {
            snprintf(err, errlen, "`input` is required: a string, a list of strings or token ids");
            return -1;
        }
        return 0;
    }
    return -1;
}

