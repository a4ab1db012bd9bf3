/* constraint.c -- constrained decoding's automaton: regex subset -> tree -> Thompson NFA -> byte DFA (subset construction over byte classes), dead states cut, distances to acceptance; the NFA is built in constraint_nfa.c, the regex subset's parser is constraint_regex.c's. */
#include "constraint_int.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POOL_MAX (4u << 20)             /* NFA state ids over all DFA states' sets: 16 MB while building */

/* ------------------------------------------------------------------ trees */

struct cre_arena {
    void **p;
    size_t n, cap;
    struct cdfa **dfas;         /* references, put when the arena is freed */
    size_t n_dfas, cap_dfas;
};

struct cre_arena *cre_arena_new(void)
{
    return calloc(1, sizeof(struct cre_arena));
}

void cre_arena_free(struct cre_arena *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->n; i++)
        free(a->p[i]);
    free(a->p);
    for (size_t i = 0; i < a->n_dfas; i++)
        cdfa_put(a->dfas[i]);
    free(a->dfas);
    free(a);
}

/* A zeroed block owned by the arena, or NULL. */
static void *arena_alloc(struct cre_arena *a, size_t size)
{
    if (!a)
        return NULL;
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        void **p = realloc(a->p, cap * sizeof *p);
        if (!p)
            return NULL;
        a->p = p;
        a->cap = cap;
    }
    void *b = calloc(1, size ? size : 1);
    if (b)
        a->p[a->n++] = b;
    return b;
}

static struct cre *node(struct cre_arena *a, int kind)
{
    struct cre *r = arena_alloc(a, sizeof *r);
    if (r)
        r->kind = kind;
    return r;
}

struct cre *cre_empty(struct cre_arena *a)
{
    return node(a, R_EMPTY);
}

struct cre *cre_bytes(struct cre_arena *a, const void *s, size_t n)
{
    struct cre *r = node(a, R_BYTES);
    uint8_t *b = r ? arena_alloc(a, n) : NULL;
    if (!b)
        return NULL;
    memcpy(b, s, n);
    r->bytes = b;
    r->n = n;
    return r;
}

struct cre *cre_str(struct cre_arena *a, const char *s)
{
    return cre_bytes(a, s, strlen(s));
}

struct cre *cre_set(struct cre_arena *a, const uint8_t set[32], bool any_multibyte)
{
    struct cre *r = node(a, R_SET);
    if (!r)
        return NULL;
    memcpy(r->set, set, 16);                    /* ASCII only */
    r->multi = any_multibyte;
    return r;
}

struct cre *cre_range(struct cre_arena *a, uint8_t lo, uint8_t hi)
{
    uint8_t set[32] = {0};
    for (int b = lo; b <= hi && b < 128; b++)
        set[b >> 3] |= (uint8_t)(1u << (b & 7));
    return cre_set(a, set, false);
}

static struct cre *pair(struct cre_arena *a, int kind, struct cre *x, struct cre *y)
{
    if (!x || !y)
        return NULL;
    struct cre *r = node(a, kind);
    if (r)
        r->x = x, r->y = y;
    return r;
}

struct cre *cre_cat(struct cre_arena *a, struct cre *x, struct cre *y)
{
    return pair(a, R_CAT, x, y);
}

struct cre *cre_alt(struct cre_arena *a, struct cre *x, struct cre *y)
{
    return pair(a, R_ALT, x, y);
}

struct cre *cre_rep(struct cre_arena *a, struct cre *x, int min, int max)
{
    if (!x || min < 0 || min > CRE_REP_MAX || (max != CRE_REP_INF && (max < min || max > CRE_REP_MAX)))
        return NULL;
    struct cre *r = node(a, R_REP);
    if (r)
        r->x = x, r->min = min, r->max = max;
    return r;
}

