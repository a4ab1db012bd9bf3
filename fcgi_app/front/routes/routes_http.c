/* routes_http.c -- http upstreams: any request under an upstream's path_prefix passed through as it is (method, headers, body, the answer streamed back), with retries before the first byte. */
#include "config.h"
#include "routes_http.h"
#include "client.h"
#include "conf.h"
#include "gateway.h"
#include "log.h"
#include "metrics.h"
#include "response.h"
#include "retry.h"
#include "server.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ------------------------------------------------------------------ services */

/* What this route family uses of the server (struct server): the
 * upstreams' live state. */
static struct gateway *upstreams(const struct req *r)
{
    return r->srv->gw;
}

/* ------------------------------------------------------------------ http upstreams */

/* The http upstream whose path_prefix holds r's path; *rest is the path after it. */
static const struct config_upstream *http_upstream(struct req *r, const char **rest)
{
    for (size_t i = 0; i < r->cfg->n_upstreams; i++) {
        const struct config_upstream *c = &r->cfg->upstreams[i];
        if (c->type != UPSTREAM_HTTP || !c->path_prefix)
            continue;
        size_t len = strlen(c->path_prefix);
        if (strncmp(r->path, c->path_prefix, len) == 0 && (r->path[len] == '\0' || r->path[len] == '/')) {
            *rest = r->path + len;
            return c;
        }
    }
    return NULL;
}

bool gateway_route_http(struct req *r)
{
    const char *rest;
    return r->cfg->n_upstreams && http_upstream(r, &rest) != NULL;
}

/* What passes through an http upstream, header by header.
 *
 * Client to upstream: every header of the client's but
 *  - hop-by-hop ones (RFC 9110 7.6.1) and any the client's Connection names;
 *  - Host, Content-Length, Expect: libcurl sets them for the upstream's URL
 *    and the body it sends; Proxy (httpoxy);
 *  - Authorization when llmcgi checks keys or the upstream has an api_key,
 *    x-api-key when llmcgi checks keys: the client's keys are llmcgi's;
 *  - X-Forwarded-For/-Host/-Proto and X-Request-Id, which llmcgi sets (the
 *    client's X-Forwarded-For, with the client's address added).
 * Then the upstream's api_key and `header =` lines replace every header of
 * the same name, the client's and llmcgi's alike (upstream_credentials).
 *
 * Upstream to client: every header of the answer but
 *  - hop-by-hop ones, Content-Length (the web server frames the body) and
 *    X-Request-Id (llmcgi's own);
 *  - those that instruct the web server instead of the client
 *    (web_server_header): Status, X-Accel-*, X-Sendfile, X-Lighttpd-Send-*;
 *  - Access-Control-* when llmcgi answers CORS, X-RateLimit-* when llmcgi
 *    limits rates or checks keys;
 *  - names that are not tokens, values with a line break.
 * A header line or a whole head past the caps below ends the answer as a
 * JSON 502 instead.
 * Set-Cookie, Location, Content-Encoding, Cache-Control and the rest pass
 * unchanged: through them the upstream's application speaks to the client. */

/* Caps on the headers relayed from an `http` upstream, so that what llmcgi
 * relays is what the web server in front accepts: Apache refuses a header
 * line over 8190 bytes, and the shipped nginx site's fastcgi_buffer_size
 * (32k) must hold these plus llmcgi's own. An answer over them is a JSON 502
 * (the web server's HTML 502 otherwise, while llmcgi would log a 200). */
#define PASS_HEADER_MAX 8000            /* one header line, name and value */
#define PASS_HEADERS_MAX 16384          /* all relayed headers together */

/* Hop-by-hop headers (RFC 9110 7.6.1) and ones we set ourselves. */
static bool hop_by_hop(const char *name, size_t len)
{
    static const char *const names[] = {"connection", "keep-alive", "proxy-connection", "proxy-authenticate",
                                        "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade",
                                        "host", "expect", "x-request-id", "content-length", "proxy"};
    for (size_t i = 0; i < ARRAY_LEN(names); i++)
        if (strlen(names[i]) == len && strncasecmp(name, names[i], len) == 0)
            return true;
    return false;
}

/* An answer header that the web server in front reads as an order (nginx's
 * X-Accel-Redirect serves any internal location, X-Sendfile any file) or
 * as the status: an upstream must not give those. */
