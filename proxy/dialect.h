/* dialect.c -- translation between the APIs clients speak (OpenAI chat and completions, the Responses API, TGI, the older model_id/prompt shape) and the APIs upstreams speak (OpenAI-compatible, transformers serve, TGI).
 *
 * Pure functions over json-c objects, no I/O: the gateway's routes read a
 * client request into a struct gen, build the upstream's request from it,
 * read the upstream's answer (whole, or one stream event at a time) into
 * struct gen_result / struct gen_delta; front/answer.c builds the client's
 * answer from those, as it does for local models. When client and
 * upstream speak the same API the request and the answer pass through
 * with only the model name changed, so fields this module does not know
 * about still reach the other side.
 *
 * A Responses API request (POST /v1/responses) is read into the chat
 * request it means (struct gen's `owned` body: instructions as the system
 * message, input as the messages, text.format as response_format), which
 * local models run and upstreams without the API (TGI) are sent; upstreams
 * that have it (openai, transformers-serve) get the client's body. */
#ifndef LLMCGI_DIALECT_H
#define LLMCGI_DIALECT_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"
#include "finish.h"

/* What the client sent. */
enum client_kind {
    CK_CHAT,            /* POST /v1/chat/completions */
    CK_COMPLETION,      /* POST /v1/completions */
    CK_TGI,             /* POST /generate, /generate_stream, / with {"inputs","parameters"} */
    CK_LEGACY,          /* POST /generate with {"model_id","prompt",...} -> {"generated_text","model_id"} */
    CK_RESPONSES,       /* POST /v1/responses (OpenAI's Responses API) */
    CK_EMBEDDINGS,      /* POST /v1/embeddings (proxied: passed through to OpenAI-compatible upstreams) */
};

/* What the upstream is asked. */
enum upstream_call {
    UK_CHAT,            /* POST /v1/chat/completions */
    UK_COMPLETION,      /* POST /v1/completions */
    UK_TGI,             /* POST /generate or /generate_stream */
    UK_RESPONSES,       /* POST /v1/responses */
    UK_EMBEDDINGS,      /* POST /v1/embeddings */
};

/* Which call a client request becomes on an upstream of type t. */
enum upstream_call dialect_call_for(enum client_kind k, enum upstream_type t);

/* Do client and upstream speak the same API (pass-through)? */
bool dialect_same(enum client_kind k, enum upstream_call c);

/* A generation request, read from any client dialect. Pointers borrow from
 * the client's JSON body, which must outlive it. */
struct gen {
    const char *prompt;         /* completions, TGI, legacy */
    size_t prompt_len;          /* its bytes (a JSON string may hold \u0000) */
    json_object *messages;      /* chat */
    bool stream;
    long max_tokens;            /* -1 = not given */
    bool has_temperature, has_top_p, has_top_k, has_seed, has_freq, has_pres, has_rep;
    double temperature, top_p, freq, pres, rep;
    long top_k;
    int64_t seed;
    bool do_sample_given, do_sample;
    json_object *stop;          /* array of strings, or NULL */
    bool details;               /* TGI parameters.details */
    bool return_full_text;
    bool include_usage;         /* stream_options.include_usage */
    long n;
    /* read for local models (upstreams get the client's body as it is) */
    json_object *prompts;       /* completions: a list of prompts (strings, or lists of token ids) */
    bool logprobs;              /* chat: logprobs true; completions: logprobs given */
    long top_logprobs;          /* chat top_logprobs, completions logprobs, TGI top_n_tokens (0-20) */
    bool echo;                  /* completions: the prompt before the completion */
    bool has_typical;
    double typical;             /* TGI typical_p */
    bool decoder_input_details; /* TGI: the prompt's tokens with their logprobs */
    long truncate;              /* TGI: keep only the last `truncate` prompt tokens; 0 = off */
    /* the Responses API */
    json_object *owned;         /* the chat request it means ({"messages", "response_format"}); owned:
                                 * gen_free; messages points into it */
    const char *instructions;   /* echoed in the answer; NULL: none */
    const char *untranslatable; /* a field given that a chat request cannot carry (previous_response_id,
                                 * tools, ...): local models and chat upstreams refuse it; NULL: none */
};

/* Frees what g owns (the Responses API's chat request). */
void gen_free(struct gen *g);

/* Does a request in TGI's terms sample? do_sample, or a warper that changes
 * anything (temperature other than 1, top_k, top_p or typical_p below 1),
 * as TGI's NextTokenChooser decides. */
bool dialect_tgi_samples(const struct gen *g);

/* Reads and checks a client request. Returns 0, or -1 with a message for a
 * 400/422 answer in err ("`max_tokens` must be a whole number >= 1"). */
int dialect_read_request(enum client_kind k, json_object *body, struct gen *g, char *err, size_t errlen);

/* The upstream's request body for call c (a new object the caller owns),
 * made from the client's body (pass-through) or from g (translation).
 * `model` is the name the upstream knows the model by. NULL with err when
 * the request cannot be expressed for this upstream (e.g. n > 1 on TGI). */
json_object *dialect_upstream_request(enum client_kind k, enum upstream_call c, enum upstream_type t,
                                      json_object *client_body, const struct gen *g, const char *model,
                                      char *err, size_t errlen);

/* A whole answer, read from the upstream. */
struct gen_result {
    char *text;                 /* owned */
    size_t text_len;            /* its bytes (generated text may hold NUL) */
    enum finish finish;
    long prompt_tokens, completion_tokens;      /* -1 = not known */
    bool has_seed;
    int64_t seed;
};

/* Reads and checks an upstream's non-streamed answer. Returns 0, or -1
 * with err when it is not the shape call c answers with or a field has
 * the wrong type or an impossible value, named in err ("`choices` is
 * empty", "`usage.prompt_tokens` must be a whole number from 0 to ..."). */
int dialect_read_result(enum upstream_call c, json_object *answer, struct gen_result *res, char *err, size_t errlen);
void gen_result_free(struct gen_result *res);

/* One streamed event, read from the upstream. */
struct gen_delta {
    const char *text;           /* borrowed from the event; NULL when none */
    size_t text_len;            /* its bytes */
    bool special;               /* TGI: a special token (its text is not shown) */
    long token_id;              /* -1 when not known */
    bool has_logprob;
    double logprob;
    enum finish finish;         /* FIN_NONE until the last event */
    long prompt_tokens, completion_tokens;      /* -1 = not in this event */
    bool has_seed;
    int64_t seed;
    const char *error;          /* the upstream reported an error in-stream */
    char bad[200];              /* why dialect_read_delta refused the event */
};

/* Reads one upstream stream event (already parsed JSON). Returns 0, or -1
 * with d->bad saying why when it is not an event of call c, or a field of
 * it has the wrong type or an impossible value ("`token.id` must be ..."). */
int dialect_read_delta(enum upstream_call c, json_object *event, struct gen_delta *d);

/* An upstream's error body, in whatever shape, into a message. Returns
 * false when the body holds none. */
bool dialect_error_message(json_object *body, char *buf, size_t len);

#endif
