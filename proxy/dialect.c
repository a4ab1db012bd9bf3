/* dialect.c -- translation between the APIs clients speak and the APIs upstreams speak. */
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

static const char *str_of(json_object *v);

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
        const char *type = str_of(json_field(part, "type"));
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
    const char *type = f ? str_of(json_field(f, "type")) : "text";
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
        const char *type = str_of(json_field(m, "type")), *role = str_of(json_field(m, "role"));
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

/* ------------------------------------------------------------------ building upstream requests */

/* Also when do_sample is false: the text-generation client always sends it. */
bool dialect_tgi_samples(const struct gen *g)
{
    return (g->do_sample_given && g->do_sample) || (g->has_temperature && g->temperature != 1.0) || g->has_top_k ||
           (g->has_top_p && g->top_p < 1.0) || (g->has_typical && g->typical < 1.0);
}

/* Fields transformers serve accepts; it answers 422 to any other. */
static const char *const transformers_fields[] = {
    "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature",
    "top_p", "seed", "stop", "frequency_penalty", "presence_penalty", "logit_bias", "logprobs", "top_logprobs",
    "n", "response_format", "tools", "tool_choice", "user", "generation_config", "chat_template_kwargs",
    "parallel_tool_calls", "metadata", "store", "service_tier", "modalities", "audio",
    "prediction", "reasoning_effort", "web_search_options", "functions", "function_call",
};

/* What transformers serve (4.57) makes of a body keep_only() let through:
 * stream_options is refused under --input_validation and asks for a usage
 * chunk it never sends, so it goes; max_completion_tokens is refused there
 * and is max_tokens by another name; n 1, logprobs false and user ask for
 * nothing and are refused, so they go, as does response_format
 * {"type": "text"}. What asks for something it does not
 * do (n > 1, logprobs, presence_penalty, ...) stays: its 422 reaches the
 * client. `stop` is refused earlier (dialect_upstream_request). */
static void transformers_tidy(json_object *o)
{
    json_object *v;
    /* It answers with events whatever "stream" says, and under
     * --input_validation refuses anything but true: the gateway reads the
     * events of a non-streamed request into one answer. */
    json_object_object_add(o, "stream", json_object_new_boolean(true));
    json_object_object_del(o, "stream_options");
    json_object_object_del(o, "user");
    if (json_object_object_get_ex(o, "max_completion_tokens", &v)) {
        if (!json_object_object_get_ex(o, "max_tokens", NULL))
            json_object_object_add(o, "max_tokens", json_object_get(v));
        json_object_object_del(o, "max_completion_tokens");
    }
    if (json_object_object_get_ex(o, "n", &v) && json_object_is_type(v, json_type_int) && json_object_get_int64(v) == 1)
        json_object_object_del(o, "n");
    if (json_object_object_get_ex(o, "logprobs", &v) && json_object_is_type(v, json_type_boolean) &&
        !json_object_get_boolean(v))
        json_object_object_del(o, "logprobs");
    json_object *t = json_field(json_field(o, "response_format"), "type");   /* {"type": "text"}: the default */
    if (t && json_object_is_type(t, json_type_string) && !strcmp(json_object_get_string(t), "text"))
        json_object_object_del(o, "response_format");
}

static void keep_only(json_object *o, const char *const *keep, size_t n)
{
    size_t nd;
    do {                                        /* 64 at a time: a body may carry any number */
        char *drop[64];
        nd = 0;
        json_object_object_foreach(o, key, val) {
            (void)val;
            bool known = false;
            for (size_t i = 0; i < n && !known; i++)
                known = strcmp(key, keep[i]) == 0;
            if (!known && nd < 64)
                drop[nd++] = key;
        }
        for (size_t i = 0; i < nd; i++)
            json_object_object_del(o, drop[i]);
    } while (nd == 64);
}

/* A new object with the same members as `from`, sharing their values (one
 * more reference each): a deep copy of a large body would double its tree.
 * Only the copy's own members may be changed. NULL when out of memory. */
static json_object *shallow_copy(json_object *from)
{
    json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    json_object_object_foreach(from, key, val) {
        if (json_object_object_add(o, key, json_object_get(val)) != 0) {
            json_object_put(val);
            json_object_put(o);
            return NULL;
        }
    }
    return o;
}

static json_object *passthrough(enum upstream_call c, enum upstream_type t, json_object *body, const char *model)
{
    json_object *o = shallow_copy(body);
    if (!o)
        return NULL;
    json_object_object_del(o, "\x01stop");
    json_object *params = NULL, *list = NULL;   /* read_stop() keeps a string stop as a list here */
    if (json_object_object_get_ex(o, "parameters", &params) && json_object_is_type(params, json_type_object) &&
        json_object_object_get_ex(params, "\x01stop", &list)) {
        json_object *own = shallow_copy(params);    /* changed below: the client's stays as it was */
        if (!own || json_object_object_add(o, "parameters", own) != 0) {
            json_object_put(own);
            json_object_put(o);
            return NULL;
        }
        json_object_object_add(own, "stop", json_object_get(list));  /* TGI takes only a list */
        json_object_object_del(own, "\x01stop");
    }
    if (c == UK_TGI) {
        json_object_object_del(o, "model");     /* TGI requests name no model */
        json_object_object_del(o, "stream");    /* the path says it: /generate or /generate_stream */
        return o;
    }
    /* TGI takes a model other than its own for a LoRA adapter id and fails;
     * "tgi" is the name its Messages API documents for the served model. */
    json_add_str(o, "model", t == UPSTREAM_TGI ? "tgi" : model);
    if (t == UPSTREAM_TRANSFORMERS && c == UK_CHAT) {
        keep_only(o, transformers_fields, sizeof transformers_fields / sizeof *transformers_fields);
        transformers_tidy(o);
    }
    return o;
}

