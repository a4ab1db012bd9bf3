/* constraint.h -- constrained decoding's automaton: a regular language over bytes (a regex subset, or one built by json_schema.c) compiled to a DFA, with each state's distance to acceptance.
 *
 * A constraint is written as a tree of nodes (struct cre) allocated in an
 * arena: literal bytes, byte sets, concatenation, alternation, bounded or
 * unbounded repetition, and a "JSON string content" wrapper that writes the
 * bytes of its inner language the way they appear inside a JSON string
 * ("\"" for ", "\\" for \, "\n" and "\u00XX" for control bytes). cre_parse
 * reads a regex into such a tree; cdfa_build turns a tree into a DFA
 * (Thompson NFA, subset construction over byte classes), drops the states
 * from which nothing is accepted, and records each state's distance in
 * bytes to an accepting state (used to finish within a token budget).
 *
 * The language is matched whole (anchored at both ends). Text is UTF-8:
 * `.` and negated classes stand for whole UTF-8 characters, never a stray
 * byte. A cdfa is immutable once built, so any thread may read it (the
 * masks of allowed tokens are the engine's, kept in vocab_trie.c); it is
 * reference-counted (cdfa_ref / cdfa_put may be called from any thread). */
#ifndef LLMCGI_CONSTRAINT_H
#define LLMCGI_CONSTRAINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CRE_REP_INF (-1)            /* cre_rep's max: no upper bound */
#define CRE_REP_MAX 1000            /* the largest bounded count ({m,n}, maxLength, maxItems) */
#define CDFA_MAX_STATES 30000       /* a constraint over this is refused as too complex */

/* ------------------------------------------------------------------ trees */

struct cre;
struct cre_arena;
struct cdfa;

/* An arena for trees; every node made from it is freed with it. NULL when out of memory. */
struct cre_arena *cre_arena_new(void);
void cre_arena_free(struct cre_arena *a);           /* NULL is fine */

/* Node makers. They return NULL when out of memory (or when given NULL
 * operands), so calls may nest and be checked once at the end. The nodes
 * belong to the arena. */
struct cre *cre_bytes(struct cre_arena *a, const void *s, size_t n);       /* exactly these bytes */
struct cre *cre_str(struct cre_arena *a, const char *s);                   /* cre_bytes of a C string */
/* One byte of set (bit b of set[b / 8] for byte b: ASCII only, bytes >= 0x80
 * are ignored), or, with any_multibyte, also any non-ASCII UTF-8 character. */
struct cre *cre_set(struct cre_arena *a, const uint8_t set[32], bool any_multibyte);
struct cre *cre_range(struct cre_arena *a, uint8_t lo, uint8_t hi);       /* one byte in [lo, hi] (ASCII) */
struct cre *cre_cat(struct cre_arena *a, struct cre *x, struct cre *y);
struct cre *cre_alt(struct cre_arena *a, struct cre *x, struct cre *y);
struct cre *cre_empty(struct cre_arena *a);                                 /* the empty string */
/* x repeated min..max times (max CRE_REP_INF: unbounded); 0 <= min <= max <= CRE_REP_MAX. */
struct cre *cre_rep(struct cre_arena *a, struct cre *x, int min, int max);
/* x (sep x)* repeated so that x occurs min..max times (min >= 1; max
 * CRE_REP_INF or >= min): unbounded lists take one copy of x in the
 * automaton however deep x nests, not two. */
struct cre *cre_list(struct cre_arena *a, struct cre *x, struct cre *sep, int min, int max);
/* x's strings as they are written inside a JSON string. */
struct cre *cre_json_escaped(struct cre_arena *a, struct cre *x);
/* The language of a built DFA as a node (the arena holds a reference to d
 * until it is freed); inside cre_json_escaped its bytes are escaped too. */
struct cre *cre_dfa(struct cre_arena *a, struct cdfa *d);

/* Parses regex re[0..len) (the subset below) into *out. Returns 0, or -1
 * with a message in err naming what is not supported or wrong and where.
 * Supported: literals (UTF-8 characters are atoms), `.` (any character but
 * \n), classes [...] and [^...] with ranges, escapes \d \w \s \D \W \S \n \t
 * \r \f \v \xHH \uHHHH and escaped punctuation, groups (...) (?:...)
 * (?P<name>...), alternation |, quantifiers ? * + {m} {m,} {m,n} (a lazy
 * or possessive suffix is accepted: it does not change what matches), and
 * ^ at the start / $ at the end (the match is whole anyway). Refused:
 * backreferences, lookaround, \b \B \A \Z, inline flags, anchors elsewhere,
 * ranges over non-ASCII characters. */
int cre_parse(struct cre_arena *a, const char *re, size_t len, struct cre **out, char *err, size_t errlen);

/* ------------------------------------------------------------------ DFAs */

struct cdfa;

/* Builds the DFA of tree x. Returns 0 with *out (the caller holds one
 * reference), or -1 with err: the language is empty, the automaton is over
 * CDFA_MAX_STATES states (or its NFA too large), or out of memory. */
int cdfa_build(const struct cre *x, struct cdfa **out, char *err, size_t errlen);

/* Parses and builds in one call (what guided_regex and TGI's grammar
 * regex use); err as cre_parse / cdfa_build. */
int cdfa_regex(const char *re, size_t len, struct cdfa **out, char *err, size_t errlen);

/* The strings in both a's and b's languages (the product automaton).
 * Returns 0 with *out, or -1 with err: empty, too many states, or out of
 * memory. a and b are only read. */
int cdfa_intersect(const struct cdfa *a, const struct cdfa *b, struct cdfa **out, char *err, size_t errlen);

/* The language of exactly the n strings choices[i] (guided_choice). */
int cdfa_choice(const char *const *choices, size_t n, struct cdfa **out, char *err, size_t errlen);

struct cdfa *cdfa_ref(struct cdfa *d);              /* returns d; NULL is fine */
void cdfa_put(struct cdfa *d);                      /* drops a reference; NULL is fine */

int cdfa_start(const struct cdfa *d);
/* The state after byte b from state s, or -1: no string of the language
 * goes on that way (states from which nothing is accepted are cut). */
static inline int cdfa_step(const struct cdfa *d, int s, uint8_t b);
bool cdfa_accepts(const struct cdfa *d, int s);
/* The fewest bytes from s to an accepting state (0 when s accepts). */
int cdfa_dist(const struct cdfa *d, int s);
/* The largest cdfa_dist over the states. */
int cdfa_max_dist(const struct cdfa *d);
int cdfa_states(const struct cdfa *d);
/* Runs s over bytes[0..n): the state reached, or -1. */
int cdfa_walk(const struct cdfa *d, int s, const void *bytes, size_t n);
/* Whether the whole of s[0..n) is in the language. */
bool cdfa_matches(const struct cdfa *d, const void *s, size_t n);

/* The layout cdfa_step reads; the rest is private to constraint.c. */
struct cdfa_core {
    int n_states, n_classes;
    uint8_t classmap[256];      /* byte -> class */
    int32_t *next;              /* n_states x n_classes; -1: dead */
};

static inline int cdfa_step(const struct cdfa *d, int s, uint8_t b)
{
    const struct cdfa_core *c = (const struct cdfa_core *)(const void *)d;
    return c->next[(size_t)s * (size_t)c->n_classes + c->classmap[b]];
}

/* A number no other DFA of the process has (what vocab_trie.c caches masks under). */
uint64_t cdfa_id(const struct cdfa *d);
/* The memory d holds (what constraint_cache.c counts). */
size_t cdfa_bytes(const struct cdfa *d);

#endif