struct cre *cre_list(struct cre_arena *a, struct cre *x, struct cre *sep, int min, int max)
{
    if (!x || !sep || min < 1)
        return NULL;
    if (max != CRE_REP_INF || min > 1)
        return cre_cat(a, x, cre_rep(a, cre_cat(a, sep, x), min - 1, max == CRE_REP_INF ? CRE_REP_INF : max - 1));
    return pair(a, R_LOOP, x, sep);             /* x (sep x)*, one copy of x */
}

struct cre *cre_dfa(struct cre_arena *a, struct cdfa *d)
{
    if (!a || !d)
        return NULL;
    if (a->n_dfas == a->cap_dfas) {
        size_t cap = a->cap_dfas ? a->cap_dfas * 2 : 4;
        struct cdfa **v = realloc(a->dfas, cap * sizeof *v);
        if (!v)
            return NULL;
        a->dfas = v;
        a->cap_dfas = cap;
    }
    struct cre *r = node(a, R_DFA);
    if (r) {
        a->dfas[a->n_dfas++] = cdfa_ref(d);
        r->dfa = d;
    }
    return r;
}

struct cre *cre_json_escaped(struct cre_arena *a, struct cre *x)
{
    if (!x)
        return NULL;
    struct cre *r = node(a, R_ESC);
    if (r)
        r->x = x;
    return r;
}

/* ------------------------------------------------------------------ DFA */

struct cdfa {
    struct cdfa_core core;      /* first: cdfa_step reads it */
    uint8_t *accept;
    int32_t *dist;
    int max_dist;
    atomic_int refs;
    uint64_t id;                /* unique in the process: what masks are cached under (vocab_trie.c) */
};

static atomic_uint_fast64_t next_id = 1;

struct intvec {
    int32_t *v;
    size_t n, cap;
};

static int iv_push(struct intvec *a, int32_t x)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        int32_t *v = realloc(a->v, cap * sizeof *v);
        if (!v)
            return -1;
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = x;
    return 0;
}

struct builder {
    const struct nfa *f;
    uint32_t *mark;             /* per NFA state: the stamp of the last closure that reached it */
    uint32_t stamp;
    int32_t *stack;             /* f->n each: every state is pushed at most once per closure */
    struct intvec set;          /* the closure: N_RANGE and N_MATCH states, unordered */
    uint64_t set_hash;          /* the sum of mix(state) over set: independent of the order */
    /* DFA states: their NFA sets in pool at off[i]..off[i+1], their hashes */
    struct intvec pool, off;
    uint64_t *hashes;
    size_t hashes_cap;
    int32_t *single;            /* per NFA state: the DFA state of its closure alone; INT32_MIN: not yet */
    int32_t *hash;              /* open addressing: DFA id + 1, 0 empty */
    size_t hcap;
    int n_states;
    bool toobig;                /* over CDFA_MAX_STATES or POOL_MAX */
};

static inline uint64_t mix(uint32_t x)
{
    uint64_t h = (uint64_t)x * 0x9e3779b97f4a7c15ull;
    return h ^ (h >> 31);
}

/* The epsilon closure of seeds[0..n) into b->set (unordered; the states
 * reached are marked with b->stamp, which intern's comparison reads). */
static int closure(struct builder *b, const int32_t *seeds, size_t n)
{
    const struct nst *st = b->f->s;
    uint32_t *mark = b->mark;
    if (++b->stamp == 0) {
        memset(mark, 0, sizeof *mark * (size_t)b->f->n);
        b->stamp = 1;
    }
    uint32_t stamp = b->stamp;
    int32_t *stack = b->stack;
    size_t sp = 0;
    for (size_t i = 0; i < n; i++)
        if (seeds[i] >= 0 && mark[seeds[i]] != stamp)
            mark[seeds[i]] = stamp, stack[sp++] = seeds[i];
    size_t k = 0;
    uint64_t h = 0;
    int32_t *set = b->set.v;
    while (sp) {
        int32_t s = stack[--sp];
        const struct nst *q = &st[s];
        switch (q->kind) {
        case N_RANGE:
        case N_MATCH:
            set[k++] = s;
            h += mix((uint32_t)s);
            break;
        case N_SPLIT:
            if (q->out2 >= 0 && mark[q->out2] != stamp)
                mark[q->out2] = stamp, stack[sp++] = q->out2;
            /* fall through */
        case N_EPS:
            if (q->out >= 0 && mark[q->out] != stamp)
                mark[q->out] = stamp, stack[sp++] = q->out;
            break;
        }
    }
    b->set.n = k;
    b->set_hash = h + k;
    return 0;
}