static json_object *to_tgi(enum client_kind k, const struct gen *g, char *err, size_t errlen)
{
    if (g->n > 1) {
        snprintf(err, errlen, "`n` greater than 1 is not supported by TGI upstreams");
        return NULL;
    }
    json_object *o = json_object_new_object(), *p = json_object_new_object();
    if (!o || !p) {
        json_object_put(o);
        json_object_put(p);
        return NULL;
    }
    json_add_strn(o, "inputs", g->prompt, g->prompt_len);    /* it may hold NUL */
    bool sample;
    if (k == CK_COMPLETION)                     /* OpenAI: temperature 0 is greedy, the default is 1 */
        sample = !(g->has_temperature && g->temperature == 0);
    else
        sample = dialect_tgi_samples(g);
    long max = g->max_tokens > 0 ? g->max_tokens : (k == CK_COMPLETION ? 16 : -1);
    if (max > 0)
        json_object_object_add(p, "max_new_tokens", json_object_new_int64(max));
    json_object_object_add(p, "do_sample", json_object_new_boolean(sample));
    if (sample && g->has_temperature && g->temperature > 0)
        json_object_object_add(p, "temperature", json_object_new_double(g->temperature));
    if (sample && g->has_top_p && g->top_p > 0 && g->top_p < 1)
        json_object_object_add(p, "top_p", json_object_new_double(g->top_p));
    if (sample && g->has_top_k)
        json_object_object_add(p, "top_k", json_object_new_int64(g->top_k));
    if (g->has_rep)
        json_object_object_add(p, "repetition_penalty", json_object_new_double(g->rep));
    if (g->has_freq)
        json_object_object_add(p, "frequency_penalty", json_object_new_double(g->freq));
    if (g->stop)
        json_object_object_add(p, "stop", json_object_get(g->stop));
    if (g->has_seed && g->seed >= 0)
        json_object_object_add(p, "seed", json_object_new_int64(g->seed));
    json_object_object_add(p, "details", json_object_new_boolean(true));
    json_object_object_add(p, "return_full_text", json_object_new_boolean(false));
    if (!g->stream)                             /* the prompt's tokens, for usage (TGI refuses it on streams) */
        json_object_object_add(p, "decoder_input_details", json_object_new_boolean(true));
    json_object_object_add(o, "parameters", p);
    return o;
}

static json_object *to_openai(enum client_kind k, enum upstream_call c, enum upstream_type t, const struct gen *g,
                              const char *model)
{
    json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    json_add_str(o, "model", model);
    if (c == UK_CHAT) {
        json_object *msgs = json_object_new_array(), *m = json_object_new_object();
        json_add_str(m, "role", "user");
        json_add_strn(m, "content", g->prompt, g->prompt_len);
        json_object_array_add(msgs, m);
        json_object_object_add(o, "messages", msgs);
    } else {
        json_add_strn(o, "prompt", g->prompt, g->prompt_len);
    }
    /* TGI's classic default is 20 new tokens; OpenAI servers would take
     * their own (transformers serve: 1024, past a small model's context). */
    long max = g->max_tokens > 0 ? g->max_tokens : (k == CK_TGI || k == CK_LEGACY) ? 20 : -1;
    if (max > 0)
        json_object_object_add(o, "max_tokens", json_object_new_int64(max));
    if (k == CK_COMPLETION) {
        if (g->has_temperature)
            json_object_object_add(o, "temperature", json_object_new_double(g->temperature));
        if (g->has_top_p)
            json_object_object_add(o, "top_p", json_object_new_double(g->top_p));
        if (g->n > 1)
            json_object_object_add(o, "n", json_object_new_int64(g->n));
        if (g->has_pres)
            json_object_object_add(o, "presence_penalty", json_object_new_double(g->pres));
    } else {                                    /* TGI terms: greedy unless sampling was asked for */
        bool sample = dialect_tgi_samples(g);
        json_object_object_add(o, "temperature",
                               json_object_new_double(!sample ? 0.0 : g->has_temperature ? g->temperature : 1.0));
        if (sample && g->has_top_p)
            json_object_object_add(o, "top_p", json_object_new_double(g->top_p));
    }
    if (g->has_freq)
        json_object_object_add(o, "frequency_penalty", json_object_new_double(g->freq));
    if (g->stop)
        json_object_object_add(o, "stop", json_object_get(g->stop));
    if (g->has_seed)
        json_object_object_add(o, "seed", json_object_new_int64(g->seed));
    if (t == UPSTREAM_TRANSFORMERS) {          /* always a stream, no stream_options (transformers_tidy) */
        json_object_object_add(o, "stream", json_object_new_boolean(true));
    } else if (g->stream) {
        json_object_object_add(o, "stream", json_object_new_boolean(true));
        json_object *so = json_object_new_object();
        json_object_object_add(so, "include_usage", json_object_new_boolean(true));
        json_object_object_add(o, "stream_options", so);
    }
    return o;
}

/* A Responses API request as the chat request it means, OpenAI's semantics kept. */
static json_object *responses_to_chat(const struct gen *g, const char *model)
{
    json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    json_object_object_foreach(g->owned, key, val)
        json_object_object_add(o, key, json_object_get(val));
    json_add_str(o, "model", model);
    if (g->max_tokens > 0)
        json_object_object_add(o, "max_tokens", json_object_new_int64(g->max_tokens));
    if (g->has_temperature)
        json_object_object_add(o, "temperature", json_object_new_double(g->temperature));
    if (g->has_top_p)
        json_object_object_add(o, "top_p", json_object_new_double(g->top_p));
    if (g->stream) {
        json_object_object_add(o, "stream", json_object_new_boolean(true));
        json_object *so = json_object_new_object();
        json_object_object_add(so, "include_usage", json_object_new_boolean(true));
        json_object_object_add(o, "stream_options", so);
    }
    return o;
}

/* ------------------------------------------------------------------ constraints across dialects
 *
 * The structured-output constraint a client asked for, read from its body
 * with the fields and the one-constraint rule of front/structured.c (the
 * local reader: keep the two alike), so that a request the gateway
 * translates carries it in the upstream's form, or is refused naming why:
 * never silently dropped. Pass-through requests to an upstream of the
 * client's dialect carry it as they are, and that upstream enforces it. */
enum con_kind { CON_NONE, CON_JSON, CON_REGEX, CON_TOOLS };

struct constraint {
    enum con_kind kind;
    json_object *value;         /* CON_JSON: the schema; CON_REGEX: a string; a reference: con_free */
    const char *field;          /* the client's field it came from ("response_format", "grammar", ...) */
    bool forced;                /* CON_TOOLS: tool_choice "required" or a named function */
};

static void con_free(struct constraint *con)
{
    json_object_put(con->value);
    con->value = NULL;
}

/* A schema sent as JSON text inside a string (TGI's grammar.value, vLLM's
 * guided_json), parsed as strictly as a request body, under the same bound
 * on its tree. NULL with err. */
