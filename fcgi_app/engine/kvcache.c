/* kvcache.c -- one model's pool of KV blocks: reference counts, the index of full blocks by chained content hash, LRU eviction of idle cached blocks. */
#include "config.h"
#include "kvcache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct kvcache {
    int n, B;
    bool caching;
    int32_t *refs;              /* per block */
    unsigned char *indexed;     /* per block: in the index */
    uint32_t *gen;              /* per block: bumped when it leaves the index */
    uint64_t *key;              /* per indexed block: its chained hash */
    int32_t *parent;            /* per indexed block: the block it hangs from (-1: root) ... */
    uint32_t *parent_gen;       /* ... and that block's generation then */
    int32_t *toks;              /* per indexed block: its B tokens */
    int32_t *bucket;            /* the index: heads of chains through hnext */
    int32_t *hnext;
    uint64_t mask;              /* buckets - 1 */
    int32_t *lru_prev, *lru_next; /* idle cached blocks, least recently released at lru_head */
    int32_t lru_head, lru_tail;
    int n_idle;
    int32_t *free_stack;        /* blocks with no findable content */
    int n_free;
    int n_held;
};

void kvc_chain_reset(struct kvc_chain *ch)
{
    *ch = (struct kvc_chain){.hash = 0x6c6c6d636769ULL, .block = -1, .gen = 0, .n = 0};
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

/* The key of a block of B tokens whose parent's key is prev. */
static uint64_t chain_hash(uint64_t prev, const int32_t *t, int B)
{
    uint64_t h = mix64(prev ^ 0x9e3779b97f4a7c15ULL);
    for (int i = 0; i < B; i++)
        h = mix64(h ^ ((uint64_t)(uint32_t)t[i] | (uint64_t)(i + 1) << 32));
    return h;
}

int kvc_new(struct kvcache **out, int n_blocks, int block_tokens, bool caching)
{
    *out = NULL;
    struct kvcache *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    size_t n = (size_t)n_blocks, nb = 1;
    while (nb < 2 * n)
        nb *= 2;
    c->n = n_blocks;
    c->B = block_tokens;
    c->caching = caching;
    c->mask = nb - 1;
    c->refs = calloc(n, sizeof *c->refs);
    c->indexed = calloc(n, 1);
    c->gen = calloc(n, sizeof *c->gen);
    c->free_stack = malloc(n * sizeof *c->free_stack);
    if (caching) {
        c->key = calloc(n, sizeof *c->key);
        c->parent = calloc(n, sizeof *c->parent);
        c->parent_gen = calloc(n, sizeof *c->parent_gen);
        c->toks = calloc(n * (size_t)block_tokens, sizeof *c->toks);
        c->bucket = malloc(nb * sizeof *c->bucket);
        c->hnext = calloc(n, sizeof *c->hnext);
        c->lru_prev = calloc(n, sizeof *c->lru_prev);
        c->lru_next = calloc(n, sizeof *c->lru_next);
    }
    if (!c->refs || !c->indexed || !c->gen || !c->free_stack ||
        (caching && (!c->key || !c->parent || !c->parent_gen || !c->toks || !c->bucket || !c->hnext || !c->lru_prev ||
                     !c->lru_next))) {
        kvc_free(c);
        return -1;
    }
    if (caching)
        for (size_t i = 0; i < nb; i++)
            c->bucket[i] = -1;
    c->lru_head = c->lru_tail = -1;
    /* Hand out low block numbers first (pages of the pool stay untouched until needed). */
    for (int i = 0; i < n_blocks; i++)
        c->free_stack[i] = n_blocks - 1 - i;
    c->n_free = n_blocks;
    *out = c;
    return 0;
}

void kvc_free(struct kvcache *c)
{
    if (!c)
        return;
    free(c->refs);
    free(c->indexed);
    free(c->gen);
    free(c->free_stack);
    free(c->key);
    free(c->parent);
    free(c->parent_gen);
    free(c->toks);
    free(c->bucket);
    free(c->hnext);
    free(c->lru_prev);
    free(c->lru_next);
    free(c);
}

int kvc_avail(const struct kvcache *c)
{
    return c->n_free + c->n_idle;
}

int kvc_held(const struct kvcache *c)
{
    return c->n_held;
}

int kvc_idle_cached(const struct kvcache *c)
{
    return c->n_idle;
}

int kvc_refs(const struct kvcache *c, int32_t b)
{
    return b >= 0 && b < c->n ? c->refs[b] : -1;
}

static void lru_remove(struct kvcache *c, int32_t b)
{
    int32_t p = c->lru_prev[b], x = c->lru_next[b];
    if (p >= 0)
        c->lru_next[p] = x;
    else
        c->lru_head = x;
    if (x >= 0)
        c->lru_prev[x] = p;
    else
        c->lru_tail = p;
    c->n_idle--;
}

static void lru_append(struct kvcache *c, int32_t b)
{
    c->lru_prev[b] = c->lru_tail;
    c->lru_next[b] = -1;
    if (c->lru_tail >= 0)
        c->lru_next[c->lru_tail] = b;
    else
        c->lru_head = b;
    c->lru_tail = b;
    c->n_idle++;
}

/* Takes b out of the index; chains that named it as a parent no longer match. */
static void unindex(struct kvcache *c, int32_t b)
{
    for (int32_t *pp = &c->bucket[c->key[b] & c->mask]; *pp >= 0; pp = &c->hnext[*pp])
        if (*pp == b) {
            *pp = c->hnext[b];
            break;
        }
    c->indexed[b] = 0;
    c->gen[b]++;
}

/* The indexed block with key h, tokens t and parent (p, pgen), or -1. */
static int32_t find(const struct kvcache *c, uint64_t h, const int32_t *t, int32_t p, uint32_t pgen)
{
    for (int32_t b = c->bucket[h & c->mask]; b >= 0; b = c->hnext[b])
        if (c->key[b] == h && c->parent[b] == p && c->parent_gen[b] == pgen &&
            memcmp(c->toks + (size_t)b * (size_t)c->B, t, sizeof *t * (size_t)c->B) == 0)
            return b;
    return -1;
}

int32_t kvc_alloc(struct kvcache *c)
{
    int32_t b;
    if (c->n_free > 0) {
        b = c->free_stack[--c->n_free];
    } else if (c->lru_head >= 0) {
        b = c->lru_head;
        lru_remove(c, b);
        unindex(c, b);
    } else {
        return -1;
    }
    c->refs[b] = 1;
    c->n_held++;
    return b;
}

void kvc_release(struct kvcache *c, const int32_t *blocks, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        int32_t b = blocks[i];
        if (b < 0 || b >= c->n || c->refs[b] <= 0)
            continue;               /* not held: a caller's bug, kept out of the books */
        if (--c->refs[b] > 0)
            continue;
        c->n_held--;
        if (c->indexed[b])
            lru_append(c, b);
        else
            c->free_stack[c->n_free++] = b;
    }
}

