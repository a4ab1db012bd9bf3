/* vocab_trie.c -- a tokenizer's vocabulary as a depth-first byte trie; a DFA state's allowed tokens found by one pruned pass over it, cached per state. */
#include "vocab_trie.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DEPTH_MAX 255                   /* longer tokens (none in GPT-2) are left out */

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
    if (!t->n || !t->scratch)
        goto fail;
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

void vtrie_free(struct vtrie *t)
{
    if (!t)
        return;
    free(t->n);
    free(t->scratch);
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

const uint64_t *vtrie_mask(const struct vtrie *t, struct cdfa *d, int s, int budget)
{
    if (budget >= cdfa_max_dist(d))
        budget = -1;                        /* every state is within reach: the cached mask */
    if (budget < 0) {
        uint64_t **slot = cdfa_mask_slot(d, t, s, vtrie_mask_words(t));
        if (slot && *slot)
            return *slot;
        if (slot && (*slot = malloc(vtrie_mask_words(t) * sizeof **slot))) {
            walk(t, d, s, -1, *slot);
            return *slot;
        }
    }
    walk(t, d, s, budget, t->scratch);
    return t->scratch;
}

void vtrie_apply(const uint64_t *mask, float *logits, int32_t n)
{
    for (int32_t w = 0; w * 64 < n; w++) {
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
