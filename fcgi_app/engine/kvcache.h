/* kvcache.h -- one model's pool of KV blocks, with reference counts and a prefix cache of full blocks (automatic prefix caching).
 *
 * The engine thread is the only user (no locks). A block is in one of three
 * states: free (no content anyone can find), held (reference count >= 1:
 * in the block table of that many running sequences) or idle-cached
 * (reference count 0 but still indexed by content, kept until a free block
 * is needed, then evicted least recently released first).
 *
 * A full block is indexed by a chained 64-bit hash of its tokens and of the
 * hash of the block before it (so a block's key stands for every token from
 * position 0 to its end). A hash is only a lookup key: a hit is confirmed by
 * comparing the block's tokens and the identity of its parent block (block
 * number and generation, bumped each time a block leaves the index), so by
 * induction a match is an exact prefix match; a 64-bit collision can only
 * cost a miss, never wrong KV. Blocks enter the index only once the step that
 * filled them has run (kvc_commit), so a block still being written is never
 * shared. */
#ifndef LLMCGI_KVCACHE_H
#define LLMCGI_KVCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kvcache;

/* Where one sequence's chain of indexed blocks stands: the key and the block
 * (number, generation) its next full block hangs from, and how many of its
 * blocks have been looked up or committed. Zero it (kvc_chain_reset) when
 * the sequence gives its blocks back. */
struct kvc_chain {
    uint64_t hash;
    int32_t block;          /* -1: the chain's root */
    uint32_t gen;
    int n;                  /* blocks of the sequence covered by the chain */
};
void kvc_chain_reset(struct kvc_chain *ch);

/* A pool of n_blocks blocks of block_tokens positions, all free; with
 * `caching` false nothing is ever indexed (lookups miss, releases free).
 * Returns 0 and *out (free with kvc_free), or -1 when out of memory. */
int kvc_new(struct kvcache **out, int n_blocks, int block_tokens, bool caching);
void kvc_free(struct kvcache *c);

/* Blocks a sequence can take now: free ones and idle cached ones. */
int kvc_avail(const struct kvcache *c);
/* Blocks held by sequences (reference count >= 1). */
int kvc_held(const struct kvcache *c);
/* Idle cached blocks (indexed, reference count 0). */
int kvc_idle_cached(const struct kvcache *c);

/* Takes a block with no indexed content, reference count 1: a free one,
 * else the least recently released idle cached one (evicted from the
 * index). Returns its number, or -1 when every block is held. */
int32_t kvc_alloc(struct kvcache *c);

/* Drops one reference on each of blocks[0..n) (last first, so a sequence's
 * tail is evicted before its head). A block reaching zero becomes idle
 * cached when indexed, free otherwise. */
void kvc_release(struct kvcache *c, const int32_t *blocks, int n);

/* How long a run of indexed blocks matches ids from the start, at most
 * max_blocks full blocks (ids must hold max_blocks * block_tokens tokens);
 * *idle gets how many of those are idle cached. Takes nothing. */
int kvc_peek(const struct kvcache *c, const int32_t *ids, int max_blocks, int *idle);

/* Takes the indexed blocks matching ids past ch->n, up to max_blocks in all
 * (a reference each): for a sequence admitted with a reset chain and no
 * blocks, the cached run its prompt starts with; for one still reading its
 * prompt, none of whose blocks past its chain is written yet (its written
 * tokens end at ch->n whole blocks), what a sequence ahead of it with the
 * same prefix has written since. Each goes to blocks[j] (an unwritten block
 * of its own there is released) or is appended (*n_blocks grows). Returns
 * how many blocks it took; ch moves on to the last. */
int kvc_follow(struct kvcache *c, struct kvc_chain *ch, const int32_t *ids, int max_blocks, int32_t *blocks,
               int *n_blocks);

/* The sequence whose chain is ch now has the K/V of its first n_full full
 * blocks written (blocks[i] holds ids[i*B .. (i+1)*B)): indexes those past
 * ch->n. A block whose content is already indexed under another number (two
 * sequences filled the same prefix at once) stays unindexed, the sequence's
 * own, and the chain goes on from the indexed twin. */
void kvc_commit(struct kvcache *c, struct kvc_chain *ch, const int32_t *ids, const int32_t *blocks, int n_full);

/* Checks the pool's books (every block in exactly one state, counts, the
 * index, the LRU list). Returns 0, or -1 with what is wrong in err. For the
 * tests. */
int kvc_check(const struct kvcache *c, char *err, size_t errlen);

/* The reference count of block b (for the tests). */
int kvc_refs(const struct kvcache *c, int32_t b);

#endif
