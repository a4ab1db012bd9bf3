/* retry.c -- the pause between two tries of an upstream request (generation or http pass-through): exponential, jittered, cut short when the client hangs up. */
#include "config.h"
#include "retry.h"
#include "util.h"

#include <poll.h>
#include <stdint.h>

/* Sleeps for the retry backoff of attempt `n` (1-based): base * 2^(n-1),
 * times a random factor in [0.5, 1.5), at most 5 s. Returns early (-1)
 * when the client hangs up meanwhile. */
int retry_backoff(struct req *r, const struct config_upstream *c, int n)
{
    int64_t ms = c->retry_backoff_ms;
    for (int i = 1; i < n && ms < 5000; i++)
        ms *= 2;
    ms = ms / 2 + (int64_t)(util_random_u64() % (uint64_t)(ms + 1));
    if (ms > 5000)
        ms = 5000;
    if (ms <= 0)
        return 0;
    struct pollfd p = {.fd = r->fcgi->ipcFd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, (int)ms) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)))
        return -1;
    return 0;
}
