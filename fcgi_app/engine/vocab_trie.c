/* vocab_trie.c -- a tokenizer's vocabulary as a depth-first byte trie; a DFA state's allowed tokens found by one pruned pass over it, cached per state. */
#include "vocab_trie.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define DEPTH_MAX 255                   /* longer tokens (none in GPT-2) are left out */
#define MASK_DFAS 64                    /* DFAs whose masks are kept at once */

/* The masks of one DFA's states, made as they are asked for. */
struct mentry {
    uint64_t id;                        /* cdfa_id; 0: a free slot */
    int n_states;
    uint64_t **masks;                   /* n_states, NULL where not made yet */
    size_t bytes;
    uint64_t used;                      /* the clock when last asked */
};

/* The engine thread's mask cache: only the thread that runs the model's
 * steps calls vtrie_mask, so nothing here is locked. */
struct mcache {
    struct mentry e[MASK_DFAS];
    int last;                           /* the entry asked for last */
    size_t bytes, budget;
    uint64_t clock;
    /* what vtrie_get_stats reads from other threads: written by the engine
     * thread alone, so relaxed atomics are enough */
    _Atomic uint64_t hits, walks;
    _Atomic size_t shown_bytes;
};

struct tnode {
    uint8_t byte, depth;
    int32_t token;                      /* -1: only a prefix */
    int32_t skip;                       /* the index past this node's subtree */
};

struct vtrie {
    struct tnode *n;
    size_t count;
    int32_t vocab;
    uint64_t *scratch;                  /* a mask not cached */
    struct mcache *mc;                  /* engine thread only */
};

struct tok_ref {
    const uint8_t *b;
    size_t len;
    int32_t id;
};

static int cmp_tok(const void *x, const void *y)
{
    const struct tok_ref *a = x, *b = y;
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->b, b->b, n);
    if (c)
        return c;
    if (a->len != b->len)
        return a->len < b->len ? -1 : 1;
    return (a->id > b->id) - (a->id < b->id);
}

struct vtrie *vtrie_new(const struct tokenizer *tok)
{
    int32_t V = tokenizer_vocab_size(tok);
    struct vtrie *t = calloc(1, sizeof *t);
    struct tok_ref *refs = calloc((size_t)(V > 0 ? V : 1), sizeof *refs);
    size_t n_refs = 0, total = 1;
    if (!t || !refs || V < 1)
        goto fail;
    t->vocab = V;
    for (int32_t id = 0; id < V; id++) {
        size_t len = 0;
        const char *b = tokenizer_token_bytes(tok, id, &len);
        if (!b || len == 0 || len > DEPTH_MAX || tokenizer_is_special(tok, id))
            continue;
        refs[n_refs++] = (struct tok_ref){(const uint8_t *)b, len, id};
        total += len;
    }
    qsort(refs, n_refs, sizeof *refs, cmp_tok);
    t->n = malloc(sizeof *t->n * total);
    t->scratch = calloc(vtrie_mask_words(t), sizeof *t->scratch);
    t->mc = calloc(1, sizeof *t->mc);
    if (!t->n || !t->scratch || !t->mc)
        goto fail;
    t->mc->budget = VTRIE_MASK_BYTES;
    t->n[0] = (struct tnode){0, 0, -1, 0};
    t->count = 1;
    /* path[d]: the node at depth d on the current path */
    size_t path[DEPTH_MAX + 1] = {0};
    const struct tok_ref *prev = NULL;
    for (size_t i = 0; i < n_refs; i++) {
        const struct tok_ref *r = &refs[i];
        size_t common = 0;
        if (prev)
            while (common < prev->len && common < r->len && prev->b[common] == r->b[common])
                common++;
        if (prev && common == r->len)       /* the same bytes as the one before: a node of its own */
            common = r->len - 1;
        for (size_t d = common; d < r->len; d++) {
            size_t k = t->count++;
            t->n[k] = (struct tnode){r->b[d], (uint8_t)(d + 1), -1, 0};
            path[d + 1] = k;
        }
        t->n[path[r->len]].token = r->id;
        prev = r;
    }
    (void)path;
    /* skip: the next node at a depth <= this one's */
    size_t *stack = malloc(sizeof *stack * (DEPTH_MAX + 2));
    size_t top = 0;
    if (!stack)
        goto fail;
    for (size_t k = 0; k < t->count; k++) {
        while (top && t->n[stack[top - 1]].depth >= t->n[k].depth)
            t->n[stack[--top]].skip = (int32_t)k;
        stack[top++] = k;
    }
    while (top)
        t->n[stack[--top]].skip = (int32_t)t->count;
    free(stack);
    free(refs);
    return t;
fail:
    free(refs);
    vtrie_free(t);
    return NULL;
}

