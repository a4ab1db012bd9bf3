/* constraint_regex.c -- the regex subset of constrained decoding parsed into constraint.h's trees (classes, escapes, counted repeats, alternatives), with the first error named. */
#include "constraint.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PARSE_MAX_DEPTH 64

/* ------------------------------------------------------------------ regex parser */

struct parser {
    struct cre_arena *a;
    const char *s;
    size_t len, i;
    int depth;
    char *err;
    size_t errlen;
    bool failed;
};

/* Reports "regex: <what> at offset N" once; returns NULL. */
static struct cre *perr(struct parser *p, const char *what)
{
    if (!p->failed)
        snprintf(p->err, p->errlen, "regex: %s at offset %zu", what, p->i);
    p->failed = true;
    return NULL;
}

static void set_add(uint8_t set[32], int b)
{
    set[b >> 3] |= (uint8_t)(1u << (b & 7));
}

static void set_range(uint8_t set[32], int lo, int hi)
{
    for (int b = lo; b <= hi; b++)
        set_add(set, b);
}

/* The bytes of one UTF-8 character starting at s[i] (1 for a stray byte). */
static size_t utf8_len(const char *s, size_t i, size_t len)
{
    unsigned char c = (unsigned char)s[i];
    size_t n = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
    return i + n <= len ? n : 1;
}

static size_t utf8_put(char *out, unsigned cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | cp >> 6), out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    out[0] = (char)(0xe0 | cp >> 12), out[1] = (char)(0x80 | ((cp >> 6) & 0x3f)), out[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* \d \w \s (and negations: the ASCII complement) into set; false when c is none of them. */
static bool class_escape(char c, uint8_t set[32])
{
    uint8_t s[32] = {0};
    switch (c | 0x20) {
    case 'd': set_range(s, '0', '9'); break;
    case 'w': set_range(s, '0', '9'), set_range(s, 'a', 'z'), set_range(s, 'A', 'Z'), set_add(s, '_'); break;
    case 's': set_add(s, ' '), set_range(s, '\t', '\r'); break;
    default: return false;
    }
    if (c != 'd' && c != 'w' && c != 's')
        for (int k = 0; k < 16; k++)
            s[k] = (uint8_t)~s[k];
    for (int k = 0; k < 16; k++)
        set[k] |= s[k];
    return true;
}

/* An escape after the backslash at p->i (which points past it) that stands
 * for one character: its UTF-8 bytes into out (*n). Returns 0, or -1 after
 * reporting. Class escapes are handled by the callers first. */
static int char_escape(struct parser *p, char *out, size_t *n)
{
    if (p->i >= p->len)
        return perr(p, "a trailing backslash"), -1;
    char c = p->s[p->i++];
    static const char simple[][2] = {{'n', '\n'}, {'t', '\t'}, {'r', '\r'}, {'f', '\f'}, {'v', '\v'},
                                     {'a', '\a'}, {'0', '\0'}};
    for (size_t k = 0; k < sizeof simple / sizeof *simple; k++)
        if (c == simple[k][0]) {
            out[0] = simple[k][1];
            *n = 1;
            return 0;
        }
    if (c == 'x' || c == 'u') {
        int digits = c == 'x' ? 2 : 4;
        unsigned cp = 0;
        for (int k = 0; k < digits; k++) {
            int h = p->i < p->len ? hexval(p->s[p->i]) : -1;
            if (h < 0)
                return perr(p, c == 'x' ? "`\\x` needs two hex digits" : "`\\u` needs four hex digits"), -1;
            cp = cp * 16 + (unsigned)h;
            p->i++;
        }
        if (cp >= 0xd800 && cp < 0xe000)
            return perr(p, "a surrogate code point"), -1;
        *n = utf8_put(out, cp);
        return 0;
    }
    if (c == 'b' || c == 'B' || c == 'A' || c == 'Z' || c == 'z' || c == 'G') {
        char what[64];
        snprintf(what, sizeof what, "`\\%c` (an assertion) is not supported", c);
        return perr(p, what), -1;
    }
    if (c >= '1' && c <= '9')
        return perr(p, "backreferences are not supported"), -1;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (unsigned char)c >= 0x80) {
        char what[64];
        snprintf(what, sizeof what, "the escape `\\%c` is not supported", c);
        return perr(p, what), -1;
    }
    out[0] = c;                                 /* escaped punctuation */
    *n = 1;
    return 0;
}

static struct cre *parse_alt(struct parser *p);

