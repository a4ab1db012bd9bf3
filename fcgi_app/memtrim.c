/* memtrim.c -- gives the heap's free memory back to the system after a request that used a lot of it. */
#include "config.h"
#include "memtrim.h"

#include <malloc.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static bool enabled = true;
static atomic_flag trimming = ATOMIC_FLAG_INIT;

void memtrim_init(void)
{
    const char *e = getenv("LLMCGI_MALLOC_TRIM");
    enabled = !(e && (strcmp(e, "off") == 0 || strcmp(e, "0") == 0 || strcmp(e, "no") == 0));
}

bool memtrim_enabled(void)
{
    return enabled;
}

bool memtrim_wanted(size_t body_bytes, uint64_t answer_bytes)
{
    return body_bytes >= MEMTRIM_MIN_BYTES || answer_bytes >= MEMTRIM_MIN_BYTES;
}

bool memtrim_after_request(size_t body_bytes, uint64_t answer_bytes)
{
    if (!enabled || !memtrim_wanted(body_bytes, answer_bytes))
        return false;
    if (atomic_flag_test_and_set(&trimming))    /* another thread is at it: its trim covers every arena */
        return false;
    malloc_trim(0);
    atomic_flag_clear(&trimming);
    return true;
}