static void entry_clear(struct mentry *e)
{
    for (int i = 0; e->masks && i < e->n_states; i++)
        free(e->masks[i]);
    free(e->masks);
    memset(e, 0, sizeof *e);
}

void vtrie_free(struct vtrie *t)
{
    if (!t)
        return;
    free(t->n);
    free(t->scratch);
    for (int i = 0; t->mc && i < MASK_DFAS; i++)
        entry_clear(&t->mc->e[i]);
    free(t->mc);
    free(t);
}

int32_t vtrie_vocab(const struct vtrie *t)
{
    return t->vocab;
}

size_t vtrie_nodes(const struct vtrie *t)
{
    return t->count;
}

/* One pruned pass: the tokens whose bytes pass from s (ending within budget). */
static void walk(const struct vtrie *t, const struct cdfa *d, int s, int budget, uint64_t *mask)
{
    int st[DEPTH_MAX + 1];
    st[0] = s;
    memset(mask, 0, vtrie_mask_words(t) * sizeof *mask);
    const struct tnode *n = t->n;
    size_t k = 1, end = t->count;
    while (k < end) {
        const struct tnode *x = &n[k];
        int to = cdfa_step(d, st[x->depth - 1], x->byte);
        if (to < 0) {
            k = (size_t)x->skip;
            continue;
        }
        st[x->depth] = to;
        if (x->token >= 0 && (budget < 0 || cdfa_dist(d, to) <= budget))
            mask[x->token >> 6] |= 1ull << (x->token & 63);
        k++;
    }
}

size_t vtrie_mask_bytes(const struct vtrie *t)
{
    return t->mc->bytes;
}

void vtrie_get_stats(const struct vtrie *t, struct vtrie_stats *st)
{
    st->hits = atomic_load_explicit(&t->mc->hits, memory_order_relaxed);
    st->walks = atomic_load_explicit(&t->mc->walks, memory_order_relaxed);
    st->bytes = atomic_load_explicit(&t->mc->shown_bytes, memory_order_relaxed);
}

/* Counts one mask asked for (hit: it was cached) and publishes the cache's size. */
static void count(const struct vtrie *t, bool hit)
{
    atomic_fetch_add_explicit(hit ? &t->mc->hits : &t->mc->walks, 1, memory_order_relaxed);
    atomic_store_explicit(&t->mc->shown_bytes, t->mc->bytes, memory_order_relaxed);
}

/* d's entry, made (putting out the least recently used DFA when all are
 * taken) when new; NULL when out of memory. */
static struct mentry *entry_of(struct mcache *mc, const struct cdfa *d)
{
    uint64_t id = cdfa_id(d);
    mc->clock++;
    struct mentry *e = &mc->e[mc->last];
    if (e->id != id) {
        int found = -1, oldest = 0;
        for (int i = 0; i < MASK_DFAS && found < 0; i++) {
            if (mc->e[i].id == id)
                found = i;
            else if (mc->e[i].used < mc->e[oldest].used)
                oldest = i;
        }
        if (found < 0) {
            e = &mc->e[oldest];
            mc->bytes -= e->bytes;
            entry_clear(e);
            if (!(e->masks = calloc((size_t)cdfa_states(d), sizeof *e->masks)))
                return NULL;
            e->id = id;
            e->n_states = cdfa_states(d);
            found = oldest;
        }
        mc->last = found;
        e = &mc->e[found];
    }
    e->used = mc->clock;
    return e;
}

/* Frees e's masks, keeping the entry (its DFA is the one in use). */
static void entry_empty(struct mcache *mc, struct mentry *e)
{
    for (int i = 0; i < e->n_states; i++)
        free(e->masks[i]), e->masks[i] = NULL;
    mc->bytes -= e->bytes;
    e->bytes = 0;
}

/* Room for bytes more: other DFAs' masks put out, least recently used
 * first, then keep's own; false when bytes alone are over the budget. */
