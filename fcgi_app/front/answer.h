/* answer.h -- every client-facing generation answer and stream event (OpenAI chat and completions, the Responses API, embeddings, TGI, the legacy model_id shape), for local and proxied generations alike.
 *
 * The routes hand over what a generation made (text, finish reason, token
 * counts, and for local models the logprob trees and TGI tokens they build
 * from the tokenizer) and get back the JSON the client's API defines; the
 * envelope (id, object, created, model, system_fingerprint), the choices,
 * usage, the finish words and the TGI details are made here and only here.
 * All returned objects are new and owned by the caller; json_object
 * arguments documented "taken over" belong to the result afterwards (also
 * on failure, when they are freed). Texts come with their length in bytes:
 * they may hold NUL (a prompt or a generation with \u0000 in it), written
 * back as \u0000. Errors are response.c's. */
#ifndef LLMCGI_ANSWER_H
#define LLMCGI_ANSWER_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dialect.h"
#include "finish.h"

/* What every OpenAI object of one generation shares. Strings borrowed. */
struct answer_meta {
    enum client_kind kind;      /* CK_CHAT: "chatcmpl-<id>"; otherwise "cmpl-<id>" */
    const char *id;             /* the request's id */
    int64_t created;
    const char *model;          /* the name the client asked for */
    const char *fingerprint;    /* system_fingerprint (answer_fingerprint); NULL: none */
    const struct gen *g;        /* CK_RESPONSES: the request, whose settings the response echoes; may be NULL */
};

/* "fp_llmcgi_<version>_<backend>" into buf: the backend is the local
 * model's ("cpu", "cuda") or, for a proxied answer llmcgi translates, the
 * upstream's type ("tgi", "transformers", "openai"). */
void answer_fingerprint(char *buf, size_t len, const char *backend);

/* A generation's token counts. */
struct answer_usage {
    long prompt, completion;    /* < 0: not known, reported as 0 */
    long cached;                /* prompt tokens the prefix cache served; < 0: not known, no prompt_tokens_details */
};

/* The finish words: OpenAI's (NULL for FIN_NONE, "length", else "stop")
 * and TGI's ("length", "stop_sequence", else "eos_token"). */
const char *answer_finish_openai(enum finish f);
const char *answer_finish_tgi(enum finish f);

/* One choice of a whole OpenAI answer. */
struct answer_choice {
    const char *text;           /* completions: the text (echo already joined); chat: the message's content */
    size_t text_len;
    json_object *tool_calls;    /* chat, taken over: content null, finish "tool_calls" unless it ran out of length */
    json_object *logprobs;      /* taken over; NULL: null */
    enum finish finish;         /* FIN_NONE (the upstream named none) reads as "stop" */
};

/* A whole OpenAI answer (chat.completion or text_completion) of n choices;
 * the choices' objects are taken over. */
json_object *answer_openai(const struct answer_meta *m, struct answer_choice *choices, size_t n,
                           const struct answer_usage *u);

/* A chat chunk's delta: role and content (content_len bytes) when not NULL,
 * tool_calls (taken over) when not NULL. */
json_object *answer_delta(const char *role, const char *content, size_t content_len, json_object *tool_calls);

/* One OpenAI stream chunk with one choice: content (taken over) is the
 * chat delta (answer_delta) or, for completions, NULL and text is used
 * (text_len bytes; NULL text: ""); logprobs taken over (NULL: null); finish_reason from
 * f, "tool_calls" when tool_calls and f is not FIN_LENGTH. */
json_object *answer_chunk(const struct answer_meta *m, int index, json_object *content, const char *text,
                          size_t text_len, json_object *logprobs, enum finish f, bool tool_calls);

/* The stream's usage chunk (stream_options.include_usage): no choices. */
json_object *answer_usage_chunk(const struct answer_meta *m, const struct answer_usage *u);

/* TGI's details. Whole answers get prefill and tokens (taken over; NULL:
 * []) and top_tokens when not NULL (taken over); a stream's last event
 * gets input_length when >= 0 and none of the token lists. */
struct answer_tgi_details {
    enum finish finish;
    long generated;             /* < 0: 0 */
    bool has_seed;
    uint64_t seed;
    bool stream;
    long input_length;          /* stream only; < 0: left out */
    json_object *prefill, *tokens, *top_tokens;
};
json_object *answer_tgi_details(const struct answer_tgi_details *d);

/* A TGI token {"id","text","logprob","special"}: logprob null when not
 * has_logprob or NaN, -9999 when -inf (JSON has no infinities). text is
 * text_len bytes; NULL text: "". */
json_object *answer_tgi_token(long id, const char *text, size_t text_len, bool has_logprob, double logprob,
                              bool special);

/* A TGI stream event: token (taken over); top_tokens (taken over) under
 * "top_tokens" when with_top (null when NULL); on the last event
 * (final_text not NULL, final_len bytes) generated_text and details
 * (taken over), null before. */
json_object *answer_tgi_event(long index, json_object *token, bool with_top, json_object *top_tokens,
                              const char *final_text, size_t final_len, json_object *details);

/* A whole TGI answer (m->kind CK_TGI): generated_text (text_len bytes), details (taken
 * over) when not NULL, in a list when compat_list (TGI's POST /); the
 * legacy shape (CK_LEGACY): generated_text and model_id, details freed.
 * NULL for the OpenAI kinds. */
json_object *answer_tgi(const struct answer_meta *m, const char *text, size_t text_len, json_object *details,
                       bool compat_list);

/* ---------------------------------------------------------------- the Responses API
 *
 * POST /v1/responses answers one response object ("resp_<id>", one
 * assistant message "msg_<id>" with one output_text part); a stream is
 * typed events, each {"type", "sequence_number", ...}, sent with the type
 * as the SSE event name and no [DONE]:
 *   response.created, response.in_progress, response.output_item.added,
 *   response.content_part.added                         (answer_response_head)
 *   response.output_text.delta ...                      (answer_response_delta)
 *   response.output_text.done, response.content_part.done,
 *   response.output_item.done, response.completed       (answer_response_tail)
 * The length limit makes the response "incomplete" (incomplete_details
 * {"reason": "max_output_tokens"}), and the last event response.incomplete. */

/* The response object: in progress (done false: no output, usage null),
 * or done with text[0..len) (it may hold NUL), finish and usage. */
json_object *answer_response(const struct answer_meta *m, bool done, const char *text, size_t len, enum finish f,
                             const struct answer_usage *u);

/* The stream's opening events into ev[0..4), *seq advanced (NULL entries
 * out of memory). Returns 4. */
int answer_response_head(const struct answer_meta *m, long *seq, json_object *ev[4]);

/* One text delta event. */
json_object *answer_response_delta(const struct answer_meta *m, long *seq, const char *delta, size_t len);

/* The stream's closing events into ev[0..4) for the whole text. Returns 4. */
int answer_response_tail(const struct answer_meta *m, long *seq, const char *text, size_t len, enum finish f,
                         const struct answer_usage *u, json_object *ev[4]);

/* An event's type ("response.created", ...), for the SSE event name: borrowed from ev. */
const char *answer_response_type(json_object *ev);

/* ---------------------------------------------------------------- embeddings */

/* POST /v1/embeddings' answer: n vectors of dim floats (row-major), as
 * lists of numbers or (base64) the little-endian float32 bytes in base64,
 * and usage {prompt_tokens, total_tokens}. NULL out of memory. */
json_object *answer_embeddings(const char *model, const float *vecs, int n, int dim, bool base64, long prompt_tokens);

#endif