int kvc_peek(const struct kvcache *c, const int32_t *ids, int max_blocks, int *idle)
{
    struct kvc_chain at;
    kvc_chain_reset(&at);
    int k = 0;
    *idle = 0;
    for (; c->caching && k < max_blocks; k++) {
        const int32_t *t = ids + (size_t)k * (size_t)c->B;
        uint64_t h = chain_hash(at.hash, t, c->B);
        int32_t b = find(c, h, t, at.block, at.gen);
        if (b < 0)
            break;
        *idle += c->refs[b] == 0;
        at = (struct kvc_chain){.hash = h, .block = b, .gen = c->gen[b], .n = k + 1};
    }
    return k;
}

int kvc_follow(struct kvcache *c, struct kvc_chain *ch, const int32_t *ids, int max_blocks, int32_t *blocks,
               int *n_blocks)
{
    int took = 0;
    for (int j = ch->n; c->caching && j < max_blocks; j++) {
        const int32_t *t = ids + (size_t)j * (size_t)c->B;
        uint64_t h = chain_hash(ch->hash, t, c->B);
        int32_t b = find(c, h, t, ch->block, ch->gen);
        if (b < 0)
            break;
        if (c->refs[b]++ == 0) {
            lru_remove(c, b);
            c->n_held++;
        }
        if (j < *n_blocks) {
            kvc_release(c, &blocks[j], 1);
            blocks[j] = b;
        } else {
            blocks[(*n_blocks)++] = b;
        }
        *ch = (struct kvc_chain){.hash = h, .block = b, .gen = c->gen[b], .n = j + 1};
        took++;
    }
    return took;
}

