/* constraint_nfa.c -- constrained decoding's trees (constraint.c's struct cre) compiled into a Thompson NFA over bytes: literals, sets and their JSON escapes, UTF-8 multibyte ranges, repeats, embedded DFAs. */
#include "constraint_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int constraint_nfa_new(struct nfa *f, int kind, int lo, int hi, int out, int out2)
{
    if (f->fail)
        return 0;
    if (f->n == f->cap) {
        if (f->cap >= NFA_MAX_STATES) {
            f->fail = true;
            return 0;
        }
        int cap = f->cap ? f->cap * 2 : 1024;
        struct nst *s = realloc(f->s, sizeof *s * (size_t)cap);
        if (!s) {
            f->fail = true;
            return 0;
        }
        f->s = s;
        f->cap = cap;
    }
    f->s[f->n] = (struct nst){(uint8_t)kind, (uint8_t)lo, (uint8_t)hi, out, out2};
    return f->n++;
}

void constraint_nfa_patch(struct nfa *f, struct frag x, int to)
{
    if (!f->fail)
        f->s[x.e].out = to;
}

static struct frag f_eps(struct nfa *f)
{
    int e = constraint_nfa_new(f, N_EPS, 0, 0, -1, -1);
    return (struct frag){e, e};
}

/* A chain of byte ranges lo[i]..hi[i]. */
static struct frag f_ranges(struct nfa *f, const uint8_t *lo, const uint8_t *hi, int n)
{
    struct frag r = f_eps(f);
    int prev = r.s;
    for (int i = 0; i < n; i++) {
        int s = constraint_nfa_new(f, N_RANGE, lo[i], hi[i], -1, -1);
        if (f->fail)
            return r;
        f->s[prev].out = s;
        prev = s;
    }
    int e = constraint_nfa_new(f, N_EPS, 0, 0, -1, -1);
    if (!f->fail)
        f->s[prev].out = e;
    r.e = e;
    return r;
}

static struct frag f_literal(struct nfa *f, const uint8_t *b, size_t n)
{
    uint8_t buf[64];
    struct frag r = f_eps(f);
    while (n) {
        int k = n < sizeof buf ? (int)n : (int)sizeof buf;
        memcpy(buf, b, (size_t)k);
        struct frag x = f_ranges(f, buf, buf, k);
        constraint_nfa_patch(f, r, x.s);
        r.e = x.e;
        b += k;
        n -= (size_t)k;
    }
    return r;
}

/* Alternatives xs[0..n) (n >= 1) joined into one fragment. */
static struct frag f_alts(struct nfa *f, const struct frag *xs, int n)
{
    if (n == 1)
        return xs[0];
    int e = constraint_nfa_new(f, N_EPS, 0, 0, -1, -1);
    int s = xs[n - 1].s;
    constraint_nfa_patch(f, xs[n - 1], e);
    for (int i = n - 2; i >= 0; i--) {
        s = constraint_nfa_new(f, N_SPLIT, 0, 0, xs[i].s, s);
        constraint_nfa_patch(f, xs[i], e);
    }
    return (struct frag){s, e};
}

/* The JSON spelling of byte b inside a string, or NULL when b is written as itself. */
static const char *json_escape(uint8_t b, char buf[8])
{
    switch (b) {
    case '"': return "\\\"";
    case '\\': return "\\\\";
    case '\n': return "\\n";
    case '\t': return "\\t";
    case '\r': return "\\r";
    case '\b': return "\\b";
    case '\f': return "\\f";
    default:
        if (b < 0x20) {
            memcpy(buf, "\\u00", 4);
            buf[4] = "01"[b >> 4], buf[5] = "0123456789abcdef"[b & 15], buf[6] = '\0';
            return buf;
        }
        return NULL;
    }
}

