/* gateway_stream.c -- an upstream's answer read as it comes: a whole answer buffered within max_response, an event stream relayed as it is (same dialect), translated event by event (another dialect) or collected into one answer (a non-streamed request answered with events). */
#include "config.h"
#include "gateway_call.h"
#include "log.h"
#include "response.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct answer_meta relay_meta(const struct relay *rl)
{
    const struct call *k = rl->call;
    return (struct answer_meta){.kind = k->kind, .id = k->id, .created = k->created, .model = k->model,
                                .fingerprint = rl->fingerprint, .g = &k->g};
}

/* A translated TGI token event; the last one (final_text not NULL, final_len bytes) with its details. */
static json_object *tgi_event(struct relay *rl, const struct gen_delta *tok, const char *final_text, size_t final_len,
                              const struct answer_tgi_details *details)
{
    json_object *t = answer_tgi_token(tok->token_id, tok->text, tok->text_len, tok->has_logprob, tok->logprob,
                                      tok->special);
    return answer_tgi_event(rl->index++, t, false, NULL, final_text, final_len,
                            details ? answer_tgi_details(details) : NULL);
}

static const char *const tgi_passed_headers[] = {
    "x-compute-type", "x-compute-time", "x-compute-characters", "x-total-time", "x-validation-time",
    "x-queue-time", "x-inference-time", "x-time-per-token", "x-prompt-tokens", "x-generated-tokens",
};

int relay_on_header(void *ud, const char *name, size_t nlen, const char *value, size_t vlen)
{
    struct relay *rl = ud;
    if (nlen == 12 && strncasecmp(name, "content-type", 12) == 0)
        rl->is_sse = vlen >= 17 && strncasecmp(value, "text/event-stream", 17) == 0;
    for (size_t i = 0; i < ARRAY_LEN(tgi_passed_headers); i++) {
        if (strlen(tgi_passed_headers[i]) != nlen || strncasecmp(name, tgi_passed_headers[i], nlen) != 0)
            continue;
        bool clean = vlen < 128;
        for (size_t k = 0; clean && k < vlen; k++)
            clean = value[k] >= 0x20 && value[k] < 0x7f;
        int n = clean ? snprintf(rl->headers + rl->headers_len, sizeof rl->headers - rl->headers_len,
                                 "%.*s: %.*s\r\n", (int)nlen, name, (int)vlen, value)
                      : -1;
        if (n > 0 && (size_t)n < sizeof rl->headers - rl->headers_len)
            rl->headers_len += (size_t)n;
        else
            rl->headers[rl->headers_len] = '\0';
    }
    return 0;
}

static int buffer_body(struct relay *rl, const char *data, size_t len)
{
    if (rl->len + len > rl->max) {
        rl->too_big = true;
        return -1;
    }
    if (rl->len + len + 1 > rl->cap) {
        size_t cap = rl->cap ? rl->cap : 16384;
        while (cap < rl->len + len + 1)
            cap *= 2;
        char *grown = realloc(rl->buf, cap);
        if (!grown) {
            rl->too_big = true;
            return -1;
        }
        rl->buf = grown;
        rl->cap = cap;
    }
    memcpy(rl->buf + rl->len, data, len);
    rl->len += len;
    rl->buf[rl->len] = '\0';
    return 0;
}

/* Queues the client's headers for a successful answer: which upstream
 * answered, and TGI's timing headers. */
void relay_answer_headers(struct relay *rl)
{
    resp_header(rl->r, "X-Upstream", "%s", rl->cand->c->name);
    const char *h = rl->headers;
    while (*h) {                        /* TGI's timing headers, one by one through the checked path */
        const char *colon = strchr(h, ':'), *eol = strstr(h, "\r\n");
        if (!colon || !eol)
            break;
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(colon - h), h);
        resp_header(rl->r, name, "%.*s", (int)(eol - colon - 2), colon + 2);
        h = eol + 2;
    }
}

static int start_stream(struct relay *rl)
{
    if (rl->started)
        return 0;
    rl->started = true;
    relay_answer_headers(rl);
    return sse_begin(&rl->sse, rl->r, rl->r->cfg->sse_keepalive_ms);
}

/* Sends obj (owned) as one event of the client's stream. */
/* Is an upstream's Responses event type fit to be an SSE event name
 * ("response.output_text.delta": lower-case letters, digits, '.', '_')? */
static bool event_name_ok(const char *t)
{
    if (!t || !*t || strlen(t) > 64)
        return false;
    for (; *t; t++)
        if (!((*t >= 'a' && *t <= 'z') || (*t >= '0' && *t <= '9') || *t == '.' || *t == '_'))
            return false;
    return true;
}

