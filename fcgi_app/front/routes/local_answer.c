/* local_answer.c -- the answers of local generation: whole answers (OpenAI, TGI, with logprobs and details) and the stream's events, built from a finished or running struct lcall through answer.c's shapes. */
#include "config.h"
#include "local_call.h"
#include "answer.h"
#include "json_obj.h"
#include "response.h"
#include "tokenizer.h"

#include <json-c/printbuf.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One token's text on its own (invalid UTF-8 shown as U+FFFD), new string of *len bytes (byte 0 is a token). */
char *lcall_token_text(const struct tokenizer *t, int32_t id, size_t *len)
{
    char *s = NULL;
    *len = 0;
    if (tokenizer_decode(t, &id, 1, &s, len) != TOKENIZER_OK) {
        *len = 0;
        return strdup("");
    }
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
    size_t sl;
    char *s = lcall_token_text(lc->tok, t->id, &sl);
    json_add_strn(o, "token", s, sl);
    free(s);
    json_object_object_add(o, "logprob", lp_value(t->logprob));
    json_object_object_add(o, "bytes", token_bytes(lc->tok, t->id));
    for (int i = 0; i < t->n_top && i < lc->top_n; i++) {
        json_object *e = json_object_new_object();
        size_t tl;
        char *ts = lcall_token_text(lc->tok, t->top[i].id, &tl);
        json_add_strn(e, "token", ts, tl);
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
        size_t sl;
        char *s = lcall_token_text(lc->tok, recs[i].id, &sl);
        json_object_array_add(toks, json_object_new_string_len(s, (int)sl));
        json_object_array_add(lps, lp_value(recs[i].logprob));
        json_object_array_add(offs, json_object_new_int64(*offset));
        for (size_t k = 0; k < sl; k++)      /* offsets count characters, as Python sees the text */
            *offset += ((unsigned char)s[k] & 0xc0) != 0x80;
        free(s);
        if (isnan(recs[i].logprob)) {
            json_object_array_add(tops, NULL);
            continue;
        }
        json_object *d = json_object_new_object();
        for (int k = 0; k < recs[i].n_top && k < lc->top_n; k++) {
            size_t tl;      /* a key is a C string: a token of byte 0 shows as "" here */
            char *ts = lcall_token_text(lc->tok, recs[i].top[k].id, &tl);
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

/* TGI token object {"id","text","logprob","special"}: text (len bytes), or the token's own when NULL. */
static json_object *tgi_token(const struct lcall *lc, int32_t id, float lp, const char *text, size_t len)
{
    char *own = text ? NULL : lcall_token_text(lc->tok, id, &len);
    json_object *o = answer_tgi_token(id, text ? text : own, len, true, lp, tokenizer_is_special(lc->tok, id));
    free(own);
    return o;
}

static json_object *tgi_top_tokens(const struct lcall *lc, const struct tokrec *t)
{
    json_object *a = json_object_new_array();
    for (int i = 0; i < t->n_top && i < lc->top_n; i++)
        json_object_array_add(a, tgi_token(lc, t->top[i].id, t->top[i].logprob, NULL, 0));
    return a;
}

long lcall_completion_tokens(const struct lcall *lc)
{
    long n = 0;
    for (int i = 0; i < lc->n_seqs; i++)
        n += lc->ch[i].generated;
    return n;
}

long lcall_prompt_tokens(const struct lcall *lc)
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
    return (struct answer_usage){.prompt = lcall_prompt_tokens(lc), .completion = lcall_completion_tokens(lc),
                                 .cached = cached_tokens(lc)};
}

/* What every OpenAI object of this call shares. */
static struct answer_meta meta(const struct lcall *lc)
{
    return (struct answer_meta){.kind = lc->responses ? CK_RESPONSES : lc->kind, .id = lc->id,
                                .created = lc->created, .model = lc->model, .fingerprint = lc->fingerprint,
                                .g = lc->g};
}

/* The prompt text for echo / return_full_text (decoded for token-id
 * prompts), a new string of *len bytes. */
static char *prompt_text(const struct lcall *lc, int i, size_t *len)
{
    const struct prompt *p = &lc->prompts[i];
    char *s = NULL;
    *len = 0;
    if (p->text) {
        if ((s = malloc(p->len + 1))) {
            memcpy(s, p->text, p->len);
            s[p->len] = '\0';
            *len = p->len;
        }
        return s;
    }
    if (tokenizer_decode(lc->tok, p->ids, (size_t)p->n, &s, len) != TOKENIZER_OK) {
        *len = 0;
        return strdup("");
    }
    return s;
}

/* A choice's text, its prompt first when with_prompt (echo,
 * return_full_text). New string of *len bytes. */
static char *joined_text(struct lcall *lc, const struct choice *c, bool with_prompt, size_t *len)
{
    size_t a = 0;
    char *prefix = with_prompt ? prompt_text(lc, c->prompt, &a) : NULL;
    char *s = malloc(a + c->text.len + 1);
    *len = 0;
    if (s) {
        memcpy(s, prefix ? prefix : "", a);
        memcpy(s + a, c->text.s ? c->text.s : "", c->text.len);
        s[a + c->text.len] = '\0';
        *len = a + c->text.len;
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
            ac[i].text_len = c->text.len;
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
            texts[i] = joined_text(lc, c, lc->g->echo, &ac[i].text_len);
            ac[i].text = texts[i];
            if (lc->want_logprobs) {
                long off = 0;
                struct tokvec all = {0};
                if (lc->g->echo)
                    for (size_t t = 0; t < c->prefill.n; t++)
                        lcall_tokvec_add(&all, &(struct sample_out){.id = c->prefill.v[t].id, .logprob = c->prefill.v[t].logprob});
                for (size_t t = 0; t < c->toks.n; t++) {
                    struct sample_out so = {.id = c->toks.v[t].id, .logprob = c->toks.v[t].logprob,
                                            .n_top = c->toks.v[t].n_top};
                    memcpy(so.top, c->toks.v[t].top, sizeof so.top);
                    lcall_tokvec_add(&all, &so);
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
            json_object_array_add(d.prefill, frozen(tgi_token(lc, c->prefill.v[i].id, c->prefill.v[i].logprob, NULL, 0)));
        for (size_t i = 0; i < c->toks.n; i++)
            json_object_array_add(d.tokens, frozen(tgi_token(lc, c->toks.v[i].id, c->toks.v[i].logprob, NULL, 0)));
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
    size_t len;
    char *text = joined_text(lc, c, lc->g->return_full_text, &len);
    json_object *details = lc->kind != CK_LEGACY && lc->g->details ? tgi_details(lc, c, false) : NULL;
    json_object *o = answer_tgi(&m, text, len, details, lc->variant == 2);   /* POST / answers a list */
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
    long gen = lcall_completion_tokens(lc);
    double total = (double)(now - lc->t0) / 1e6, valid = (double)(lc->t_validated - lc->t0) / 1e6,
           queue = (double)lc->queued_ns / 1e6, infer = total - valid - queue;
    resp_header(r, "x-compute-time", "%.6f", total / 1e3);
    resp_header(r, "x-compute-characters", "%zu", lc->prompts[0].text ? lc->prompts[0].len : 0);
    resp_header(r, "x-total-time", "%.0f", total);
    resp_header(r, "x-validation-time", "%.0f", valid);
    resp_header(r, "x-queue-time", "%.0f", queue);
    resp_header(r, "x-inference-time", "%.0f", infer);
    resp_header(r, "x-time-per-token", "%.0f", gen ? infer / (double)gen : 0.0);
    resp_header(r, "x-prompt-tokens", "%ld", lcall_prompt_tokens(lc));
    resp_header(r, "x-generated-tokens", "%ld", gen);
}

json_object *lcall_whole(struct lcall *lc)
{
    if (lc->responses) {
        struct answer_meta m = meta(lc);
        struct answer_usage u = usage(lc);
        return answer_response(&m, true, lc->ch[0].text.s, lc->ch[0].text.len, lc->ch[0].finish, &u);
    }
    if (lc->r->dialect == DIALECT_OPENAI)
        return whole_openai(lc);
    tgi_headers(lc, true);
    return whole_tgi(lc);
}

/* ------------------------------------------------------------------ streaming */

static int send_json(struct lcall *lc, json_object *o)
{
    if (!o)
        return -1;
    int rc = sse_json(&lc->sse, lc->responses ? answer_response_type(o) : NULL, o);
    json_object_put(o);
    return rc;
}

/* Sends n Responses API events (all put, sent or not). */
static int send_all(struct lcall *lc, json_object **ev, int n)
{
    int rc = 0;
    for (int i = 0; i < n; i++)
        if (rc == 0)
            rc = send_json(lc, ev[i]);
        else
            json_object_put(ev[i]);
    return rc;
}

/* One OpenAI stream chunk with one choice: the chat delta (taken over) or
 * the completion's text, with logprobs (taken over, may be NULL). */
static json_object *chunk(struct lcall *lc, int index, json_object *delta, const char *text, size_t len,
                          json_object *logprobs, enum finish f, bool tool_calls)
{
    struct answer_meta m = meta(lc);
    return answer_chunk(&m, index, delta, text, len, logprobs, f, tool_calls);
}

/* The stream's headers and opening events. */
int lcall_stream_begin(struct lcall *lc)
{
    lc->started = true;
    if (lc->r->dialect == DIALECT_TGI)
        tgi_headers(lc, false);
    if (sse_begin(&lc->sse, lc->r, lc->r->cfg->sse_keepalive_ms) < 0)
        return -1;
    if (lc->responses) {
        struct answer_meta m = meta(lc);
        json_object *ev[4];
        return send_all(lc, ev, answer_response_head(&m, &lc->rs_seq, ev));
    }
    for (int i = 0; i < lc->n_seqs; i++) {
        if (lc->kind == CK_CHAT) {
            if (send_json(lc, chunk(lc, i, answer_delta("assistant", "", 0, NULL), NULL, 0, NULL, FIN_NONE, false)) < 0)
                return -1;
        } else if (lc->kind == CK_COMPLETION && lc->g->echo) {
            size_t tl;
            char *t = prompt_text(lc, lc->ch[i].prompt, &tl);
            int rc = send_json(lc, chunk(lc, i, NULL, t, tl, NULL, FIN_NONE, false));
            free(t);
            if (rc < 0)
                return -1;
        }
    }
    return 0;
}

/* One generated token as a stream event. */
int lcall_stream_token(struct lcall *lc, int i, const struct eevent *ev, const char *text)
{
    struct choice *c = &lc->ch[i];
    bool finish = ev->finish != FIN_NONE;
    struct tokrec rec = {.id = ev->tok.id, .logprob = ev->tok.logprob, .n_top = ev->tok.n_top};
    memcpy(rec.top, ev->tok.top, sizeof rec.top[0] * (size_t)ev->tok.n_top);
    if (lc->responses) {                /* the end is lcall_stream_end's */
        struct answer_meta m = meta(lc);
        return ev->text_len ? send_json(lc, answer_response_delta(&m, &lc->rs_seq, text, ev->text_len)) : 0;
    }
    if (lc->kind == CK_CHAT && lc->st.tool) {  /* the call is sent whole once the text is complete */
        if (!finish)
            return 0;
        json_object *calls = structured_tool_calls(&lc->st, c->text.s ? c->text.s : "", c->text.len, true);
        bool is_call = calls != NULL;
        json_object *d = answer_delta(NULL, calls ? NULL : c->text.s ? c->text.s : "", c->text.len, calls);
        if (send_json(lc, chunk(lc, i, d, NULL, 0, NULL, FIN_NONE, false)) < 0)
            return -1;
        return send_json(lc, chunk(lc, i, NULL, NULL, 0, NULL, ev->finish, is_call));
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
            json_object *d = answer_delta(NULL, text ? text : "", ev->text_len, NULL);
            if (send_json(lc, chunk(lc, i, d, NULL, 0, lp, FIN_NONE, false)) < 0)
                return -1;
        }
        if (finish && send_json(lc, chunk(lc, i, NULL, NULL, 0, NULL, ev->finish, false)) < 0)
            return -1;
        return 0;
    }
    if (lc->kind == CK_COMPLETION) {
        if (ev->text_len || lc->want_logprobs || finish) {
            long off = 0;
            json_object *lp = lc->want_logprobs ? completion_logprobs(lc, &rec, 1, &off) : NULL;
            if (send_json(lc, chunk(lc, i, NULL, text, ev->text_len, lp, ev->finish, false)) < 0)
                return -1;
        }
        return 0;
    }
    /* TGI: one event per token; the last carries generated_text and details. */
    bool special = tokenizer_is_special(lc->tok, ev->tok.id);     /* TGI shows <|endoftext|> as its own text */
    json_object *token = tgi_token(lc, ev->tok.id, ev->tok.logprob, special ? NULL : text ? text : "", ev->text_len);
    json_object *top = lc->top_n > 0 ? tgi_top_tokens(lc, &rec) : NULL;
    size_t full_len = 0;
    char *full = finish ? joined_text(lc, c, lc->g->return_full_text, &full_len) : NULL;
    json_object *o = answer_tgi_event(++lc->tgi_index, token, true, top, full ? full : finish ? "" : NULL, full_len,
                                      finish ? tgi_details(lc, c, true) : NULL);
    free(full);
    return send_json(lc, o);
}


int lcall_stream_end(struct lcall *lc, const struct choice *bad)
{
    if (lc->responses && bad) {         /* typed events, no [DONE] */
        send_json(lc, resp_error_event_responses(NULL, bad->err, lc->rs_seq++));
    } else if (lc->responses) {
        struct answer_meta m = meta(lc);
        struct answer_usage u = usage(lc);
        json_object *ev[4];
        const struct choice *c = &lc->ch[0];
        if (send_all(lc, ev, answer_response_tail(&m, &lc->rs_seq, c->text.s, c->text.len, c->finish, &u, ev)) < 0)
            return -1;
    } else if (bad) {                          /* an error after the stream started: an error event, then a clean end */
        json_object *o = resp_error_event(lc->r->dialect, NULL, bad->err);
        if (o && send_json(lc, o) == 0 && lc->r->dialect == DIALECT_OPENAI)
            sse_event(&lc->sse, NULL, "[DONE]", 6);
    } else if (lc->r->dialect == DIALECT_OPENAI) {
        if (lc->g->include_usage) {
            struct answer_meta m = meta(lc);
            struct answer_usage u = usage(lc);
            if (send_json(lc, answer_usage_chunk(&m, &u)) < 0)
                return -1;
        }
        sse_event(&lc->sse, NULL, "[DONE]", 6);
    }
    return lc->r->client_gone ? -1 : 0;
}