/* Any non-ASCII UTF-8 character (well-formed: no overlongs, no surrogates). */
static int f_multibyte(struct nfa *f, struct frag *xs)
{
    static const uint8_t seq[][4][2] = {
        {{0xc2, 0xdf}, {0x80, 0xbf}},
        {{0xe0, 0xe0}, {0xa0, 0xbf}, {0x80, 0xbf}},
        {{0xe1, 0xec}, {0x80, 0xbf}, {0x80, 0xbf}},
        {{0xed, 0xed}, {0x80, 0x9f}, {0x80, 0xbf}},
        {{0xee, 0xef}, {0x80, 0xbf}, {0x80, 0xbf}},
        {{0xf0, 0xf0}, {0x90, 0xbf}, {0x80, 0xbf}, {0x80, 0xbf}},
        {{0xf1, 0xf3}, {0x80, 0xbf}, {0x80, 0xbf}, {0x80, 0xbf}},
        {{0xf4, 0xf4}, {0x80, 0x8f}, {0x80, 0xbf}, {0x80, 0xbf}},
    };
    static const int lens[] = {2, 3, 3, 3, 3, 4, 4, 4};
    for (int i = 0; i < 8; i++) {
        uint8_t lo[4], hi[4];
        for (int k = 0; k < lens[i]; k++)
            lo[k] = seq[i][k][0], hi[k] = seq[i][k][1];
        xs[i] = f_ranges(f, lo, hi, lens[i]);
    }
    return 8;
}


/* The next byte >= b whose bit in m[0..2) is v (1 or 0), or 128. */
static int next_bit(const uint64_t m[2], int b, bool v)
{
    for (int w = b >> 6; w < 2; w++) {
        uint64_t bits = (v ? m[w] : ~m[w]) & (~0ull << (b & 63));
        if (bits)
            return w * 64 + __builtin_ctzll(bits);
        b = (w + 1) * 64;
    }
    return 128;
}

/* The ASCII bytes in m (bit b of m[b / 64]) as alternatives of runs (one
 * range each); n_out: how many (0: none, no fragment). */
static struct frag f_runs(struct nfa *f, const uint64_t m[2], int *n_out)
{
    struct frag xs[64];
    int n = 0;
    for (int b = next_bit(m, 0, true); b < 128; b = next_bit(m, b, true)) {
        int e = next_bit(m, b, false);
        uint8_t l = (uint8_t)b, h = (uint8_t)(e - 1);
        xs[n++] = f_ranges(f, &l, &h, 1);
        b = e;
    }
    *n_out = n;
    return n ? f_alts(f, xs, n) : (struct frag){0, 0};
}

/* A set of bytes; inside a JSON string (esc) the bytes JSON escapes are
 * written factored: one backslash, then the escape letters as one set, and
 * "u00" with the last two hex digits as sets, so that a class holding the
 * control characters costs a few NFA states, not 32 literal chains. */