static int send_event(struct relay *rl, json_object *obj)
{
    if (!obj)
        return -1;
    const char *name = rl->call->kind == CK_RESPONSES ? answer_response_type(obj) : NULL;
    if (rl->call->kind == CK_RESPONSES && !event_name_ok(name)) {
        /* a hostile or broken upstream's type: refused as a bad event,
         * not written into the stream (nor logged once per event) */
        snprintf(rl->bad, sizeof rl->bad, "a Responses API event whose type is not an event name");
        json_object_put(obj);
        return -1;
    }
    int rc = start_stream(rl);
    if (rc == 0)        /* Responses API events go under their type's name */
        rc = sse_json(&rl->sse, name, obj);
    json_object_put(obj);
    return rc;
}

/* Sends n events (all put, sent or not). */
static int send_events(struct relay *rl, json_object **ev, int n)
{
    int rc = 0;
    for (int i = 0; i < n; i++)
        if (rc == 0)
            rc = send_event(rl, ev[i]);
        else
            json_object_put(ev[i]);
    return rc;
}

/* Keeps the text of a translated or collected stream (for TGI's final
 * generated_text, the Responses API's closing events, a whole answer),
 * bounded by max_response as a whole answer's body is: past it the
 * transfer is aborted (too_big) and the client gets the error. */
static int append_text(struct relay *rl, const char *t, size_t len)
{
    if (len > rl->max || rl->text.len > rl->max - len) {
        rl->too_big = true;
        snprintf(rl->bad, sizeof rl->bad, "a stream longer than max_response (%zu bytes)", rl->max);
        return -1;
    }
    strbuf_add(&rl->text, t, len);
    return rl->text.nomem ? -1 : 0;
}

/* Token counts of a relayed stream, for the tokens/min correction. */
static void count(struct relay *rl, const struct gen_delta *d)
{
    if (d->prompt_tokens >= 0)
        rl->prompt_tokens = d->prompt_tokens;
    if (d->completion_tokens >= 0)
        rl->completion_tokens = d->completion_tokens;
    if (d->text && d->text_len)
        rl->tokens++;
}

/* OpenAI client, OpenAI upstream: the chunk as it came, with the client's model name. */
static int relay_openai(struct relay *rl, json_object *ev)
{
    struct gen_delta d;
    if (dialect_read_delta(rl->uc, ev, &d) < 0) {
        snprintf(rl->bad, sizeof rl->bad, "%s", d.bad);
        return -1;
    }
    if (d.error) {              /* told in llmcgi's own words and shape, then [DONE], as translate() does */
        snprintf(rl->bad, sizeof rl->bad, "%s", d.error);
        rl->saw_error = true;
        return -1;
    }
    if (d.finish != FIN_NONE)
        rl->saw_finish = true;
    count(rl, &d);
    json_object *resp = NULL;           /* a Responses API event carries the model in its response */
    if (json_object_object_get_ex(ev, "model", NULL))
        json_object_object_add(ev, "model", json_object_new_string(rl->call->model));
    else if (json_object_object_get_ex(ev, "response", &resp) && json_object_is_type(resp, json_type_object) &&
             json_object_object_get_ex(resp, "model", NULL))
        json_object_object_add(resp, "model", json_object_new_string(rl->call->model));
    return send_event(rl, json_object_get(ev));
}

/* TGI client, TGI upstream: the event as it came. */
static int relay_tgi(struct relay *rl, json_object *ev)
{
    struct gen_delta d;
    if (dialect_read_delta(UK_TGI, ev, &d) < 0) {
        snprintf(rl->bad, sizeof rl->bad, "%s", d.bad);
        return -1;
    }
    if (d.error)
        rl->saw_error = true;
    if (d.finish != FIN_NONE)
        rl->saw_finish = true;
    count(rl, &d);
    return send_event(rl, json_object_get(ev));
}

static void remember(struct relay *rl, const struct gen_delta *d)
{
    if (d->finish != FIN_NONE) {
        rl->finish = d->finish;
        rl->saw_finish = true;
    }
    if (d->prompt_tokens >= 0)
        rl->prompt_tokens = d->prompt_tokens;
    if (d->completion_tokens >= 0)
        rl->completion_tokens = d->completion_tokens;
    if (d->has_seed)
        rl->has_seed = true, rl->seed = d->seed;
}