void kvc_commit(struct kvcache *c, struct kvc_chain *ch, const int32_t *ids, const int32_t *blocks, int n_full)
{
    if (!c->caching)
        return;
    for (int j = ch->n; j < n_full; j++) {
        const int32_t *t = ids + (size_t)j * (size_t)c->B;
        uint64_t h = chain_hash(ch->hash, t, c->B);
        int32_t b = find(c, h, t, ch->block, ch->gen);
        if (b < 0) {
            b = blocks[j];
            if (!c->indexed[b]) {
                c->key[b] = h;
                c->parent[b] = ch->block;
                c->parent_gen[b] = ch->gen;
                memcpy(c->toks + (size_t)b * (size_t)c->B, t, sizeof *t * (size_t)c->B);
                c->hnext[b] = c->bucket[h & c->mask];
                c->bucket[h & c->mask] = b;
                c->indexed[b] = 1;
            }
        }
        *ch = (struct kvc_chain){.hash = h, .block = b, .gen = c->gen[b], .n = j + 1};
    }
}

int kvc_check(const struct kvcache *c, char *err, size_t errlen)
{
    int held = 0, idle = 0, freeb = 0, indexed = 0;
    unsigned char *seen = calloc((size_t)c->n, 1);
    if (!seen) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = -1;
    for (int i = 0; i < c->n_free; i++) {
        int32_t b = c->free_stack[i];
        if (b < 0 || b >= c->n || seen[b] || c->refs[b] != 0 || c->indexed[b]) {
            snprintf(err, errlen, "free list entry %d (block %d) is out of range, twice, held or indexed", i, b);
            goto out;
        }
        seen[b] = 1;
    }
    for (int32_t b = c->caching ? c->lru_head : -1, prev = -1; b >= 0; prev = b, b = c->lru_next[b]) {
        if (seen[b] || c->refs[b] != 0 || !c->indexed[b] || c->lru_prev[b] != prev) {
            snprintf(err, errlen, "LRU entry block %d is free too, held, unindexed or mislinked", b);
            goto out;
        }
        seen[b] = 2;
        idle++;
    }
    for (int32_t b = 0; b < c->n; b++) {
        if (c->refs[b] < 0) {
            snprintf(err, errlen, "block %d has reference count %d", b, c->refs[b]);
            goto out;
        }
        held += c->refs[b] > 0;
        freeb += seen[b] == 1;
        if (c->refs[b] == 0 && !seen[b]) {
            snprintf(err, errlen, "block %d is held by nobody but neither free nor idle cached", b);
            goto out;
        }
        if (c->indexed[b]) {
            indexed++;
            if (find(c, c->key[b], c->toks + (size_t)b * (size_t)c->B, c->parent[b], c->parent_gen[b]) < 0) {
                snprintf(err, errlen, "indexed block %d cannot be found under its key", b);
                goto out;
            }
        }
    }
    if (held != c->n_held || idle != c->n_idle || freeb != c->n_free || held + idle + freeb != c->n) {
        snprintf(err, errlen, "counts: held %d (books %d), idle cached %d (%d), free %d (%d), total %d", held,
                 c->n_held, idle, c->n_idle, freeb, c->n_free, c->n);
        goto out;
    }
    (void)indexed;
    rc = 0;
out:
    free(seen);
    return rc;
}
