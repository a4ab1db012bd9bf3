/* local_call.h -- the state of one local generation request (struct lcall), shared by the files that read it (local_read.c), run it (routes_local.c), answer it (local_answer.c) and by /info and /tokenize (local_tokinfo.c). Private to front/routes/. */
#ifndef LLMCGI_LOCAL_CALL_H
#define LLMCGI_LOCAL_CALL_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#include "dialect.h"
#include "engine.h"
#include "finish.h"
#include "generation.h"
#include "registry.h"
#include "request.h"
#include "sampler.h"
#include "sse.h"
#include "structured.h"
#include "util.h"

#define MAX_SEQS 128            /* prompts x choices in one request */
#define MAX_PROMPTS 64

struct tokrec {
    int32_t id;
    float logprob;
    int n_top;
    struct sample_logprob top[SAMPLER_TOP_N_MAX];
};

struct tokvec {
    struct tokrec *v;
    size_t n, cap;
};

struct choice {
    int prompt;                 /* which of the request's prompts */
    struct strbuf text;         /* the text released so far */
    struct tokvec toks;         /* generated tokens (kept when logprobs or details are asked for) */
    struct tokvec prefill;      /* prompt tokens with their logprobs */
    int generated;
    int cached;                 /* prompt tokens the engine found in its prefix cache */
    int64_t last_ns;            /* when its last token came (inter-token latency) */
    enum finish finish;
    bool done;
    int err_status;
    char err[400];
};

struct prompt {
    int32_t *ids;               /* owned; NULL when refused unencoded (at_least) */
    int n;
    bool at_least;              /* too long to encode: n is the least it makes */
    const char *text;           /* borrowed from the body, or the rendered chat; NULL for token-id prompts */
    size_t len;                 /* its bytes (it may hold NUL) */
};

struct lcall {
    struct req *r;
    enum client_kind kind;
    int variant;
    struct gen *g;
    const char *model;
    struct lmodel *m;
    const struct tokenizer *tok;

    char *chat_text;            /* the rendered chat prompt, owned */
    size_t chat_len;            /* its bytes */
    struct prompt prompts[MAX_PROMPTS];
    int n_prompts, n_per_prompt, n_seqs;
    struct choice *ch;          /* n_seqs */
    int n_done;

    struct gen_params gp;
    struct structured st;       /* the request's constraint (response_format, guided_*, grammar, tools) */
    bool sampling;
    uint64_t seed;
    int top_n;
    bool want_logprobs;         /* OpenAI logprobs */
    bool keep_tokens;           /* record every token (logprobs, TGI details) */
    bool prompt_logprobs;

    bool responses;             /* POST /v1/responses: run as the chat it means (kind CK_CHAT), answered in
                                 * the Responses API's shape */
    long rs_seq;                /* its stream's next sequence_number */
    bool stream;
    bool submitted;             /* the engine took the sequences: their tokens count */
    struct sse sse;
    bool started;
    int tgi_index;

    char id[40];
    int64_t created;
    char fingerprint[64];
    int64_t t0, t_validated, t_first, queued_ns;
    int64_t deadline_ns;
    struct echan *chan;
    struct ebatch eb;
};

/* ------------------------------------------------------------------ routes_local.c */

/* Appends o's token to t (t owns its array). Returns 0, or -1 out of memory. */
int lcall_tokvec_add(struct tokvec *t, const struct sample_out *o);

/* An error answer in the route's dialect; TGI's validation errors are 422.
 * Returns what resp_error_model returns. */
int lcall_error(struct lcall *lc, int status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The model lc->model names, waited for while it loads; the caller puts it
 * back (registry_put). NULL after answering the error (or when the client
 * went away: r->client_gone). */
struct lmodel *lcall_acquire_model(struct lcall *lc);

/* ------------------------------------------------------------------ local_read.c */

/* Refuses (answering 400/422) what the local engine does not do, rather
 * than ignoring it. Returns 0, or -1 once answered. body is only read. */
int lcall_check_unsupported(struct lcall *lc, json_object *body);

/* Reads the request's prompts (rendered and tokenized into lc->prompts,
 * which lc owns), its sampling parameters (lc->gp, seed, logprobs) and
 * checks both against the model's limits. Returns 0, or -1 once the error
 * is answered. Needs lc->m and lc->tok. */
int lcall_read_request(struct lcall *lc);

/* Tokenizes text[0..len) unless its length alone proves it makes more than
 * `limit` tokens (limit <= 0: no bound). Returns TOKENIZER_OK with *ids
 * (the caller frees) and *n; 1 when refused, with *ids NULL and *n the
 * fewest tokens the text makes; or a tokenizer error. */
int lcall_encode_bounded(const struct lmodel *m, const char *text, size_t len, int limit, int32_t **ids, size_t *n);

/* ------------------------------------------------------------------ local_answer.c */

/* One token's text on its own (invalid UTF-8 shown as U+FFFD): a new
 * string of *len bytes (it may be "\0": GPT-2's token 188) the caller
 * frees ("" when it cannot be decoded). */
char *lcall_token_text(const struct tokenizer *t, int32_t id, size_t *len);

/* Tokens the request's sequences read (prompts) and made (completions). */
long lcall_prompt_tokens(const struct lcall *lc);
long lcall_completion_tokens(const struct lcall *lc);

/* The whole (non-streamed) answer in the request's dialect, with TGI's
 * headers set: a new object the caller puts, or NULL out of memory. */
json_object *lcall_whole(struct lcall *lc);

/* The stream: its head (headers, OpenAI's role chunk), one event per
 * token, and its end (an error event for a failed sequence `bad`, else
 * the usage chunk when asked for and [DONE]). Each returns 0, or -1 when
 * the client went away. */
int lcall_stream_begin(struct lcall *lc);
int lcall_stream_token(struct lcall *lc, int i, const struct eevent *ev, const char *text);   /* ev->text_len bytes */
int lcall_stream_end(struct lcall *lc, const struct choice *bad);

#endif
