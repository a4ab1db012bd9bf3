/* server.c -- what all threads of one llmcgi process share: the live config snapshot, counters, lifecycle flags. */
#include "config.h"
#include "server.h"
#include "ratelimit.h"
#include "routes_test.h"
#include "util.h"

#include <string.h>
#include <time.h>

int server_init(struct server *s, struct config *cfg)
{
    memset(s, 0, sizeof *s);
    if (pthread_mutex_init(&s->cfg_lock, NULL) != 0)
        return -1;
    s->cfg = cfg;
    atomic_store(&s->read_timeout_ms, cfg->read_timeout_ms);
    atomic_store(&s->head_timeout_ms, cfg->head_timeout_ms);
    s->started_ns = util_now_ns();
    s->started_unix = (int64_t)time(NULL);
    s->testing = testing_new();
    s->rl = ratelimit_new();
    if (!s->testing || !s->rl) {
        testing_free(s->testing);
        ratelimit_free(s->rl);
        pthread_mutex_destroy(&s->cfg_lock);
        return -1;
    }
    return 0;
}

void server_destroy(struct server *s)
{
    config_unref(s->cfg);
    s->cfg = NULL;
    testing_free(s->testing);
    s->testing = NULL;
    ratelimit_free(s->rl);
    s->rl = NULL;
    pthread_mutex_destroy(&s->cfg_lock);
}

struct config *server_config_acquire(struct server *s)
{
    pthread_mutex_lock(&s->cfg_lock);
    struct config *c = config_ref(s->cfg);
    pthread_mutex_unlock(&s->cfg_lock);
    return c;
}

void server_config_swap(struct server *s, struct config *next)
{
    pthread_mutex_lock(&s->cfg_lock);
    struct config *old = s->cfg;
    s->cfg = next;
    atomic_store(&s->read_timeout_ms, next->read_timeout_ms);
    atomic_store(&s->head_timeout_ms, next->head_timeout_ms);
    pthread_mutex_unlock(&s->cfg_lock);
    config_unref(old);
}
