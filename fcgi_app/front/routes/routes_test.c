/* routes_test.c -- endpoints for the integration tests, on only with [server] test_endpoints = on. */
#include "config.h"
#include "routes_test.h"
#include "conf.h"
#include "response.h"
#include "server.h"
#include "sse.h"
#include "util.h"

#include <errno.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEST_STREAMS 64
#define TEST_IDLE_LIMIT_NS (120 * 1000000000LL)   /* a stream nobody releases gives up */

struct test_stream {
    char id[REQ_PARAM_MAX];
    bool in_use;                    /* a request is streaming it now */
    int released, sent, keepalives;
    bool disconnected, done;
};

struct testing {
    pthread_mutex_t lock;
    pthread_cond_t cond;            /* CLOCK_MONOTONIC; broadcast on every release */
    struct test_stream streams[TEST_STREAMS];
};

struct testing *testing_new(void)
{
    struct testing *t = calloc(1, sizeof *t);
    pthread_condattr_t attr;
    if (!t)
        return NULL;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (pthread_mutex_init(&t->lock, NULL) != 0 || pthread_cond_init(&t->cond, &attr) != 0) {
        pthread_condattr_destroy(&attr);
        free(t);
        return NULL;
    }
    pthread_condattr_destroy(&attr);
    return t;
}

void testing_free(struct testing *t)
{
    if (!t)
        return;
    pthread_cond_destroy(&t->cond);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

/* The stream called id (lock held); with create, a fresh one replacing an
 * idle slot. NULL when absent or when every slot streams. */
static struct test_stream *find_stream(struct testing *t, const char *id, bool create)
{
    struct test_stream *free_slot = NULL;
    for (size_t i = 0; i < TEST_STREAMS; i++) {
        struct test_stream *s = &t->streams[i];
        if (s->id[0] && strcmp(s->id, id) == 0) {
            if (!create)
                return s;
            if (s->in_use)
                return NULL;
            free_slot = s;
            break;
        }
        if (!s->in_use && (!free_slot || !s->id[0]))
            free_slot = s;
    }
    if (!create || !free_slot)
        return NULL;
    memset(free_slot, 0, sizeof *free_slot);
    strcpy(free_slot->id, id);
    free_slot->in_use = true;
    return free_slot;
}

static int query_id(struct req *r, char *id)
{
    if (req_query(r, "id", id, 65) <= 0 || !id[0] || id[strspn(id, "abcdefghijklmnopqrstuvwxyz"
                                                          "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")]) {
        resp_error(r, 400, "query parameter id is required: 1-64 letters, digits, _ or -");
        return -1;
    }
    return 0;
}

int route_test_sse(struct req *r)
{
    struct testing *t = r->srv->testing;
    char id[REQ_PARAM_MAX], num[16];
    long events = 3;
    if (query_id(r, id) < 0)
        return 0;
    int q = req_query(r, "events", num, sizeof num);
    if (q < 0 || (q > 0 && (util_parse_long(num, &events) < 0 || events < 1 || events > 1000)))
        return resp_error(r, 400, "events must be 1..1000");

    pthread_mutex_lock(&t->lock);
    struct test_stream *st = find_stream(t, id, true);
    pthread_mutex_unlock(&t->lock);
    if (!st)
        return resp_error(r, 503, "no free test stream slot for id %s", id);

    struct sse sse;
    int rc = sse_begin(&sse, r, r->cfg->sse_keepalive_ms);
    int64_t idle_since = util_now_ns();
    pthread_mutex_lock(&t->lock);
    for (long k = 0; rc == 0 && k < events; k++) {
        while (rc == 0 && st->released < k) {
            struct timespec due = sse_next_keepalive(&sse);
            int w = pthread_cond_timedwait(&t->cond, &t->lock, &due);
            if (w == ETIMEDOUT) {
                if (util_now_ns() - idle_since > TEST_IDLE_LIMIT_NS) {
                    rc = -1;
                    break;
                }
                pthread_mutex_unlock(&t->lock);
                rc = sse_keepalive(&sse);
                pthread_mutex_lock(&t->lock);
                if (rc == 0)
                    st->keepalives++;
            }
        }
        if (rc < 0)
            break;
        char data[REQ_PARAM_MAX + 64];
        int n = snprintf(data, sizeof data, "{\"seq\":%ld,\"id\":\"%s\"}", k, id);
        pthread_mutex_unlock(&t->lock);
        rc = sse_event(&sse, "tick", data, (size_t)n);
        pthread_mutex_lock(&t->lock);
        if (rc == 0)
            st->sent++;
        idle_since = util_now_ns();
    }
    st->disconnected = r->client_gone;
    st->done = true;
    st->in_use = false;
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->lock);
    return rc;
}

int route_test_release(struct req *r)
{
    struct testing *t = r->srv->testing;
    char id[REQ_PARAM_MAX], body[64];
    if (query_id(r, id) < 0)
        return 0;
    pthread_mutex_lock(&t->lock);
    struct test_stream *st = find_stream(t, id, false);
    int released = st ? ++st->released : -1;
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->lock);
    if (released < 0)
        return resp_error(r, 404, "no test stream %s", id);
    int n = snprintf(body, sizeof body, "{\"released\":%d}", released);
    return resp_send(r, 200, "application/json", body, (size_t)n);
}

int route_test_state(struct req *r)
{
    struct testing *t = r->srv->testing;
    char id[REQ_PARAM_MAX], body[256];
    if (query_id(r, id) < 0)
        return 0;
    pthread_mutex_lock(&t->lock);
    struct test_stream *st = find_stream(t, id, false);
    int n = st ? snprintf(body, sizeof body,
                          "{\"sent\":%d,\"released\":%d,\"keepalives\":%d,\"disconnected\":%s,\"done\":%s}",
                          st->sent, st->released, st->keepalives, st->disconnected ? "true" : "false",
                          st->done ? "true" : "false")
               : 0;
    pthread_mutex_unlock(&t->lock);
    if (!st)
        return resp_error(r, 404, "no test stream %s", id);
    return resp_send(r, 200, "application/json", body, (size_t)n);
}

int route_test_slow(struct req *r)
{
    char num[16];
    long ms = 1000;
    int q = req_query(r, "ms", num, sizeof num);
    if (q < 0 || (q > 0 && (util_parse_long(num, &ms) < 0 || ms < 0 || ms > 60000)))
        return resp_error(r, 400, "ms must be 0..60000");
    resp_header(r, "X-Accel-Buffering", "no");      /* a streamed answer: nginx must pass "start" on */
    if (resp_start(r, 200, "text/plain", -1) < 0 || resp_write(r, "start\n", 6) < 0 || resp_flush(r) < 0)
        return -1;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
    return resp_write(r, "end\n", 4);
}

int route_test_echo(struct req *r)
{
    json_object *body = req_json_body(r);
    if (!body)
        return r->client_gone ? -1 : 0;
    json_object *o = json_object_new_object();
    if (!o) {
        json_object_put(body);
        return resp_error(r, 500, "out of memory");
    }
    json_object_object_add(o, "received", body);
    json_object_object_add(o, "bytes", json_object_new_uint64(r->body_len));
    int rc = resp_json(r, 200, o);
    json_object_put(o);
    return rc;
}
