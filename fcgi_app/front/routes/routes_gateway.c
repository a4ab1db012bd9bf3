/* routes_gateway.c -- the gateway's routes: generation requests the dispatcher hands over, proxied to the upstream that serves the model, the model and health listings of upstreams (http upstreams: routes_http.c).
 *
 * A generation request is read once (dialect.c), then tried on upstreams
 * that serve its model: weighted choice between upstreams, round-robin
 * between an upstream's replicas that are up. Failures before anything has
 * gone to the client (refused, timed out, dropped, 502/503) count against
 * the replica and are retried elsewhere after a backoff with jitter. Once
 * the first byte has gone to the client there is no retry: a failure then
 * becomes an error event in the client's dialect and a clean end.
 *
 * Everything runs on the responder thread that owns the FastCGI stream:
 * libcurl's callbacks write the client's answer directly (client.c; the
 * callbacks are gateway_stream.c's). */
#include "config.h"
#include "routes_gateway.h"
#include "gateway_call.h"
#include "answer.h"
#include "auth.h"
#include "client.h"
#include "conf.h"
#include "dialect.h"
#include "gateway.h"
#include "log.h"
#include "metrics.h"
#include "ratelimit.h"
#include "response.h"
#include "retry.h"
#include "server.h"
#include "sse.h"
#include "sse_parse.h"
#include "catalog.h"
#include "util.h"

#include <ctype.h>
#include <stdarg.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MAX_CANDIDATES 16

/* ------------------------------------------------------------------ services */

/* What this route family uses of the server (struct server): the
 * upstreams' live state. */
static struct gateway *upstreams(const struct req *r)
{
    return r->srv->gw;
}

/* ------------------------------------------------------------------ choosing upstreams */

/* Fills cands with the upstreams that serve `model`; returns how many. */
static size_t find_candidates(struct req *r, const char *model, struct cand *cands)
{
    size_t n = 0;
    for (size_t i = 0; i < r->cfg->n_upstreams && n < MAX_CANDIDATES; i++) {
        const struct config_upstream *c = &r->cfg->upstreams[i];
        if (c->type == UPSTREAM_HTTP)
            continue;
        struct upstream *u = gateway_get(upstreams(r), c->name);
        if (!u)
            continue;
        char *target = NULL;
        char buf[256];
        if (!upstream_routes_model(u, c, model, &target, buf, sizeof buf)) {
            upstream_put(u);
            continue;
        }
        cands[n] = (struct cand){.c = c, .u = u, .wild = c->catch_all && target == buf};
        snprintf(cands[n].target, sizeof cands[n].target, "%s", target);
        n++;
    }
    /* "*" takes only the names no upstream serves by name. */
    bool named = false;
    for (size_t i = 0; i < n; i++)
        named |= !cands[i].wild;
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (named && cands[i].wild)
            upstream_put(cands[i].u);
        else
            cands[kept++] = cands[i];
    }
    return kept;
}

static void put_candidates(struct cand *cands, size_t n)
{
    for (size_t i = 0; i < n; i++)
        upstream_put(cands[i].u);
}

/* Weighted choice among the candidates with a replica left to try; sets
 * *replica. NULL when none is left. */
static struct cand *choose(struct cand *cands, size_t n, int *replica)
{
    for (;;) {
        long total = 0;
        for (size_t i = 0; i < n; i++)
            if (!cands[i].out)
                total += cands[i].c->weight;
        if (total == 0)
            return NULL;
        long pick = (long)(util_random_u64() % (uint64_t)total);
        struct cand *k = NULL;
        for (size_t i = 0; i < n && !k; i++) {
            if (cands[i].out)
                continue;
            if (pick < cands[i].c->weight)
                k = &cands[i];
            pick -= cands[i].c->weight;
        }
        *replica = upstream_pick(k->u, k->tried);
        if (*replica >= 0)
            return k;
        k->out = true;
    }
}

/* ------------------------------------------------------------------ one attempt */


