/* vocab_trie.h -- a tokenizer's vocabulary as a byte trie, walked against a constraint's DFA to find the tokens allowed in a state (the mask), with the masks cached per DFA state, over every DFA the model's requests use, within a byte budget.
 *
 * The trie is laid out in depth-first order (each node: its byte, depth,
 * token and the index past its subtree), so a walk is one pass over an
 * array that skips the subtrees the DFA rules out: a state's mask costs
 * the nodes whose prefixes the constraint still allows, not 50,257 string
 * tests. Special tokens (the end-of-text token) are not in the trie: the
 * caller allows the end-of-text token exactly where the DFA accepts. */
#ifndef LLMCGI_VOCAB_TRIE_H
#define LLMCGI_VOCAB_TRIE_H

#include "constraint.h"
#include "tokenizer.h"

#include <stddef.h>
#include <stdint.h>

#define VTRIE_MASK_BYTES (32u << 20)   /* per trie (one per model's engine): masks kept, over every DFA */

struct vtrie;

/* Builds the trie of tok's ordinary tokens. NULL when out of memory. The
 * caller owns it (vtrie_free); tok is read only during the call. */
struct vtrie *vtrie_new(const struct tokenizer *tok);
void vtrie_free(struct vtrie *t);                   /* NULL is fine */

int32_t vtrie_vocab(const struct vtrie *t);         /* the vocabulary size the masks cover */
size_t vtrie_nodes(const struct vtrie *t);

/* The words of a mask: bit i of mask[i / 64] is token i. */
static inline size_t vtrie_mask_words(const struct vtrie *t)
{
    return ((size_t)vtrie_vocab(t) + 63) / 64;
}

/* The tokens allowed from DFA state s: those whose bytes all pass from s
 * and whose end state has cdfa_dist <= budget (budget < 0: no limit, and
 * the mask is kept in t's cache under cdfa_id(d)). Returns the mask (valid
 * until the next call with t: it may be the cache's or t's scratch), or
 * NULL when s is not a state of d. The end-of-text token is never in it.
 *
 * Engine thread only: the scratch and the mask cache are written without a
 * lock, which is safe because each model's engine has its own trie and one
 * thread runs all its steps (engine.c); a second thread stepping the same
 * model would need a trie of its own. */
const uint64_t *vtrie_mask(const struct vtrie *t, const struct cdfa *d, int s, int budget);

/* The mask cache's budget (VTRIE_MASK_BYTES unless set; the DFAs asked for
 * least recently lose their masks first) and what it holds now. Engine
 * thread only, like vtrie_mask. */
void vtrie_set_mask_budget(const struct vtrie *t, size_t bytes);
size_t vtrie_mask_bytes(const struct vtrie *t);

/* What the mask cache has done, for /metrics: masks found cached (hits),
 * masks walked (not cached, or not cacheable: a budget below the DFA's
 * reach), and the bytes it holds. Any thread. */
struct vtrie_stats {
    uint64_t hits, walks;
    size_t bytes;
};
void vtrie_get_stats(const struct vtrie *t, struct vtrie_stats *st);

/* Sets logits[i] to -inf for every token i < n not in mask. */
void vtrie_apply(const uint64_t *mask, float *logits, int32_t n);

#endif
