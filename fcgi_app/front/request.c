/* request.c -- one FastCGI request as handlers see it: method, path, query, headers, body, JSON body. */
#include "config.h"
#include "request.h"
#include "conf.h"
#include "response.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>

static const struct { const char *name; enum http_method m; } methods[] = {
    {"GET", M_GET}, {"HEAD", M_HEAD}, {"POST", M_POST}, {"PUT", M_PUT},
    {"DELETE", M_DELETE}, {"OPTIONS", M_OPTIONS}, {"PATCH", M_PATCH},
};

static bool valid_request_id(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (n >= REQ_ID_MAX || !(isalnum((unsigned char)s[n]) || strchr("-_.:", s[n])))
            return false;
    return n > 0;
}

/* The origin-form part of a request target: absolute-form
 * ("http://host/a?x") loses its scheme and authority ("/a?x"; "/" when
 * nothing follows them). */
static const char *origin_form(const char *uri)
{
    if (strncasecmp(uri, "http://", 7) == 0 || strncasecmp(uri, "https://", 8) == 0) {
        uri = strstr(uri, "//") + 2;
        uri += strcspn(uri, "/?");
        if (*uri == '\0')
            uri = "/";
    }
    return uri;
}

enum api_dialect req_path_dialect(const char *path)
{
    return strncmp(path, "/v1", 3) == 0 && strchr("/?#", path[3]) ? DIALECT_OPENAI : DIALECT_TGI;
}

/* The dialect of a request target that req_split_target may have refused
 * (too long, outside the prefix): its path's, past the prefix when it has it. */
static enum api_dialect target_dialect(const char *uri, const char *prefix)
{
    uri = origin_form(uri);
    size_t pl = strlen(prefix);
    if (pl && strncmp(uri, prefix, pl) == 0)
        uri += pl;
    return req_path_dialect(uri);
}

int req_split_target(const char *uri, const char *prefix, char *buf, size_t buflen, const char **query)
{
    *query = NULL;
    buf[0] = '\0';
    uri = origin_form(uri);
    if (uri[0] != '/')
        return 400;
    size_t n = strcspn(uri, "?#");
    if (n >= buflen)
        return 414;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)uri[i] < 0x20 || uri[i] == 0x7f)
            return 400;
    if (uri[n] == '?')
        *query = uri + n + 1;
    size_t pl = strlen(prefix);
    if (pl) {
        if (strncmp(uri, prefix, pl) != 0 || (uri[pl] != '/' && uri[pl] != '?' && uri[pl] != '#' && pl != n))
            return 404;
        uri += pl;
        n -= pl;
        if (n == 0) {                           /* "/llm" itself is "/" of the app */
            strcpy(buf, "/");
            return 0;
        }
    }
    memcpy(buf, uri, n);
    buf[n] = '\0';
    /* %00 (no route takes a NUL) and a malformed escape: 400, not a 404 that says the path is unknown */
    for (size_t i = 0; i < n; i++)
        if (buf[i] == '%' && (i + 2 >= n || util_hexval(buf[i + 1]) < 0 || util_hexval(buf[i + 2]) < 0 ||
                              (buf[i + 1] == '0' && buf[i + 2] == '0')))
            return 400;
    return 0;
}