static bool web_server_header(const char *name, size_t len)
{
    static const char *const names[] = {"status", "x-sendfile", "x-lighttpd-send-file", "x-lighttpd-send-tempfile"};
    if (len >= 8 && strncasecmp(name, "x-accel-", 8) == 0)
        return true;
    for (size_t i = 0; i < ARRAY_LEN(names); i++)
        if (strlen(names[i]) == len && strncasecmp(name, names[i], len) == 0)
            return true;
    return false;
}

/* Does the comma-separated list (a Connection header's value) name name[0..len)? */
static bool listed_in(const char *list, const char *name, size_t len)
{
    for (const char *p = list; p && *p;) {
        p += strspn(p, " \t,");
        size_t n = strcspn(p, " \t,");
        if (n && gateway_header_name_eq(p, n, name, len))
            return true;
        p += n;
    }
    return false;
}

struct pass {
    struct req *r;
    struct uc_response *res;
    char *headers;              /* the answer's headers, "Name: value\r\n"... */
    size_t hlen, hcap;
    bool started, event_stream;
    bool body_failed;           /* the client's body ended before CONTENT_LENGTH */
    bool too_big;               /* the upstream's headers are over the caps below */
    uint64_t body_read;         /* bytes of the client's body sent upstream */
    uint64_t body_left;
};

static int pass_header(void *ud, const char *name, size_t nlen, const char *value, size_t vlen)
{
    struct pass *p = ud;
    if (hop_by_hop(name, nlen) || web_server_header(name, nlen) || nlen == 0 || nlen > 100 || memchr(value, '\r', vlen) ||
        memchr(value, '\n', vlen))
        return 0;
    for (size_t i = 0; i < nlen; i++)
        if (!isalnum((unsigned char)name[i]) && name[i] != '-' && name[i] != '_')
            return 0;
    /* llmcgi's own front door speaks for these: an upstream's CORS answer
     * (say "Access-Control-Allow-Origin: *") or rate-limit headers beside
     * llmcgi's would contradict them */
    const struct config *cfg = p->r->cfg;
    if ((cfg->n_cors_origins || cfg->cors_any) && nlen >= 15 && strncasecmp(name, "access-control-", 15) == 0)
        return 0;
    if ((cfg->requests_per_minute || cfg->tokens_per_minute || cfg->address_requests_per_minute ||
         cfg->address_tokens_per_minute || cfg->keys) && nlen >= 12 && strncasecmp(name, "x-ratelimit-", 12) == 0)
        return 0;
    if (nlen == 12 && strncasecmp(name, "content-type", 12) == 0)
        p->event_stream = vlen >= 17 && strncasecmp(value, "text/event-stream", 17) == 0;
    size_t need = p->hlen + nlen + vlen + 5;
    if (nlen + vlen + 4 > PASS_HEADER_MAX || need > PASS_HEADERS_MAX) {
        p->too_big = true;                      /* stops the transfer; the caller answers 502 */
        return -1;
    }
    if (need > p->hcap) {
        size_t cap = p->hcap ? p->hcap * 2 : 1024;
        while (cap < need)
            cap *= 2;
        char *grown = realloc(p->headers, cap);
        if (!grown)
            return -1;
        p->headers = grown;
        p->hcap = cap;
    }
    p->hlen += (size_t)snprintf(p->headers + p->hlen, p->hcap - p->hlen, "%.*s: %.*s\r\n", (int)nlen, name,
                                (int)vlen, value);
    return 0;
}

static int pass_start(struct pass *p)
{
    if (p->started)
        return 0;
    p->started = true;
    if (p->event_stream)        /* nginx would otherwise buffer the events */
        resp_header(p->r, "X-Accel-Buffering", "no");
    return resp_start_raw(p->r, (int)p->res->status, p->headers ? p->headers : "", p->hlen);
}

static int pass_body(void *ud, const char *data, size_t len)
{
    struct pass *p = ud;
    if (pass_start(p) < 0 || resp_write(p->r, data, len) < 0)
        return -1;
    return p->event_stream ? resp_flush(p->r) : 0;
}

static size_t pass_read(char *buf, size_t len, void *ud)
{
    struct pass *p = ud;
    if (p->body_left == 0)
        return 0;
    if (len > p->body_left)
        len = (size_t)p->body_left;
    int n = FCGX_GetStr(buf, (int)len, p->r->fcgi->in);
    if (n <= 0) {
        p->body_failed = true;
        return CURL_READFUNC_ABORT;             /* the client's body ended early */
    }
    p->body_left -= (uint64_t)n;
    p->body_read += (uint64_t)n;
    return (size_t)n;
}