/* Holds one TGI token event back: only the next event tells whether it is the last. */
static int hold(struct relay *rl, const struct gen_delta *d)
{
    free(rl->held_text);
    rl->held = *d;
    rl->held_text = malloc(d->text_len + 1);
    if (rl->held_text) {
        memcpy(rl->held_text, d->text ? d->text : "", d->text_len);
        rl->held_text[d->text_len] = '\0';
    }
    rl->held.text = rl->held_text;
    rl->have_held = rl->held_text != NULL;
    return rl->have_held ? 0 : -1;
}

/* One upstream event read into d (borrowing from ev) and remembered
 * (finish, usage, seed). -1 with rl->bad for a malformed event or the
 * upstream's error event (saw_error). */
static int read_event(struct relay *rl, json_object *ev, struct gen_delta *d)
{
    if (dialect_read_delta(rl->uc, ev, d) < 0) {
        snprintf(rl->bad, sizeof rl->bad, "%s", d->bad);
        return -1;
    }
    if (d->error) {
        snprintf(rl->bad, sizeof rl->bad, "%s", d->error);
        rl->saw_error = true;
        return -1;
    }
    remember(rl, d);
    return 0;
}

/* A non-streamed request the upstream answered with an event stream
 * (transformers serve does, whatever "stream" says): the events are read
 * into one answer -- text, finish reason, usage, seed -- that
 * assembled_answer() (routes_gateway.c) writes in the client's dialect.
 * The text is bounded by max_response, as a whole answer is. */
static int collect(struct relay *rl, json_object *ev)
{
    struct gen_delta d;
    if (read_event(rl, ev, &d) < 0)
        return -1;
    if (!d.text || d.special)
        return 0;
    if (d.text_len)
        rl->tokens++;
    return append_text(rl, d.text, d.text_len);   /* generated text may hold NUL */
}

/* Any upstream to a client of another dialect: normalised deltas re-written. */
static int translate(struct relay *rl, json_object *ev)
{
    struct gen_delta d;
    if (read_event(rl, ev, &d) < 0)
        return -1;
    bool visible = d.text && d.text_len && !d.special;
    struct call *k = rl->call;
    if (k->kind == CK_RESPONSES) {      /* a chat upstream's chunks as Responses API events */
        struct answer_meta m = relay_meta(rl);
        json_object *head[4];
        if (!rl->started && send_events(rl, head, answer_response_head(&m, &rl->rs_seq, head)) < 0)
            return -1;
        if (!visible)
            return 0;
        rl->tokens++;
        if (append_text(rl, d.text, d.text_len) < 0)
            return -1;
        return send_event(rl, answer_response_delta(&m, &rl->rs_seq, d.text, d.text_len));
    }
    if (k->kind == CK_COMPLETION) {
        if (!visible)
            return 0;
        rl->tokens++;
        struct answer_meta m = relay_meta(rl);
        return send_event(rl, answer_chunk(&m, 0, NULL, d.text, d.text_len, NULL, FIN_NONE, false));
    }
    /* TGI client: one event per token, the last one carrying the whole text. */
    if (!visible && !(d.text && d.special))
        return 0;
    if (rl->have_held) {
        if (send_event(rl, tgi_event(rl, &rl->held, NULL, 0, NULL)) < 0)
            return -1;
    }
    rl->tokens++;
    if (!d.special && append_text(rl, d.text, d.text_len) < 0)
        return -1;
    return hold(rl, &d);
}

int relay_on_event(void *ud, const char *event, const char *data, size_t len)
{
    struct relay *rl = ud;
    (void)event;
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        rl->saw_done = true;
        return 0;
    }
    char err[160];
    json_object *ev = json_parse_upstream(data, len, err, sizeof err);
    if (!ev) {
        snprintf(rl->bad, sizeof rl->bad, "an event that is not JSON (%s)", err[0] ? err : "null");
        return -1;
    }
    int rc;
    if (!rl->want_stream)
        rc = collect(rl, ev);
    else if (dialect_same(rl->call->kind, rl->uc))
        rc = rl->uc == UK_TGI ? relay_tgi(rl, ev) : relay_openai(rl, ev);
    else
        rc = translate(rl, ev);
    json_object_put(ev);
    return rc;
}