int req_init(struct req *r, FCGX_Request *f, struct server *srv, const struct config *cfg)
{
    memset(r, 0, offsetof(struct req, extra_headers));
    r->extra_len = 0;
    r->extra_headers[0] = '\0';
    r->fcgi = f;
    r->srv = srv;
    r->cfg = cfg;
    r->start_ns = util_now_ns();
    r->query = "";
    r->tokens_in = r->tokens_out = -1;
    char **env = f->envp;

    const char *rid = FCGX_GetParam("HTTP_X_REQUEST_ID", env);
    if (rid && valid_request_id(rid))
        strcpy(r->id, rid);
    else
        util_random_hex(r->id, 16);

    r->remote_addr = FCGX_GetParam("REMOTE_ADDR", env);
    if (!r->remote_addr || !*r->remote_addr)
        r->remote_addr = "-";
    r->method_name = FCGX_GetParam("REQUEST_METHOD", env);
    if (!r->method_name || !*r->method_name)
        r->method_name = "-";
    r->method = M_OTHER;
    for (size_t i = 0; i < ARRAY_LEN(methods); i++)
        if (strcmp(r->method_name, methods[i].name) == 0)
            r->method = methods[i].m;

    /* The request target: REQUEST_URI (nginx and Apache), else DOCUMENT_URI
     * (nginx), else SCRIPT_NAME + PATH_INFO (CGI style). */
    char joined[REQ_PATH_MAX];
    const char *uri = FCGX_GetParam("REQUEST_URI", env);
    if (!uri || !*uri)
        uri = FCGX_GetParam("DOCUMENT_URI", env);
    if (!uri || !*uri) {
        const char *sn = FCGX_GetParam("SCRIPT_NAME", env), *pi = FCGX_GetParam("PATH_INFO", env);
        uri = joined;
        if ((size_t)snprintf(joined, sizeof joined, "%s%s", sn ? sn : "", pi ? pi : "") >= sizeof joined) {
            r->dialect = target_dialect(joined, cfg->path_prefix);     /* from its first bytes */
            strcpy(r->path, "-");
            return 414;
        }
    }
    /* errors answered before routing take the path's dialect too; the
     * router refines it per route */
    r->dialect = target_dialect(uri, cfg->path_prefix);
    const char *q = NULL;
    int rc = req_split_target(uri, cfg->path_prefix, r->path, sizeof r->path, &q);
    if (rc && !r->path[0])
        strcpy(r->path, "-");
    const char *qs = FCGX_GetParam("QUERY_STRING", env);
    if (qs)
        r->query = qs;
    else if (q)
        r->query = q;
    return rc;
}

void req_cleanup(struct req *r)
{
    free(r->body);
    r->body = NULL;
    r->body_len = 0;
}

const char *req_header(const struct req *r, const char *name)
{
    char key[128];
    size_t pos = 0;
    if (strcasecmp(name, "Content-Type") != 0 && strcasecmp(name, "Content-Length") != 0) {
        memcpy(key, "HTTP_", 5);
        pos = 5;
    }
    for (; *name && pos + 1 < sizeof key; name++)
        key[pos++] = *name == '-' ? '_' : (char)toupper((unsigned char)*name);
    key[pos] = '\0';
    return FCGX_GetParam(key, r->fcgi->envp);
}

int req_query(const struct req *r, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    const char *p = r->query;
    if (outlen)
        out[0] = '\0';
    while (p && *p) {
        const char *end = p + strcspn(p, "&");
        if ((size_t)(end - p) >= nl && strncmp(p, name, nl) == 0 && (p[nl] == '=' || p + nl == end)) {
            const char *v = p + nl + (p[nl] == '=');
            size_t vl = (size_t)(end - v);
            char tmp[1024];
            if (vl >= sizeof tmp)
                return -1;
            for (size_t i = 0; i < vl; i++)
                tmp[i] = v[i] == '+' ? ' ' : v[i];
            if (util_url_decode(tmp, tmp, vl) < 0 || strlen(tmp) >= outlen)    /* decoding only shrinks */
                return -1;
            memcpy(out, tmp, strlen(tmp) + 1);
            return 1;
        }
        p = *end ? end + 1 : end;
    }
    return 0;
}

const char *req_param(const struct req *r, const char *name)
{
    for (size_t i = 0; i < r->n_params; i++)
        if (strcmp(r->params[i].name, name) == 0)
            return r->params[i].value;
    return NULL;
}

/* How many bytes the next FCGX_GetStr may ask for without blocking much
 * past deadline_ns (0: no deadline), or -1 when it has passed. What libfcgi
 * has buffered of the current record comes at once; past that, one byte,
 * with the socket's receive timeout cut to the time left, so that the one
 * or two reads libfcgi makes for the next record end by the deadline. A web
 * server that streams the client's body (Apache's mod_proxy_fcgi does; nginx
 * buffers it first) would otherwise let a client that sends a byte now and
 * then hold a thread for ever: read_timeout only bounds the silence between
 * two reads. body_read_done puts read_timeout back. */