/* HTTP_ACCEPT_LANGUAGE -> Accept-Language */
static void header_name(const char *cgi, size_t len, char *out, size_t outlen)
{
    size_t n = 0;
    bool up = true;
    for (size_t i = 0; i < len && n + 1 < outlen; i++) {
        char c = cgi[i];
        out[n++] = c == '_' ? '-' : up ? c : (char)tolower((unsigned char)c);
        up = c == '_';
    }
    out[n] = '\0';
}

static struct curl_slist *pass_headers(struct req *r, const struct config_upstream *c)
{
    struct curl_slist *h = NULL;
    char line[8400], name[128];
    const char *xff = NULL, *connection = FCGX_GetParam("HTTP_CONNECTION", r->fcgi->envp);
    for (char **e = r->fcgi->envp; e && *e; e++) {
        if (strncmp(*e, "HTTP_", 5) != 0)
            continue;
        const char *eq = strchr(*e, '=');
        if (!eq || eq - *e - 5 >= (long)sizeof name)
            continue;
        header_name(*e + 5, (size_t)(eq - *e - 5), name, sizeof name);
        size_t nl = strlen(name);
        if (hop_by_hop(name, nl) || listed_in(connection, name, nl) || ((c->api_key || r->cfg->keys) && strcasecmp(name, "authorization") == 0) ||
            (r->cfg->keys && strcasecmp(name, "x-api-key") == 0))
            continue;                   /* our clients' keys are ours; the upstream gets its own api_key */
        if (strcasecmp(name, "x-forwarded-for") == 0) {
            xff = eq + 1;
            continue;
        }
        if (strcasecmp(name, "x-forwarded-host") == 0 || strcasecmp(name, "x-forwarded-proto") == 0)
            continue;
        snprintf(line, sizeof line, "%s: %s", name, eq + 1);
        if (!gateway_slist_add(&h, line))
            return NULL;
    }
    const char *ct = FCGX_GetParam("CONTENT_TYPE", r->fcgi->envp), *host = req_header(r, "Host"),
               *https = FCGX_GetParam("HTTPS", r->fcgi->envp);
    const char *extra[8];
    size_t ne = 0;
    char xff_line[1200], host_line[600], ct_line[600], id_line[128];
    snprintf(xff_line, sizeof xff_line, "X-Forwarded-For: %s%s%s", xff ? xff : "", xff ? ", " : "", r->remote_addr);
    extra[ne++] = xff_line;
    extra[ne++] = https && strcasecmp(https, "on") == 0 ? "X-Forwarded-Proto: https" : "X-Forwarded-Proto: http";
    if (host) {
        snprintf(host_line, sizeof host_line, "X-Forwarded-Host: %s", host);
        extra[ne++] = host_line;
    }
    snprintf(ct_line, sizeof ct_line, "Content-Type: %s", ct ? ct : "");
    extra[ne++] = ct ? ct_line : "Content-Type:";
    snprintf(id_line, sizeof id_line, "X-Request-Id: %s", r->id);
    extra[ne++] = id_line;
    extra[ne++] = "Expect:";
    for (size_t i = 0; i < ne; i++)
        if (!gateway_slist_add(&h, extra[i]))
            return NULL;
    return upstream_credentials(c, h);
}

