/* response.c -- writing the answer: status and headers, JSON bodies, errors in the OpenAI and TGI shapes.
 *
 * Every function writes to the request's FastCGI stream, which belongs to
 * the calling responder thread. They return 0, or -1 once a write has failed
 * (the client or the web server went away); r->client_gone is then set and
 * later writes are skipped. Nothing here takes ownership of its arguments. */
#ifndef LLMCGI_RESPONSE_H
#define LLMCGI_RESPONSE_H

#include <json-c/json.h>
#include <stddef.h>

#include "request.h"

/* "Not Found" for 404; "Unknown" for codes we never send. */
const char *http_reason(int status);

/* Queues one header for the next resp_start(). A value with CR or LF is
 * refused (logged, not sent): no header injection from data. */
void resp_header(struct req *r, const char *name, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Writes the status line and headers: X-Request-Id, Content-Type when not
 * NULL, Content-Length when content_length >= 0, and the queued ones. */
int resp_start(struct req *r, int status, const char *content_type, long long content_length);

/* Like resp_start, with a block of header lines ("Name: value\r\n"...)
 * the caller has already checked (relayed from an upstream). */
int resp_start_raw(struct req *r, int status, const char *headers, size_t len);

/* Body bytes (dropped for HEAD requests, whose headers stay exact). */
int resp_write(struct req *r, const void *data, size_t len);

/* Pushes buffered output through to the web server now. */
int resp_flush(struct req *r);

/* A whole response in one call. */
int resp_send(struct req *r, int status, const char *content_type, const void *body, size_t len);

/* `obj` serialised as the body (application/json). */
int resp_json(struct req *r, int status, json_object *obj);

/* An error in the dialect of the matched route (r->dialect), with the
 * default type for the status. */
int resp_error(struct req *r, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* An error of a model route (local generation, classification) in dialect
 * d: Retry-After: 1 with 429 and 503; in OpenAI's shape, code (NULL: the
 * one for 429 and 404) and param; in TGI's, a 400 is its validation error
 * 422. msg is sent as it is. */
/* The body of the error event that ends a stream which failed after it
 * began, in the dialect's error shape (OpenAI: type server_error and the
 * given code, may be NULL; TGI: error_type "generation"). A new object the
 * caller puts; NULL out of memory. */
json_object *resp_error_event(enum api_dialect dialect, const char *code, const char *msg);

/* The same for a Responses API stream: its typed "error" event
 * {"type","code","message","param","sequence_number"} (code NULL:
 * "server_error"), sent as the SSE event "error". */
json_object *resp_error_event_responses(const char *code, const char *msg, long seq);

int resp_error_model(struct req *r, enum api_dialect d, int status, const char *param, const char *code,
                     const char *msg);

/* 404 "The model `model` does not exist" in r->dialect's shape (OpenAI:
 * param "model", code model_not_found): the one answer for a model that is
 * not served here and for one the request's API key may not use, so that a
 * key cannot learn which models exist beyond its own. */
int resp_model_not_found(struct req *r, const char *model);

/* {"error":{"message","type","param","code"}}; type NULL = default for status. */
int resp_error_openai(struct req *r, int status, const char *type, const char *param, const char *code,
                      const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* {"error","error_type"}; error_type NULL = default for status. */
int resp_error_tgi(struct req *r, int status, const char *error_type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
