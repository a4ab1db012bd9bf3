/* generation.h -- one sequence's generation on top of the engine parts: prompt and generated ids, sampler, streaming detokenizer, stop strings, finish reason.
 *
 * The caller runs the model (llm_forward) and hands this sequence's logits
 * row to gen_seq_next, which picks the token and says what text may be shown
 * now. Text never splits a UTF-8 sequence and never shows any part of a stop
 * string. Used by llmcgi-generate and by the server's scheduler. */
#ifndef LLMCGI_GENERATION_H
#define LLMCGI_GENERATION_H

#include "constraint.h"
#include "sampler.h"
#include "stopseq.h"
#include "tokenizer.h"
#include "util.h"
#include "finish.h"
#include "vocab_trie.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gen_params {
    struct sampler_params sampling;
    int max_new_tokens;                 /* >= 1 */
    const char *stop[STOPSEQ_MAX];      /* borrowed; copied by gen_seq_init */
    size_t stop_len[STOPSEQ_MAX];       /* their lengths (they may hold NUL); 0: up to the NUL */
    size_t n_stop;
    bool ignore_eos;                    /* keep going past the end-of-text token */
    struct cdfa *constraint;            /* NULL, or the language the text must be in (borrowed:
                                         * gen_seq_init takes a reference) */
};

struct gen_seq {
    int32_t *ids;           /* prompt then generated tokens; owned */
    int n_prompt, n_ids;
    int max_new;
    int32_t eos;            /* -1: none */
    bool ignore_eos;
    struct sampler *sampler;    /* owned */
    struct detok detok;
    struct stopseq *stop;       /* owned */
    enum finish finish;
    struct strbuf out;      /* the text of the last event; owned */
    int n_vocab;
    /* constrained decoding: before the sampler sees a row, every token that
     * would leave the constraint's language is masked (-inf), and the
     * end-of-text token is allowed only where the text is complete; when
     * the tokens left get fewer than the bytes the longest completion needs,
     * only tokens that keep a completion within reach are allowed. With
     * ignore_eos the end-of-text token is allowed only where the text is
     * complete and no token can go on, and it ends the sequence there
     * (ignore_eos never runs a constrained text past its language) */
    struct cdfa *cons;      /* a reference, or NULL */
    int cstate;             /* the DFA state of the text so far */
    const struct vtrie *trie;   /* the tokenizer's trie (borrowed; set by the caller before the first token) */
};

/* One generated token and the text it lets through. */
struct gen_event {
    struct sample_out tok;  /* the token chosen, its logprob and alternatives */
    const char *text;       /* may be empty; points into g, valid until the next call */
    size_t len;
    enum finish finish; /* not FIN_NONE: the sequence is done, this was its last event */
};

/* Starts a sequence for prompt[0..n_prompt) (n_prompt >= 1) on a model
 * with n_vocab tokens and a context of `context` positions; tok is borrowed
 * and must outlive g. Refuses (-1, message in err) parameters out of range,
 * bad stop strings, and n_prompt + max_new_tokens > context. */
int gen_seq_init(struct gen_seq *g, const struct tokenizer *tok, const int32_t *prompt, int n_prompt, int n_vocab,
                 int context, const struct gen_params *p, char *err, size_t errlen);

/* Frees what g owns (a zeroed g is fine). */
void gen_seq_free(struct gen_seq *g);

/* Picks the next token from this sequence's logits row (overwritten),
 * appends it and fills *ev. Returns 0, or -1 with err (nothing can be
 * sampled, out of memory). Must not be called once ev->finish was set. */
int gen_seq_next(struct gen_seq *g, float *logits, struct gen_event *ev, char *err, size_t errlen);

/* Can the token be chosen where the model runs (llm_forward_greedy):
 * greedy, no constraint? */
bool gen_seq_greedy_ok(const struct gen_seq *g);

/* Ints gen_seq_greedy_row needs now. */
size_t gen_seq_greedy_ints(const struct gen_seq *g);

/* The request for the backend's greedy choice of the next token (what
 * gen_seq_next would do with the logits), its arrays in ids (caller-owned,
 * gen_seq_greedy_ints() ints; r borrows them). Returns the ints written, or
 * -1 when gen_seq_greedy_ok is false. */
int gen_seq_greedy_row(struct gen_seq *g, int32_t *ids, struct ksample_row *r);

/* gen_seq_next's second half, for a token chosen elsewhere (*tok, from a
 * gen_seq_greedy_row request; id -1: nothing could be chosen, an error):
 * appends it and fills *ev as gen_seq_next does. Returns 0 or -1 with err. */
int gen_seq_take(struct gen_seq *g, const struct sample_out *tok, struct gen_event *ev, char *err, size_t errlen);

/* Tokens generated so far. */
static inline int gen_seq_generated(const struct gen_seq *g)
{
    return g->n_ids - g->n_prompt;
}

#endif