static struct frag f_set(struct nfa *f, const struct cre *x, bool esc)
{
    static const char hex[] = "0123456789abcdef";
    uint64_t set[2], plain[2], letter[2] = {0, 0}, low[2][2] = {{0, 0}, {0, 0}};
    for (int w = 0; w < 2; w++) {
        set[w] = 0;
        for (int k = 7; k >= 0; k--)
            set[w] = set[w] << 8 | x->set[w * 8 + k];
    }
    plain[0] = set[0], plain[1] = set[1];
    if (esc) {                                  /* JSON escapes the control bytes, '"' and '\\' */
        uint64_t escaped[2] = {0xffffffffull | 1ull << '"', 1ull << ('\\' - 64)};
        for (int w = 0; w < 2; w++)
            plain[w] = set[w] & ~escaped[w];
        for (uint64_t bits = set[0] & escaped[0]; bits; bits &= bits - 1) {
            int b = __builtin_ctzll(bits);
            char buf[8];
            const char *e = json_escape((uint8_t)b, buf);
            uint8_t c = e[1] != 'u' ? (uint8_t)e[1] : (uint8_t)hex[b & 15];
            uint64_t *into = e[1] != 'u' ? letter : low[b >> 4];
            into[c >> 6] |= 1ull << (c & 63);
        }
        if (set[1] & escaped[1])
            letter['\\' >> 6] |= 1ull << ('\\' & 63);
    }
    bool any_letter = letter[0] | letter[1], any_u[2] = {(low[0][0] | low[0][1]) != 0, (low[1][0] | low[1][1]) != 0};
    struct frag xs[8 + 2];
    int n = 0, k;
    struct frag r = f_runs(f, plain, &k);
    if (k)
        xs[n++] = r;
    if (any_letter || any_u[0] || any_u[1]) {
        struct frag es[2];
        int ne = 0;
        if (any_letter)
            es[ne++] = f_runs(f, letter, &k);
        if (any_u[0] || any_u[1]) {
            struct frag hs[2];
            int nh = 0;
            for (int h = 0; h < 2; h++) {
                if (!any_u[h])
                    continue;
                struct frag d = f_literal(f, (const uint8_t *)&hex[h], 1), l = f_runs(f, low[h], &k);
                constraint_nfa_patch(f, d, l.s);
                hs[nh++] = (struct frag){d.s, l.e};
            }
            struct frag u = f_literal(f, (const uint8_t *)"u00", 3), tail = f_alts(f, hs, nh);
            constraint_nfa_patch(f, u, tail.s);
            es[ne++] = (struct frag){u.s, tail.e};
        }
        struct frag bs = f_literal(f, (const uint8_t *)"\\", 1), tail = f_alts(f, es, ne);
        constraint_nfa_patch(f, bs, tail.s);
        xs[n++] = (struct frag){bs.s, tail.e};
    }
    if (x->multi)
        n += f_multibyte(f, xs + n);
    if (n == 0) {                               /* the empty set: matches nothing */
        struct frag e = f_eps(f);
        int dead = constraint_nfa_new(f, N_RANGE, 1, 0, -1, -1);     /* lo > hi: no byte passes */
        if (!f->fail)
            f->s[e.s].out = dead;
        int end = constraint_nfa_new(f, N_EPS, 0, 0, -1, -1);
        if (!f->fail)
            f->s[dead].out = end;
        e.e = end;
        return e;
    }
    return f_alts(f, xs, n);
}

static struct frag f_bytes(struct nfa *f, const struct cre *x, bool esc)
{
    if (!esc)
        return f_literal(f, x->bytes, x->n);
    struct frag r = f_eps(f);
    size_t i = 0;
    while (i < x->n) {
        char buf[8];
        const char *e = json_escape(x->bytes[i], buf);
        size_t j = i;
        if (e) {
            j++;
        } else {
            while (j < x->n && !json_escape(x->bytes[j], buf))
                j++;
        }
        struct frag y = e ? f_literal(f, (const uint8_t *)e, strlen(e)) : f_literal(f, x->bytes + i, j - i);
        constraint_nfa_patch(f, r, y.s);
        r.e = y.e;
        i = j;
    }
    return r;
}

/* A DFA's language as NFA states: one entry per DFA state, and from it a
 * range (or, inside a JSON string, a byte's escape) to the entry of each
 * state it goes to, and to the end where the state accepts. */
