/* retry.h -- the pause between two tries of an upstream request: exponential, jittered, cut short when the client hangs up. */
#ifndef LLMCGI_RETRY_H
#define LLMCGI_RETRY_H

#include "conf.h"
#include "request.h"

/* Sleeps for the retry backoff of attempt `n` (1-based): base * 2^(n-1),
 * times a random factor in [0.5, 1.5), at most 5 s. Returns early (-1)
 * when the client hangs up meanwhile. */
int retry_backoff(struct req *r, const struct config_upstream *c, int n);

#endif