/* [...] with p->i just past the '['. */
static struct cre *parse_class(struct parser *p)
{
    uint8_t set[32] = {0};
    bool neg = false;
    struct cre *multi = NULL;                   /* alternatives of non-ASCII characters */
    if (p->i < p->len && p->s[p->i] == '^')
        neg = true, p->i++;
    bool first = true;
    for (;;) {
        if (p->i >= p->len)
            return perr(p, "an unterminated character class");
        char c = p->s[p->i];
        if (c == ']' && !first) {
            p->i++;
            break;
        }
        first = false;
        char lo[4];
        size_t nlo = 0;
        if (c == '\\') {
            p->i++;
            if (p->i < p->len && class_escape(p->s[p->i], set)) {
                p->i++;
                continue;
            }
            if (p->i < p->len && p->s[p->i] == 'b') {   /* backspace inside a class */
                p->i++;
                lo[0] = '\b', nlo = 1;
            } else if (char_escape(p, lo, &nlo) < 0) {
                return NULL;
            }
        } else {
            nlo = utf8_len(p->s, p->i, p->len);
            memcpy(lo, p->s + p->i, nlo);
            p->i += nlo;
        }
        bool range = p->i + 1 < p->len && p->s[p->i] == '-' && p->s[p->i + 1] != ']';
        if (!range) {
            if (nlo == 1 && (unsigned char)lo[0] < 0x80) {
                set_add(set, (unsigned char)lo[0]);
            } else {
                if (neg)
                    return perr(p, "a negated class with non-ASCII characters is not supported");
                struct cre *ch = cre_bytes(p->a, lo, nlo);
                multi = multi ? cre_alt(p->a, multi, ch) : ch;
            }
            continue;
        }
        p->i++;                                 /* the '-' */
        char hi[4];
        size_t nhi = 0;
        if (p->s[p->i] == '\\') {
            p->i++;
            if (char_escape(p, hi, &nhi) < 0)
                return NULL;
        } else {
            nhi = utf8_len(p->s, p->i, p->len);
            memcpy(hi, p->s + p->i, nhi);
            p->i += nhi;
        }
        if (nlo != 1 || nhi != 1 || (unsigned char)lo[0] >= 0x80 || (unsigned char)hi[0] >= 0x80)
            return perr(p, "ranges over non-ASCII characters are not supported");
        if ((unsigned char)lo[0] > (unsigned char)hi[0])
            return perr(p, "a bad character range");
        set_range(set, (unsigned char)lo[0], (unsigned char)hi[0]);
    }
    if (neg) {
        for (int k = 0; k < 16; k++)
            set[k] = (uint8_t)~set[k];
        return cre_set(p->a, set, true);
    }
    struct cre *r = cre_set(p->a, set, false);
    return multi ? cre_alt(p->a, r, multi) : r;
}

/* {m}, {m,}, {m,n}, {,n} at p->i; false (p->i unchanged) when it is not one (a literal '{'). */
static bool read_braces(struct parser *p, int *min, int *max)
{
    size_t i = p->i + 1;
    long m = -1, n = -1;
    bool comma = false;
    for (long *v = &m;; i++) {
        if (i >= p->len)
            return false;
        char c = p->s[i];
        if (c >= '0' && c <= '9') {
            *v = (*v < 0 ? 0 : *v) * 10 + (c - '0');
            if (*v > 1000000)
                *v = 1000000;
        } else if (c == ',' && !comma) {
            comma = true;
            v = &n;
        } else if (c == '}') {
            break;
        } else {
            return false;
        }
    }
    if (m < 0 && (!comma || n < 0))
        return false;
    *min = m < 0 ? 0 : (int)m;
    *max = !comma ? *min : n < 0 ? CRE_REP_INF : (int)n;
    p->i = i + 1;
    return true;
}

