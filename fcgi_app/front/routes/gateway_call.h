/* gateway_call.h -- the state of one proxied generation request (struct call) and of one attempt at it on one upstream replica (struct relay), shared by routes_gateway.c (choosing, retrying, whole answers) and gateway_stream.c (the upstream's answer read as it comes). Private to front/routes/. */
#ifndef LLMCGI_GATEWAY_CALL_H
#define LLMCGI_GATEWAY_CALL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "answer.h"
#include "client.h"
#include "conf.h"
#include "dialect.h"
#include "finish.h"
#include "gateway.h"
#include "request.h"
#include "sse.h"
#include "sse_parse.h"
#include "util.h"

#define MAX_EVENT (4 << 20)         /* the largest stream event accepted from an upstream */

/* An upstream that serves the request's model. */
struct cand {
    const struct config_upstream *c;    /* in r->cfg */
    struct upstream *u;                 /* referenced */
    char target[256];                   /* the model's name upstream */
    uint64_t tried;                     /* replicas already tried */
    bool out;                           /* nothing left to try here */
    bool wild;                          /* routed only by "models = *" */
};

enum outcome {
    OUT_DONE,           /* answered (or the client went away) */
    OUT_RETRY,          /* failed before anything reached the client: try elsewhere */
    OUT_FAIL,           /* failed in a way another replica would not fix: answer the error */
};

/* The whole generation request, shared by its attempts. */
struct call {
    struct req *r;
    enum client_kind kind;
    bool compat_list;               /* POST / (TGI answers it with a list) */
    json_object *body;              /* the client's, owned */
    struct gen g;
    char model[256];                /* as the client named it */
    char id[40];                    /* for OpenAI ids */
    int64_t created;

    /* the last failure, for the final answer */
    int fail_status;                /* HTTP status to answer */
    char fail_msg[400];
};

/* One attempt's state: the callbacks' user data. */
struct relay {
    struct call *call;
    struct req *r;
    struct cand *cand;
    enum upstream_call uc;
    struct uc_response *res;
    bool want_stream;
    bool is_sse;                    /* the upstream answered text/event-stream */
    char headers[768];              /* TGI's x-* timing headers, passed on */
    size_t headers_len;
    /* a whole answer (non-streamed, or an error) */
    char *buf;
    size_t len, cap, max;
    bool too_big;
    /* a relayed stream */
    struct sse_parser parser;
    struct sse sse;
    bool started;                   /* the client has its headers: no retry now */
    bool saw_done, saw_finish, saw_error;
    char bad[200];                  /* why we stopped the stream ourselves */
    /* a translated stream */
    enum finish finish;
    long prompt_tokens, completion_tokens, tokens;
    bool has_seed;
    int64_t seed;
    struct strbuf text;             /* everything generated so far (TGI's final generated_text) */

    bool have_held;                 /* a TGI token event waits: it may be the last */
    struct gen_delta held;
    char *held_text;
    long index;
    char fingerprint[64];           /* of the answers llmcgi translates: fp_llmcgi_<version>_<upstream type> */
    long rs_seq;                    /* a translated Responses API stream: its next sequence_number */
};

/* What every OpenAI object llmcgi builds for this attempt shares. */
/* ------------------------------------------------------------------ gateway_stream.c */

/* What every OpenAI object llmcgi builds for this attempt shares. */
struct answer_meta relay_meta(const struct relay *rl);

/* TGI's x-* timing headers the upstream sent, passed on to the client. */
void relay_answer_headers(struct relay *rl);

/* client.c's callbacks (ud: the struct relay): a header of the upstream's
 * answer; a piece of its body (a whole answer buffered within max, a
 * stream fed to the SSE parser); one event of a stream; a tick while it
 * waits (keep-alives). Each returns 0, or non-zero to stop the transfer. */
int relay_on_header(void *ud, const char *name, size_t nlen, const char *value, size_t vlen);
int relay_on_body(void *ud, const char *data, size_t len);
int relay_on_event(void *ud, const char *event, const char *data, size_t len);
int relay_on_tick(void *ud);

/* The stream ended cleanly: the client's end (usage, [DONE], TGI's last event). */
void relay_finish_stream(struct relay *rl);

/* Did the upstream's event stream finish its generation? A finish reason
 * does; a [DONE] alone does only for the Responses API's streams: an OpenAI
 * chat or completions stream that ends on a bare [DONE] was cut short
 * (llama-cpp-python's server ends a stream so when another request waits). */
bool relay_finished(const struct relay *rl);

/* An error event in the client's dialect, then a clean end (logged). */
void relay_stream_error(struct relay *rl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
