/* answer.c -- every client-facing generation answer and stream event, for local and proxied generations alike (answer.h). */
#include "config.h"
#include "answer.h"
#include "json_obj.h"

#include <math.h>
#include <stdio.h>

/* A string member; NULL as "". */
static json_object *nullable_str(const char *s)
{
    return s ? json_object_new_string(s) : NULL;
}

void answer_fingerprint(char *buf, size_t len, const char *backend)
{
    snprintf(buf, len, "fp_llmcgi_%s_%s", PACKAGE_VERSION, backend ? backend : "");
}

const char *answer_finish_openai(enum finish f)
{
    return f == FIN_NONE ? NULL : f == FIN_LENGTH ? "length" : "stop";
}

const char *answer_finish_tgi(enum finish f)
{
    return f == FIN_LENGTH ? "length" : f == FIN_STOP_SEQUENCE ? "stop_sequence" : "eos_token";
}

/* finish_reason's word: a tool call's, unless the text ran out of length. */
static const char *finish_word(enum finish f, bool tool_calls)
{
    return tool_calls && f != FIN_LENGTH && f != FIN_NONE ? "tool_calls" : answer_finish_openai(f);
}

static json_object *usage_object(const struct answer_usage *u)
{
    json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    long p = u->prompt < 0 ? 0 : u->prompt, c = u->completion < 0 ? 0 : u->completion;
    json_object_object_add(o, "prompt_tokens", json_object_new_int64(p));
    json_object_object_add(o, "completion_tokens", json_object_new_int64(c));
    json_object_object_add(o, "total_tokens", json_object_new_int64(p + c));
    if (u->cached >= 0) {
        json_object *d = json_object_new_object();
        if (d) {
            json_object_object_add(d, "cached_tokens", json_object_new_int64(u->cached));
            json_object_object_add(o, "prompt_tokens_details", d);
        }
    }
    return o;
}

/* The head every OpenAI object shares: id, object, created, model, system_fingerprint. */
static json_object *head(const struct answer_meta *m, bool chunk)
{
    json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    bool chat = m->kind == CK_CHAT;
    char id[96];
    snprintf(id, sizeof id, "%s-%s", chat ? "chatcmpl" : "cmpl", m->id);
    json_add_str(o, "id", id);
    json_add_str(o, "object", !chat ? "text_completion" : chunk ? "chat.completion.chunk" : "chat.completion");
    json_object_object_add(o, "created", json_object_new_int64(m->created));
    json_add_str(o, "model", m->model);
    if (m->fingerprint)
        json_add_str(o, "system_fingerprint", m->fingerprint);
    return o;
}

json_object *answer_openai(const struct answer_meta *m, struct answer_choice *choices, size_t n,
                           const struct answer_usage *u)
{
    bool chat = m->kind == CK_CHAT;
    json_object *o = head(m, false), *list = json_object_new_array();
    for (size_t i = 0; i < n; i++) {
        struct answer_choice *c = &choices[i];
        json_object *e = json_object_new_object();
        if (!e || !list) {
            json_object_put(c->tool_calls);
            json_object_put(c->logprobs);
            json_object_put(e);
            continue;
        }
        json_object_object_add(e, "index", json_object_new_int((int)i));
        enum finish f = c->finish == FIN_NONE ? FIN_EOS : c->finish;
        if (chat) {
            json_object *msg = json_object_new_object();
            if (msg) {
                json_add_str(msg, "role", "assistant");
                if (c->tool_calls) {            /* tool_choice required / named: the text is the call */
                    json_object_object_add(msg, "content", NULL);
                    json_object_object_add(msg, "tool_calls", c->tool_calls);
                } else {
                    json_add_strn(msg, "content", c->text, c->text_len);
                }
            } else {
                json_object_put(c->tool_calls);
            }
            json_object_object_add(e, "message", msg);
        } else {
            json_add_strn(e, "text", c->text, c->text_len);
            json_object_put(c->tool_calls);
        }
        json_object_object_add(e, "logprobs", c->logprobs);
        json_object_object_add(e, "finish_reason", nullable_str(finish_word(f, chat && c->tool_calls)));
        json_object_array_add(list, e);
    }
    if (!o || !list) {
        json_object_put(o);
        json_object_put(list);
        return NULL;
    }
    json_object_object_add(o, "choices", list);
    json_object_object_add(o, "usage", usage_object(u));
    return o;
}

json_object *answer_delta(const char *role, const char *content, size_t content_len, json_object *tool_calls)
{
    json_object *d = json_object_new_object();
    if (!d) {
        json_object_put(tool_calls);
        return NULL;
    }
    if (role)
        json_add_str(d, "role", role);
    if (content)
        json_add_strn(d, "content", content, content_len);
    if (tool_calls)
        json_object_object_add(d, "tool_calls", tool_calls);
    return d;
}

