/* response.c -- writing the answer: status and headers, JSON bodies, errors in the OpenAI and TGI shapes. */
#include "config.h"
#include "response.h"
#include "log.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const struct { int status; const char *reason, *openai_type, *tgi_type; } statuses[] = {
    {200, "OK", NULL, NULL},
    {201, "Created", NULL, NULL},
    {204, "No Content", NULL, NULL},
    {400, "Bad Request", "invalid_request_error", "validation"},
    {401, "Unauthorized", "authentication_error", "unauthorized"},
    {403, "Forbidden", "permission_error", "forbidden"},
    {404, "Not Found", "invalid_request_error", "not_found"},
    {405, "Method Not Allowed", "invalid_request_error", "method_not_allowed"},
    {408, "Request Timeout", "timeout_error", "timeout"},
    {409, "Conflict", "invalid_request_error", "conflict"},
    {413, "Payload Too Large", "invalid_request_error", "validation"},
    {414, "URI Too Long", "invalid_request_error", "validation"},
    {415, "Unsupported Media Type", "invalid_request_error", "validation"},
    {422, "Unprocessable Entity", "invalid_request_error", "validation"},
    {424, "Failed Dependency", "server_error", "generation"},
    {429, "Too Many Requests", "rate_limit_error", "overloaded"},
    {500, "Internal Server Error", "server_error", "internal"},
    {502, "Bad Gateway", "server_error", "upstream"},
    {503, "Service Unavailable", "server_error", "unavailable"},
    {504, "Gateway Timeout", "timeout_error", "timeout"},
};

static int status_index(int status)
{
    for (size_t i = 0; i < ARRAY_LEN(statuses); i++)
        if (statuses[i].status == status)
            return (int)i;
    return -1;
}

const char *http_reason(int status)
{
    int i = status_index(status);
    return i < 0 ? "Unknown" : statuses[i].reason;
}

