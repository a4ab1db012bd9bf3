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

/* Callbacks return 0 to go on, anything else to abort (UC_ABORTED). */
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
    char error[CURL_ERROR_SIZE + 64];   /* what went wrong, for logs and error bodies (no secrets) */
};

/* Runs one exchange; fills *res. Returns 0, or -1 when the transfer could
 * not even be set up (res->error says why). */
int uc_perform(const struct uc_request *q, struct uc_response *res);

/* "connection refused", "timed out waiting for the first byte", ... */
const char *uc_result_text(enum uc_result r);

#endif
