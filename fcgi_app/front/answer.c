/* answer.c -- every client-facing generation answer and stream event, for local and proxied generations alike (answer.h). */
#include "config.h"
#include "answer.h"
#include "json_obj.h"

#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* ------------------------------------------------------------------ the Responses API */

static void add_int(json_object *o, const char *k, int64_t v)
{
    json_object_object_add(o, k, json_object_new_int64(v));
}

static json_object *output_text_part(const char *text, size_t len)
{
    json_object *p = json_object_new_object();
    if (!p)
        return NULL;
    json_add_str(p, "type", "output_text");
    json_add_strn(p, "text", text, len);
    json_object_object_add(p, "annotations", json_object_new_array());
    json_object_object_add(p, "logprobs", json_object_new_array());
    return p;
}

/* The assistant message: in progress with no content, or completed with the text. */
static json_object *message_item(const struct answer_meta *m, bool done, const char *text, size_t len, enum finish f)
{
    json_object *it = json_object_new_object(), *content = json_object_new_array();
    if (!it || !content) {
        json_object_put(it);
        json_object_put(content);
        return NULL;
    }
    char id[96];
    snprintf(id, sizeof id, "msg_%s", m->id);
    json_add_str(it, "id", id);
    json_add_str(it, "type", "message");
    json_add_str(it, "status", !done ? "in_progress" : f == FIN_LENGTH ? "incomplete" : "completed");
    json_add_str(it, "role", "assistant");
    if (done)
        json_object_array_add(content, output_text_part(text, len));
    json_object_object_add(it, "content", content);
    return it;
}

json_object *answer_response(const struct answer_meta *m, bool done, const char *text, size_t len, enum finish f,
                             const struct answer_usage *u)
{
    json_object *o = json_object_new_object(), *out = json_object_new_array();
    if (!o || !out) {
        json_object_put(o);
        json_object_put(out);
        return NULL;
    }
    const struct gen *g = m->g;
    char id[96];
    snprintf(id, sizeof id, "resp_%s", m->id);
    json_add_str(o, "id", id);
    json_add_str(o, "object", "response");
    add_int(o, "created_at", m->created);
    bool incomplete = done && f == FIN_LENGTH;
    json_add_str(o, "status", !done ? "in_progress" : incomplete ? "incomplete" : "completed");
    json_object_object_add(o, "error", NULL);
    json_object *why = NULL;
    if (incomplete && (why = json_object_new_object()))
        json_add_str(why, "reason", "max_output_tokens");
    json_object_object_add(o, "incomplete_details", why);
    json_object_object_add(o, "instructions", g && g->instructions ? json_object_new_string(g->instructions) : NULL);
    json_object_object_add(o, "max_output_tokens", g && g->max_tokens > 0 ? json_object_new_int64(g->max_tokens) : NULL);
    json_add_str(o, "model", m->model);
    if (done)
        json_object_array_add(out, message_item(m, true, text, len, f));
    json_object_object_add(o, "output", out);
    json_object_object_add(o, "parallel_tool_calls", json_object_new_boolean(false));
    json_object_object_add(o, "previous_response_id", NULL);
    json_object_object_add(o, "store", json_object_new_boolean(false));    /* stateless: nothing is kept */
    json_object_object_add(o, "temperature", json_object_new_double(g && g->has_temperature ? g->temperature : 1.0));
    json_object_object_add(o, "top_p", json_object_new_double(g && g->has_top_p ? g->top_p : 1.0));
    json_object *fmt = json_object_new_object(), *tx = json_object_new_object();
    if (fmt && tx) {
        json_add_str(fmt, "type", "text");
        json_object_object_add(tx, "format", fmt);
    } else {
        json_object_put(fmt);
    }
    json_object_object_add(o, "text", tx);
    json_add_str(o, "tool_choice", "auto");
    json_object_object_add(o, "tools", json_object_new_array());
    json_add_str(o, "truncation", "disabled");
    json_object_object_add(o, "metadata", json_object_new_object());
    json_object *usage = NULL;
    if (done && u && (usage = json_object_new_object())) {
        long p = u->prompt < 0 ? 0 : u->prompt, c = u->completion < 0 ? 0 : u->completion;
        json_object *in = json_object_new_object(), *od = json_object_new_object();
        add_int(usage, "input_tokens", p);
        if (in)
            add_int(in, "cached_tokens", u->cached < 0 ? 0 : u->cached);
        json_object_object_add(usage, "input_tokens_details", in);
        add_int(usage, "output_tokens", c);
        if (od)
            add_int(od, "reasoning_tokens", 0);
        json_object_object_add(usage, "output_tokens_details", od);
        add_int(usage, "total_tokens", p + c);
    }
    json_object_object_add(o, "usage", usage);
    return o;
}

/* An event of the given type with its sequence number. */
static json_object *rs_event(const char *type, long *seq)
{
    json_object *e = json_object_new_object();
    if (!e)
        return NULL;
    json_add_str(e, "type", type);
    add_int(e, "sequence_number", (*seq)++);
    return e;
}