static long body_ready(struct req *r, int64_t deadline_ns, size_t want)
{
    FCGX_Stream *in = r->fcgi->in;
    size_t buffered = in->stop > in->rdNext ? (size_t)(in->stop - in->rdNext) : 0;
    if (buffered || in->isClosed || !deadline_ns)
        return (long)(buffered && buffered < want ? buffered : want);
    int64_t left_ns = deadline_ns - util_now_ns();
    if (left_ns <= 0)
        return -1;
    int64_t left_ms = (left_ns + 999999) / 1000000;    /* rounded up: 0 would mean no timeout */
    if (left_ms > r->cfg->read_timeout_ms)
        left_ms = r->cfg->read_timeout_ms;
    struct timeval tv = {.tv_sec = left_ms / 1000, .tv_usec = (left_ms % 1000) * 1000 + 1};
    setsockopt(r->fcgi->ipcFd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return 1;
}

static void body_read_done(struct req *r, int64_t deadline_ns)
{
    if (!deadline_ns)
        return;
    int64_t ms = r->cfg->read_timeout_ms;
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    setsockopt(r->fcgi->ipcFd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

static bool past(int64_t deadline_ns)
{
    return deadline_ns && util_now_ns() >= deadline_ns;
}

static int64_t body_deadline(const struct req *r)
{
    return r->cfg->body_timeout_ms > 0 ? util_now_ns() + r->cfg->body_timeout_ms * 1000000 : 0;
}

/* The body did not arrive in time: 408, and the connection is not kept
 * (the rest of the body may still be on its way). */
static int body_too_slow(struct req *r)
{
    r->fcgi->keepConnection = 0;
    resp_error(r, 408, "the request body did not arrive within %lld ms (body_timeout)",
               (long long)r->cfg->body_timeout_ms);
    return -1;
}

/* Reads and drops up to `limit` more body bytes, so that the web server can
 * finish sending a request we refuse. */
static void drain_body(struct req *r, uint64_t limit)
{
    char sink[16384];
    int64_t deadline = body_deadline(r);
    while (limit > 0) {
        long want = body_ready(r, deadline, limit < sizeof sink ? (size_t)limit : sizeof sink);
        int n = want < 0 ? -1 : FCGX_GetStr(sink, (int)want, r->fcgi->in);
        if (n <= 0) {
            if (past(deadline))
                r->fcgi->keepConnection = 0;
            break;
        }
        limit -= (uint64_t)n;
    }
    body_read_done(r, deadline);
}

#define DRAIN_LIMIT (64ull << 20)

int req_read_body(struct req *r)
{
    uint64_t max = r->cfg->max_body, want = 0;
    const char *cl = req_header(r, "Content-Length");
    bool sized = cl && *cl;
    if (sized) {
        char *end;
        errno = 0;
        if (!isdigit((unsigned char)cl[0]) || (want = strtoull(cl, &end, 10), errno) || *end) {
            resp_error(r, 400, "Content-Length is not a number: \"%.40s\"", cl);
            return -1;
        }
        if (want > max) {
            drain_body(r, want < DRAIN_LIMIT ? want : DRAIN_LIMIT);
            resp_error(r, 413, "request body of %llu bytes exceeds the limit of %llu bytes (max_body)",
                       (unsigned long long)want, (unsigned long long)max);
            return -1;
        }
    }
    /* Unsized bodies grow up to max_body + 1 bytes: one byte more than
     * allowed is how an oversized one shows. */
    size_t limit = sized ? (size_t)want : (size_t)max + 1;
    size_t cap = sized ? (size_t)want + 1 : (limit < 16384 ? limit + 1 : 16384);
    char *buf = malloc(cap);
    if (!buf) {
        resp_error(r, 500, "out of memory reading the request body");
        return -1;
    }
    size_t len = 0;
    int64_t deadline = body_deadline(r);
    while (len < limit) {
        if (len + 1 >= cap) {
            size_t ncap = cap * 2 > limit + 1 ? limit + 1 : cap * 2;
            char *grown = realloc(buf, ncap);
            if (!grown) {
                free(buf);
                resp_error(r, 500, "out of memory reading the request body");
                return -1;
            }
            buf = grown;
            cap = ncap;
        }
        long ask = body_ready(r, deadline, cap - 1 - len);
        int n = ask < 0 ? -1 : FCGX_GetStr(buf + len, (int)ask, r->fcgi->in);
        if (ask < 0 || (n <= 0 && past(deadline))) {
            body_read_done(r, deadline);
            free(buf);
            return body_too_slow(r);
        }
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    body_read_done(r, deadline);
    int rerr = FCGX_GetError(r->fcgi->in);
    if (rerr) {
        /* the stream failed rather than ended: never take what came as the whole body */
        free(buf);
        r->fcgi->keepConnection = 0;
        if (rerr == EAGAIN || rerr == EWOULDBLOCK)
            resp_error(r, 408, "the request body stopped arriving for %lld ms (read_timeout)",
                       (long long)r->cfg->read_timeout_ms);
        else
            resp_error(r, 400, "reading the request body failed after %zu bytes", len);
        return -1;
    }
    if (!sized && len > max) {
        free(buf);
        drain_body(r, DRAIN_LIMIT);
        resp_error(r, 413, "request body exceeds the limit of %llu bytes (max_body)", (unsigned long long)max);
        return -1;
    }
    if (sized && len < want) {
        free(buf);
        resp_error(r, 400, "request body ended after %zu of %llu bytes (Content-Length)", len,
                   (unsigned long long)want);
        return -1;
    }
    buf[len] = '\0';
    free(r->body);
    r->body = buf;
    r->body_len = len;
    return 0;
}

bool req_content_type_is_json(const char *ct)
{
    if (!ct)
        return false;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strcspn(ct, ";");
    while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    bool json = (n == 16 && strncasecmp(ct, "application/json", 16) == 0) ||
                (n > 17 && strncasecmp(ct, "application/", 12) == 0 && strncasecmp(ct + n - 5, "+json", 5) == 0);
    if (!json)
        return false;
    /* Parameters: only a UTF-8 charset makes sense for JSON. */
    for (const char *p = strchr(ct, ';'); p; p = strchr(p + 1, ';')) {
        const char *a = p + 1;
        while (*a == ' ' || *a == '\t')
            a++;
        if (strncasecmp(a, "charset=", 8) == 0) {
            a += 8;
            if (*a == '"')
                a++;
            if (strncasecmp(a, "utf-8", 5) != 0 && strncasecmp(a, "utf8", 4) != 0)
                return false;
        }
    }
    return true;
}

/* The members whose strings are texts, which may hold \u0000 (JSON allows
 * it; GPT-2's tokenizer makes byte 0 token 188): OpenAI's prompt, message
 * content and content parts' text, input (embeddings, moderations, the
 * Responses API), TGI's inputs, the moderation service's input_text, and
 * stop sequences. The
 * readers of these carry each string with its length; every other string
 * names something and is refused with a NUL in it (json_check_request). */
static const char *const req_text_keys[] = {"prompt", "inputs", "input", "input_text", "content", "text", "stop",
                                              NULL};

json_object *req_json_body(struct req *r)
{
    const char *ct = req_header(r, "Content-Type");
    if (!req_content_type_is_json(ct)) {
        resp_error(r, 415, "this endpoint takes a JSON body: send the header Content-Type: application/json "
                   "(got %s%.60s%s)", ct ? "\"" : "", ct ? ct : "none", ct ? "\"" : "");
        return NULL;
    }
    if (req_read_body(r) < 0)
        return NULL;
    struct json_tree_cost cost;
    json_tree_estimate(r->body, r->body_len, &cost);
    if (!json_tree_fits(&cost, r->body_len)) {
        resp_error(r, 413, "the JSON body holds too many values for its size (%zu objects, %zu arrays, %zu values "
                   "in %zu bytes): parsed, it would take about %zu MB, more than %d times its size plus %u MB",
                   cost.objects, cost.arrays, cost.values, r->body_len, cost.bytes >> 20, JSON_TREE_FACTOR,
                   JSON_TREE_SLACK >> 20);
        return NULL;
    }
    char err[200];
    json_object *obj = json_parse_strict(r->body, r->body_len, err, sizeof err);
    if (!obj) {
        resp_error(r, 400, "%s", err[0] ? err : "the request body must be a JSON object, got null");
        return NULL;
    }
    if (json_check_request(r->body, r->body_len, obj, req_text_keys, err, sizeof err) < 0) {
        resp_error(r, 400, "%s", err);
        json_object_put(obj);
        return NULL;
    }
    if (!json_object_is_type(obj, json_type_object)) {
        resp_error(r, 400, "the request body must be a JSON object, got %s",
                   json_type_to_name(json_object_get_type(obj)));
        json_object_put(obj);
        return NULL;
    }
    return obj;
}
