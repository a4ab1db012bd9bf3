/* request.c -- one FastCGI request as handlers see it: method, path, query, headers, body, JSON body.
 *
 * A struct req lives on its responder thread's stack for one request. It
 * borrows the libfcgi request (whose streams only this thread touches) and
 * one reference to the config snapshot; it owns the body buffer. */
#ifndef LLMCGI_REQUEST_H
#define LLMCGI_REQUEST_H

#include <fcgiapp.h>
#include <json-c/json.h>
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
 * or 400 (malformed), 404 (outside the prefix), 414 (longer than buflen). */
int req_split_target(const char *uri, const char *prefix, char *buf, size_t buflen, const char **query);

/* The value of request header `name` ("Content-Type", "X-Request-Id"), or NULL. */
const char *req_header(const struct req *r, const char *name);

/* The value of query parameter `name`, decoded (%XX and '+') into out.
 * Returns false when absent, malformed or longer than outlen-1. */
bool req_query(const struct req *r, const char *name, char *out, size_t outlen);

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

/* Parses buf[0..len) as exactly one JSON value (RFC 8259: strict, UTF-8
 * checked, depth <= 64, nothing but whitespace after it). Returns a new
 * object (caller owns), or NULL with "at line L, column C: ..." in err.
 * (json-c 0.16 still lets a single-quoted object key through.)
 * "null" parses to NULL too; *err is then "". Pure: fuzzed directly. */
json_object *json_parse_strict(const char *buf, size_t len, char *err, size_t errlen);

/* What a client's request body must be beyond json_parse_strict's RFC
 * 8259 (obj parsed from buf[0..len)): json-c accepts these, and each would
 * make llmcgi act on something other than what the client wrote, or read a
 * request differently from an upstream it is passed to. Refused: an object
 * with the same key twice (json-c keeps the last, others the first); NaN,
 * Infinity and numbers beyond a double (1e400 parses as inf); integers
 * beyond int64 (json-c saturates them); \u0000 in a string (C strings stop
 * there); an unpaired \ud800-\udfff escape (json-c makes it U+FFFD);
 * UTF-8 that is overlong, a surrogate or above U+10FFFF (json-c lets those
 * through); a single-quoted string. obj is only read (the caller keeps it).
 * Returns 0, or -1 with "invalid JSON: ..." in err.
 * Pure: unit-tested and fuzzed. */
int json_check_request(const char *buf, size_t len, json_object *obj, char *err, size_t errlen);

/* json_check_request for what an upstream answers (a body or one stream
 * event), so that llmcgi never relays or reads a value json-c changed:
 * the same checks, but integers may reach 2^64-2 (TGI's seeds are u64;
 * 2^64-1 is where json-c saturates) and strings may hold \u0000 (text a
 * model generated). Pure: unit-tested and fuzzed. */
int json_check_upstream(const char *buf, size_t len, json_object *obj, char *err, size_t errlen);

/* What json-c's tree of a JSON text costs in memory (measured with
 * json-c 0.16 on x86-64: an object ~790 bytes, however small, as its hash
 * table starts with 16 slots; an array ~150; a number ~72, a string ~88
 * plus its text; an object member ~130 with its key), rounded up. A body of
 * 100,000 chat messages, 4 MB, makes a 100 MB tree: 25 times its size. */
#define JSON_TREE_OBJECT 800
#define JSON_TREE_ARRAY 160
#define JSON_TREE_VALUE 96
/* The tree of a request body may take at most JSON_TREE_FACTOR times the
 * body's size plus JSON_TREE_SLACK; beyond that the body is refused (413)
 * before it is parsed, so that one request's working memory stays a small
 * multiple of its body (bounded by max_body) whatever its shape. */
#define JSON_TREE_FACTOR 16
#define JSON_TREE_SLACK (4u << 20)

/* How deep json_parse_strict lets JSON nest. */
#define JSON_MAX_DEPTH 64

struct json_tree_cost {
    size_t objects, arrays, values;  /* '{', '[', and the values and members after ',', ':' and '[' */
    size_t bytes;                    /* the estimate: len + each of those at its cost above */
    bool too_deep;                   /* nests deeper than JSON_MAX_DEPTH: the parser refuses it early;
                                      * the counts stop there */
};

/* Estimates, from the text alone (no parse, no allocation), what json-c's
 * tree of buf[0..len) would take: counts the '{', '[', ',' and ':' outside
 * strings. An overestimate for valid JSON (empty containers, keys counted
 * as values); any bytes for invalid JSON, which the parser refuses anyway.
 * Pure: unit-tested. */
void json_tree_estimate(const char *buf, size_t len, struct json_tree_cost *c);

/* Does a tree of that cost fit the bound for a body of len bytes? (Yes
 * when too deep: the parser refuses it with its own message.) */
bool json_tree_fits(const struct json_tree_cost *c, size_t len);

/* Parses what an upstream answered (a body, one stream event, a model
 * list): refused unparsed when its tree would pass the request bodies'
 * bound (an upstream may send max_response bytes, 64 MB by default, which
 * as 4-byte "{}," items would be a 13 GB tree), then json_parse_strict and
 * json_check_upstream. Returns a new object (caller owns), or NULL with the
 * reason in err ("" for a plain `null`). */
json_object *json_parse_upstream(const char *buf, size_t len, char *err, size_t errlen);

#endif
