/* constraint_cache.c -- compiled constraints kept across requests: a chained hash table of (kind, canonical text) -> DFA reference, a least-recently-used list, a byte budget, one lock. */
#include "constraint_cache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define BUCKETS 256                     /* entries are few: the budget holds hundreds of typical schemas */

struct centry {
    struct centry *chain;               /* in its bucket */
    struct centry *prev, *next;         /* the LRU list: head most recent */
    uint64_t hash;
    size_t len, bytes;                  /* key length (kind byte included), what it counts against the budget */
    struct cdfa *dfa;                   /* a reference */
    unsigned char key[];                /* kind, then the text */
};

struct ccache {
    pthread_mutex_t mu;
    size_t budget;
    struct centry *buckets[BUCKETS];
    struct centry *head, *tail;
    struct ccache_stats st;
};

static uint64_t key_hash(enum ccache_kind kind, const unsigned char *k, size_t n)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)kind;
    for (size_t i = 0; i < n; i++)
        h = (h ^ k[i]) * 1099511628211ull;
    return h ^ (h >> 32);
}

struct ccache *ccache_new(size_t budget)
{
    struct ccache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    if (pthread_mutex_init(&c->mu, NULL) != 0) {
        free(c);
        return NULL;
    }
    c->budget = budget;
    return c;
}

void ccache_free(struct ccache *c)
{
    if (!c)
        return;
    for (struct centry *e = c->head, *n; e; e = n) {
        n = e->next;
        cdfa_put(e->dfa);
        free(e);
    }
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* The entry of (kind, key), or NULL. Under c->mu. */
static struct centry *find(struct ccache *c, uint64_t h, enum ccache_kind kind, const unsigned char *key, size_t len)
{
    for (struct centry *e = c->buckets[h % BUCKETS]; e; e = e->chain)
        if (e->hash == h && e->len == len + 1 && e->key[0] == (unsigned char)kind && memcmp(e->key + 1, key, len) == 0)
            return e;
    return NULL;
}

static void lru_unlink(struct ccache *c, struct centry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_front(struct ccache *c, struct centry *e)
{
    e->next = c->head;
    e->prev = NULL;
    if (c->head)
        c->head->prev = e;
    c->head = e;
    if (!c->tail)
        c->tail = e;
}

/* Takes e out of the cache and frees it. Under c->mu. */
static void drop(struct ccache *c, struct centry *e)
{
    struct centry **p = &c->buckets[e->hash % BUCKETS];
    while (*p != e)
        p = &(*p)->chain;
    *p = e->chain;
    lru_unlink(c, e);
    c->st.bytes -= e->bytes;
    c->st.entries--;
    cdfa_put(e->dfa);
    free(e);
}

/* Puts out the least recently used entries until at most `keep` bytes remain. Under c->mu. */
static void evict_to(struct ccache *c, size_t keep)
{
    while (c->tail && c->st.bytes > keep) {
        drop(c, c->tail);
        c->st.evictions++;
    }
}

void ccache_set_budget(struct ccache *c, size_t budget)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->budget = budget;
    evict_to(c, budget);
    pthread_mutex_unlock(&c->mu);
}

struct cdfa *ccache_get(struct ccache *c, enum ccache_kind kind, const void *key, size_t len)
{
    if (!c)
        return NULL;
    uint64_t h = key_hash(kind, key, len);
    pthread_mutex_lock(&c->mu);
    struct centry *e = find(c, h, kind, key, len);
    struct cdfa *d = NULL;
    if (e) {
        lru_unlink(c, e);
        lru_front(c, e);
        d = cdfa_ref(e->dfa);
        c->st.hits++;
    } else {
        c->st.misses++;
    }
    pthread_mutex_unlock(&c->mu);
    return d;
}

int ccache_add(struct ccache *c, enum ccache_kind kind, const void *key, size_t len, struct cdfa *d)
{
    if (!c)
        return 0;
    size_t bytes = cdfa_bytes(d) + sizeof(struct centry) + len + 1;
    if (bytes > c->budget)
        return 0;
    struct centry *e = malloc(sizeof *e + len + 1);
    if (!e)
        return -1;
    e->hash = key_hash(kind, key, len);
    e->len = len + 1;
    e->bytes = bytes;
    e->key[0] = (unsigned char)kind;
    memcpy(e->key + 1, key, len);
    pthread_mutex_lock(&c->mu);
    if (find(c, e->hash, kind, key, len)) {     /* compiled twice at once: the first one stays */
        pthread_mutex_unlock(&c->mu);
        free(e);
        return 0;
    }
    evict_to(c, c->budget - bytes);
    e->dfa = cdfa_ref(d);
    e->chain = c->buckets[e->hash % BUCKETS];
    c->buckets[e->hash % BUCKETS] = e;
    lru_front(c, e);
    c->st.bytes += bytes;
    c->st.entries++;
    pthread_mutex_unlock(&c->mu);
    return 0;
}

void ccache_get_stats(struct ccache *c, struct ccache_stats *st)
{
    memset(st, 0, sizeof *st);
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    *st = c->st;
    pthread_mutex_unlock(&c->mu);
}