/* The position members of the events about the message's text. */
static void rs_where(json_object *e, const struct answer_meta *m, bool part)
{
    char id[96];
    snprintf(id, sizeof id, "msg_%s", m->id);
    if (!e)
        return;
    if (part)
        json_add_str(e, "item_id", id);
    add_int(e, "output_index", 0);
    if (part)
        add_int(e, "content_index", 0);
}

int answer_response_head(const struct answer_meta *m, long *seq, json_object *ev[4])
{
    static const char *const types[] = {"response.created", "response.in_progress"};
    for (int i = 0; i < 2; i++)
        if ((ev[i] = rs_event(types[i], seq)))
            json_object_object_add(ev[i], "response", answer_response(m, false, NULL, 0, FIN_NONE, NULL));
    if ((ev[2] = rs_event("response.output_item.added", seq))) {
        rs_where(ev[2], m, false);
        json_object_object_add(ev[2], "item", message_item(m, false, NULL, 0, FIN_NONE));
    }
    if ((ev[3] = rs_event("response.content_part.added", seq))) {
        rs_where(ev[3], m, true);
        json_object_object_add(ev[3], "part", output_text_part("", 0));
    }
    return 4;
}

json_object *answer_response_delta(const struct answer_meta *m, long *seq, const char *delta, size_t len)
{
    json_object *e = rs_event("response.output_text.delta", seq);
    if (e) {
        rs_where(e, m, true);
        json_add_strn(e, "delta", delta, len);
        json_object_object_add(e, "logprobs", json_object_new_array());
    }
    return e;
}

int answer_response_tail(const struct answer_meta *m, long *seq, const char *text, size_t len, enum finish f,
                         const struct answer_usage *u, json_object *ev[4])
{
    if ((ev[0] = rs_event("response.output_text.done", seq))) {
        rs_where(ev[0], m, true);
        json_add_strn(ev[0], "text", text, len);
        json_object_object_add(ev[0], "logprobs", json_object_new_array());
    }
    if ((ev[1] = rs_event("response.content_part.done", seq))) {
        rs_where(ev[1], m, true);
        json_object_object_add(ev[1], "part", output_text_part(text, len));
    }
    if ((ev[2] = rs_event("response.output_item.done", seq))) {
        rs_where(ev[2], m, false);
        json_object_object_add(ev[2], "item", message_item(m, true, text, len, f));
    }
    if ((ev[3] = rs_event(f == FIN_LENGTH ? "response.incomplete" : "response.completed", seq)))
        json_object_object_add(ev[3], "response", answer_response(m, true, text, len, f, u));
    return 4;
}

const char *answer_response_type(json_object *ev)
{
    json_object *t = NULL;
    return json_object_object_get_ex(ev, "type", &t) && json_object_is_type(t, json_type_string)
               ? json_object_get_string(t) : NULL;
}

/* ------------------------------------------------------------------ embeddings */

/* A float as JSON's shortest form that reads back the same float. */
static json_object *float_number(float v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%.9g", (double)v);
    return json_object_new_double_s((double)v, buf);
}

/* The vector's little-endian float32 bytes in base64. */
static json_object *base64_vector(const float *v, int dim)
{
    size_t bytes = sizeof(float) * (size_t)dim;
    unsigned char *raw = malloc(bytes ? bytes : 1);
    char *b64 = malloc(4 * ((bytes + 2) / 3) + 1);
    json_object *o = NULL;
    if (raw && b64) {
        for (int i = 0; i < dim; i++) {
            uint32_t u;
            memcpy(&u, &v[i], 4);
            for (int k = 0; k < 4; k++)
                raw[(size_t)i * 4 + (size_t)k] = (unsigned char)(u >> (8 * k));
        }
        EVP_EncodeBlock((unsigned char *)b64, raw, (int)bytes);
        o = json_object_new_string(b64);
    }
    free(raw);
    free(b64);
    return o;
}

json_object *answer_embeddings(const char *model, const float *vecs, int n, int dim, bool base64, long prompt_tokens)
{
    json_object *o = json_object_new_object(), *data = json_object_new_array(), *u = json_object_new_object();
    if (!o || !data || !u) {
        json_object_put(o);
        json_object_put(data);
        json_object_put(u);
        return NULL;
    }
    json_add_str(o, "object", "list");
    json_object_object_add(o, "data", data);
    for (int i = 0; i < n; i++) {
        const float *v = vecs + (size_t)i * dim;
        json_object *e = json_object_new_object(), *emb = base64 ? base64_vector(v, dim) : json_object_new_array();
        if (!e || !emb || json_object_array_add(data, e) != 0) {
            json_object_put(e);
            json_object_put(emb);
            json_object_put(o);
            json_object_put(u);
            return NULL;
        }
        json_add_str(e, "object", "embedding");
        add_int(e, "index", i);
        for (int c = 0; !base64 && c < dim; c++)
            json_object_array_add(emb, float_number(v[c]));
        json_object_object_add(e, "embedding", emb);
    }
    json_add_str(o, "model", model);
    add_int(u, "prompt_tokens", prompt_tokens);
    add_int(u, "total_tokens", prompt_tokens);
    json_object_object_add(o, "usage", u);
    return o;
}
