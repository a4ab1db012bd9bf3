/* memtrim.c -- gives the heap's free memory back to the system after a request that used a lot of it.
 *
 * glibc's malloc keeps what a thread freed in that thread's arena (one
 * per responder thread, up to 8 per core), so one large request leaves its
 * peak resident for good: a few rounds of 4 MB bodies on every thread left
 * llmcgi at 10x its size before them. After a request whose body or answer
 * reached MEMTRIM_MIN_BYTES, the responder thread that served it (once the
 * answer is sent) calls malloc_trim(0), which hands every arena's free
 * pages back. At most one thread trims at a time; the others skip it. */
#ifndef LLMCGI_MEMTRIM_H
#define LLMCGI_MEMTRIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A request whose body or answer has this many bytes trims after it. */
#define MEMTRIM_MIN_BYTES (1u << 20)

/* Reads LLMCGI_MALLOC_TRIM from the environment ("off" turns the trimming
 * off, for measuring without it: tests/soak/rss-hostile). Call once at
 * start-up, before the responder threads exist. */
void memtrim_init(void);

/* Whether memtrim_after_request trims (memtrim_init's verdict). */
bool memtrim_enabled(void);

/* Is a request with these sizes large enough to trim after? Pure. */
bool memtrim_wanted(size_t body_bytes, uint64_t answer_bytes);

/* Called by the responder thread after a request's answer has been sent:
 * trims when memtrim_wanted() and no other thread is trimming. Returns
 * true when it trimmed. */
bool memtrim_after_request(size_t body_bytes, uint64_t answer_bytes);

#endif