static struct frag f_dfa(struct nfa *f, const struct cdfa *d, bool esc)
{
    int n = cdfa_states(d);
    int32_t *entry = malloc(sizeof *entry * (size_t)n);
    struct frag r = {0, 0};
    if (!entry) {
        f->fail = true;
        return r;
    }
    for (int s = 0; s < n; s++)
        entry[s] = constraint_nfa_new(f, N_EPS, 0, 0, -1, -1);
    int end = constraint_nfa_new(f, N_EPS, 0, 0, -1, -1);
    for (int s = 0; s < n && !f->fail; s++) {
        struct frag alts[257];
        int k = 0;
        char buf[8];
        for (int b = 0; b < 256; b++) {
            int t = cdfa_step(d, s, (uint8_t)b);
            if (t < 0)
                continue;
            const char *e = esc && b < 128 ? json_escape((uint8_t)b, buf) : NULL;
            struct frag x;
            if (e) {
                x = f_literal(f, (const uint8_t *)e, strlen(e));
            } else {
                int hi = b;
                while (hi < 255 && cdfa_step(d, s, (uint8_t)(hi + 1)) == t &&
                       !(esc && hi + 1 < 128 && json_escape((uint8_t)(hi + 1), buf)))
                    hi++;
                uint8_t lo8 = (uint8_t)b, hi8 = (uint8_t)hi;
                x = f_ranges(f, &lo8, &hi8, 1);
                b = hi;
            }
            constraint_nfa_patch(f, x, entry[t]);
            alts[k++] = x;
        }
        if (cdfa_accepts(d, s)) {
            struct frag x = f_eps(f);
            constraint_nfa_patch(f, x, end);
            alts[k++] = x;
        }
        if (k == 0 || f->fail)
            continue;                           /* nothing goes on: a dead end */
        int start = alts[k - 1].s;
        for (int i = k - 2; i >= 0; i--)
            start = constraint_nfa_new(f, N_SPLIT, 0, 0, alts[i].s, start);
        if (!f->fail)
            f->s[entry[s]].out = start;
    }
    if (!f->fail)
        r = (struct frag){entry[cdfa_start(d)], end};
    free(entry);
    return r;
}

struct frag constraint_nfa_build(struct nfa *f, const struct cre *x, bool esc)
{
    if (f->fail)
        return (struct frag){0, 0};
    switch (x->kind) {
    case R_EMPTY:
        return f_eps(f);
    case R_BYTES:
        return f_bytes(f, x, esc);
    case R_SET:
        return f_set(f, x, esc);
    case R_ESC:
        return constraint_nfa_build(f, x->x, true);
    case R_DFA:
        return f_dfa(f, x->dfa, esc);
    case R_CAT: {
        struct frag a = constraint_nfa_build(f, x->x, esc);
        struct frag b = constraint_nfa_build(f, x->y, esc);
        constraint_nfa_patch(f, a, b.s);
        return (struct frag){a.s, b.e};
    }
    case R_ALT: {
        struct frag xs[2] = {constraint_nfa_build(f, x->x, esc), constraint_nfa_build(f, x->y, esc)};
        return f_alts(f, xs, 2);
    }
    case R_LOOP: {                              /* x, then sep back to x or the end */
        struct frag item = constraint_nfa_build(f, x->x, esc);
        struct frag sep = constraint_nfa_build(f, x->y, esc);
        int e = constraint_nfa_new(f, N_EPS, 0, 0, -1, -1);
        int s = constraint_nfa_new(f, N_SPLIT, 0, 0, sep.s, e);
        constraint_nfa_patch(f, item, s);
        constraint_nfa_patch(f, sep, item.s);
        return (struct frag){item.s, e};
    }
    case R_REP: {
        struct frag r = f_eps(f);
        for (int i = 0; i < x->min && !f->fail; i++) {
            struct frag y = constraint_nfa_build(f, x->x, esc);
            constraint_nfa_patch(f, r, y.s);
            r.e = y.e;
        }
        if (x->max == CRE_REP_INF) {
            struct frag y = constraint_nfa_build(f, x->x, esc);
            int e = constraint_nfa_new(f, N_EPS, 0, 0, -1, -1);
            int s = constraint_nfa_new(f, N_SPLIT, 0, 0, y.s, e);
            constraint_nfa_patch(f, y, s);
            constraint_nfa_patch(f, r, s);
            r.e = e;
            return r;
        }
        /* (x(x(x)?)?)?: the optional copies, each skippable to the end */
        int end = constraint_nfa_new(f, N_EPS, 0, 0, -1, -1);
        for (int i = x->min; i < x->max && !f->fail; i++) {
            struct frag y = constraint_nfa_build(f, x->x, esc);
            int s = constraint_nfa_new(f, N_SPLIT, 0, 0, y.s, end);
            constraint_nfa_patch(f, r, s);
            r.e = y.e;
        }
        constraint_nfa_patch(f, r, end);
        r.e = end;
        return r;
    }
    }
    return (struct frag){0, 0};
}

