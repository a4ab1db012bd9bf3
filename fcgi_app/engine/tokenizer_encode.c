/* tokenizer_encode.c -- GPT-2 byte-level BPE encoding, identical to Hugging Face's: added tokens, the pre-tokenisation regex, the merges by rank, each thread's word cache. */
#include "config.h"
#include "tokenizer.h"
#include "tokenizer_int.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Each thread that encodes keeps a small direct-mapped cache of short
 * pieces and their ids (most words recur), tagged with the serial of the
 * tokenizer they belong to, so that a tokenizer freed and another loaded at
 * the same address never sees stale entries. 256 KiB per thread, freed
 * when the thread exits. */
#define WC_SLOTS 4096
#define WC_KEY 22               /* longest piece cached, in bytes */
#define WC_IDS 8                /* most ids a cached piece may have */
struct wc_slot {
    uint64_t serial;            /* 0: empty */
    uint8_t len, n;
    char key[WC_KEY];
    int32_t ids[WC_IDS];
};
static pthread_key_t wc_key;
static pthread_once_t wc_once = PTHREAD_ONCE_INIT;
static bool wc_ok;

static void wc_make_key(void)
{
    wc_ok = pthread_key_create(&wc_key, free) == 0;
}

/* This thread's cache (owned by the thread; NULL when none can be had). */
static struct wc_slot *wc_get(void)
{
    pthread_once(&wc_once, wc_make_key);
    if (!wc_ok)
        return NULL;
    struct wc_slot *c = pthread_getspecific(wc_key);
    if (!c) {
        c = calloc(WC_SLOTS, sizeof *c);
        if (c && pthread_setspecific(wc_key, c) != 0) {
            free(c);
            c = NULL;
        }
    }
    return c;
}

static inline uint32_t wc_hash(const unsigned char *p, size_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    h ^= h >> 29;
    return (uint32_t)h & (WC_SLOTS - 1);
}

/* ------------------------------------------------------------------ encoding */

struct sym {                    /* one symbol of a word being merged: 12 bytes, the most a byte of a long word costs */
    int32_t id;                 /* GONE once merged into its left neighbour */
    int32_t prev, next;         /* neighbours' indices, -1 at the ends */
};
#define GONE (-1)

struct cand {                   /* a merge waiting in the queue */
    uint32_t rank;
    uint32_t pos;               /* index of the left symbol */
    int32_t new_id;
};

/* Per-call scratch. */
struct enc {
    const struct tokenizer *t;
    int32_t *ids;               /* the result, handed to the caller */
    size_t n, cap;
    struct sym *syms;
    size_t syms_cap;
    struct cand *heap;          /* room for 3 * syms_cap */
    struct wc_slot *cache;      /* this thread's, or NULL */
};

static int push_id(struct enc *e, int32_t id)
{
    if (e->n == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 64;
        int32_t *g = realloc(e->ids, cap * sizeof *g);
        if (!g)
            return TOKENIZER_ENOMEM;
        e->ids = g;
        e->cap = cap;
    }
    e->ids[e->n++] = id;
    return 0;
}

static inline bool cand_less(const struct cand *a, const struct cand *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(struct cand *h, size_t *n, struct cand c)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(&c, &h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = c;
}

static struct cand heap_pop(struct cand *h, size_t *n)
{
    struct cand top = h[0], last = h[--*n];
    size_t i = 0, m = *n;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, s = i;
        const struct cand *best = &last;
        if (l < m && cand_less(&h[l], best)) {
            s = l;
            best = &h[l];
        }
        if (r < m && cand_less(&h[r], best))
            s = r;
        if (s == i)
            break;
        h[i] = h[s];
        i = s;
    }
    if (m)
        h[i] = last;
    return top;
}

static void queue_pair(const struct tokenizer *t, struct enc *e, size_t *nh, int32_t left)
{
    const struct merge_slot *m = merge_find(t, e->syms[left].id, e->syms[e->syms[left].next].id);
    if (m)
        heap_push(e->heap, nh, (struct cand){m->rank, (uint32_t)left, m->new_id});
}

