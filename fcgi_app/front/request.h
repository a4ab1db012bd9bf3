/* request.c -- one FastCGI request as handlers see it: method, path, query, headers, body, JSON body.
 *
 * A struct req lives on its responder thread's stack for one request. It
 * borrows the libfcgi request (whose streams only this thread touches) and
 * one reference to the config snapshot; it owns the body buffer. */
#ifndef LLMCGI_REQUEST_H
#define LLMCGI_REQUEST_H

#include <fcgiapp.h>
#include <json-c/json.h>

#include "json_strict.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct server;
struct config;
struct auth_key;

enum http_method {
    M_GET = 1 << 0, M_HEAD = 1 << 1, M_POST = 1 << 2, M_PUT = 1 << 3,
    M_DELETE = 1 << 4, M_OPTIONS = 1 << 5, M_PATCH = 1 << 6, M_OTHER = 1 << 7,
};

/* Which API's error shape a route answers in. */
enum api_dialect {
    DIALECT_TGI,        /* {"error": "...", "error_type": "..."} */
    DIALECT_OPENAI,     /* {"error": {"message", "type", "param", "code"}} */
};

#define REQ_PATH_MAX 2048
#define REQ_ID_MAX 64
#define REQ_MAX_PARAMS 4
#define REQ_PARAM_MAX 256

struct req_param {
    char name[24];                  /* from the route pattern: "id" for {id} */
    char value[REQ_PARAM_MAX];      /* percent-decoded */
};

/* What a front-door check (CORS, the API key, operator keys, a key's
 * models, the rate limits) says, as nginx's handlers return NGX_OK: go on
 * to the next check and the route; or the check answered the request
 * itself (a refusal, or a CORS preflight) and nothing more may be written;
 * or answering failed because the client went away. */
enum front_rc {
    FRONT_ERROR = -1,               /* the client went away while answering */
    FRONT_OK = 0,                   /* go on */
    FRONT_ANSWERED = 1,             /* answered here: stop */
};

struct req {
    FCGX_Request *fcgi;             /* borrowed; its streams belong to this thread */
    struct server *srv;             /* borrowed */
    const struct config *cfg;       /* borrowed reference, held by the caller */
    int64_t start_ns;

    enum http_method method;
    const char *method_name;        /* REQUEST_METHOD as sent */
    char path[REQ_PATH_MAX];        /* still percent-encoded; path_prefix removed; no query */
    const char *query;              /* without '?'; "" when none */
    const char *remote_addr;        /* "-" when unknown */
    char id[REQ_ID_MAX + 1];        /* the client's X-Request-Id when well-formed, else generated */
    enum api_dialect dialect;       /* set by the router */
    const char *route;              /* pattern of the matched route, NULL when none */
    int model_label;                /* metrics_model_id() of the model that served it; 0: none (yet) */
    long tokens_in, tokens_out;     /* prompt / generated tokens used, as counted by the handler; -1 = not known
                                     * (access log, metrics, tokens/min correction) */
    size_t n_params;
    struct req_param params[REQ_MAX_PARAMS];

    char *body;                     /* owned; NUL-terminated; NULL until req_read_body */
    size_t body_len;

    /* the front door (auth.c, ratelimit.c) */
    const struct auth_key *key;     /* the caller's API key, in cfg->keys; NULL when none */
    char client[64];                /* the client's address for limits (REMOTE_ADDR or trusted X-Forwarded-For) */
    long tokens_reserved;           /* tokens/min reserved at admission; 0 = none */
    long prompt_estimate;           /* the prompt's part of that reservation */
    bool auth_failed;               /* presented a key that is not in the keys file (counted per address) */

    /* response state, kept by response.c */
    int status;                     /* 0 until the headers are written */
    uint64_t bytes_out;             /* body bytes written */
    bool client_gone;               /* a write failed: the client went away */
    char extra_headers[2048];       /* queued with resp_header() */
    size_t extra_len;
};

/* Fills r from the FastCGI parameters of f. Returns 0, or an HTTP status
 * (400, 404, 414) for a request target that cannot be served; r is usable
 * for an error response either way, in the dialect of the target's path. */
int req_init(struct req *r, FCGX_Request *f, struct server *srv, const struct config *cfg);

/* The error shape of a path (past path_prefix, with or without its query):
 * OpenAI's for "/v1" and everything under "/v1/", TGI's elsewhere. */
enum api_dialect req_path_dialect(const char *path);

/* Frees what the request owns (the body). */
void req_cleanup(struct req *r);

/* Splits a request target (REQUEST_URI: "/a/b?x=1", or absolute-form
 * "http://host/a/b?x=1") into path (into buf) and query (pointing into
 * uri, NULL when none), then strips `prefix` ("" or "/llm"). Returns 0,
 * or 400 (malformed: a control byte, %00 or a malformed %-escape in the
 * path; buf holds the path, still encoded, for the latter two, else ""),
 * 404 (outside the prefix), 414 (longer than buflen). */
int req_split_target(const char *uri, const char *prefix, char *buf, size_t buflen, const char **query);

/* The value of request header `name` ("Content-Type", "X-Request-Id"), or NULL. */
const char *req_header(const struct req *r, const char *name);

/* The value of query parameter `name`, decoded (%XX and '+') into out.
 * Returns 1 when present (out: its value, maybe ""), 0 when absent (out:
 * ""), -1 when malformed (a bad %-escape, %00) or longer than outlen-1:
 * a caller answers that with a clear 4xx, never as if it were absent. */
int req_query(const struct req *r, const char *name, char *out, size_t outlen);

/* The route parameter `name` ("id" for "/v1/models/{id}"), or NULL. */
const char *req_param(const struct req *r, const char *name);

/* Reads the body (bounded by max_body) into r->body. Returns 0, or -1 after
 * answering 400 (body shorter than Content-Length, bad Content-Length) or
 * 413 (too large; the rest is read and dropped so the web server is not cut off). */
int req_read_body(struct req *r);

/* Reads and parses a JSON object body. Checks Content-Type first (415),
 * then reads (400/413), parses strictly (400 saying where the error is)
 * and requires an object (400). Returns a new object the caller owns
 * (json_object_put), or NULL after answering the error. */
json_object *req_json_body(struct req *r);

/* Is this Content-Type JSON ("application/json", "application/x+json",
 * with an optional charset=utf-8)? */
bool req_content_type_is_json(const char *ct);

#endif
