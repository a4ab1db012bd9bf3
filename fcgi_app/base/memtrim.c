/* memtrim.c -- gives the heap's free memory back to the system after a request that used a lot of it. */
#include "config.h"
#include "memtrim.h"

#include <malloc.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static bool enabled = true;
static atomic_flag trimming = ATOMIC_FLAG_INIT;    /* held by the thread that is trimming */
static atomic_bool again;                           /* a large request ended since the last trim began */

void memtrim_init(void)
{
    const char *e = getenv("LLMCGI_MALLOC_TRIM");
    enabled = !(e && (strcmp(e, "off") == 0 || strcmp(e, "0") == 0 || strcmp(e, "no") == 0));
    if (enabled && !getenv("MALLOC_ARENA_MAX"))  /* an operator's own setting wins */
        mallopt(M_ARENA_MAX, MEMTRIM_ARENA_MAX);
}

bool memtrim_enabled(void)
{
    return enabled;
}

bool memtrim_wanted(size_t body_bytes, uint64_t answer_bytes)
{
    return body_bytes >= MEMTRIM_MIN_BYTES || answer_bytes >= MEMTRIM_MIN_BYTES;
}

/* Most trims one call makes while others keep asking: a steady stream of
 * large requests must not keep one responder thread trimming for ever. */
#define MAX_PASSES 8

bool memtrim_after_request(size_t body_bytes, uint64_t answer_bytes)
{
    if (!enabled || !memtrim_wanted(body_bytes, answer_bytes))
        return false;
    /* A trim that is already running may have passed the arena this request
     * freed into: `again` makes it (or the next thread to take the flag)
     * trim once more, so the last large request's memory always goes back. */
    atomic_store(&again, true);
    int passes = 0;
    while (passes < MAX_PASSES && atomic_load(&again) && !atomic_flag_test_and_set(&trimming)) {
        while (passes < MAX_PASSES && atomic_exchange(&again, false)) {
            malloc_trim(0);
            passes++;
        }
        atomic_flag_clear(&trimming);
    }
    return passes > 0;
}
