/* constraint_cache.h -- compiled constraints (constraint.h's DFAs) kept across requests, keyed by their kind and canonical text, within a byte budget, least recently used out first.
 *
 * A DFA depends only on its constraint, never on a model (it reads bytes,
 * not tokens), so one cache serves every model of the process (the
 * registry holds it); each model's engine keeps its own masks of allowed
 * tokens per DFA state (vocab_trie.c). A DFA is immutable once built, so
 * responders on any thread share the cached ones: every call here takes
 * the cache's lock, and a DFA handed out is a reference of the caller's. */
#ifndef LLMCGI_CONSTRAINT_CACHE_H
#define LLMCGI_CONSTRAINT_CACHE_H

#include "constraint.h"

#include <stddef.h>
#include <stdint.h>


#define CCACHE_BYTES (64u << 20)    /* the default budget (constraint_cache): DFAs' tables and keys */

/* The kinds of constraint text a key stands for. */
enum ccache_kind { CC_SCHEMA = 'S', CC_REGEX = 'R', CC_CHOICE = 'C', CC_JSON_OBJECT = 'O' };

struct ccache;

struct ccache_stats {
    uint64_t hits, misses, evictions;
    size_t bytes, entries;
};

/* A cache of at most budget bytes (cdfa_bytes of each DFA plus its key).
 * NULL when out of memory. The caller owns it (ccache_free). */
struct ccache *ccache_new(size_t budget);
void ccache_free(struct ccache *c);                 /* drops its references; NULL is fine */

/* A new reference to the DFA kept under (kind, key[0..len)), or NULL (a
 * miss, or c NULL). Thread-safe. */
struct cdfa *ccache_get(struct ccache *c, enum ccache_kind kind, const void *key, size_t len);

/* Keeps a reference to d under (kind, key), putting out the least recently
 * used DFAs while over the budget; a DFA bigger than the whole budget, or
 * a key already there (another responder compiled it too), is not kept.
 * Returns 0, or -1 when out of memory (nothing kept; d is still the
 * caller's). c NULL is fine (0). Thread-safe. */
int ccache_add(struct ccache *c, enum ccache_kind kind, const void *key, size_t len, struct cdfa *d);

/* A new budget (a reload): the least recently used DFAs put out until the
 * cache fits; 0 keeps nothing from now on. c NULL is fine. Thread-safe. */
void ccache_set_budget(struct ccache *c, size_t budget);

void ccache_get_stats(struct ccache *c, struct ccache_stats *st);

#endif