/* The DFA state of b->set, made when new (*made). -1 when out of memory or too many states; -2: the empty set. */
static int intern(struct builder *b, bool *made)
{
    *made = false;
    if (b->set.n == 0)
        return -2;
    if ((size_t)b->n_states * 2 + 2 > b->hcap) {
        size_t cap = b->hcap ? b->hcap * 2 : 1024;
        int32_t *h = calloc(cap, sizeof *h);
        if (!h)
            return -1;
        for (int i = 0; i < b->n_states; i++) {
            size_t k = b->hashes[i] & (cap - 1);
            while (h[k])
                k = (k + 1) & (cap - 1);
            h[k] = i + 1;
        }
        free(b->hash);
        b->hash = h;
        b->hcap = cap;
    }
    uint64_t hv = b->set_hash;
    size_t k = hv & (b->hcap - 1);
    for (; b->hash[k]; k = (k + 1) & (b->hcap - 1)) {
        int i = b->hash[k] - 1;
        size_t len = (size_t)(b->off.v[i + 1] - b->off.v[i]);
        if (b->hashes[i] != hv || len != b->set.n)
            continue;
        /* same size, and every member of state i reached by this closure: the same set */
        const int32_t *v = b->pool.v + b->off.v[i];
        size_t j = 0;
        while (j < len && b->mark[v[j]] == b->stamp)
            j++;
        if (j == len)
            return i;
    }
    if (b->n_states >= CDFA_MAX_STATES || b->pool.n + b->set.n > POOL_MAX) {
        b->toobig = true;
        return -1;
    }
    if ((size_t)b->n_states >= b->hashes_cap) {
        size_t cap = b->hashes_cap ? b->hashes_cap * 2 : 256;
        uint64_t *hs = realloc(b->hashes, cap * sizeof *hs);
        if (!hs)
            return -1;
        b->hashes = hs;
        b->hashes_cap = cap;
    }
    if (b->pool.n + b->set.n > b->pool.cap) {
        size_t cap = b->pool.cap ? b->pool.cap : 1024;
        while (cap < b->pool.n + b->set.n)
            cap *= 2;
        int32_t *v = realloc(b->pool.v, cap * sizeof *v);
        if (!v)
            return -1;
        b->pool.v = v;
        b->pool.cap = cap;
    }
    memcpy(b->pool.v + b->pool.n, b->set.v, b->set.n * sizeof *b->set.v);
    b->pool.n += b->set.n;
    if (iv_push(&b->off, (int32_t)b->pool.n) < 0)
        return -1;
    b->hashes[b->n_states] = hv;
    b->hash[k] = ++b->n_states;
    *made = true;
    return b->n_states - 1;
}

static void dfa_free(struct cdfa *d)
{
    if (!d)
        return;
    free(d->core.next);
    free(d->accept);
    free(d->dist);
    free(d);
}

