/* memtrim.c -- gives the heap's free memory back to the system after a request that used a lot of it.
 *
 * glibc's malloc keeps what a thread freed in that thread's arena (one
 * per responder thread, up to 8 per core), so one large request leaves its
 * peak resident for good: a few rounds of 4 MB bodies on every thread left
 * llmcgi at 10x its size before them. After a request whose body or answer
 * reached MEMTRIM_MIN_BYTES, the responder thread that served it (once the
 * answer is sent) calls malloc_trim(0), which hands every arena's free
 * pages back. At most one thread trims at a time: a request that ends
 * while it does makes it trim once more (8 times at most), instead of
 * waiting for it. */
#ifndef LLMCGI_MEMTRIM_H
#define LLMCGI_MEMTRIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* glibc's arenas, at most (mallopt M_ARENA_MAX; glibc's own default is 8
 * per core): fewer arenas leave less free memory scattered where a trim
 * cannot reach it (tests/soak/rss-hostile: three rounds of 4 MB requests
 * on 8 threads end 1.57x above the start with trim alone, 1.02x with 2
 * arenas). MALLOC_ARENA_MAX in the environment wins over it. */
#define MEMTRIM_ARENA_MAX 2

/* A request whose body or answer has this many bytes trims after it. */
#define MEMTRIM_MIN_BYTES (1u << 20)

/* Reads LLMCGI_MALLOC_TRIM from the environment ("off" leaves malloc as
 * glibc sets it up: no trim, no arena cap; for measuring without them:
 * tests/soak/rss-hostile) and caps the arenas. Call once at start-up,
 * before any thread exists. */
void memtrim_init(void);

/* Whether memtrim_after_request trims (memtrim_init's verdict). */
bool memtrim_enabled(void);

/* Is a request with these sizes large enough to trim after? Pure. */
bool memtrim_wanted(size_t body_bytes, uint64_t answer_bytes);

/* Called by the responder thread after a request's answer has been sent:
 * when memtrim_wanted(), trims, or has the thread that is trimming go
 * once more. Returns true when this call trimmed. */
bool memtrim_after_request(size_t body_bytes, uint64_t answer_bytes);

#endif