static bool make_room(struct mcache *mc, struct mentry *keep, size_t bytes)
{
    while (mc->bytes + bytes > mc->budget) {
        struct mentry *victim = NULL;
        for (int i = 0; i < MASK_DFAS; i++)
            if (&mc->e[i] != keep && mc->e[i].bytes && (!victim || mc->e[i].used < victim->used))
                victim = &mc->e[i];
        if (!victim && (!keep || !keep->bytes))
            return false;
        entry_empty(mc, victim ? victim : keep);
    }
    return true;
}

void vtrie_set_mask_budget(const struct vtrie *t, size_t bytes)
{
    t->mc->budget = bytes;
    make_room(t->mc, NULL, 0);
    atomic_store_explicit(&t->mc->shown_bytes, t->mc->bytes, memory_order_relaxed);
}

const uint64_t *vtrie_mask(const struct vtrie *t, const struct cdfa *d, int s, int budget)
{
    if (s < 0 || s >= cdfa_states(d))
        return NULL;
    if (budget >= cdfa_max_dist(d))
        budget = -1;                        /* every state is within reach: the cached mask */
    struct mentry *e = budget < 0 ? entry_of(t->mc, d) : NULL;
    if (e && e->masks[s]) {
        count(t, true);
        return e->masks[s];
    }
    size_t bytes = vtrie_mask_words(t) * sizeof(uint64_t);
    if (e && make_room(t->mc, e, bytes) && (e->masks[s] = malloc(bytes))) {
        e->bytes += bytes;
        t->mc->bytes += bytes;
        walk(t, d, s, -1, e->masks[s]);
        count(t, false);
        return e->masks[s];
    }
    walk(t, d, s, budget, t->scratch);
    count(t, false);
    return t->scratch;
}

/* The portable apply: words of all ones skipped, all zeros stored, the rest bit by bit. */
static void apply_words(const uint64_t *mask, float *logits, int32_t from, int32_t n)
{
    for (int32_t w = from / 64; w * 64 < n; w++) {
        uint64_t m = mask[w];
        if (m == ~0ull)
            continue;
        int32_t hi = n - w * 64 < 64 ? n - w * 64 : 64;
        float *l = logits + (size_t)w * 64;
        if (m == 0) {                       /* most words of a mask: a plain store the compiler vectorizes */
            for (int32_t b = 0; b < hi; b++)
                l[b] = -INFINITY;
            continue;
        }
        uint64_t out = ~m & (hi == 64 ? ~0ull : (1ull << hi) - 1);
        while (out) {                       /* only the tokens masked out */
            l[__builtin_ctzll(out)] = -INFINITY;
            out &= out - 1;
        }
    }
}

#if defined(__x86_64__)
#include <immintrin.h>

/* AVX2: eight logits per blend, whatever the word's mix of ones and zeros
 * (a mask near the end of a bounded string is half and half, where the
 * bit-by-bit loop costs a store and a branch per token). */
__attribute__((target("avx2"))) static int32_t apply_avx2(const uint64_t *mask, float *logits, int32_t n)
{
    const __m256i sel = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    int32_t i = 0;
    for (; i + 64 <= n; i += 64) {
        uint64_t m = mask[i >> 6];
        if (m == ~0ull)
            continue;
        float *l = logits + i;
        if (m == 0) {                       /* most words of a mask outside strings */
            for (int k = 0; k < 8; k++)
                _mm256_storeu_ps(l + 8 * k, ninf);
            continue;
        }
        for (int k = 0; k < 8; k++) {
            __m256i b = _mm256_set1_epi32((int)((m >> (8 * k)) & 0xff));
            __m256 keep = _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(b, sel), sel));
            _mm256_storeu_ps(l + 8 * k, _mm256_blendv_ps(ninf, _mm256_loadu_ps(l + 8 * k), keep));
        }
    }
    return i;
}
#endif

void vtrie_apply(const uint64_t *mask, float *logits, int32_t n)
{
    int32_t done = 0;
#if defined(__x86_64__)
    static int avx2 = -1;                   /* a benign race: every thread computes the same value */
    if (avx2 < 0)
        avx2 = __builtin_cpu_supports("avx2") && !getenv("LLMCGI_MASK_NO_AVX2");
    if (avx2)
        done = apply_avx2(mask, logits, n);
#endif
    apply_words(mask, logits, done, n);
}