static struct cre *parse_atom(struct parser *p)
{
    char c = p->s[p->i];
    uint8_t set[32] = {0};
    switch (c) {
    case '(': {
        p->i++;
        if (p->i < p->len && p->s[p->i] == '?') {
            const char *q = p->s + p->i, *end = p->s + p->len;
            if (end - q >= 2 && q[1] == ':') {
                p->i += 2;
            } else if ((end - q >= 3 && q[1] == 'P' && q[2] == '<') ||
                       (end - q >= 3 && q[1] == '<' && q[2] != '=' && q[2] != '!')) {
                const char *gt = memchr(q, '>', (size_t)(end - q));
                if (!gt)
                    return perr(p, "an unterminated group name");
                p->i += (size_t)(gt - q) + 1;
            } else if (end - q >= 2 && (q[1] == '=' || q[1] == '!' || q[1] == '<')) {
                return perr(p, "lookaround is not supported");
            } else {
                return perr(p, "inline flags and group extensions `(?...)` are not supported");
            }
        }
        struct cre *r = parse_alt(p);
        if (!r)
            return NULL;
        if (p->i >= p->len || p->s[p->i] != ')')
            return perr(p, "a missing `)`");
        p->i++;
        return r;
    }
    case '[':
        p->i++;
        return parse_class(p);
    case '.':
        p->i++;
        set_range(set, 0, 127);
        set[1] &= (uint8_t)~(1u << 2);          /* not \n */
        return cre_set(p->a, set, true);
    case '^':
        if (p->i == 0) {
            p->i++;
            return cre_empty(p->a);
        }
        return perr(p, "`^` other than at the start is not supported");
    case '$':
        if (p->i + 1 == p->len) {
            p->i++;
            return cre_empty(p->a);
        }
        return perr(p, "`$` other than at the end is not supported");
    case '*':
    case '+':
    case '?':
        return perr(p, "nothing to repeat");
    case '\\': {
        p->i++;
        if (p->i < p->len && class_escape(p->s[p->i], set)) {
            p->i++;
            return cre_set(p->a, set, false);
        }
        char b[4];
        size_t n = 0;
        if (char_escape(p, b, &n) < 0)
            return NULL;
        return cre_bytes(p->a, b, n);
    }
    default: {
        size_t n = utf8_len(p->s, p->i, p->len);
        struct cre *r = cre_bytes(p->a, p->s + p->i, n);
        p->i += n;
        return r;
    }
    }
}

static struct cre *parse_cat(struct parser *p)
{
    struct cre *r = NULL;
    while (p->i < p->len && p->s[p->i] != '|' && p->s[p->i] != ')') {
        if (p->s[p->i] == '{') {
            int mn, mx;
            size_t at = p->i;
            if (read_braces(p, &mn, &mx)) {
                p->i = at;
                return perr(p, "nothing to repeat");
            }
        }
        struct cre *x = p->s[p->i] == '{' ? (p->i++, cre_bytes(p->a, "{", 1)) : parse_atom(p);
        if (!x)
            return p->failed ? NULL : perr(p, "out of memory");
        bool quantified = false;
        while (p->i < p->len) {
            char c = p->s[p->i];
            int mn, mx;
            if (c == '*')
                mn = 0, mx = CRE_REP_INF, p->i++;
            else if (c == '+')
                mn = 1, mx = CRE_REP_INF, p->i++;
            else if (c == '?')
                mn = 0, mx = 1, p->i++;
            else if (c == '{' && read_braces(p, &mn, &mx))
                ;
            else
                break;
            if (quantified)
                return perr(p, "multiple repeat");
            quantified = true;
            if (mn > CRE_REP_MAX || (mx != CRE_REP_INF && mx > CRE_REP_MAX))
                return perr(p, "a repeat count over 1000");
            if (mx != CRE_REP_INF && mx < mn)
                return perr(p, "a repeat range min > max");
            x = cre_rep(p->a, x, mn, mx);
            if (p->i < p->len && (p->s[p->i] == '?' || p->s[p->i] == '+'))
                p->i++;                         /* lazy / possessive: the same language */
        }
        r = r ? cre_cat(p->a, r, x) : x;
        if (!r)
            return perr(p, "out of memory");
    }
    return r ? r : cre_empty(p->a);
}

static struct cre *parse_alt(struct parser *p)
{
    if (++p->depth > PARSE_MAX_DEPTH)
        return perr(p, "groups nested too deep");
    struct cre *r = parse_cat(p);
    while (r && p->i < p->len && p->s[p->i] == '|') {
        p->i++;
        struct cre *y = parse_cat(p);
        r = y ? cre_alt(p->a, r, y) : NULL;
    }
    p->depth--;
    return r;
}

int cre_parse(struct cre_arena *a, const char *re, size_t len, struct cre **out, char *err, size_t errlen)
{
    struct parser p = {.a = a, .s = re, .len = len, .err = err, .errlen = errlen};
    struct cre *r = parse_alt(&p);
    if (r && p.i < p.len)
        r = perr(&p, "an unbalanced `)`");
    if (!r && !p.failed)
        snprintf(err, errlen, "out of memory");
    *out = r;
    return r ? 0 : -1;
}