/* Byte-pair encodes one piece and appends its ids. The order of merges is
 * Hugging Face's: lowest rank first, leftmost first among equal ranks, and a
 * queued merge is still applied when the pair at its place now makes the
 * same token. */
static int bpe_piece(struct enc *e, const unsigned char *p, size_t n)
{
    const struct tokenizer *t = e->t;
    if (n == 1) {
        int32_t id = t->byte_id[p[0]];
        return id == NO_ID ? 0 : push_id(e, id);
    }
    struct wc_slot *slot = NULL;
    if (e->cache && n <= WC_KEY) {
        slot = &e->cache[wc_hash(p, n)];
        if (slot->serial == t->serial && slot->len == n && memcmp(slot->key, p, n) == 0) {
            for (unsigned i = 0; i < slot->n; i++) {
                int rc = push_id(e, slot->ids[i]);
                if (rc < 0)
                    return rc;
            }
            return 0;
        }
    }
    if (n > INT32_MAX / 4)
        return TOKENIZER_ENOMEM;    /* symbol indices are 32-bit: no 500 MB words */
    if (n > e->syms_cap) {
        /* n symbols; at most n - 1 merges queued first and 2 more per merge */
        size_t cap = n < 64 ? 64 : n;
        struct sym *s = realloc(e->syms, cap * sizeof *s);
        if (!s)
            return TOKENIZER_ENOMEM;
        e->syms = s;
        struct cand *h = realloc(e->heap, 3 * cap * sizeof *h);
        if (!h)
            return TOKENIZER_ENOMEM;
        e->heap = h;
        e->syms_cap = cap;
    }
    size_t ns = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_id[p[i]];
        if (id == NO_ID)
            continue;           /* no unknown token: Hugging Face drops the byte */
        e->syms[ns] = (struct sym){id, (int32_t)ns - 1, (int32_t)ns + 1};
        ns++;
    }
    if (ns == 0)
        return 0;
    e->syms[ns - 1].next = -1;
    size_t nh = 0;
    for (size_t i = 0; i + 1 < ns; i++)
        queue_pair(t, e, &nh, (int32_t)i);
    while (nh) {
        struct cand c = heap_pop(e->heap, &nh);
        struct sym *l = &e->syms[c.pos];
        if (l->id == GONE || l->next < 0)
            continue;
        struct sym *r = &e->syms[l->next];
        const struct merge_slot *m = merge_find(t, l->id, r->id);
        if (!m || m->new_id != c.new_id)
            continue;           /* stale */
        l->id = c.new_id;
        r->id = GONE;
        l->next = r->next;
        if (r->next >= 0)
            e->syms[r->next].prev = (int32_t)c.pos;
        if (l->prev >= 0)
            queue_pair(t, e, &nh, l->prev);
        if (l->next >= 0)
            queue_pair(t, e, &nh, (int32_t)c.pos);
    }
    size_t first = e->n;
    for (int32_t i = 0; i >= 0; i = e->syms[i].next) {
        int rc = push_id(e, e->syms[i].id);
        if (rc < 0)
            return rc;
    }
    if (slot && e->n - first <= WC_IDS) {
        slot->serial = t->serial;
        slot->len = (uint8_t)n;
        slot->n = (uint8_t)(e->n - first);
        memcpy(slot->key, p, n);
        memcpy(slot->ids, e->ids + first, (e->n - first) * sizeof *e->ids);
    }
    return 0;
}

/* Cuts s[0..n) (valid UTF-8, no added tokens) with the pattern and calls
 * fn on each piece. */