/* Distances to acceptance (reverse BFS), then the cut of dead transitions. */
static int finish_dfa(struct cdfa *d, char *err, size_t errlen)
{
    size_t n = (size_t)d->core.n_states, nc = (size_t)d->core.n_classes;
    size_t edges = n * nc;
    int32_t *cnt = calloc((size_t)n + 1, sizeof *cnt), *src = malloc(sizeof *src * (edges ? edges : 1)),
            *queue = malloc(sizeof *queue * (size_t)n);
    d->dist = malloc(sizeof *d->dist * (size_t)n);
    if (!cnt || !src || !queue || !d->dist) {
        free(cnt), free(src), free(queue);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t e = 0; e < edges; e++)
        if (d->core.next[e] >= 0)
            cnt[d->core.next[e] + 1]++;
    for (size_t i = 0; i < n; i++)
        cnt[i + 1] += cnt[i];
    int32_t *fill = malloc(sizeof *fill * (size_t)n);
    if (!fill) {
        free(cnt), free(src), free(queue);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    memcpy(fill, cnt, sizeof *fill * (size_t)n);
    for (size_t e = 0; e < edges; e++)
        if (d->core.next[e] >= 0)
            src[fill[d->core.next[e]]++] = (int32_t)(e / nc);
    free(fill);
    size_t qh = 0, qt = 0;
    for (size_t i = 0; i < n; i++) {
        d->dist[i] = d->accept[i] ? 0 : -1;
        if (d->accept[i])
            queue[qt++] = (int32_t)i;
    }
    while (qh < qt) {
        int t = queue[qh++];
        for (int k = cnt[t]; k < cnt[t + 1]; k++)
            if (d->dist[src[k]] < 0) {
                d->dist[src[k]] = d->dist[t] + 1;
                queue[qt++] = src[k];
            }
    }
    free(cnt), free(src), free(queue);
    if (n == 0 || d->dist[0] < 0) {         /* state 0 is the start */
        snprintf(err, errlen, "the constraint matches no text");
        return -1;
    }
    d->max_dist = 0;
    bool dead = false;
    for (size_t i = 0; i < n; i++) {
        if (d->dist[i] > d->max_dist)
            d->max_dist = d->dist[i];
        dead |= d->dist[i] < 0;
    }
    for (size_t e = 0; dead && e < edges; e++)
        if (d->core.next[e] >= 0 && d->dist[d->core.next[e]] < 0)
            d->core.next[e] = -1;
    return 0;
}

/* The transitions of DFA state s into row[0..nc): the classes are cut into
 * the segments that the state's own ranges tell apart (a handful, where the
 * whole automaton has dozens of classes), and each segment's target is one
 * closure. -1 when out of memory or too big. */
static int expand(struct builder *b, const uint8_t *classmap, int nc, int s, int32_t *row, int32_t *lo, int32_t *hi,
                  int32_t *to, int32_t *seeds)
{
    const struct nst *st = b->f->s;
    uint64_t cuts[5] = {0};                     /* bit c: a segment starts at class c (c <= nc) */
    int m = 0;
    for (int32_t k = b->off.v[s]; k < b->off.v[s + 1]; k++) {
        const struct nst *q = &st[b->pool.v[k]];
        if (q->kind != N_RANGE || q->lo > q->hi)
            continue;
        lo[m] = classmap[q->lo], hi[m] = classmap[q->hi], to[m] = q->out;
        cuts[lo[m] >> 6] |= 1ull << (lo[m] & 63);
        cuts[(hi[m] + 1) >> 6] |= 1ull << ((hi[m] + 1) & 63);
        m++;
    }
    memset(row, 0xff, sizeof *row * (size_t)nc);  /* -1: no transition */
    int start = -1;
    for (int w = 0; w < 5; w++) {
        for (uint64_t bits = cuts[w]; bits; bits &= bits - 1) {
            int c = w * 64 + __builtin_ctzll(bits);
            size_t n = 0;
            for (int i = 0; start >= 0 && i < m; i++)     /* the segment [start, c) */
                if (lo[i] <= start && hi[i] >= start)
                    seeds[n++] = to[i];
            if (n) {
                bool made;
                int t;
                if (n == 1 && b->single[seeds[0]] != INT32_MIN) {
                    t = b->single[seeds[0]];
                } else {
                    closure(b, seeds, n);
                    if ((t = intern(b, &made)) == -1)
                        return -1;
                    if (n == 1)
                        b->single[seeds[0]] = t;
                }
                for (int k = start; k < c && t >= 0; k++)
                    row[k] = t;
            }
            start = c;
        }
    }
    return 0;
}

int cdfa_build(const struct cre *x, struct cdfa **out, char *err, size_t errlen)
{
    *out = NULL;
    struct nfa f = {0};
    struct frag r = constraint_nfa_build(&f, x, false);
    int match = constraint_nfa_new(&f, N_MATCH, 0, 0, -1, -1);
    constraint_nfa_patch(&f, r, match);
    if (f.fail) {
        free(f.s);
        snprintf(err, errlen, f.cap >= NFA_MAX_STATES ? "the constraint is too complex (its automaton is too large)"
                                                     : "out of memory");
        return -1;
    }
    /* byte classes: bytes no range tells apart */
    uint8_t cut[257] = {0};
    for (int i = 0; i < f.n; i++)
        if (f.s[i].kind == N_RANGE && f.s[i].lo <= f.s[i].hi)
            cut[f.s[i].lo] = 1, cut[f.s[i].hi + 1] = 1;
    struct cdfa *d = calloc(1, sizeof *d);
    size_t nn = (size_t)f.n;
    struct builder b = {.f = &f, .mark = calloc(nn, sizeof(uint32_t)), .stack = malloc(nn * sizeof(int32_t))};
    b.set.v = malloc(nn * sizeof(int32_t));
    b.set.cap = nn;
    /* per state: its ranges (class bounds, targets) and a segment's seeds, f.n at most */
    int32_t *scratch = malloc(4 * nn * sizeof(int32_t));
    b.single = malloc(nn * sizeof(int32_t));
    for (size_t i = 0; b.single && i < nn; i++)
        b.single[i] = INT32_MIN;
    int rc = -1, nc = 0;
    bool toobig = false;
    if (!d || !b.mark || !b.stack || !b.set.v || !scratch || !b.single)
        goto done;
    atomic_init(&d->refs, 1);
    d->id = atomic_fetch_add(&next_id, 1);
    nc = 0;
    for (int c = 0; c < 256; c++) {
        if (c > 0 && cut[c])
            nc++;
        d->core.classmap[c] = (uint8_t)nc;
    }
    nc++;
    d->core.n_classes = nc;
    if (iv_push(&b.off, 0) < 0)
        goto done;
    int32_t seed = r.s;
    bool made;
    if (closure(&b, &seed, 1) < 0 || intern(&b, &made) < 0)
        goto done;
    size_t cap = 0;
    for (int s = 0; s < b.n_states; s++) {
        if ((size_t)b.n_states > cap) {
            size_t ncap = cap ? cap * 2 : 64;
            while (ncap < (size_t)b.n_states)
                ncap *= 2;
            int32_t *nx = realloc(d->core.next, sizeof *nx * ncap * (size_t)nc);
            if (!nx)
                goto done;
            d->core.next = nx;
            cap = ncap;
        }
        if (expand(&b, d->core.classmap, nc, s, d->core.next + (size_t)s * (size_t)nc, scratch, scratch + nn,
                   scratch + 2 * nn, scratch + 3 * nn) < 0) {
            toobig = b.toobig;
            goto done;
        }
    }
    d->core.n_states = b.n_states;
    d->accept = calloc((size_t)(unsigned)b.n_states, 1);
    if (!d->accept)
        goto done;
    for (int s = 0; s < b.n_states; s++)
        for (int32_t k = b.off.v[s]; k < b.off.v[s + 1]; k++)
            if (f.s[b.pool.v[k]].kind == N_MATCH)
                d->accept[s] = 1;
    if (finish_dfa(d, err, errlen) < 0) {
        rc = -2;
        goto done;
    }
    rc = 0;
done:
    if (rc == -1)
        snprintf(err, errlen, toobig ? "the constraint is too complex (its DFA would pass %d states or its memory bound)"
                                     : "out of memory",
                 CDFA_MAX_STATES);
    free(scratch), free(b.single);
    free(b.mark), free(b.stack), free(b.set.v), free(b.pool.v), free(b.off.v), free(b.hash), free(b.hashes);
    free(f.s);
    if (rc != 0) {
        dfa_free(d);
        return -1;
    }
    *out = d;
    return 0;
}

/* The pairs of states of an intersection, numbered as found (open addressing). */
struct pairset {
    int64_t *pairs;
    int32_t *hash;              /* pair index + 1, 0 empty */
    size_t hcap, cap;
    int n;
};

static size_t pair_slot(const struct pairset *ps, int64_t key)
{
    size_t k = (size_t)((uint64_t)key * 0x9e3779b97f4a7c15ull >> 24) & (ps->hcap - 1);
    while (ps->hash[k] && ps->pairs[ps->hash[k] - 1] != key)
        k = (k + 1) & (ps->hcap - 1);
    return k;
}

/* The number of pair key, made when new (the DFA's rows grown with it): -1 out of memory, -2 too many. */
static int pair_id(struct pairset *ps, int64_t key, struct cdfa *d)
{
    if ((size_t)ps->n * 2 + 2 > ps->hcap) {
        size_t cap = ps->hcap ? ps->hcap * 2 : 1024;
        int32_t *h = calloc(cap, sizeof *h), *old = ps->hash;
        if (!h)
            return -1;
        ps->hash = h;
        ps->hcap = cap;
        for (int j = 0; j < ps->n; j++)
            h[pair_slot(ps, ps->pairs[j])] = j + 1;
        free(old);
    }
    size_t k = pair_slot(ps, key);
    if (ps->hash[k])
        return ps->hash[k] - 1;
    if (ps->n >= CDFA_MAX_STATES)
        return -2;
    if ((size_t)ps->n >= ps->cap) {
        size_t cap = ps->cap ? ps->cap * 2 : 64;
        int64_t *p = realloc(ps->pairs, cap * sizeof *p);
        if (!p)
            return -1;
        ps->pairs = p;
        int32_t *nx = realloc(d->core.next, cap * (size_t)d->core.n_classes * sizeof *nx);
        if (!nx)
            return -1;
        d->core.next = nx;
        ps->cap = cap;
    }
    ps->pairs[ps->n] = key;
    ps->hash[k] = ++ps->n;
    return ps->n - 1;
}

int cdfa_intersect(const struct cdfa *a, const struct cdfa *b, struct cdfa **out, char *err, size_t errlen)
{
    *out = NULL;
    struct cdfa *d = calloc(1, sizeof *d);
    if (!d) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    atomic_init(&d->refs, 1);
    d->id = atomic_fetch_add(&next_id, 1);
    /* classes: the byte runs where neither side's class changes (each side's classes are runs) */
    int nc = 0, rep[256];                       /* rep[c]: a byte of class c */
    for (int c = 0; c < 256; c++) {
        if (c > 0 && (a->core.classmap[c] != a->core.classmap[c - 1] || b->core.classmap[c] != b->core.classmap[c - 1]))
            nc++;
        d->core.classmap[c] = (uint8_t)nc;
        rep[nc] = c;
    }
    d->core.n_classes = ++nc;
    int64_t nb = b->core.n_states;
    struct pairset ps = {0};
    int rc = pair_id(&ps, (int64_t)cdfa_start(a) * nb + cdfa_start(b), d);
    for (int i = 0; rc >= 0 && i < ps.n; i++) {    /* breadth first: each pair's row */
        int sa = (int)(ps.pairs[i] / nb), sb = (int)(ps.pairs[i] % nb);
        for (int c = 0; c < nc && rc >= 0; c++) {
            int ta = cdfa_step(a, sa, (uint8_t)rep[c]), tb = cdfa_step(b, sb, (uint8_t)rep[c]);
            int t = ta < 0 || tb < 0 ? -1 : (rc = pair_id(&ps, (int64_t)ta * nb + tb, d));
            if (rc >= 0)
                d->core.next[(size_t)i * (size_t)nc + (size_t)c] = t;
        }
    }
    d->core.n_states = ps.n;
    if (rc >= 0 && !(d->accept = calloc((size_t)ps.n, 1)))
        rc = -1;
    for (int i = 0; rc >= 0 && i < ps.n; i++)
        d->accept[i] = cdfa_accepts(a, (int)(ps.pairs[i] / nb)) && cdfa_accepts(b, (int)(ps.pairs[i] % nb));
    if (rc == -1 || rc == -2)
        snprintf(err, errlen, rc == -2 ? "the constraint is too complex (its DFA would pass %d states)" : "out of memory",
                 CDFA_MAX_STATES);
    else if (finish_dfa(d, err, errlen) < 0)
        rc = -3;
    free(ps.pairs);
    free(ps.hash);
    if (rc < 0) {
        dfa_free(d);
        return -1;
    }
    *out = d;
    return 0;
}

int cdfa_regex(const char *re, size_t len, struct cdfa **out, char *err, size_t errlen)
{
    struct cre_arena *a = cre_arena_new();
    struct cre *x = NULL;
    *out = NULL;
    int rc = !a ? (snprintf(err, errlen, "out of memory"), -1) : cre_parse(a, re, len, &x, err, errlen);
    if (rc == 0)
        rc = cdfa_build(x, out, err, errlen);
    cre_arena_free(a);
    return rc;
}

int cdfa_choice(const char *const *choices, size_t n, struct cdfa **out, char *err, size_t errlen)
{
    struct cre_arena *a = cre_arena_new();
    struct cre *x = NULL;
    *out = NULL;
    for (size_t i = 0; a && i < n; i++) {
        struct cre *y = cre_str(a, choices[i]);
        x = x ? cre_alt(a, x, y) : y;
        if (!x)
            break;
    }
    int rc;
    if (n == 0) {
        snprintf(err, errlen, "no choices");
        rc = -1;
    } else if (!x) {
        snprintf(err, errlen, "out of memory");
        rc = -1;
    } else {
        rc = cdfa_build(x, out, err, errlen);
    }
    cre_arena_free(a);
    return rc;
}

struct cdfa *cdfa_ref(struct cdfa *d)
{
    if (d)
        atomic_fetch_add(&d->refs, 1);
    return d;
}

void cdfa_put(struct cdfa *d)
{
    if (d && atomic_fetch_sub(&d->refs, 1) == 1)
        dfa_free(d);
}

int cdfa_start(const struct cdfa *d)
{
    (void)d;
    return 0;
}

bool cdfa_accepts(const struct cdfa *d, int s)
{
    return s >= 0 && s < d->core.n_states && d->accept[s];
}

int cdfa_dist(const struct cdfa *d, int s)
{
    return s >= 0 && s < d->core.n_states ? d->dist[s] : -1;
}

int cdfa_max_dist(const struct cdfa *d)
{
    return d->max_dist;
}

int cdfa_states(const struct cdfa *d)
{
    return d->core.n_states;
}

int cdfa_walk(const struct cdfa *d, int s, const void *bytes, size_t n)
{
    const uint8_t *b = bytes;
    for (size_t i = 0; i < n && s >= 0; i++)
        s = cdfa_step(d, s, b[i]);
    return s;
}

bool cdfa_matches(const struct cdfa *d, const void *s, size_t n)
{
    return cdfa_accepts(d, cdfa_walk(d, cdfa_start(d), s, n));
}

uint64_t cdfa_id(const struct cdfa *d)
{
    return d->id;
}

size_t cdfa_bytes(const struct cdfa *d)
{
    size_t n = (size_t)d->core.n_states;
    return sizeof *d + n * (size_t)d->core.n_classes * sizeof *d->core.next + n * (1 + sizeof *d->dist);
}