static json_object *schema_from_text(json_object *v, const char *field, char *err, size_t errlen)
{
    const char *s = json_object_get_string(v);
    size_t len = (size_t)json_object_get_string_len(v);
    char why[200] = "";
    struct json_tree_cost cost;
    json_tree_estimate(s, len, &cost);
    if (!json_tree_fits(&cost, len)) {
        snprintf(err, errlen, "`%s` is too large a JSON text for its length", field);
        return NULL;
    }
    json_object *o = json_parse_strict(s, len, why, sizeof why);
    if (o && json_check_request(s, len, o, NULL, why, sizeof why) < 0) {
        json_object_put(o);
        o = NULL;
    }
    if (!o)
        snprintf(err, errlen, "`%s` is not a JSON schema%s%s", field, why[0] ? ": " : "", why);
    return o;
}

/* A JSON schema given as an object or as JSON text, into con. */
static int con_schema(struct constraint *con, json_object *v, const char *field, char *err, size_t errlen)
{
    con->kind = CON_JSON;
    con->value = json_object_is_type(v, json_type_string) ? schema_from_text(v, field, err, errlen) : json_object_get(v);
    return con->value ? 0 : -1;
}

/* {"type": "object"}: any JSON object (json_object, json_schema without a schema). */
static int con_any_object(struct constraint *con, char *err, size_t errlen)
{
    con->kind = CON_JSON;
    con->value = json_object_new_object();
    if (!con->value || json_object_object_add(con->value, "type", json_object_new_string("object")) != 0)
        return snprintf(err, errlen, "out of memory"), -1;
    return 0;
}

/* guided_choice: a regex matching exactly one of the strings, each escaped. */
static int con_choice(struct constraint *con, json_object *list, char *err, size_t errlen)
{
    size_t n = json_object_is_type(list, json_type_array) ? json_object_array_length(list) : 0;
    if (n == 0 || n > 256)
        return snprintf(err, errlen, "`guided_choice` must be a list of 1 to 256 strings"), -1;
    struct strbuf re = {0};
    strbuf_add(&re, "(", 1);
    for (size_t i = 0; i < n; i++) {
        json_object *c = json_object_array_get_idx(list, i);
        if (!json_object_is_type(c, json_type_string) || json_object_get_string_len(c) == 0) {
            strbuf_free(&re);
            return snprintf(err, errlen, "`guided_choice[%zu]` must be a non-empty string", i), -1;
        }
        if (i)
            strbuf_add(&re, "|", 1);
        const char *s = json_object_get_string(c);
        for (size_t j = 0, len = (size_t)json_object_get_string_len(c); j < len; j++) {
            if (s[j] && strchr("\\.^$*+?()[]{}|", s[j]))
                strbuf_add(&re, "\\", 1);
            strbuf_add(&re, s + j, 1);
        }
    }
    strbuf_add(&re, ")", 1);
    con->kind = CON_REGEX;
    con->value = re.nomem ? NULL : json_object_new_string_len(re.s, (int)re.len);
    strbuf_free(&re);
    return con->value ? 0 : (snprintf(err, errlen, "out of memory"), -1);
}

static int con_grammar(struct constraint *con, json_object *g, char *err, size_t errlen);

static int con_response_format(struct constraint *con, json_object *rf, char *err, size_t errlen)
{
    json_object *t = json_field(rf, "type");
    const char *type = t && json_object_is_type(t, json_type_string) ? json_object_get_string(t) : "";
    if (json_field(rf, "value") && (!strcmp(type, "json") || !strcmp(type, "json_object") || !strcmp(type, "regex"))) {
        int rc = con_grammar(con, rf, err, errlen);     /* TGI's Messages API form, sent to a TGI upstream */
        con->field = "response_format";
        return rc;
    }
    if (!strcmp(type, "json_object"))
        return con_any_object(con, err, errlen);
    if (!strcmp(type, "json_schema")) {
        json_object *js = json_field(rf, "json_schema"), *schema = js ? json_field(js, "schema") : NULL;
        if (!js || !json_object_is_type(js, json_type_object))
            return snprintf(err, errlen, "`response_format.json_schema` must be an object with a `schema`"), -1;
        return schema ? con_schema(con, schema, "response_format.json_schema.schema", err, errlen)
                      : con_any_object(con, err, errlen);
    }
    snprintf(err, errlen, "`response_format` type must be \"text\", \"json_object\" or \"json_schema\" (got \"%.40s\")",
             type);
    return -1;
}

/* TGI's parameters.grammar. */
static int con_grammar(struct constraint *con, json_object *g, char *err, size_t errlen)
{
    json_object *t = json_field(g, "type"), *v = json_field(g, "value");
    const char *type = t && json_object_is_type(t, json_type_string) ? json_object_get_string(t) : "";
    con->field = "grammar";
    if (!v)
        return snprintf(err, errlen, "`grammar` must be {\"type\": \"json\" or \"regex\", \"value\": ...}"), -1;
    if (!strcmp(type, "json") || !strcmp(type, "json_object"))
        return con_schema(con, v, "grammar.value", err, errlen);
    if (!strcmp(type, "regex")) {
        if (!json_object_is_type(v, json_type_string))
            return snprintf(err, errlen, "`grammar.value` must be a string (a regular expression)"), -1;
        con->kind = CON_REGEX;
        con->value = json_object_get(v);
        return 0;
    }
    return snprintf(err, errlen, "`grammar` type must be \"json\" or \"regex\" (got \"%.40s\")", type), -1;
}

/* The constraint of a request of kind k (body: the client's; the Responses
 * API's: the chat request it means, g->owned). Returns 0 (con->kind
 * CON_NONE when there is none), or -1 with err. */
