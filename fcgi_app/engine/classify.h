/* classify.c -- sequence classification with GPT-2 classifiers: Hugging Face's pooling position, scores from the score head's logits, labels ranked, moderation categories; and embeddings' pooling and normalisation.
 *
 * A GPT2ForSequenceClassification model's score head runs on the
 * final-LayerNormed hidden state at one position per text. transformers
 * takes the rightmost token that is not config.pad_token_id (the first
 * token, index 0, when every token is the pad token; the last token when
 * pad_token_id is null), so a text that itself contains or ends with the pad
 * token is pooled before it, exactly as in a right-padded batch. Attention
 * is causal, so the hidden state there depends only on the tokens up to it:
 * llmcgi feeds each text as its own sequence, cut after that position, and
 * asks for its last row. Texts of one request go to the engine together and
 * run in the same steps (no padding is needed: sequences are independent).
 *
 * Scores follow the text-classification pipeline: problem_type regression
 * gives the raw logits, multi_label_classification (or a single label) a
 * sigmoid per label, anything else a softmax over the labels.
 *
 * Moderation (task = moderate) maps labels to categories: a category's score
 * is the highest score among its labels, and it is flagged when that reaches
 * flag_threshold; a text is flagged when any category is.
 *
 * Embeddings (POST /v1/embeddings) pool the final hidden state (ln_f's
 * output, GPT2Model's last_hidden_state) over a text's tokens: their mean
 * (sentence-transformers' default), or the last token's row (what a causal
 * model has read everything at); then, by default, scale it to unit L2
 * length as sentence-transformers' Normalize does. The engine pools as the
 * prompt is read, chunk by chunk (emb_pool_rows), and posts the vector
 * (emb_pool_finish); the route normalises. */
#ifndef LLMCGI_CLASSIFY_H
#define LLMCGI_CLASSIFY_H

#include "categories.h"
#include "checkpoint.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum clf_fn { CLF_SOFTMAX, CLF_SIGMOID, CLF_NONE };

/* The function the pipeline applies for this config; "softmax", ... */
enum clf_fn clf_function(const struct gpt2_config *cfg);
/* Its name, a static string. */
const char *clf_function_name(enum clf_fn f);

/* How many of the text's n tokens to feed so that the last one fed is the
 * position transformers pools: the rightmost token != pad (pad < 0: none is
 * pad), 1 when all are pad; 0 when n is 0. */
int clf_pool_tokens(const int32_t *ids, int n, int pad);

/* scores[i] = f(logits)[i] for n labels (softmax in double, max-shifted). */
void clf_scores(enum clf_fn f, const float *logits, int n, double *scores);

/* order[0..n) = label indices by score, highest first (ties: lower index first). */
void clf_rank(const double *scores, int n, int *order);

enum emb_pool { EMB_NONE, EMB_MEAN, EMB_LAST };

/* Parses "mean" / "last". Returns 0, or -1 for anything else. */
int emb_pool_parse(const char *s, enum emb_pool *out);
/* "mean", "last" ("none" for EMB_NONE): a static string. */
const char *emb_pool_name(enum emb_pool p);

/* Takes n more rows of C floats (the next tokens, in order) into acc (C
 * doubles): EMB_MEAN adds them up, EMB_LAST keeps the last one. */
void emb_pool_rows(enum emb_pool p, double *acc, const float *rows, int n, int C);

/* The pooled vector of a text of n_tokens tokens, from acc, into out (C
 * floats): the mean for EMB_MEAN, the last row for EMB_LAST. */
void emb_pool_finish(enum emb_pool p, const double *acc, int n_tokens, int C, float *out);

/* Scales v (C floats) to unit L2 length, v / max(||v||, 1e-12) as
 * torch.nn.functional.normalize does (a zero vector stays zero). */
void emb_normalize(float *v, int C);

#endif