json_object *answer_chunk(const struct answer_meta *m, int index, json_object *content, const char *text,
                          size_t text_len, json_object *logprobs, enum finish f, bool tool_calls)
{
    bool chat = m->kind == CK_CHAT;
    json_object *o = head(m, true), *choices = json_object_new_array(), *c = json_object_new_object();
    if (!o || !choices || !c) {
        json_object_put(o);
        json_object_put(choices);
        json_object_put(c);
        json_object_put(content);
        json_object_put(logprobs);
        return NULL;
    }
    json_object_object_add(c, "index", json_object_new_int(index));
    if (chat)
        json_object_object_add(c, "delta", content ? content : json_object_new_object());
    else if (content)
        json_object_object_add(c, "text", content);
    else
        json_add_strn(c, "text", text, text_len);
    json_object_object_add(c, "logprobs", logprobs);
    json_object_object_add(c, "finish_reason", nullable_str(finish_word(f, tool_calls)));
    json_object_array_add(choices, c);
    json_object_object_add(o, "choices", choices);
    return o;
}

json_object *answer_usage_chunk(const struct answer_meta *m, const struct answer_usage *u)
{
    json_object *o = head(m, true);
    if (!o)
        return NULL;
    json_object_object_add(o, "choices", json_object_new_array());
    json_object_object_add(o, "usage", usage_object(u));
    return o;
}

json_object *answer_tgi_details(const struct answer_tgi_details *d)
{
    json_object *o = json_object_new_object();
    if (!o) {
        json_object_put(d->prefill);
        json_object_put(d->tokens);
        json_object_put(d->top_tokens);
        return NULL;
    }
    json_add_str(o, "finish_reason", answer_finish_tgi(d->finish));
    json_object_object_add(o, "generated_tokens", json_object_new_int64(d->generated < 0 ? 0 : d->generated));
    json_object_object_add(o, "seed", d->has_seed ? json_object_new_uint64(d->seed) : NULL);
    if (d->stream) {
        if (d->input_length >= 0)
            json_object_object_add(o, "input_length", json_object_new_int64(d->input_length));
        json_object_put(d->prefill);
        json_object_put(d->tokens);
        json_object_put(d->top_tokens);
        return o;
    }
    json_object_object_add(o, "prefill", d->prefill ? d->prefill : json_object_new_array());
    json_object_object_add(o, "tokens", d->tokens ? d->tokens : json_object_new_array());
    if (d->top_tokens)
        json_object_object_add(o, "top_tokens", d->top_tokens);
    return o;
}

json_object *answer_tgi_token(long id, const char *text, size_t text_len, bool has_logprob, double logprob,
                              bool special)
{
    json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    json_object *lp = !has_logprob || isnan(logprob) ? NULL
                      : isfinite(logprob)              ? json_object_new_double(logprob)
                                                       : json_object_new_double(-9999.0);
    json_object_object_add(o, "id", json_object_new_int64(id));
    json_add_strn(o, "text", text, text_len);
    json_object_object_add(o, "logprob", lp);
    json_object_object_add(o, "special", json_object_new_boolean(special));
    return o;
}

json_object *answer_tgi_event(long index, json_object *token, bool with_top, json_object *top_tokens,
                              const char *final_text, size_t final_len, json_object *details)
{
    json_object *o = json_object_new_object();
    if (!o) {
        json_object_put(token);
        json_object_put(top_tokens);
        json_object_put(details);
        return NULL;
    }
    json_object_object_add(o, "index", json_object_new_int64(index));
    json_object_object_add(o, "token", token);
    if (with_top)
        json_object_object_add(o, "top_tokens", top_tokens);
    else
        json_object_put(top_tokens);
    if (final_text) {
        json_add_strn(o, "generated_text", final_text, final_len);
        json_object_object_add(o, "details", details);
    } else {
        json_object_put(details);
        json_object_object_add(o, "generated_text", NULL);
        json_object_object_add(o, "details", NULL);
    }
    return o;
}

json_object *answer_tgi(const struct answer_meta *m, const char *text, size_t text_len, json_object *details,
                       bool compat_list)
{
    if (m->kind != CK_TGI && m->kind != CK_LEGACY) {
        json_object_put(details);
        return NULL;
    }
    json_object *o = json_object_new_object();
    if (!o) {
        json_object_put(details);
        return NULL;
    }
    json_add_strn(o, "generated_text", text, text_len);
    if (m->kind == CK_LEGACY) {
        json_object_put(details);
        json_add_str(o, "model_id", m->model);
        return o;
    }
    if (details)
        json_object_object_add(o, "details", details);
    if (compat_list) {                          /* TGI's POST / answers a list */
        json_object *list = json_object_new_array();
        if (!list) {
            json_object_put(o);
            return NULL;
        }
        json_object_array_add(list, o);
        return list;
    }
    return o;
}
