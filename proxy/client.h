/* client.c -- one HTTP exchange with an upstream over libcurl, run by the calling responder thread: reused connections, timeouts, aborts when the client goes away.
 *
 * Each thread keeps one curl multi handle and one easy handle for its whole
 * life (freed when the thread exits), so connections to upstreams are kept
 * alive and reused across that thread's requests. Everything runs in the
 * caller's thread: callbacks may write to the caller's FastCGI stream. */
#ifndef LLMCGI_CLIENT_H
#define LLMCGI_CLIENT_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum uc_result {
    UC_OK,                  /* the exchange completed (whatever the HTTP status) */
    UC_CONNECT,             /* could not connect: refused, unreachable, unknown host */
    UC_CONNECT_TIMEOUT,     /* no connection within connect_timeout */
    UC_FIRST_BYTE_TIMEOUT,  /* connected, but no answer within first_byte_timeout */
    UC_IDLE_TIMEOUT,        /* the answer stalled for longer than idle_timeout */
    UC_TOTAL_TIMEOUT,       /* the whole exchange took longer than total_timeout */
    UC_DROPPED,             /* the connection closed before the answer was complete */
    UC_ABORTED,             /* a callback stopped it, or the client hung up (see client_gone) */
    UC_ERROR,               /* anything else (TLS, protocol): see error */
};

/* What on_body may return besides 0 (go on) and anything else (abort):
 * go on, but these bytes were no progress -- SSE keep-alive comments, say --
 * so the stream_idle_timeout clock keeps running. */
#define UC_NO_PROGRESS 1

/* Callbacks return 0 to go on, anything else to abort (UC_ABORTED); on_body
 * may also return UC_NO_PROGRESS. */
struct uc_request {
    const char *method;                 /* "GET", "POST", "PUT", ... */
    const char *url;
    const struct curl_slist *headers;   /* borrowed */
    const char *body;                   /* borrowed; or NULL with read_body, or neither */
    size_t body_len;
    /* A streamed body: returns bytes put into buf, 0 at the end, or
     * CURL_READFUNC_ABORT. body_size -1 = unknown (chunked). */
    size_t (*read_body)(char *buf, size_t len, void *ud);
    long long body_size;
    /* connect: to open the connection (libcurl's); first byte: from the
     * request having been sent (body included) to the answer's headers;
     * idle: the longest time without progress once the headers came (see
     * UC_NO_PROGRESS); total: the whole exchange. All > 0. */
    int64_t connect_timeout_ms, first_byte_timeout_ms, idle_timeout_ms, total_timeout_ms;
    int watch_fd;                       /* the client's connection: its hang-up aborts; -1 = none */
    int64_t tick_ms;                    /* on_tick period while nothing arrives; 0 = never */
    int (*on_header)(void *ud, const char *name, size_t nlen, const char *value, size_t vlen);
    int (*on_body)(void *ud, const char *data, size_t len);
    int (*on_tick)(void *ud);
    void *ud;
};

struct uc_response {
    enum uc_result result;
    long status;                        /* HTTP status of the final answer; 0 when none came */
    bool got_headers;                   /* the answer's headers arrived */
    bool client_gone;                   /* UC_ABORTED because watch_fd hung up */
    uint64_t bytes;                     /* body bytes received */
    int64_t first_byte_ns;              /* from the start to the headers; 0 when none */
    CURLcode code;                      /* libcurl's result; CURLE_OK when we stopped it ourselves */
    /* What went wrong in detail, for the error log only: libcurl's text
     * names the upstream's address. Clients and the public health pages
     * get uc_result_text() or uc_category(). */
    char error[CURL_ERROR_SIZE + 64];
};

/* Runs one exchange; fills *res. Returns 0, or -1 when the transfer could
 * not even be set up (res->error says why). */
int uc_perform(const struct uc_request *q, struct uc_response *res);

/* A sentence naming what happened, for error answers: "could not
 * connect", "took longer than total_timeout", ... Never an address. */
const char *uc_result_text(enum uc_result r);

/* The HTTP status a client gets for a failed exchange before anything
 * reached it: 504 for each of the four timeouts, else 502. Pure. */
int uc_result_status(enum uc_result r);

/* The public category of an outcome, one of a small fixed set: "connect
 * refused", "dns", "tls", "connect timeout", "first byte timeout", "stream
 * idle timeout", "total timeout", "timeout", "dropped", "bad answer",
 * "http 4xx", "http 5xx", "error"; NULL for a success (UC_OK below 400).
 * `code` refines UC_CONNECT and UC_ERROR; `status` is the HTTP status of
 * a completed exchange. Pure. */
const char *uc_category(enum uc_result r, CURLcode code, long status);

/* What a libcurl result means without knowing which of our clocks ran out:
 * CURLE_OPERATION_TIMEDOUT gives UC_ERROR (uc_category calls it "timeout").
 * Pure. */
enum uc_result uc_result_of_code(CURLcode code);

/* The clocks that bound one exchange (all times from util_now_ns). */
struct uc_clocks {
    int64_t start_ns;       /* the transfer began */
    int64_t sent_ns;        /* the whole request was sent; 0 while its body is still being read */
    int64_t headers_ns;     /* the answer's headers came; 0 until then */
    int64_t progress_ns;    /* the last progress after the headers (>= headers_ns) */
    int64_t first_byte_ms, idle_ms, total_ms;
};

/* Which of our limits (first byte, stream idle, total; libcurl keeps the
 * connect one) runs out first: its result (UC_FIRST_BYTE_TIMEOUT,
 * UC_IDLE_TIMEOUT, UC_TOTAL_TIMEOUT) when that is at or before now_ns, else
 * UC_OK; *deadline_ns (may be NULL) is when it runs out. A tie goes to the
 * narrower limit. Pure. */
enum uc_result uc_clock_due(const struct uc_clocks *c, int64_t now_ns, int64_t *deadline_ns);

#endif