static int read_constraint(enum client_kind k, json_object *body, const struct gen *g, struct constraint *con,
                           char *err, size_t errlen)
{
    memset(con, 0, sizeof *con);
    if (k == CK_TGI) {
        json_object *gr = json_field(json_field(body, "parameters"), "grammar");
        return gr ? con_grammar(con, gr, err, errlen) : 0;
    }
    if (k == CK_RESPONSES) {
        json_object *rf = json_field(g->owned, "response_format");
        con->field = "text.format";
        return rf ? con_response_format(con, rf, err, errlen) : 0;
    }
    if (k != CK_CHAT && k != CK_COMPLETION)
        return 0;
    static const char *const keys[] = {"response_format", "guided_choice", "guided_regex", "guided_json", "tools"};
    json_object *tc = json_field(body, "tool_choice");
    bool tc_none = tc && json_object_is_type(tc, json_type_string) && !strcmp(json_object_get_string(tc), "none");
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        json_object *v = json_field(body, keys[i]), *t = json_field(v, "type");
        if (!v || (i == 0 && t && json_object_is_type(t, json_type_string) &&
                   !strcmp(json_object_get_string(t), "text")))         /* {"type": "text"} asks for nothing */
            continue;
        if (i == 4 && (!json_object_is_type(v, json_type_array) || json_object_array_length(v) == 0 || tc_none))
            continue;
        if (con->field)
            return snprintf(err, errlen, "`%s` and `%s` cannot be used together: one constraint per request",
                            con->field, keys[i]), -1;
        con->field = keys[i];
    }
    json_object *v = con->field ? json_field(body, con->field) : NULL;
    if (!v)
        return 0;
    if (!strcmp(con->field, "response_format"))
        return con_response_format(con, v, err, errlen);
    if (!strcmp(con->field, "guided_choice"))
        return con_choice(con, v, err, errlen);
    if (!strcmp(con->field, "guided_json"))
        return con_schema(con, v, "guided_json", err, errlen);
    if (!strcmp(con->field, "guided_regex")) {
        if (!json_object_is_type(v, json_type_string))
            return snprintf(err, errlen, "`guided_regex` must be a string (a regular expression)"), -1;
        con->kind = CON_REGEX;
        con->value = json_object_get(v);
        return 0;
    }
    con->kind = CON_TOOLS;                      /* tools, with tool_choice "auto" (the default), "required" or named */
    con->forced = tc && !(json_object_is_type(tc, json_type_string) && !strcmp(json_object_get_string(tc), "auto"));
    return 0;
}

/* {"type": "json" or "regex", "value": ...}: TGI's grammar, and its Messages API's response_format. */
static json_object *tgi_grammar(const struct constraint *con)
{
    json_object *gr = json_object_new_object();
    if (!gr)
        return NULL;
    json_add_str(gr, "type", con->kind == CON_JSON ? "json" : "regex");
    json_object_object_add(gr, "value", json_object_get(con->value));
    return gr;
}

/* Puts the constraint into the upstream request o (a new object of the
 * caller's, or a shallow copy whose top-level members may be replaced) in
 * the upstream's form, or refuses it with err. Returns 0 or -1. */
static int con_apply(enum client_kind k, enum upstream_call c, enum upstream_type t, const struct constraint *con,
                     json_object *o, char *err, size_t errlen)
{
    const char *tname = t == UPSTREAM_TGI ? "tgi" : t == UPSTREAM_OPENAI ? "openai" : "transformers-serve";
    if (t == UPSTREAM_TGI && c == UK_CHAT) {
        /* TGI's Messages API: response_format in TGI's grammar form, tools its own (OpenAI's shape) */
        static const char *const gone[] = {"guided_choice", "guided_regex", "guided_json"};
        for (size_t i = 0; i < sizeof gone / sizeof *gone; i++)
            json_object_object_del(o, gone[i]);
        json_object_object_del(o, "response_format");   /* {"type": "text"}: TGI has no such grammar */
        if (con->kind == CON_JSON || con->kind == CON_REGEX)
            json_object_object_add(o, "response_format", tgi_grammar(con));
        return 0;
    }
    if (con->kind == CON_NONE || (con->kind == CON_TOOLS && !con->forced && t != UPSTREAM_TGI))
        return 0;
    if (t == UPSTREAM_TRANSFORMERS) {
        snprintf(err, errlen, "`%s` cannot be sent to this model's upstream (type transformers-serve): transformers "
                 "serve constrains no output (its chat route refuses `response_format` and `tool_choice`)",
                 con->kind == CON_TOOLS ? "tool_choice" : con->field);
        return -1;
    }
    if (c == UK_TGI) {                          /* a completion as TGI's /generate */
        if (con->kind == CON_TOOLS) {
            snprintf(err, errlen, "`tools` cannot be sent to this model's upstream (type tgi): a completion becomes its "
                     "/generate, which takes no tools, and its tool grammar differs from OpenAI's; send tools on chat "
                     "completions");
            return -1;
        }
        json_object *p = json_field(o, "parameters");
        if (!p || json_object_object_add(p, "grammar", tgi_grammar(con)) != 0)
            return snprintf(err, errlen, "out of memory"), -1;
        return 0;
    }
    if (k == CK_TGI && c == UK_COMPLETION && con->kind == CON_JSON) {   /* TGI's grammar json on OpenAI */
        json_object *rf = json_object_new_object(), *js = json_object_new_object();
        if (!rf || !js || json_object_object_add(o, "response_format", rf) != 0) {
            json_object_put(rf);
            json_object_put(js);
            return snprintf(err, errlen, "out of memory"), -1;
        }
        json_add_str(rf, "type", "json_schema");
        json_object_object_add(rf, "json_schema", js);
        json_add_str(js, "name", "grammar");
        json_object_object_add(js, "schema", json_object_get(con->value));
        return 0;
    }
    if (k == CK_TGI && con->kind == CON_REGEX) {
        snprintf(err, errlen, "`grammar` of type regex cannot be sent to this model's upstream (type %s): the OpenAI "
                 "API has no regular-expression constraint (only `response_format` JSON schemas)", tname);
        return -1;
    }
    snprintf(err, errlen, "`%s` cannot be translated for this model's upstream (type %s)", con->field, tname);
    return -1;
}

