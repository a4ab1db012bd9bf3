/* ratelimit.c -- requests/min and tokens/min token buckets per API key and per client address, 429 + x-ratelimit-* headers. */
#ifndef LLMCGI_RATELIMIT_H
#define LLMCGI_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cidr.h"
#include "conf.h"
#include "request.h"

/* The client's address as limits see it, into out: REMOTE_ADDR, or, when
 * REMOTE_ADDR is a trusted proxy, the right-most X-Forwarded-For entry that
 * is not one (xff may be NULL). An IPv6 address becomes its /64
 * ("2001:db8:1:2::/64"): a host can take any address of its prefix. */
void ratelimit_client_addr(const struct config *cfg, const char *remote, const char *xff, char *out, size_t outlen);

/* A token bucket holding at most per_minute, refilled at per_minute / 60
 * per second. The arithmetic is pure (the time is passed in) for the tests. */
struct bucket {
    double level;
    int64_t at_ns;                  /* time of level */
};

/* A full bucket at now. */
void bucket_init(struct bucket *b, long per_minute, int64_t now_ns);

/* Refills b up to now (and clamps it to per_minute, which may have shrunk). */
void bucket_refill(struct bucket *b, long per_minute, int64_t now_ns);

/* Takes n when the bucket holds min(n, per_minute) (a request larger than a
 * whole minute's allowance needs a full bucket, then leaves it in debt).
 * Returns true, or false with *wait_s the seconds until it would succeed. */
bool bucket_take(struct bucket *b, long per_minute, double n, int64_t now_ns, double *wait_s);

/* Adds n back (n < 0 takes more, going into debt if need be), clamped to per_minute. */
void bucket_give(struct bucket *b, long per_minute, double n, int64_t now_ns);

/* Seconds until b is full again. */
double bucket_reset_s(const struct bucket *b, long per_minute, int64_t now_ns);

/* "6m0s", "1s", "20ms": OpenAI's x-ratelimit-reset-* format (rounded up). */
void ratelimit_format_reset(double seconds, char *out, size_t outlen);

/* The buckets of every client, shared by the responder threads (one lock),
 * at most max_clients of them: those idle long enough to be full again are
 * dropped, and the least recently seen goes first when the table is full. */
struct ratelimit;

/* A new empty table; NULL when out of memory. Free with ratelimit_free. */
struct ratelimit *ratelimit_new(void);
void ratelimit_free(struct ratelimit *rl);

/* Clients tracked now (for tests and /status). */
size_t ratelimit_tracked(struct ratelimit *rl);

/* Counts request r against its key and address (r->key must be set):
 * returns FRONT_OK to go on (x-ratelimit-*-requests headers queued), or
 * FRONT_ANSWERED after answering 429 with Retry-After. Public paths
 * (auth_path_public) are not counted. */
enum front_rc ratelimit_admit(struct req *r);

/* Guessing keys: an address whose wrong keys (r->auth_failed) used up
 * [limits] auth_failures_per_minute gets 429 for everything that needs a
 * key, valid keys included, until its bucket refills: the answer must not
 * tell a right guess from a wrong one. Returns FRONT_OK to go on, or
 * FRONT_ANSWERED after answering 429 with Retry-After. */
enum front_rc ratelimit_auth_blocked(struct req *r);

/* Counts one wrong key against r's address. */
void ratelimit_auth_failed(struct req *r);

/* Reserves `tokens` (prompt estimate + max new tokens) for a generation.
 * Returns FRONT_OK to go on (x-ratelimit-*-tokens headers queued), or
 * FRONT_ANSWERED after answering 429. prompt_estimate is kept to correct
 * the reservation. */
enum front_rc ratelimit_reserve(struct req *r, long prompt_estimate, long tokens);

/* After the handler: replaces the reservation with what was used
 * (r->tokens_in / r->tokens_out; a failed request with no usage
 * gets it all back). */
void ratelimit_finish(struct req *r);

#endif
