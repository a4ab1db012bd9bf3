/* server.c -- what all threads of one llmcgi process share: the live config snapshot, counters, lifecycle flags. */
#ifndef LLMCGI_SERVER_H
#define LLMCGI_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "conf.h"
#include "gpu.h"

struct testing;
struct gateway;
struct registry;

struct server {
    pthread_mutex_t cfg_lock;
    struct config *cfg;             /* the live snapshot; guarded by cfg_lock */
    int threads;                    /* responder threads started */
    atomic_int busy;                /* responder threads inside a request */
    atomic_ullong requests;         /* requests answered since start */
    atomic_ullong connections;      /* FastCGI connections accepted since start */
    atomic_llong read_timeout_ms;   /* the live config's read_timeout, for the accepting threads */
    atomic_llong head_timeout_ms;   /* and its head_timeout */
    int64_t started_ns;             /* monotonic clock at start, for uptimes */
    int64_t started_unix;           /* wall clock at start (seconds), as /status reports it */
    struct gpu_info gpu;            /* probed once at start */
    struct testing *testing;        /* state of the test-only endpoints, owned */
    struct gateway *gw;             /* upstreams' live state, owned (set up by main) */
    struct registry *reg;           /* local models, owned (set up by main) */
    struct ratelimit *rl;           /* rate-limit buckets, owned; kept across reloads */
};

/* Sets up `s` around `cfg`, taking over the caller's reference. Returns 0 or -1. */
int server_init(struct server *s, struct config *cfg);

/* Releases the config and the test state. */
void server_destroy(struct server *s);

/* A new reference to the live snapshot; give it back with config_unref(). */
struct config *server_config_acquire(struct server *s);

/* Makes `next` the live snapshot, taking over the caller's reference to it.
 * Requests still holding the old one finish with it. */
void server_config_swap(struct server *s, struct config *next);

#endif