json_object *dialect_upstream_request(enum client_kind k, enum upstream_call c, enum upstream_type t,
                                      json_object *client_body, const struct gen *g, const char *model,
                                      char *err, size_t errlen)
{
    err[0] = '\0';
    json_object *o;
    if (k == CK_EMBEDDINGS && t != UPSTREAM_OPENAI) {
        snprintf(err, errlen, "this model's upstream (type %s) has no embeddings API; only openai-type upstreams "
                 "are sent POST /v1/embeddings", t == UPSTREAM_TGI ? "tgi" : "transformers-serve");
        return NULL;
    }
    if (t == UPSTREAM_TRANSFORMERS && g->stop) {
        /* transformers serve 4.57 fails a generation with stop strings in
         * its thread and leaves the stream open, sending nothing more */
        snprintf(err, errlen, "`stop` is not supported by transformers-serve upstreams");
        return NULL;
    }
    if (dialect_same(k, c))
        o = passthrough(c, t, client_body, model);
    else if (k == CK_RESPONSES && g->untranslatable) {
        snprintf(err, errlen, "`%s` cannot be sent to this model's upstream, which has no Responses API (its "
                 "request becomes a chat completion: text messages only, stateless)", g->untranslatable);
        return NULL;
    } else if (k == CK_RESPONSES)
        o = responses_to_chat(g, t == UPSTREAM_TGI ? "tgi" : model);
    else if (!g->prompt) {
        snprintf(err, errlen, "a `prompt` list can only go to OpenAI-compatible upstreams; send one string");
        return NULL;
    } else if (c == UK_TGI)
        o = to_tgi(k, g, err, errlen);
    else
        o = to_openai(k, c, t, g, model);
    if (!o && !err[0])
        snprintf(err, errlen, "out of memory");
    /* the constraint, where the request is translated or the upstream's form differs */
    if (o && (!dialect_same(k, c) || t == UPSTREAM_TRANSFORMERS || (t == UPSTREAM_TGI && c == UK_CHAT))) {
        struct constraint con;
        if (read_constraint(k, client_body, g, &con, err, errlen) < 0 || con_apply(k, c, t, &con, o, err, errlen) < 0) {
            json_object_put(o);
            o = NULL;
        }
        con_free(&con);
    }
    return o;
}

/* ------------------------------------------------------------------ reading upstream answers */

static enum finish finish_from(const char *s)
{
    if (!s)
        return FIN_NONE;
    if (strcmp(s, "length") == 0)
        return FIN_LENGTH;
    if (strcmp(s, "stop") == 0 || strcmp(s, "eos_token") == 0)
        return FIN_EOS;
    if (strcmp(s, "stop_sequence") == 0)
        return FIN_STOP_SEQUENCE;
    return FIN_OTHER;
}

