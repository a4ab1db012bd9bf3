/* sse.c -- server-sent events over a FastCGI response: one flush per event, keep-alive comments, disconnect detection.
 *
 * Headers: text/event-stream, Cache-Control: no-cache, X-Accel-Buffering: no
 * (nginx passes each event on at once). Every event is flushed, so a client
 * that went away shows up as a failed write on the next event or keep-alive;
 * every function then returns -1 and the caller stops its work. */
#ifndef LLMCGI_SSE_H
#define LLMCGI_SSE_H

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "request.h"

struct sse {
    struct req *r;                  /* borrowed */
    int64_t keepalive_ns;           /* idle time after which a comment is sent */
    int64_t last_write_ns;
};

/* Sends the 200 headers of an event stream and flushes them. */
int sse_begin(struct sse *s, struct req *r, int64_t keepalive_ms);

/* One event: optional "event: NAME" line, the data split into "data:"
 * lines at newlines, a blank line; then a flush. */
int sse_event(struct sse *s, const char *event, const char *data, size_t len);

/* `obj` serialised on one data line. Does not take ownership. */
int sse_json(struct sse *s, const char *event, json_object *obj);

/* A comment line (": text"), flushed. Clients ignore it; proxies see traffic. */
int sse_comment(struct sse *s, const char *text);

/* Sends a keep-alive comment when nothing was written for keepalive_ms.
 * Call it whenever a wait times out at sse_next_keepalive(). */
int sse_keepalive(struct sse *s);

/* The CLOCK_MONOTONIC time at which the next keep-alive falls due: the
 * deadline for a pthread_cond_timedwait on a monotonic condition. */
struct timespec sse_next_keepalive(const struct sse *s);

#endif