int route_gw_http(struct req *r)
{
    const char *rest = "";
    const struct config_upstream *c = http_upstream(r, &rest);
    r->dialect = DIALECT_TGI;
    r->route = c->path_prefix;
    struct upstream *u = gateway_get(upstreams(r), c->name);
    if (!u)
        return resp_error(r, 503, "upstream %s is not running", c->name);
    const char *cl = FCGX_GetParam("CONTENT_LENGTH", r->fcgi->envp);
    long long body_size = cl && *cl ? strtoll(cl, NULL, 10) : 0;
    if (body_size < 0)
        body_size = 0;
    struct curl_slist *headers = pass_headers(r, c);
    int rc = 0, tries = 0, attempts = 1 + (int)c->retries;
    uint64_t tried = 0;
    struct pass p = {.r = r, .body_left = (uint64_t)body_size};
    struct uc_response res;
    char msg[400] = "";
    int status = 502;
    if (!headers) {
        rc = resp_error(r, 500, "out of memory");
        goto out;
    }
    if (upstream_acquire(u, c) < 0) {
        resp_header(r, "Retry-After", "1");
        rc = resp_error(r, 503, "upstream %s is at its max_concurrent limit; try again", c->name);
        goto out;
    }
    while (tries < attempts) {
        int replica = upstream_pick(u, tried);
        if (replica < 0)
            break;
        if (tries > 0 && retry_backoff(r, c, tries) < 0) {
            r->client_gone = true;
            break;
        }
        if (tries > 0)
            metrics_upstream_retry(metrics_upstream_id(c->name));
        tries++;
        tried |= replica < 64 ? 1ULL << replica : 0;
        char url[REQ_PATH_MAX + 600];
        snprintf(url, sizeof url, "%s%s%s%s", upstream_replica_url(u, replica), *rest ? rest : "/",
                 r->query && *r->query ? "?" : "", r->query ? r->query : "");
        p.res = &res;
        p.hlen = 0;
        struct uc_request q = {
            .method = r->method_name, .url = url, .headers = headers,
            .read_body = body_size > 0 ? pass_read : NULL, .body_size = body_size,
            .connect_timeout_ms = c->connect_timeout_ms, .first_byte_timeout_ms = c->first_byte_timeout_ms,
            .idle_timeout_ms = c->stream_idle_timeout_ms, .total_timeout_ms = c->total_timeout_ms,
            .watch_fd = body_size > 0 ? -1 : r->fcgi->ipcFd,
            .on_header = pass_header, .on_body = pass_body, .ud = &p,
        };
        int64_t t_start = util_now_ns();
        upstream_replica_enter(u, replica);
        int prc = uc_perform(&q, &res);
        upstream_replica_leave(u, replica);
        if (prc < 0) {
            snprintf(msg, sizeof msg, "cannot reach upstream %s: %s", c->name, res.error);
            status = 500;
            break;
        }
        metrics_upstream_attempt(metrics_upstream_id(c->name), res.result == UC_OK && res.status < 500,
                                 util_now_ns() - t_start);
        if (res.client_gone || r->client_gone) {
            r->client_gone = true;
            break;
        }
        if (p.body_failed) {                    /* the client's body stopped coming: not the upstream's fault */
            log_warn("request %s: the request body stopped arriving after %llu bytes (read_timeout or a hang-up)",
                     r->id, (unsigned long long)p.body_read);
            snprintf(msg, sizeof msg, "the request body stopped arriving (read_timeout)");
            status = 408;
            break;
        }
        if (p.too_big) {
            upstream_report(u, c, replica, true, NULL);     /* it answered: the answer is the problem */
            snprintf(msg, sizeof msg,
                     "upstream %s answered with headers over llmcgi's limit (%d bytes a header, %d in all)",
                     c->name, PASS_HEADER_MAX, PASS_HEADERS_MAX);
            log_warn("request %s: %s", r->id, msg);
            status = 502;
            break;
        }
        if (p.started) {
            upstream_report_result(u, c, replica, &res);
            if (res.result != UC_OK)
                log_warn("request %s: upstream %s failed mid-answer: %s", r->id, c->name, uc_result_text(res.result));
            break;
        }
        if (res.result == UC_OK) {
            upstream_report_result(u, c, replica, &res);
            pass_start(&p);                     /* an answer without a body */
            break;
        }
        upstream_report_result(u, c, replica, &res);
        status = uc_result_status(res.result);
        snprintf(msg, sizeof msg, "upstream %s %s", c->name, uc_result_text(res.result));
        bool retryable = p.body_read == 0 && (res.result == UC_CONNECT || res.result == UC_CONNECT_TIMEOUT);
        log_warn("request %s: %s%s", r->id, msg, retryable && tries < attempts ? "; retrying" : "");
        if (!retryable)
            break;
    }
    upstream_release(u);
    if (!p.started && !r->client_gone) {
        if (!msg[0]) {
            snprintf(msg, sizeof msg, "no replica of upstream %s is available", c->name);
            status = 503;
        }
        if (status == 503)
            resp_header(r, "Retry-After", "1");
        rc = resp_error(r, status, "%s", msg);
    }
out:
    free(p.headers);
    curl_slist_free_all(headers);
    upstream_put(u);
    return r->client_gone ? -1 : rc;
}
