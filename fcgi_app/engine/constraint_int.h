/* constraint_int.h -- what the files of the constraint automaton share (constraint.c: trees and the DFA; constraint_nfa.c: trees to a Thompson NFA). Private to them. */
#ifndef LLMCGI_CONSTRAINT_INT_H
#define LLMCGI_CONSTRAINT_INT_H

#include "constraint.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NFA_MAX_STATES 400000

/* A regex tree node (built in a struct cre_arena). */
enum { R_EMPTY, R_BYTES, R_SET, R_CAT, R_ALT, R_REP, R_ESC, R_LOOP, R_DFA };

struct cre {
    int kind;
    const struct cre *x, *y;
    int min, max;
    size_t n;
    const uint8_t *bytes;
    uint8_t set[32];
    bool multi;
    const struct cdfa *dfa;     /* R_DFA: a reference the arena holds */
};

/* The Thompson NFA: byte ranges, splits and epsilons. */
enum { N_RANGE, N_SPLIT, N_EPS, N_MATCH };

struct nst {
    uint8_t kind, lo, hi;
    int32_t out, out2;
};

struct nfa {
    struct nst *s;
    int n, cap;
    bool fail;
};

struct frag {
    int s, e;                   /* e: an N_EPS whose out is to be patched */
};

/* A new NFA state (0 with f->fail set when out of room or memory). */
int constraint_nfa_new(struct nfa *f, int kind, int lo, int hi, int out, int out2);

/* Points fragment x's open end at state `to`. */
void constraint_nfa_patch(struct nfa *f, struct frag x, int to);

/* The fragment of tree x (esc: inside a JSON string, bytes written as its
 * escapes). f->fail on too many states or out of memory. */
struct frag constraint_nfa_build(struct nfa *f, const struct cre *x, bool esc);

#endif