static void fail(struct call *k, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(struct call *k, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(k->fail_msg, sizeof k->fail_msg, fmt, ap);
    va_end(ap);
    k->fail_status = status;
}

/* The client's whole answer (new object) from an upstream's of another
 * dialect, or from the events of a stream read into one (collect). */
static json_object *translated_answer(struct relay *rl, const struct gen_result *res)
{
    struct call *k = rl->call;
    struct answer_meta m = relay_meta(rl);
    if (k->kind == CK_COMPLETION || k->kind == CK_CHAT) {
        struct answer_choice c = {.text = res->text, .text_len = res->text_len, .finish = res->finish};
        struct answer_usage u = {.prompt = res->prompt_tokens, .completion = res->completion_tokens, .cached = -1};
        return answer_openai(&m, &c, 1, &u);
    }
    if (k->kind == CK_RESPONSES) {
        struct answer_usage u = {.prompt = res->prompt_tokens, .completion = res->completion_tokens, .cached = -1};
        return answer_response(&m, true, res->text, res->text_len, res->finish, &u);
    }
    if (k->kind != CK_TGI && k->kind != CK_LEGACY)
        return NULL;
    json_object *details = NULL;
    if (k->kind == CK_TGI && k->g.details) {
        struct answer_tgi_details d = {.finish = res->finish, .generated = res->completion_tokens,
                                       .has_seed = res->has_seed, .seed = (uint64_t)res->seed};
        details = answer_tgi_details(&d);
    }
    if (k->kind == CK_TGI && k->g.return_full_text && k->g.prompt) {
        size_t a = k->g.prompt_len, b = res->text_len;
        char *full = malloc(a + b + 1);
        if (!full) {
            json_object_put(details);
            return NULL;
        }
        memcpy(full, k->g.prompt, a);
        memcpy(full + a, res->text, b + 1);
        json_object *o = answer_tgi(&m, full, a + b, details, k->compat_list);
        free(full);
        return o;
    }
    return answer_tgi(&m, res->text, res->text_len, details, k->compat_list);
}

/* Answers a whole (non-streamed) upstream answer. */
static enum outcome answer_whole(struct relay *rl)
{
    struct call *k = rl->call;
    struct req *r = rl->r;
    const char *name = rl->cand->c->name;
    char err[200];
    json_object *a = json_parse_upstream(rl->buf ? rl->buf : "", rl->len, err, sizeof err);
    if (!a) {
        fail(k, 502, "upstream %s answered something that is not JSON (%s)", name, err[0] ? err : "null");
        return OUT_FAIL;
    }
    if (rl->want_stream) {
        json_object_put(a);
        fail(k, 502, "upstream %s answered a streaming request with a whole JSON document", name);
        return OUT_FAIL;
    }
    /* checked on every path, the pass-through ones too (dialect.c names the field) */
    struct gen_result res;
    if (dialect_read_result(rl->uc, a, &res, err, sizeof err) < 0) {
        json_object_put(a);
        fail(k, 502, "upstream %s gave a bad answer: %s", name, err);
        return OUT_FAIL;
    }
    r->tokens_in = res.prompt_tokens;
    r->tokens_out = res.completion_tokens;
    json_object *out = NULL;
    if (dialect_same(k->kind, rl->uc)) {
        if (rl->uc == UK_TGI && k->compat_list && !json_object_is_type(a, json_type_array)) {
            out = json_object_new_array();
            if (out)
                json_object_array_add(out, json_object_get(a));
        } else {
            if (rl->uc != UK_TGI)
                json_object_object_add(a, "model", json_object_new_string(k->model));
            out = json_object_get(a);
        }
    } else {
        out = translated_answer(rl, &res);
    }
    gen_result_free(&res);
    json_object_put(a);
    if (!out) {
        fail(k, 500, "out of memory");
        return OUT_FAIL;
    }
    relay_answer_headers(rl);
    resp_json(r, 200, out);
    json_object_put(out);
    return OUT_DONE;
}

/* Answers a non-streamed request from the event stream the upstream sent
 * instead of one JSON document (collect). A stream may end without
 * [DONE] (transformers serve's do), but not before its finish reason:
 * attempt() retries a cut one elsewhere before calling this, so a cut
 * answer is an error, never a shorter answer. */
static enum outcome assembled_answer(struct relay *rl)
{
    struct call *k = rl->call;
    /* no usage in the stream (transformers serve sends none): the events
     * with text count, as in a translated stream's usage chunk */
    struct gen_result res = {.text = rl->text.s ? rl->text.s : (char *)"", .text_len = rl->text.len,
                             .finish = rl->finish,
                             .prompt_tokens = rl->prompt_tokens,
                             .completion_tokens = rl->completion_tokens >= 0 ? rl->completion_tokens : rl->tokens,
                             .has_seed = rl->has_seed, .seed = rl->seed};
    rl->r->tokens_in = res.prompt_tokens;
    rl->r->tokens_out = res.completion_tokens;
    json_object *out = translated_answer(rl, &res);   /* res.text stays rl->text's */
    if (!out) {
        fail(k, 500, "out of memory");
        return OUT_FAIL;
    }
    relay_answer_headers(rl);
    resp_json(rl->r, 200, out);
    json_object_put(out);
    return OUT_DONE;
}

/* Turns an upstream's error answer into the client's. 502/503 are retried. */
static enum outcome answer_error_status(struct relay *rl)
{
    struct call *k = rl->call;
    const char *name = rl->cand->c->name;
    long st = rl->res->status;
    char msg[300] = "";
    char err[64];
    json_object *b = rl->buf ? json_parse_upstream(rl->buf, rl->len, err, sizeof err) : NULL;
    if (b)
        dialect_error_message(b, msg, sizeof msg);
    json_object_put(b);
    if (st >= 500 && msg[0])                    /* its own trouble, in words that may name its hosts: the log's */
        log_warn("request %s: upstream %s answered %ld: %s", rl->r->id, name, st, msg);
    if (st == 502 || st == 503 || st == 504) {
        fail(k, st == 504 ? 504 : st, "upstream %s answered %ld", name, st);
        return st == 504 ? OUT_FAIL : OUT_RETRY;
    }
    if (st == 401 || st == 403) {               /* our credentials, not the client's */
        fail(k, 502, "upstream %s refused llmcgi's credentials (HTTP %ld); check api_key", name, st);
        return OUT_FAIL;
    }
    if (st >= 400 && st < 500) {
        int mapped = (int)st;
        if (st == 422 || st == 400)
            mapped = rl->r->dialect == DIALECT_OPENAI ? 400 : 422;
        else if (st != 404 && st != 408 && st != 413 && st != 429)
            mapped = 400;
        fail(k, mapped, "upstream %s: %s", name, msg[0] ? msg : http_reason((int)st));
        return OUT_FAIL;
    }
    fail(k, 502, "upstream %s answered %ld", name, st);
    return OUT_FAIL;
}

static struct curl_slist *request_headers(struct req *r, const struct config_upstream *c, bool stream)
{
    struct curl_slist *h = NULL;
    char id[REQ_ID_MAX + 32];
    snprintf(id, sizeof id, "X-Request-Id: %s", r->id);
    const char *fixed[] = {"Content-Type: application/json",
                           stream ? "Accept: text/event-stream" : "Accept: application/json", "Expect:", id};
    for (size_t i = 0; i < ARRAY_LEN(fixed); i++)
        if (!gateway_slist_add(&h, fixed[i]))
            return NULL;
    return upstream_credentials(c, h);
}

static const char *call_path(enum upstream_call uc, bool stream)
{
    switch (uc) {
    case UK_CHAT: return "/v1/chat/completions";
    case UK_COMPLETION: return "/v1/completions";
    case UK_TGI: return stream ? "/generate_stream" : "/generate";
    case UK_RESPONSES: return "/v1/responses";
    case UK_EMBEDDINGS: return "/v1/embeddings";
    }
    return "/";
}

static enum outcome attempt(struct call *k, struct cand *cand, int replica)
{
    struct req *r = k->r;
    const struct config_upstream *c = cand->c;
    enum upstream_call uc = dialect_call_for(k->kind, c->type);
    char err[300];
    json_object *ub = dialect_upstream_request(k->kind, uc, c->type, k->body, &k->g, cand->target, err, sizeof err);
    if (!ub) {
        fail(k, r->dialect == DIALECT_OPENAI ? 400 : 422, "%s", err);
        return OUT_FAIL;
    }
    size_t blen;
    const char *body = json_object_to_json_string_length(ub, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE,
                                                         &blen);
    char url[2300];
    snprintf(url, sizeof url, "%s%s", upstream_replica_url(cand->u, replica), call_path(uc, k->g.stream));
    struct curl_slist *headers = request_headers(r, c, k->g.stream);
    struct uc_response res;
    struct relay rl = {
        .call = k, .r = r, .cand = cand, .uc = uc, .res = &res, .want_stream = k->g.stream,
        .max = c->max_response, .prompt_tokens = -1, .completion_tokens = -1,
        .index = 1,                         /* TGI numbers stream events from 1 */
    };
    answer_fingerprint(rl.fingerprint, sizeof rl.fingerprint, upstream_type_name(c->type));
    sse_parser_init(&rl.parser, MAX_EVENT, relay_on_event, &rl);
    struct uc_request q = {
        .method = "POST", .url = url, .headers = headers, .body = body, .body_len = blen,
        .connect_timeout_ms = c->connect_timeout_ms, .first_byte_timeout_ms = c->first_byte_timeout_ms,
        .idle_timeout_ms = c->stream_idle_timeout_ms, .total_timeout_ms = c->total_timeout_ms,
        .watch_fd = r->fcgi->ipcFd, .tick_ms = k->g.stream ? r->cfg->sse_keepalive_ms : 0,
        .on_header = relay_on_header, .on_body = relay_on_body, .on_tick = relay_on_tick, .ud = &rl,
    };
    enum outcome out = OUT_FAIL;
    int64_t t_start = util_now_ns();
    if (!headers || uc_perform(&q, &res) < 0) {
        fail(k, 500, "cannot reach upstream %s: %s", c->name, headers ? res.error : "out of memory");
        goto done;
    }
    metrics_upstream_attempt(metrics_upstream_id(c->name), res.result == UC_OK && res.status < 500,
                             util_now_ns() - t_start);
    if (rl.prompt_tokens >= 0)
        r->tokens_in = rl.prompt_tokens;
    if (rl.completion_tokens >= 0)
        r->tokens_out = rl.completion_tokens;
    else if (r->tokens_out < 0 && (rl.started || rl.tokens > 0))
        r->tokens_out = rl.tokens;              /* no usage reported (abort, failure, no include_usage): what we relayed */
    if (res.result == UC_OK && rl.is_sse && res.status >= 200 && res.status < 300) {
        int prc = sse_parser_finish(&rl.parser);
        if (prc != 0 && !rl.bad[0])
            snprintf(rl.bad, sizeof rl.bad, "a broken event stream");
        if (prc != 0)
            res.result = UC_ABORTED;
    }
    if (res.client_gone || r->client_gone) {
        r->client_gone = true;              /* nothing more to send: the access log says 499 */
        log_info("request %s: the client went away; upstream %s transfer stopped", r->id, c->name);
        out = OUT_DONE;
        goto done;
    }
    if (rl.started) {                       /* bytes went to the client: no retry now */
        if (res.result == UC_OK && !rl.bad[0]) {
            relay_finish_stream(&rl);
            upstream_report(cand->u, c, replica, true, NULL);
        } else {
            const char *why = rl.bad[0] ? rl.bad : uc_result_text(res.result);
            if (!rl.bad[0])
                upstream_report_result(cand->u, c, replica, &res);
            if (!rl.saw_error || rl.bad[0])
                relay_stream_error(&rl, "upstream %s failed mid-stream: %s", c->name, why);
        }
        out = OUT_DONE;
        goto done;
    }
    /* Nothing has reached the client yet. */
    switch (res.result) {
    case UC_OK:
        break;
    case UC_CONNECT:
    case UC_CONNECT_TIMEOUT:
    case UC_FIRST_BYTE_TIMEOUT:
    case UC_DROPPED:
    case UC_IDLE_TIMEOUT:
        upstream_report_result(cand->u, c, replica, &res);
        fail(k, uc_result_status(res.result), "upstream %s %s", c->name, uc_result_text(res.result));
        out = OUT_RETRY;
        goto done;
    case UC_TOTAL_TIMEOUT:
        upstream_report_result(cand->u, c, replica, &res);
        fail(k, uc_result_status(res.result), "upstream %s %s", c->name, uc_result_text(res.result));
        goto done;
    case UC_ABORTED:
        if (rl.too_big)
            fail(k, 502, "upstream %s answered more than max_response bytes", c->name);
        else
            fail(k, 502, "upstream %s: %s", c->name, rl.bad[0] ? rl.bad : "transfer aborted");
        goto done;
    case UC_ERROR:
        upstream_report_result(cand->u, c, replica, &res);
        fail(k, uc_result_status(res.result), "upstream %s %s", c->name, uc_result_text(res.result));
        out = OUT_RETRY;
        goto done;
    }
    if (res.status < 200 || res.status >= 300) {
        out = answer_error_status(&rl);
        if (res.status >= 500)                  /* its trouble, retried or not: it counts, as on http routes */
            upstream_report_result(cand->u, c, replica, &res);
        goto done;
    }
    if (rl.is_sse && !relay_finished(&rl)) {
        /* its event stream ended before the generation finished (a model
         * host that died behind its web server ends it cleanly): nothing
         * reached the client, so another replica may answer. Not counted
         * against the replica, as other bad answers are not: its health
         * check takes a dead host out. */
        fail(k, 502, "upstream %s ended its event stream before the generation finished", c->name);
        out = OUT_RETRY;
        goto done;
    }
    upstream_report(cand->u, c, replica, true, NULL);
    if (rl.want_stream && rl.is_sse) {          /* a stream with no text at all (only its end) */
        relay_finish_stream(&rl);
        out = OUT_DONE;
        goto done;
    }
    out = rl.is_sse ? assembled_answer(&rl) : answer_whole(&rl);
done:
    sse_parser_free(&rl.parser);
    free(rl.buf);
    strbuf_free(&rl.text);
    free(rl.held_text);
    curl_slist_free_all(headers);
    json_object_put(ub);
    return out;
}

/* ------------------------------------------------------------------ generation (from dispatch.c) */

/* The final error answer, in the route's dialect. */
static int answer_failure(struct req *r, int status, const char *msg)
{
    if (status == 503)
        resp_header(r, "Retry-After", "1");
    if (r->dialect == DIALECT_OPENAI)
        return resp_error_openai(r, status, NULL, NULL, status >= 500 ? "upstream_error" : NULL, "%s", msg);
    return resp_error_tgi(r, status, NULL, "%s", msg);
}

int gateway_generate(struct req *r, enum client_kind kind, int variant, json_object *body, const struct gen *g,
                     const char *model)
{
    struct call k = {.r = r, .kind = kind, .body = body, .compat_list = variant == 2, .g = *g};
    snprintf(k.model, sizeof k.model, "%s", model);
    int rc = 0;
    struct cand cands[MAX_CANDIDATES];
    size_t n = 0;
    util_random_hex(k.id, 12);
    k.created = (int64_t)time(NULL);

    n = find_candidates(r, k.model, cands);
    if (n == 0) {
        rc = resp_model_not_found(r, k.model);
        goto out;
    }
    /* a bounded label: a name a configured upstream lists, or "*" for the catch-all (any client string) */
    r->model_label = metrics_model_id(cands[0].wild ? "*" : k.model);
    int attempts = 1 + (int)cands[0].c->retries, tries = 0;
    bool capped = false;
    while (tries < attempts) {
        int replica;
        struct cand *cd = choose(cands, n, &replica);
        if (!cd && tries > 0 && !capped) {     /* every replica failed once: go round again */
            for (size_t i = 0; i < n; i++)
                cands[i].tried = 0, cands[i].out = false;
            cd = choose(cands, n, &replica);
        }
        if (!cd)
            break;
        if (tries > 0 && retry_backoff(r, cd->c, tries) < 0) {
            r->client_gone = true;              /* the client hung up while we waited */
            goto out;
        }
        if (upstream_acquire(cd->u, cd->c) < 0) {
            cd->out = true;
            capped = true;
            continue;
        }
        if (tries > 0)
            metrics_upstream_retry(metrics_upstream_id(cd->c->name));
        tries++;
        upstream_replica_enter(cd->u, replica);
        enum outcome o = attempt(&k, cd, replica);
        upstream_replica_leave(cd->u, replica);
        upstream_release(cd->u);
        if (replica < 64)
            cd->tried |= 1ULL << replica;
        if (o == OUT_DONE)
            goto out;
        if (o == OUT_FAIL) {
            log_warn("request %s: %s", r->id, k.fail_msg);
            rc = answer_failure(r, k.fail_status, k.fail_msg);
            goto out;
        }
        log_warn("request %s: %s (attempt %d of %d)", r->id, k.fail_msg, tries, attempts);
    }
    if (tries == 0 && capped) {
        rc = answer_failure(r, 503, "every upstream serving this model is at its max_concurrent limit; try again");
    } else if (tries == 0) {
        char msg[400];
        snprintf(msg, sizeof msg, "no upstream serving model %s is available (all replicas are down)", k.model);
        log_warn("request %s: %s", r->id, msg);
        rc = answer_failure(r, 503, msg);
    } else {
        rc = answer_failure(r, k.fail_status, k.fail_msg);
    }
out:
    put_candidates(cands, n);
    return r->client_gone ? -1 : rc;
}


/* ------------------------------------------------------------------ listings (catalog.c) */

int route_gw_models_legacy(struct req *r)
{
    json_object *list = json_object_new_array();
    if (!list)
        return resp_error(r, 500, "out of memory");
    local_list_models(r, list, true);
    upstream_list_models(r, list, true);
    auth_filter_models(r->key, list);
    int rc = resp_json(r, 200, list);
    json_object_put(list);
    return rc;
}

int route_gw_model_health(struct req *r)
{
    const char *id = req_param(r, "id");
    int lrc;
    if (!id || auth_check_model(r, id) != FRONT_OK)
        return r->client_gone ? -1 : 0;
    if (local_model_health(r, id, &lrc))
        return lrc;
    json_object *ups = json_object_new_array(), *o = json_object_new_object();
    if (!ups || !o) {
        json_object_put(ups);
        json_object_put(o);
        return resp_error(r, 500, "out of memory");
    }
    bool any = false, found = false;
    for (size_t i = 0; i < r->cfg->n_upstreams; i++) {
        const struct config_upstream *c = &r->cfg->upstreams[i];
        struct upstream *u = c->type == UPSTREAM_HTTP ? NULL : gateway_get(upstreams(r), c->name);
        char *target, buf[256];
        if (!u)
            continue;
        if (upstream_routes_model(u, c, id, &target, buf, sizeof buf) && !c->catch_all) {
            bool avail = upstream_available(u);
            json_object *e = json_object_new_object();
            json_object_object_add(e, "name", json_object_new_string(c->name));
            json_object_object_add(e, "available", json_object_new_boolean(avail));
            json_object_array_add(ups, e);
            any |= avail;
            found = true;
        }
        upstream_put(u);
    }
    if (!found) {
        json_object_put(ups);
        json_object_put(o);
        return resp_model_not_found(r, id);
    }
    json_object_object_add(o, "model_id", json_object_new_string(id));
    json_object_object_add(o, "status", json_object_new_string(any ? "ok" : "unavailable"));
    json_object_object_add(o, "available", json_object_new_boolean(any));
    json_object_object_add(o, "upstreams", ups);
    int rc = resp_json(r, any ? 200 : 503, o);
    json_object_put(o);
    return rc;
}
