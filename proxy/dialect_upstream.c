/* dialect_upstream.c -- the request an upstream is sent: the client's body passed through with the upstream's model name (and what that upstream refuses taken out), or translated into the upstream's API from the request as read (struct gen), constraints included. */
#include "config.h"
#include "dialect.h"
#include "json_obj.h"
#include "json_strict.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    char why[200];
    json_object *o = NULL;
    int rc = json_parse_embedded(json_object_get_string(v), (size_t)json_object_get_string_len(v), &o, why,
                                 sizeof why);
    if (rc == JSON_EMBEDDED_TOO_LARGE)
        snprintf(err, errlen, "`%s` is too large a JSON text for its length", field);
    else if (rc < 0)
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