void resp_header(struct req *r, const char *name, const char *fmt, ...)
{
    char value[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(value, sizeof value, fmt, ap);
    va_end(ap);
    if (strpbrk(value, "\r\n") || strpbrk(name, "\r\n: ")) {
        log_error("request %s: refused header %s with a line break in it", r->id, name);
        return;
    }
    size_t room = sizeof r->extra_headers - r->extra_len;
    int n = snprintf(r->extra_headers + r->extra_len, room, "%s: %s\r\n", name, value);
    if (n < 0 || (size_t)n >= room) {
        r->extra_headers[r->extra_len] = '\0';
        log_error("request %s: no room for header %s", r->id, name);
        return;
    }
    r->extra_len += (size_t)n;
}

static int put(struct req *r, const char *data, size_t len)
{
    if (r->client_gone)
        return -1;
    if (len && FCGX_PutStr(data, (int)len, r->fcgi->out) != (int)len) {
        r->client_gone = true;
        return -1;
    }
    return 0;
}

int resp_start(struct req *r, int status, const char *content_type, long long content_length)
{
    char head[2048];
    if (r->status) {
        log_error("request %s: response started twice (%d, then %d)", r->id, r->status, status);
        return -1;
    }
    r->status = status;
    int n = snprintf(head, sizeof head, "Status: %d %s\r\nX-Request-Id: %s\r\n", status, http_reason(status), r->id);
    if (content_type)
        n += snprintf(head + n, sizeof head - (size_t)n, "Content-Type: %s\r\n", content_type);
    if (content_length >= 0)
        n += snprintf(head + n, sizeof head - (size_t)n, "Content-Length: %lld\r\n", content_length);
    if (put(r, head, (size_t)n) < 0 || put(r, r->extra_headers, r->extra_len) < 0 || put(r, "\r\n", 2) < 0)
        return -1;
    return 0;
}

int resp_start_raw(struct req *r, int status, const char *headers, size_t len)
{
    char head[160];
    if (r->status) {
        log_error("request %s: response started twice (%d, then %d)", r->id, r->status, status);
        return -1;
    }
    r->status = status;
    int n = snprintf(head, sizeof head, "Status: %d %s\r\nX-Request-Id: %s\r\n", status, http_reason(status), r->id);
    if (put(r, head, (size_t)n) < 0 || put(r, headers, len) < 0 || put(r, r->extra_headers, r->extra_len) < 0 ||
        put(r, "\r\n", 2) < 0)
        return -1;
    return 0;
}

int resp_write(struct req *r, const void *data, size_t len)
{
    if (r->method == M_HEAD)
        return r->client_gone ? -1 : 0;
    if (put(r, data, len) < 0)
        return -1;
    r->bytes_out += len;
    return 0;
}

int resp_flush(struct req *r)
{
    if (r->client_gone)
        return -1;
    if (FCGX_FFlush(r->fcgi->out) < 0) {
        r->client_gone = true;
        return -1;
    }
    return 0;
}

int resp_send(struct req *r, int status, const char *content_type, const void *body, size_t len)
{
    if (resp_start(r, status, content_type, (long long)len) < 0)
        return -1;
    return resp_write(r, body, len);
}

int resp_json(struct req *r, int status, json_object *obj)
{
    size_t len;
    const char *s = json_object_to_json_string_length(obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
    if (!s) {
        static const char oom[] = "{\"error\":\"out of memory\"}";
        return resp_send(r, 500, "application/json", oom, sizeof oom - 1);
    }
    return resp_send(r, status, "application/json", s, len);
}

static json_object *openai_error(int status, const char *type, const char *param, const char *code, const char *msg)
{
    int i = status_index(status);
    if (!type)
        type = i >= 0 && statuses[i].openai_type ? statuses[i].openai_type : "server_error";
    json_object *err = json_object_new_object(), *outer = json_object_new_object();
    if (!err || !outer) {
        json_object_put(err);
        json_object_put(outer);
        return NULL;
    }
    json_object_object_add(err, "message", json_object_new_string(msg));
    json_object_object_add(err, "type", json_object_new_string(type));
    json_object_object_add(err, "param", param ? json_object_new_string(param) : NULL);
    json_object_object_add(err, "code", code ? json_object_new_string(code) : NULL);
    json_object_object_add(outer, "error", err);
    return outer;
}

static json_object *tgi_error(int status, const char *type, const char *msg)
{
    int i = status_index(status);
    if (!type)
        type = i >= 0 && statuses[i].tgi_type ? statuses[i].tgi_type : "internal";
    json_object *obj = json_object_new_object();
    if (!obj)
        return NULL;
    json_object_object_add(obj, "error", json_object_new_string(msg));
    json_object_object_add(obj, "error_type", json_object_new_string(type));
    return obj;
}

/* The error event that ends a stream which failed after it began: what an
 * error answer's body would be (OpenAI: type server_error, with code;
 * TGI: error_type "generation"). A new object the caller puts; NULL out of
 * memory. msg is copied. */
json_object *resp_error_event(enum api_dialect dialect, const char *code, const char *msg)
{
    return dialect == DIALECT_OPENAI ? openai_error(500, "server_error", NULL, code, msg)
                                     : tgi_error(424, "generation", msg);
}

json_object *resp_error_event_responses(const char *code, const char *msg, long seq)
{
    json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    json_object_object_add(o, "type", json_object_new_string("error"));
    json_object_object_add(o, "code", json_object_new_string(code ? code : "server_error"));
    json_object_object_add(o, "message", json_object_new_string(msg));
    json_object_object_add(o, "param", NULL);
    json_object_object_add(o, "sequence_number", json_object_new_int64(seq));
    return o;
}

/* Formats the message, builds the error in the given dialect (type NULL:
 * the default for the status), sends it. Every error answer goes through here. */
static int send_error(struct req *r, int status, enum api_dialect dialect, const char *type, const char *param,
                      const char *code, const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    util_utf8_scrub(msg);                       /* names from URLs and bodies; a cut character */
    json_object *obj = dialect == DIALECT_OPENAI ? openai_error(status, type, param, code, msg)
                                                 : tgi_error(status, type, msg);
    if (!obj)
        return -1;
    if (status >= 500)
        log_error("request %s: %d %s", r->id, status, json_object_to_json_string(obj));
    int rc = resp_json(r, status, obj);
    json_object_put(obj);
    return rc;
}

int resp_error_openai(struct req *r, int status, const char *type, const char *param, const char *code,
                      const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = send_error(r, status, DIALECT_OPENAI, type, param, code, fmt, ap);
    va_end(ap);
    return rc;
}

int resp_error_tgi(struct req *r, int status, const char *error_type, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = send_error(r, status, DIALECT_TGI, error_type, NULL, NULL, fmt, ap);
    va_end(ap);
    return rc;
}

int resp_error_model(struct req *r, enum api_dialect d, int status, const char *param, const char *code,
                     const char *msg)
{
    if (status == 429 || status == 503)
        resp_header(r, "Retry-After", "1");
    if (d == DIALECT_OPENAI) {
        if (!code)
            code = status == 429 ? "rate_limit_exceeded" : status == 404 ? "model_not_found" : NULL;
        return resp_error_openai(r, status, NULL, param, code, "%s", msg);
    }
    return resp_error_tgi(r, status == 400 ? 422 : status, NULL, "%s", msg);
}

int resp_model_not_found(struct req *r, const char *model)
{
    char msg[REQ_PARAM_MAX + 64];
    snprintf(msg, sizeof msg, "The model `%s` does not exist", model ? model : "");
    return resp_error_model(r, r->dialect, 404, "model", NULL, msg);
}

int resp_error(struct req *r, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = send_error(r, status, r->dialect, NULL, NULL, NULL, fmt, ap);
    va_end(ap);
    return rc;
}