static int split_regex(const struct tokenizer *t, pcre2_match_data *md, const char *s, size_t n,
                       int (*fn)(void *, const char *, size_t, int32_t), void *ud)
{
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    size_t pos = 0;
    while (pos < n) {
        int r = pcre2_match(t->re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
        /* JIT's 32 KiB stack ran out: the interpreter has no such limit */
        if (r == PCRE2_ERROR_JIT_STACKLIMIT && t->jit)
            r = pcre2_match(t->re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, NULL);
        size_t ms, me;
        if (r == PCRE2_ERROR_NOMATCH) {
            ms = me = n;
        } else if (r < 0) {
            return TOKENIZER_EREGEX;
        } else {
            ms = ov[0];
            me = ov[1];
        }
        if (ms > pos) {         /* text between matches is a piece of its own (never happens with GPT-2's pattern) */
            int rc = fn(ud, s + pos, ms - pos, NO_ID);
            if (rc)
                return rc;
        }
        if (me > ms) {
            int rc = fn(ud, s + ms, me - ms, NO_ID);
            if (rc)
                return rc;
            pos = me;
        } else if (ms < n) {    /* an empty match: step over one character */
            int st;
            size_t k = tokenizer_utf8_seq((const unsigned char *)s + ms, n - ms, &st);
            int rc = fn(ud, s + ms, k, NO_ID);
            if (rc)
                return rc;
            pos = ms + k;
        } else {
            pos = n;
        }
    }
    return 0;
}

/* Whether added token a is looked for in this pass. Hugging Face splits
 * on the tokens it does not normalize first, then on the normalized ones in
 * what is left (the same text here: GPT-2 has no normalizer). */
static bool applies(const struct added *a, bool allow_special, int pass)
{
    return (allow_special || !a->special) && a->normalized == (pass == 1);
}

/* Finds the leftmost, then longest, added token of this pass in
 * s[from..n); returns its index or -1. *at gets its start. next_at[i] holds
 * where token i was last found (SIZE_MAX: nowhere further). */
static long find_added(const struct tokenizer *t, bool allow_special, int pass, const char *s, size_t n,
                       size_t from, size_t *at, size_t *next_at)
{
    long best = -1;
    size_t best_at = n;
    for (size_t i = 0; i < t->n_added; i++) {
        const struct added *a = &t->added[i];
        if (!applies(a, allow_special, pass))
            continue;
        if (next_at[i] < from) {    /* the last place found is behind us: search again */
            const char *hit = a->len <= n - from ? memmem(s + from, n - from, a->text, a->len) : NULL;
            next_at[i] = hit ? (size_t)(hit - s) : SIZE_MAX;
        }
        size_t p = next_at[i];
        if (p == SIZE_MAX)
            continue;
        if (p < best_at || (p == best_at && a->len > t->added[best].len)) {
            best = (long)i;
            best_at = p;
        }
    }
    *at = best_at;
    return best;
}

/* Length of the white space ending at s[end) going left (not before lo). */
static size_t ws_left(const char *s, size_t lo, size_t end)
{
    size_t i = end;
    while (i > lo) {
        size_t j = i - 1;
        while (j > lo && ((unsigned char)s[j] & 0xc0) == 0x80)
            j--;
        uint32_t cp;
        tokenizer_utf8_decode((const unsigned char *)s + j, &cp);
        if (!tokenizer_is_white_space(cp))
            break;
        i = j;
    }
    return end - i;
}

static size_t ws_right(const char *s, size_t start, size_t n)
{
    size_t i = start;
    while (i < n) {
        uint32_t cp;
        size_t k = tokenizer_utf8_decode((const unsigned char *)s + i, &cp);
        if (!tokenizer_is_white_space(cp))
            break;
        i += k;
    }
    return i - start;
}

/* Walks valid text: added tokens and regex pieces, in order, to fn. Pass
 * 0 splits on the added tokens that are not normalized, pass 1 on the
 * normalized ones, what is left goes to the regex. */
static int walk(const struct tokenizer *t, pcre2_match_data *md, const char *s, size_t n, bool allow_special,
                int pass, int (*fn)(void *, const char *, size_t, int32_t), void *ud)
{
    if (pass > 1)
        return split_regex(t, md, s, n, fn, ud);
    bool any = false;
    for (size_t i = 0; i < t->n_added && !any; i++)
        any = applies(&t->added[i], allow_special, pass);
    if (!any)
        return walk(t, md, s, n, allow_special, pass + 1, fn, ud);
    size_t stack_at[16];
    size_t *next_at = t->n_added <= 16 ? stack_at : malloc(t->n_added * sizeof *next_at);
    if (!next_at)
        return TOKENIZER_ENOMEM;
    for (size_t i = 0; i < t->n_added; i++) {
        const struct added *a = &t->added[i];
        const char *hit = applies(a, allow_special, pass) && a->len <= n ? memmem(s, n, a->text, a->len) : NULL;
        next_at[i] = hit ? (size_t)(hit - s) : SIZE_MAX;
    }
    size_t pos = 0;
    int rc = 0;
    while (pos < n && rc == 0) {
        size_t at;
        long k = find_added(t, allow_special, pass, s, n, pos, &at, next_at);
        if (k < 0) {
            rc = walk(t, md, s + pos, n - pos, allow_special, pass + 1, fn, ud);
            break;
        }
        const struct added *a = &t->added[k];
        size_t start = at, end = at + a->len;
        if (a->lstrip)
            start -= ws_left(s, pos, start);
        if (a->rstrip)
            end += ws_right(s, end, n);
        if (start > pos)
            rc = walk(t, md, s + pos, start - pos, allow_special, pass + 1, fn, ud);
        if (rc == 0)
            rc = fn(ud, s + start, end - start, a->id);
        pos = end;
    }
    if (next_at != stack_at)
        free(next_at);
    return rc;
}

/* Runs fn over the pieces of text after U+FFFD replacement. */
static int pretokenize(const struct tokenizer *t, const char *text, size_t len, bool allow_special,
                       int (*fn)(void *, const char *, size_t, int32_t), void *ud)
{
    char *fixed = NULL;
    if (!tokenizer_utf8_valid(text, len)) {
        if (len > SIZE_MAX / 3)
            return TOKENIZER_ENOMEM;
        fixed = malloc(3 * len);
        if (!fixed)
            return TOKENIZER_ENOMEM;
        len = tokenizer_utf8_lossy((const unsigned char *)text, len, fixed);
        text = fixed;
    }
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(t->re, NULL);
    int rc = md ? walk(t, md, text, len, allow_special, 0, fn, ud) : TOKENIZER_ENOMEM;
    pcre2_match_data_free(md);
    free(fixed);
    return rc;
}

static int encode_piece(void *ud, const char *piece, size_t len, int32_t id)
{
    struct enc *e = ud;
    if (id >= 0)
        return push_id(e, id);
    return bpe_piece(e, (const unsigned char *)piece, len);
}

int tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, bool allow_special, int32_t **ids,
                     size_t *n_ids)
{
    if (!t || (!text && len) || !ids || !n_ids)
        return TOKENIZER_EINVAL;
    struct enc e = {.t = t, .cache = wc_get()};
    e.cap = len / 3 + 16;
    e.ids = malloc(e.cap * sizeof *e.ids);
    int rc = e.ids ? pretokenize(t, text ? text : "", len, allow_special, encode_piece, &e) : TOKENIZER_ENOMEM;
    free(e.syms);
    free(e.heap);
    if (rc != 0) {
        free(e.ids);
        *ids = NULL;
        *n_ids = 0;
        return rc < 0 ? rc : TOKENIZER_EREGEX;
    }
    *ids = e.ids;
    *n_ids = e.n;
    return 0;
}

int tokenizer_pretokenize(const struct tokenizer *t, const char *text, size_t len, bool allow_special,
                          tokenizer_piece_fn fn, void *ud)
{
    if (!t || (!text && len) || !fn)
        return TOKENIZER_EINVAL;
    return pretokenize(t, text ? text : "", len, allow_special, fn, ud);
}