int relay_on_body(void *ud, const char *data, size_t len)
{
    struct relay *rl = ud;
    bool ok_status = rl->res->status >= 200 && rl->res->status < 300;
    if (rl->is_sse && ok_status) {             /* relayed, or read into one answer (collect) */
        unsigned events = rl->parser.events;
        int rc = sse_parser_feed(&rl->parser, data, len);
        if (rc == SSE_PARSE_TOO_LARGE)
            snprintf(rl->bad, sizeof rl->bad, "an event larger than %d bytes", MAX_EVENT);
        if (rc != 0)
            return rc == UC_NO_PROGRESS ? -1 : rc;
        /* keep-alive comments alone are no progress: a stream of nothing
         * else runs into stream_idle_timeout, not into total_timeout */
        return rl->parser.events == events ? UC_NO_PROGRESS : 0;
    }
    return buffer_body(rl, data, len);
}

int relay_on_tick(void *ud)
{
    struct relay *rl = ud;
    return rl->started ? sse_keepalive(&rl->sse) : 0;
}

/* An error event in the client's dialect, then a clean end. */
void relay_stream_error(struct relay *rl, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_warn("request %s: upstream %s: %s", rl->r->id, rl->cand->c->name, msg);
    if (rl->call->kind == CK_RESPONSES) {       /* the typed error event ends it: no [DONE] */
        send_event(rl, resp_error_event_responses("upstream_error", msg, rl->rs_seq++));
        return;
    }
    json_object *o = resp_error_event(rl->r->dialect, "upstream_error", msg);
    if (o && send_event(rl, o) == 0 && rl->r->dialect == DIALECT_OPENAI)
        sse_event(&rl->sse, NULL, "[DONE]", 6);
}

bool relay_finished(const struct relay *rl)
{
    return rl->saw_finish || (rl->saw_done && rl->uc != UK_CHAT && rl->uc != UK_COMPLETION);
}

/* The upstream's stream ended cleanly: finish the client's. */
void relay_finish_stream(struct relay *rl)
{
    struct call *k = rl->call;
    rl->r->tokens_in = rl->prompt_tokens;
    rl->r->tokens_out = rl->completion_tokens >= 0 ? rl->completion_tokens : rl->tokens;
    if (rl->saw_error)
        return;                                 /* the error event was the end */
    if (dialect_same(k->kind, rl->uc)) {
        if (!relay_finished(rl)) {
            relay_stream_error(rl, "the stream ended before the generation finished%s",
                               rl->saw_done ? " ([DONE] with no finish_reason)" : "");
            return;
        }
        /* transformers serve ends its streams without [DONE]; clients wait for it
         * (but not the Responses API's, which end with response.completed) */
        if (rl->uc != UK_TGI && rl->uc != UK_RESPONSES)
            sse_event(&rl->sse, NULL, "[DONE]", 6);
        return;
    }
    if (!rl->saw_finish) {
        relay_stream_error(rl, "the stream ended before the generation finished");
        return;
    }
    long completion = rl->completion_tokens >= 0 ? rl->completion_tokens : rl->tokens;
    if (k->kind == CK_RESPONSES) {
        struct answer_meta m = relay_meta(rl);
        struct answer_usage u = {.prompt = rl->prompt_tokens, .completion = completion, .cached = -1};
        json_object *tail[4];
        send_events(rl, tail, answer_response_tail(&m, &rl->rs_seq, rl->text.s, rl->text.len, rl->finish, &u,
                                                   tail));
        return;
    }
    if (k->kind == CK_COMPLETION) {
        struct answer_meta m = relay_meta(rl);
        struct answer_usage u = {.prompt = rl->prompt_tokens, .completion = completion, .cached = -1};
        if (send_event(rl, answer_chunk(&m, 0, NULL, "", 0, NULL, rl->finish, false)) < 0)
            return;
        if (k->g.include_usage && send_event(rl, answer_usage_chunk(&m, &u)) < 0)
            return;
        sse_event(&rl->sse, NULL, "[DONE]", 6);
        return;
    }
    /* TGI client: the held token becomes the final event */
    struct gen_delta none = {.text = "", .token_id = 0, .special = true};
    struct answer_tgi_details fin = {.finish = rl->finish, .generated = completion, .has_seed = rl->has_seed,
                                     .seed = (uint64_t)rl->seed, .stream = true, .input_length = -1};
    bool with_prompt = k->g.return_full_text && k->g.prompt;
    const char *prefix = with_prompt ? k->g.prompt : "";
    size_t a = with_prompt ? k->g.prompt_len : 0;
    char *full = malloc(a + rl->text.len + 1);
    if (!full)
        return;
    memcpy(full, prefix, a);
    memcpy(full + a, rl->text.s ? rl->text.s : "", rl->text.len);
    full[a + rl->text.len] = '\0';
    send_event(rl, tgi_event(rl, rl->have_held ? &rl->held : &none, full, a + rl->text.len, &fin));
    free(full);
}