static const char *str_of(json_object *v)
{
    return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

/* str_of, and its length into *len (0 when NULL): generated text may hold NUL. */
static const char *text_of(json_object *v, size_t *len)
{
    const char *s = str_of(v);
    *len = s ? (size_t)json_object_get_string_len(v) : 0;
    return s;
}

/* ---------------------------------------------------- checking upstream answers
 *
 * Every answer and stream event from an upstream is checked here before
 * anything of it is read or relayed, on the pass-through paths as on the
 * translated ones: each field llmcgi reads or a client's API defines has
 * its type and range checked, and the first one wrong is named in err
 * ("`choices[0].message` must be an object"), for a 502 (or an error event
 * once a stream has started). Fields the APIs do not define pass as they
 * are. Token counts are whole numbers from 0 to INT32_MAX, so that sums of
 * them cannot overflow and no client sees a negative or absurd count. */

enum { T_STR = 1, T_INT = 2, T_NUM = 4, T_BOOL = 8, T_OBJ = 16, T_ARR = 32, T_NULL = 64 };

static bool type_in(json_object *v, unsigned types)
{
    switch (json_object_get_type(v)) {
    case json_type_null: return types & T_NULL;
    case json_type_string: return types & T_STR;
    case json_type_int: return types & (T_INT | T_NUM);
    case json_type_double: return types & T_NUM;
    case json_type_boolean: return types & T_BOOL;
    case json_type_object: return types & T_OBJ;
    case json_type_array: return types & T_ARR;
    }
    return false;
}

static const char *type_words(unsigned types)
{
    switch (types & ~(unsigned)T_NULL) {
    case T_STR: return types & T_NULL ? "a string or null" : "a string";
    case T_INT: return types & T_NULL ? "a whole number or null" : "a whole number";
    case T_NUM: return types & T_NULL ? "a number or null" : "a number";
    case T_BOOL: return "true or false";
    case T_OBJ: return types & T_NULL ? "an object or null" : "an object";
    case T_ARR: return types & T_NULL ? "a list or null" : "a list";
    default: return "of another type";
    }
}

/* o[key], when present, is of one of `types` (null counts as absent unless
 * T_NULL is not in types and `required`). `at` prefixes the name. */
static int check_field(json_object *o, const char *at, const char *key, unsigned types, bool required, char *err,
                       size_t errlen)
{
    json_object *v = NULL;
    bool there = json_object_object_get_ex(o, key, &v);
    if (!there || (!v && !(types & T_NULL) && !required))
        v = NULL, there = false;
    if (!there) {
        if (!required)
            return 0;
        snprintf(err, errlen, "`%s%s` is missing", at, key);
        return -1;
    }
    if (!type_in(v, types)) {
        snprintf(err, errlen, "`%s%s` must be %s", at, key, type_words(types));
        return -1;
    }
    return 0;
}

/* o[key], when present and not null, is a whole number from lo to hi. */
static int check_range(json_object *o, const char *at, const char *key, int64_t lo, uint64_t hi, char *err,
                       size_t errlen)
{
    json_object *v = json_field(o, key);
    if (!v)
        return 0;
    bool big = json_object_is_type(v, json_type_int) && json_object_get_int64(v) == INT64_MAX;
    int64_t i = json_object_get_int64(v);
    if (!json_object_is_type(v, json_type_int) || i < lo ||
        (big ? json_object_get_uint64(v) > hi : i >= 0 && (uint64_t)i > hi)) {
        snprintf(err, errlen, "`%s%s` must be a whole number from %lld to %llu", at, key, (long long)lo,
                 (unsigned long long)hi);
        return -1;
    }
    return 0;
}

static int check_count(json_object *o, const char *at, const char *key, char *err, size_t errlen)
{
    return check_range(o, at, key, 0, INT32_MAX, err, errlen);
}

static int check_usage(json_object *a, char *err, size_t errlen)
{
    json_object *u = json_field(a, "usage");
    if (check_field(a, "", "usage", T_OBJ | T_NULL, false, err, errlen) < 0)
        return -1;
    return !u ? 0
              : check_count(u, "usage.", "prompt_tokens", err, errlen) < 0 ||
                        check_count(u, "usage.", "completion_tokens", err, errlen) < 0 ||
                        check_count(u, "usage.", "total_tokens", err, errlen) < 0
                    ? -1
                    : 0;
}

/* One OpenAI choice: of a whole answer, or of a stream chunk. */
static int check_choice(enum upstream_call c, bool chunk, json_object *ch, size_t i, char *err, size_t errlen)
{
    char at[48];
    snprintf(at, sizeof at, "choices[%zu]", i);
    if (!json_object_is_type(ch, json_type_object)) {
        snprintf(err, errlen, "`%s` must be an object", at);
        return -1;
    }
    strcat(at, ".");
    if (check_range(ch, at, "index", 0, INT32_MAX, err, errlen) < 0 ||
        check_field(ch, at, "finish_reason", T_STR | T_NULL, false, err, errlen) < 0 ||
        check_field(ch, at, "logprobs", T_OBJ | T_NULL, false, err, errlen) < 0)
        return -1;
    if (c == UK_COMPLETION)
        return check_field(ch, at, "text", T_STR, !chunk, err, errlen);
    const char *key = chunk ? "delta" : "message";
    if (check_field(ch, at, key, T_OBJ, !chunk, err, errlen) < 0)
        return -1;
    json_object *m = json_field(ch, key);
    char mat[64];
    snprintf(mat, sizeof mat, "%s%s.", at, key);
    return !m ? 0
              : check_field(m, mat, "content", T_STR | T_NULL, false, err, errlen) < 0 ||
                        check_field(m, mat, "role", T_STR | T_NULL, false, err, errlen) < 0 ||
                        check_field(m, mat, "tool_calls", T_ARR | T_NULL, false, err, errlen) < 0
                    ? -1
                    : 0;
}

/* An OpenAI answer (chunk = false) or stream chunk: choices and usage. */
static int check_openai(enum upstream_call c, bool chunk, json_object *a, char *err, size_t errlen)
{
    if (check_field(a, "", "id", T_STR, false, err, errlen) < 0 ||
        check_field(a, "", "object", T_STR, false, err, errlen) < 0 ||
        check_range(a, "", "created", 0, INT64_MAX, err, errlen) < 0 ||
        check_field(a, "", "model", T_STR, false, err, errlen) < 0 ||
        check_field(a, "", "choices", T_ARR, !chunk, err, errlen) < 0 || check_usage(a, err, errlen) < 0)
        return -1;
    json_object *ch = json_field(a, "choices");
    size_t n = ch ? json_object_array_length(ch) : 0;
    if (!chunk && n == 0) {
        snprintf(err, errlen, "`choices` is empty");
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if (check_choice(c, chunk, json_object_array_get_idx(ch, i), i, err, errlen) < 0)
            return -1;
    return 0;
}

/* A TGI token: {"id","text","logprob","special"}; ids are u32 in TGI. */
static int check_tgi_token(json_object *t, const char *at, char *err, size_t errlen)
{
    if (!json_object_is_type(t, json_type_object)) {
        snprintf(err, errlen, "`%s` must be an object", at);
        return -1;
    }
    char a[80];
    snprintf(a, sizeof a, "%s.", at);
    return check_range(t, a, "id", 0, UINT32_MAX, err, errlen) < 0 ||
                   check_field(t, a, "text", T_STR, false, err, errlen) < 0 ||
                   check_field(t, a, "logprob", T_NUM | T_NULL, false, err, errlen) < 0 ||
                   check_field(t, a, "special", T_BOOL, false, err, errlen) < 0
               ? -1
               : 0;
}

static int check_tgi_tokens(json_object *o, const char *at, const char *key, char *err, size_t errlen)
{
    if (check_field(o, at, key, T_ARR | T_NULL, false, err, errlen) < 0)
        return -1;
    json_object *l = json_field(o, key);
    for (size_t i = 0; l && i < json_object_array_length(l); i++) {
        char name[80];
        snprintf(name, sizeof name, "%s%s[%zu]", at, key, i);
        if (check_tgi_token(json_object_array_get_idx(l, i), name, err, errlen) < 0)
            return -1;
    }
    return 0;
}

/* TGI's details, of a whole answer or of a stream's last event. */
static int check_tgi_details(json_object *o, char *err, size_t errlen)
{
    if (check_field(o, "", "details", T_OBJ | T_NULL, false, err, errlen) < 0)
        return -1;
    json_object *d = json_field(o, "details");
    if (!d)
        return 0;
    if (check_field(d, "details.", "finish_reason", T_STR, false, err, errlen) < 0 ||
        check_count(d, "details.", "generated_tokens", err, errlen) < 0 ||
        check_count(d, "details.", "input_length", err, errlen) < 0 ||
        check_range(d, "details.", "seed", 0, UINT64_MAX - 1, err, errlen) < 0 ||
        check_tgi_tokens(d, "details.", "prefill", err, errlen) < 0 ||
        check_tgi_tokens(d, "details.", "tokens", err, errlen) < 0 ||
        check_field(d, "details.", "top_tokens", T_ARR | T_NULL, false, err, errlen) < 0 ||
        check_field(d, "details.", "best_of_sequences", T_ARR | T_NULL, false, err, errlen) < 0)
        return -1;
    return 0;
}

/* TGI's /generate answer (one object) or /generate_stream event. */
static int check_tgi(bool event, json_object *a, char *err, size_t errlen)
{
    if (check_field(a, "", "generated_text", T_STR | (event ? T_NULL : 0), !event, err, errlen) < 0 ||
        check_tgi_details(a, err, errlen) < 0)
        return -1;
    if (!event)
        return 0;
    if (check_range(a, "", "index", 0, INT32_MAX, err, errlen) < 0 ||
        check_field(a, "", "token", T_OBJ, true, err, errlen) < 0 ||
        check_tgi_token(json_field(a, "token"), "token", err, errlen) < 0 ||
        check_field(a, "", "top_tokens", T_ARR | T_NULL, false, err, errlen) < 0)
        return -1;
    return 0;
}

/* A token count already checked: a whole number from 0 to INT32_MAX, or
 * -1 when absent. */
static long count_of(json_object *o, const char *key)
{
    json_object *v = json_field(o, key);
    return v ? (long)json_object_get_int64(v) : -1;
}

static void read_usage(json_object *o, long *prompt, long *completion)
{
    json_object *u = json_field(o, "usage");
    if (!u)
        return;
    *prompt = count_of(u, "prompt_tokens");
    *completion = count_of(u, "completion_tokens");
}

static json_object *first_choice(json_object *o)
{
    json_object *ch = json_field(o, "choices");
    return ch && json_object_array_length(ch) ? json_object_array_get_idx(ch, 0) : NULL;
}

static void read_seed(json_object *d, bool *has, int64_t *seed)
{
    json_object *v = json_field(d, "seed");
    if (v)     /* TGI's seeds are u64: kept as their bits */
        *has = true, *seed = (int64_t)json_object_get_uint64(v);
}

/* ---------------------------------------------------- the Responses API's answers */

/* A response object's usage (input_tokens, output_tokens) and finish
 * (status incomplete: the length limit), checked. */
static int responses_meta(json_object *resp, long *in, long *out, enum finish *f, const char *at, char *err,
                          size_t errlen)
{
    json_object *u = json_field(resp, "usage"), *st = json_field(resp, "status");
    if (st && !json_object_is_type(st, json_type_string)) {
        snprintf(err, errlen, "`%sstatus` must be a string", at);
        return -1;
    }
    if (u && !json_object_is_type(u, json_type_object)) {
        snprintf(err, errlen, "`%susage` must be an object", at);
        return -1;
    }
    static const char *const keys[] = {"input_tokens", "output_tokens"};
    long *dst[] = {in, out};
    for (size_t i = 0; u && i < 2; i++) {
        json_object *v = json_field(u, keys[i]);
        if (!v)
            continue;
        int64_t n = json_object_get_int64(v);
        if (!json_object_is_type(v, json_type_int) || n < 0 || n > INT32_MAX) {
            snprintf(err, errlen, "`%susage.%s` must be a whole number from 0 to %d", at, keys[i], INT32_MAX);
            return -1;
        }
        *dst[i] = (long)n;
    }
    const char *s = str_of(st);
    *f = s && !strcmp(s, "incomplete") ? FIN_LENGTH : FIN_EOS;
    return 0;
}

/* A whole response: its output_text parts joined. */
static int read_responses_result(json_object *a, struct gen_result *res, char *err, size_t errlen)
{
    json_object *out = json_field(a, "output");
    if (!out || !json_object_is_type(out, json_type_array)) {
        snprintf(err, errlen, "`output` must be a list");
        return -1;
    }
    if (responses_meta(a, &res->prompt_tokens, &res->completion_tokens, &res->finish, "", err, errlen) < 0)
        return -1;
    size_t len = 0;
    char *text = calloc(1, 1);
    for (size_t i = 0; text && i < json_object_array_length(out); i++) {
        json_object *item = json_object_array_get_idx(out, i), *content = json_field(item, "content");
        const char *type = str_of(json_field(item, "type"));
        if (!json_object_is_type(item, json_type_object) || !type) {
            snprintf(err, errlen, "`output[%zu]` must be an object with a type", i);
            free(text);
            return -1;
        }
        if (strcmp(type, "message") != 0)
            continue;
        if (!content || !json_object_is_type(content, json_type_array)) {
            snprintf(err, errlen, "`output[%zu].content` must be a list", i);
            free(text);
            return -1;
        }
        for (size_t j = 0; j < json_object_array_length(content); j++) {
            json_object *part = json_object_array_get_idx(content, j), *t = json_field(part, "text");
            const char *pt = str_of(json_field(part, "type"));
            if (!pt || strcmp(pt, "output_text") != 0)
                continue;
            if (!t || !json_object_is_type(t, json_type_string)) {
                snprintf(err, errlen, "`output[%zu].content[%zu].text` must be a string", i, j);
                free(text);
                return -1;
            }
            size_t tl = (size_t)json_object_get_string_len(t);
            char *grown = realloc(text, len + tl + 1);
            if (!grown) {
                free(text);
                text = NULL;
                break;
            }
            text = grown;
            memcpy(text + len, json_object_get_string(t), tl + 1);
            len += tl;
        }
    }
    if (!text) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    res->text = text;
    res->text_len = len;                        /* it may hold NUL */
    return 0;
}

/* One stream event: text deltas, the end (completed or incomplete, with
 * usage), failures. Other events pass unread. */
static int read_responses_delta(json_object *e, struct gen_delta *d)
{
    const char *type = str_of(json_field(e, "type"));
    if (!type) {
        snprintf(d->bad, sizeof d->bad, "an event that is not a Responses API event (no `type`)");
        return -1;
    }
    if (!strcmp(type, "error")) {
        const char *msg = str_of(json_field(e, "message"));
        d->error = msg ? msg : "the upstream reported an error";
        return 0;
    }
    if (!strcmp(type, "response.failed")) {
        const char *msg = str_of(json_field(json_field(json_field(e, "response"), "error"), "message"));
        d->error = msg ? msg : "the upstream's response failed";
        return 0;
    }
    if (!strcmp(type, "response.output_text.delta")) {
        json_object *t = json_field(e, "delta");
        if (!t || !json_object_is_type(t, json_type_string)) {
            snprintf(d->bad, sizeof d->bad, "`delta` must be a string");
            return -1;
        }
        d->text = json_object_get_string(t);
        d->text_len = (size_t)json_object_get_string_len(t);
        return 0;
    }
    if (!strcmp(type, "response.completed") || !strcmp(type, "response.incomplete")) {
        json_object *r = json_field(e, "response");
        if (!r || !json_object_is_type(r, json_type_object)) {
            snprintf(d->bad, sizeof d->bad, "`response` must be an object");
            return -1;
        }
        return responses_meta(r, &d->prompt_tokens, &d->completion_tokens, &d->finish, "response.", d->bad,
                              sizeof d->bad);
    }
    return 0;
}

int dialect_read_result(enum upstream_call c, json_object *a, struct gen_result *res, char *err, size_t errlen)
{
    memset(res, 0, sizeof *res);
    res->prompt_tokens = res->completion_tokens = -1;
    json_object *text = NULL;
    if (c == UK_TGI && a && json_object_is_type(a, json_type_array) && json_object_array_length(a) == 1)
        a = json_object_array_get_idx(a, 0);
    if (!a || !json_object_is_type(a, json_type_object)) {
        snprintf(err, errlen, "the answer is not a JSON object");
        return -1;
    }
    if (c == UK_RESPONSES)
        return read_responses_result(a, res, err, errlen);
    if (c == UK_EMBEDDINGS) {                   /* passed through: its list and its usage checked */
        json_object *data = json_field(a, "data"), *u = json_field(a, "usage");
        if (!data || !json_object_is_type(data, json_type_array)) {
            snprintf(err, errlen, "`data` must be a list");
            return -1;
        }
        if (u && !json_object_is_type(u, json_type_object)) {
            snprintf(err, errlen, "`usage` must be an object");
            return -1;
        }
        if (u && check_range(u, "usage.", "prompt_tokens", 0, INT32_MAX, err, errlen) < 0)
            return -1;
        res->prompt_tokens = u ? count_of(u, "prompt_tokens") : -1;
        res->completion_tokens = 0;
        if (!(res->text = strdup(""))) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        return 0;
    }
    if (c == UK_TGI) {
        if (check_tgi(false, a, err, errlen) < 0)
            return -1;
        text = json_field(a, "generated_text");
        json_object *d = json_field(a, "details");
        if (d) {
            res->finish = finish_from(str_of(json_field(d, "finish_reason")));
            res->completion_tokens = count_of(d, "generated_tokens");
            read_seed(d, &res->has_seed, &res->seed);
            json_object *prefill = json_field(d, "prefill");
            if (prefill && json_object_array_length(prefill))
                res->prompt_tokens = (long)json_object_array_length(prefill);
            else
                res->prompt_tokens = count_of(d, "input_length");
        }
    } else {
        if (check_openai(c, false, a, err, errlen) < 0)
            return -1;
        json_object *ch = first_choice(a);
        if (c == UK_CHAT) {
            text = json_field(json_field(ch, "message"), "content");
        } else {
            text = json_field(ch, "text");
        }
        res->finish = finish_from(str_of(json_field(ch, "finish_reason")));
        read_usage(a, &res->prompt_tokens, &res->completion_tokens);
    }
    size_t n = 0;
    const char *s = text_of(text, &n);
    if (!(res->text = malloc(n + 1))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    memcpy(res->text, s ? s : "", n);
    res->text[n] = '\0';
    res->text_len = n;
    return 0;
}

void gen_result_free(struct gen_result *res)
{
    free(res->text);
    res->text = NULL;
}

int dialect_read_delta(enum upstream_call c, json_object *e, struct gen_delta *d)
{
    memset(d, 0, sizeof *d);
    d->token_id = -1;
    d->prompt_tokens = d->completion_tokens = -1;
    if (!e || !json_object_is_type(e, json_type_object)) {
        snprintf(d->bad, sizeof d->bad, "an event that is not a JSON object");
        return -1;
    }
    if (c == UK_RESPONSES)
        return read_responses_delta(e, d);
    json_object *err = json_field(e, "error");
    if (err) {
        const char *msg = str_of(err);
        if (!msg && json_object_is_type(err, json_type_object))
            msg = str_of(json_field(err, "message"));
        d->error = msg ? msg : "the upstream reported an error";
        return 0;
    }
    if (c == UK_TGI) {
        if (!json_field(e, "token")) {
            snprintf(d->bad, sizeof d->bad, "an event that is not a TGI token event");
            return -1;
        }
        if (check_tgi(true, e, d->bad, sizeof d->bad) < 0)
            return -1;
        json_object *tok = json_field(e, "token"), *det = json_field(e, "details");
        d->text = text_of(json_field(tok, "text"), &d->text_len);
        json_object *id = json_field(tok, "id"), *lp = json_field(tok, "logprob"), *sp = json_field(tok, "special");
        if (id)
            d->token_id = (long)json_object_get_int64(id);
        if (lp)
            d->has_logprob = true, d->logprob = json_object_get_double(lp);
        d->special = sp && json_object_get_boolean(sp);
        if (det) {
            d->finish = finish_from(str_of(json_field(det, "finish_reason")));
            if (d->finish == FIN_NONE)
                d->finish = FIN_OTHER;
            d->completion_tokens = count_of(det, "generated_tokens");
            d->prompt_tokens = count_of(det, "input_length");
            read_seed(det, &d->has_seed, &d->seed);
        }
        if (d->finish == FIN_NONE && str_of(json_field(e, "generated_text")))
            d->finish = FIN_OTHER;      /* the last event, sent without details */
        return 0;
    }
    if (!json_field(e, "choices") && !json_field(e, "usage")) {
        snprintf(d->bad, sizeof d->bad, "an event that is not a %s chunk",
                 c == UK_CHAT ? "chat completion" : "completion");
        return -1;
    }
    if (check_openai(c, true, e, d->bad, sizeof d->bad) < 0)
        return -1;
    read_usage(e, &d->prompt_tokens, &d->completion_tokens);
    json_object *ch = first_choice(e);
    if (!ch)
        return 0;                       /* the usage chunk has no choices */
    if (c == UK_CHAT) {
        json_object *delta = json_field(ch, "delta");
        d->text = delta ? text_of(json_field(delta, "content"), &d->text_len) : NULL;
    } else {
        d->text = text_of(json_field(ch, "text"), &d->text_len);
    }
    d->finish = finish_from(str_of(json_field(ch, "finish_reason")));
    return 0;
}

bool dialect_error_message(json_object *b, char *buf, size_t len)
{
    const char *msg = NULL;
    json_object *e = json_field(b, "error"), *d;
    if (e && json_object_is_type(e, json_type_object))
        msg = str_of(json_field(e, "message"));
    else if (e)
        msg = str_of(e);
    if (!msg && (d = json_field(b, "detail"))) {
        msg = str_of(d);
        if (!msg && json_object_is_type(d, json_type_array) && json_object_array_length(d) > 0) {
            /* FastAPI's validation errors: [{"loc":["body","stream"],"msg":"Input should be True"}] */
            json_object *e0 = json_object_array_get_idx(d, 0), *loc = json_field(e0, "loc");
            size_t n = loc && json_object_is_type(loc, json_type_array) ? json_object_array_length(loc) : 0;
            const char *field = n ? str_of(json_object_array_get_idx(loc, n - 1)) : NULL;
            msg = str_of(json_field(e0, "msg"));
            if (msg && field) {
                snprintf(buf, len, "`%s`: %s", field, msg);
                return true;
            }
        }
    }
    if (!msg)
        msg = str_of(json_field(b, "message"));
    if (!msg)
        return false;
    snprintf(buf, len, "%s", msg);
    return true;
}
