/* gateway.c -- the live state of the configured upstreams: replica health, concurrency slots, discovered models, managed children.
 *
 * Health. A replica starts "up" (a managed child's starts "down" until its
 * health endpoint answers). The health thread probes every replica at
 * health_interval (down ones more often, so a recovered or freshly started
 * upstream is back in rotation quickly). health_fall consecutive failures,
 * of probes or of real requests, take a replica out of rotation: that is
 * the circuit breaker; only probes bring it back, after health_rise
 * consecutive successes. Probes of all due replicas run concurrently on one
 * curl multi handle, so a hanging upstream delays nobody else's check. */
#include "config.h"
#include "gateway.h"
#include "client.h"
#include "log.h"
#include "json_strict.h"
#include "supervisor.h"
#include "util.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define MODELS_REFRESH_NS (30LL * 1000000000)
#define MODELS_STALE_NS (300LL * 1000000000)   /* a busy upstream's list is refreshed anyway after this */
#define DOWN_PROBE_MS 1000
#define CHILD_PROBE_MS 250

struct replica {
    char *url;
    bool up;                    /* guarded by the upstream's lock, like the rest */
    int fails, oks;             /* consecutive */
    int64_t next_check_ns;
    int64_t latency_us;         /* of the last successful probe */
    char last_error[32];        /* the category of the last failure (uc_category), "" after a success */
    uint64_t failures;          /* in all */
    long busy;                  /* requests in flight on it (upstream_replica_enter/leave) */
    int64_t quiet_at_ns;        /* when the last of them ended: no probe before quiet_at + health_interval */
};

struct upstream {
    atomic_int refs;
    char *name;
    enum upstream_type type;
    pthread_mutex_t lock;
    pthread_cond_t slot_free;
    long active;                /* requests holding a slot */
    size_t n_replicas;
    struct replica *replicas;
    unsigned rr;
    char **models;              /* discovered; NULL-terminated, or NULL */
    int64_t models_at_ns;       /* when last fetched; 0 = never */
    struct supervisor *child;
    bool retired;               /* removed by a reload: no more probes */
};

struct gateway {
    pthread_mutex_t lock;       /* guards cfg, ups, n_ups */
    struct config *cfg;
    struct upstream **ups;
    size_t n_ups;
    pthread_t thread;
    bool thread_started;
    int wake_fd;
    atomic_bool stopping;
};

/* ------------------------------------------------------------------ upstream objects */

void gateway_free_names(char **names)
{
    for (size_t i = 0; names && names[i]; i++)
        free(names[i]);
    free(names);
}

static void upstream_free(struct upstream *u)
{
    supervisor_stop(u->child);
    for (size_t i = 0; i < u->n_replicas; i++)
        free(u->replicas[i].url);
    free(u->replicas);
    gateway_free_names(u->models);
    free(u->name);
    pthread_mutex_destroy(&u->lock);
    pthread_cond_destroy(&u->slot_free);
    free(u);
}

void upstream_put(struct upstream *u)
{
    if (u && atomic_fetch_sub(&u->refs, 1) == 1)
        upstream_free(u);
}

static struct upstream *upstream_new(const struct config_upstream *c)
{
    struct upstream *u = calloc(1, sizeof *u);
    if (!u)
        return NULL;
    atomic_init(&u->refs, 1);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int e1 = pthread_mutex_init(&u->lock, NULL), e2 = pthread_cond_init(&u->slot_free, &ca);
    pthread_condattr_destroy(&ca);
    u->name = strdup(c->name);
    u->type = c->type;
    u->replicas = calloc(c->n_urls, sizeof *u->replicas);
    if (e1 || e2 || !u->name || !u->replicas) {
        free(u->name);
        free(u->replicas);
        free(u);
        return NULL;
    }
    u->n_replicas = c->n_urls;
    for (size_t i = 0; i < c->n_urls; i++) {
        u->replicas[i].url = strdup(c->urls[i]);
        u->replicas[i].up = c->launch == NULL;      /* a child is down until it answers */
        if (!u->replicas[i].url) {
            upstream_put(u);
            return NULL;
        }
    }
    return u;
}

/* Same name, type, replicas and launch command: the state carries over a reload. */
static bool same_identity(const struct upstream *u, const struct config_upstream *c, const struct config_upstream *old)
{
    if (strcmp(u->name, c->name) != 0 || u->type != c->type || u->n_replicas != c->n_urls)
        return false;
    for (size_t i = 0; i < c->n_urls; i++)
        if (strcmp(u->replicas[i].url, c->urls[i]) != 0)
            return false;
    const char *a = old ? old->launch : NULL, *b = c->launch;
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static int start_child(struct upstream *u, const struct config_upstream *c, char *err, size_t errlen)
{
    if (!c->launch)
        return 0;
    struct supervisor_opts o = {
        .name = c->name,
        .command = c->launch,
        .workdir = NULL,
        .stop_timeout_ms = c->launch_stop_timeout_ms,
        .backoff_min_ms = 1000,
        .backoff_max_ms = 30000,
        .stable_ms = 60000,
    };
    return supervisor_start(&o, &u->child, err, errlen);
}

/* ------------------------------------------------------------------ selection, slots, reports */

/* Is any replica of u up? Lock held. */
static bool any_replica_up(const struct upstream *u)
{
    for (size_t i = 0; i < u->n_replicas; i++)
        if (u->replicas[i].up)
            return true;
    return false;
}

bool upstream_available(struct upstream *u)
{
    pthread_mutex_lock(&u->lock);
    bool any = any_replica_up(u);
    pthread_mutex_unlock(&u->lock);
    return any;
}

int upstream_pick(struct upstream *u, uint64_t tried)
{
    pthread_mutex_lock(&u->lock);
    int pick = -1;
    size_t n = u->n_replicas;
    for (size_t k = 0; k < n && pick < 0; k++) {
        size_t i = (u->rr + k) % n;
        if (u->replicas[i].up && !(i < 64 && (tried >> i) & 1))
            pick = (int)i;
    }
    if (pick >= 0)
        u->rr = (unsigned)pick + 1;
    pthread_mutex_unlock(&u->lock);
    return pick;
}

const char *upstream_replica_url(struct upstream *u, int replica)
{
    return u->replicas[replica].url;        /* immutable after creation */
}

/* Records one outcome; call with the lock held. `category` is public
 * (/health shows it); `detail` (may be NULL) names addresses and goes to
 * the error log only. */
static void record(struct upstream *u, const struct config_upstream *c, struct replica *r, bool ok, const char *category,
                   const char *detail, bool probe)
{
    if (ok) {
        r->fails = 0;
        r->oks++;
        r->last_error[0] = '\0';       /* it answers now: the last failure is history */
        if (!r->up && probe && r->oks >= c->health_rise) {
            r->up = true;
            log_notice("upstream %s: %s is up again", u->name, r->url);
        }
        return;
    }
    if (!category)
        category = "error";
    bool changed = strcmp(r->last_error, category) != 0;
    r->oks = 0;
    r->fails++;
    r->failures++;
    snprintf(r->last_error, sizeof r->last_error, "%s", category);
    if (!probe)
        log_warn("upstream %s: a request to %s failed: %s (%s)", u->name, r->url, category, detail ? detail : "-");
    else if (changed)                   /* a down replica is probed every second: say it once */
        log_info("upstream %s: health check of %s failed: %s (%s)", u->name, r->url, category, detail ? detail : "-");
    if (r->up && r->fails >= c->health_fall) {
        r->up = false;
        log_warn("upstream %s: %s taken out of rotation after %d failures in a row (last: %s)", u->name, r->url,
                 r->fails, category);
    }
}

void upstream_report(struct upstream *u, const struct config_upstream *c, int replica, bool ok, const char *category)
{
    if (replica < 0 || (size_t)replica >= u->n_replicas)
        return;
    pthread_mutex_lock(&u->lock);
    record(u, c, &u->replicas[replica], ok, category, NULL, false);
    pthread_mutex_unlock(&u->lock);
}

void upstream_report_result(struct upstream *u, const struct config_upstream *c, int replica,
                            const struct uc_response *res)
{
    if (replica < 0 || (size_t)replica >= u->n_replicas)
        return;
    bool ok = res->result == UC_OK && res->status < 500;
    const char *category = uc_category(res->result, res->code, res->status);
    char detail[sizeof res->error + 32];
    if (res->result == UC_OK)
        snprintf(detail, sizeof detail, "HTTP %ld", res->status);
    else
        snprintf(detail, sizeof detail, "%s", res->error[0] ? res->error : uc_result_text(res->result));
    pthread_mutex_lock(&u->lock);
    record(u, c, &u->replicas[replica], ok, category, detail, false);
    pthread_mutex_unlock(&u->lock);
}

int upstream_acquire(struct upstream *u, const struct config_upstream *c)
{
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += c->queue_timeout_ms / 1000;
    deadline.tv_nsec += (c->queue_timeout_ms % 1000) * 1000000;
    if (deadline.tv_nsec >= 1000000000) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&u->lock);
    int rc = 0;
    while (u->active >= c->max_concurrent) {
        if (pthread_cond_timedwait(&u->slot_free, &u->lock, &deadline) == ETIMEDOUT &&
            u->active >= c->max_concurrent) {
            rc = -1;
            break;
        }
    }
    if (rc == 0)
        u->active++;
    pthread_mutex_unlock(&u->lock);
    return rc;
}

void upstream_release(struct upstream *u)
{
    pthread_mutex_lock(&u->lock);
    u->active--;
    pthread_cond_signal(&u->slot_free);
    pthread_mutex_unlock(&u->lock);
}

void upstream_replica_enter(struct upstream *u, int replica)
{
    if (replica < 0 || (size_t)replica >= u->n_replicas)
        return;
    pthread_mutex_lock(&u->lock);
    u->replicas[replica].busy++;
    pthread_mutex_unlock(&u->lock);
}

void upstream_replica_leave(struct upstream *u, int replica)
{
    if (replica < 0 || (size_t)replica >= u->n_replicas)
        return;
    pthread_mutex_lock(&u->lock);
    struct replica *r = &u->replicas[replica];
    if (r->busy > 0 && --r->busy == 0)
        r->quiet_at_ns = util_now_ns();
    pthread_mutex_unlock(&u->lock);
}

/* ------------------------------------------------------------------ models */

bool gateway_model_id_ok(const char *id, size_t len)
{
    if (len == 0 || len > GATEWAY_MODEL_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (id[i] <= 0x20 || id[i] >= 0x7f || strchr("\"'\\`<>", id[i]))
            return false;
    return true;
}

char **gateway_parse_model_list(const char *body, size_t len, bool tgi_info, size_t *dropped)
{
    char err[128];
    json_object *o = json_parse_upstream(body, len, err, sizeof err), *v;
    char **names = NULL;
    *dropped = 0;
    if (!o || !json_object_is_type(o, json_type_object))
        goto out;
    if (tgi_info) {
        if (!json_object_object_get_ex(o, "model_id", &v) || !json_object_is_type(v, json_type_string))
            goto out;
        if (!gateway_model_id_ok(json_object_get_string(v), (size_t)json_object_get_string_len(v))) {
            *dropped = 1;
            names = calloc(1, sizeof *names);   /* no model: not the one it named before */
            goto out;
        }
        if ((names = calloc(2, sizeof *names)) && !(names[0] = strdup(json_object_get_string(v)))) {
            free(names);
            names = NULL;
        }
        goto out;
    }
    if (!json_object_object_get_ex(o, "data", &v) || !json_object_is_type(v, json_type_array))
        goto out;
    size_t n = json_object_array_length(v), k = 0;
    if (n > 4096)
        n = 4096;
    if (!(names = calloc(n + 1, sizeof *names)))
        goto out;
    for (size_t i = 0; i < n; i++) {
        json_object *m = json_object_array_get_idx(v, i), *id;
        if (!json_object_is_type(m, json_type_object) || !json_object_object_get_ex(m, "id", &id) ||
            !json_object_is_type(id, json_type_string) ||
            !gateway_model_id_ok(json_object_get_string(id), (size_t)json_object_get_string_len(id)))
            ++*dropped;
        else if ((names[k] = strdup(json_object_get_string(id))))
            k++;
    }
out:
    json_object_put(o);
    return names;
}

bool upstream_routes_model(struct upstream *u, const struct config_upstream *c, const char *model, char **target,
                           char *buf, size_t buflen)
{
    for (size_t i = 0; i < c->n_models; i++)
        if (strcmp(c->models[i].name, model) == 0) {
            *target = c->models[i].target;
            return true;
        }
    bool found = false;
    if (c->catch_all) {
        found = true;
    } else if (c->n_models == 0 && u) {     /* no list: whatever the upstream says it serves */
        pthread_mutex_lock(&u->lock);
        for (size_t i = 0; u->models && u->models[i] && !found; i++)
            found = strcmp(u->models[i], model) == 0;
        pthread_mutex_unlock(&u->lock);
    }
    if (found) {
        snprintf(buf, buflen, "%s", model);
        *target = buf;
    }
    return found;
}

bool upstream_tgi_model_id(struct upstream *u, char *buf, size_t len)
{
    pthread_mutex_lock(&u->lock);
    bool ok = u->type == UPSTREAM_TGI && u->models && u->models[0];
    if (ok)
        snprintf(buf, len, "%s", u->models[0]);
    pthread_mutex_unlock(&u->lock);
    return ok;
}

json_object *upstream_discovered_models(struct upstream *u)
{
    json_object *a = json_object_new_array();
    if (!a)
        return NULL;
    pthread_mutex_lock(&u->lock);
    for (size_t i = 0; u->models && u->models[i]; i++)
        json_object_array_add(a, json_object_new_string(u->models[i]));
    pthread_mutex_unlock(&u->lock);
    return a;
}

void upstream_get_gauges(struct upstream *u, struct upstream_gauges *g)
{
    memset(g, 0, sizeof *g);
    pthread_mutex_lock(&u->lock);
    g->n_replicas = u->n_replicas < UPSTREAM_MAX_REPLICAS ? u->n_replicas : UPSTREAM_MAX_REPLICAS;
    for (size_t i = 0; i < g->n_replicas; i++)
        g->up[i] = u->replicas[i].up;
    g->in_flight = u->active;
    pthread_mutex_unlock(&u->lock);
}

json_object *upstream_status_json(struct upstream *u)
{
    json_object *o = json_object_new_object(), *reps = json_object_new_array();
    if (!o || !reps) {
        json_object_put(o);
        json_object_put(reps);
        return NULL;
    }
    pthread_mutex_lock(&u->lock);
    bool any = false;
    for (size_t i = 0; i < u->n_replicas; i++) {
        struct replica *r = &u->replicas[i];
        json_object *ro = json_object_new_object();
        if (!ro)
            continue;
        any |= r->up;
        json_object_object_add(ro, "up", json_object_new_boolean(r->up));
        if (r->latency_us) {
            char ms[32];
            snprintf(ms, sizeof ms, "%.3f", (double)r->latency_us / 1000.0);
            json_object_object_add(ro, "latency_ms", json_object_new_double_s((double)r->latency_us / 1000.0, ms));
        }
        json_object_object_add(ro, "failures", json_object_new_uint64(r->failures));
        json_object_object_add(ro, "in_flight", json_object_new_int64(r->busy));
        if (r->last_error[0])
            json_object_object_add(ro, "last_error", json_object_new_string(r->last_error));
        json_object_array_add(reps, ro);
    }
    json_object_object_add(o, "type", json_object_new_string(upstream_type_name(u->type)));
    json_object_object_add(o, "available", json_object_new_boolean(any));
    json_object_object_add(o, "in_flight", json_object_new_int64(u->active));
    if (u->child) {
        struct supervisor_state st;
        supervisor_get_state(u->child, &st);
        json_object *co = json_object_new_object();
        if (co) {
            json_object_object_add(co, "running", json_object_new_boolean(st.pid > 0));
            json_object_object_add(co, "starts", json_object_new_int64(st.starts));
            json_object_object_add(o, "child", co);
        }
    }
    pthread_mutex_unlock(&u->lock);
    json_object_object_add(o, "replicas", reps);
    return o;
}

/* ------------------------------------------------------------------ the health thread */

/* One probe in flight. */
struct probe {
    struct probe *next;         /* the thread's list of probes in flight */
    struct upstream *u;         /* referenced */
    struct config *cfg;         /* referenced: c points into it */
    const struct config_upstream *c;
    int replica;                /* -1: a model-list fetch, not a health probe */
    CURL *easy;
    struct curl_slist *headers;
    char *url;
    char *body;                 /* model-list answers */
    size_t len;
    bool too_big;
    int64_t started_ns;
    char error[CURL_ERROR_SIZE];    /* libcurl's words, for the log */
};

static size_t probe_body(char *data, size_t size, size_t n, void *ud)
{
    struct probe *p = ud;
    size_t len = size * n;
    if (p->replica >= 0)
        return len;             /* health answers: only the status counts */
    if (p->len + len > (1 << 20)) {
        p->too_big = true;
        return 0;
    }
    char *grown = realloc(p->body, p->len + len + 1);
    if (!grown)
        return 0;
    p->body = grown;
    memcpy(p->body + p->len, data, len);
    p->len += len;
    p->body[p->len] = '\0';
    return len;
}

bool gateway_slist_add(struct curl_slist **h, const char *line)
{
    struct curl_slist *t = curl_slist_append(*h, line);
    if (!t) {
        curl_slist_free_all(*h);
        *h = NULL;
        return false;
    }
    *h = t;
    return true;
}

bool gateway_header_name_eq(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen != blen)
        return false;
    for (size_t i = 0; i < alen; i++) {
        char x = a[i] == '_' ? '-' : (char)tolower((unsigned char)a[i]);
        char y = b[i] == '_' ? '-' : (char)tolower((unsigned char)b[i]);
        if (x != y)
            return false;
    }
    return true;
}

/* The name of a header line "Name: value" (or curl's "Name;"): its length. */
static size_t line_name_len(const char *line)
{
    return strcspn(line, ":;");
}

/* Is a header called name[0..len) one the upstream's configuration sets? */
static bool configured_header(const struct config_upstream *c, const char *name, size_t len)
{
    if (c->api_key && gateway_header_name_eq(name, len, "Authorization", 13))
        return true;
    for (size_t i = 0; i < c->n_headers; i++)
        if (gateway_header_name_eq(name, len, c->headers[i], line_name_len(c->headers[i])))
            return true;
    return false;
}

struct curl_slist *upstream_credentials(const struct config_upstream *c, struct curl_slist *h)
{
    struct curl_slist *out = NULL;
    for (struct curl_slist *l = h; l; l = l->next) {
        if (configured_header(c, l->data, line_name_len(l->data)))
            continue;                   /* the operator's value replaces it */
        if (!gateway_slist_add(&out, l->data)) {
            curl_slist_free_all(h);
            return NULL;
        }
    }
    curl_slist_free_all(h);
    char auth[600];
    if (c->api_key) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", c->api_key);
        if (!gateway_slist_add(&out, auth))
            return NULL;
    }
    for (size_t i = 0; i < c->n_headers; i++)
        if (!gateway_slist_add(&out, c->headers[i]))
            return NULL;
    return out;
}

/* A probe of replica `at`'s `path`: its health (replica = at) or the
 * upstream's model list (replica = -1). NULL when out of memory; the
 * caller owns it (probe_free). */
static struct probe *probe_new(struct upstream *u, struct config *cfg, const struct config_upstream *c, int replica,
                               int at, const char *path)
{
    struct probe *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    const char *base = u->replicas[at].url;    /* immutable after creation */
    size_t len = strlen(base) + strlen(path) + 1;
    p->url = malloc(len);
    p->easy = curl_easy_init();
    if (!p->url || !p->easy) {
        free(p->url);
        if (p->easy)
            curl_easy_cleanup(p->easy);
        free(p);
        return NULL;
    }
    snprintf(p->url, len, "%s%s", base, path);
    p->headers = upstream_credentials(c, NULL);
    p->u = u;
    atomic_fetch_add(&u->refs, 1);
    p->cfg = config_ref(cfg);
    p->c = c;
    p->replica = replica;
    p->started_ns = util_now_ns();
    CURL *e = p->easy;
    curl_easy_setopt(e, CURLOPT_URL, p->url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, p->headers);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)c->health_timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)c->health_timeout_ms);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, probe_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, p);
    curl_easy_setopt(e, CURLOPT_PRIVATE, p);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, p->error);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "llmcgi/" PACKAGE_VERSION " (health check)");
    return p;
}

static void probe_free(struct probe *p)
{
    curl_easy_cleanup(p->easy);
    curl_slist_free_all(p->headers);
    upstream_put(p->u);
    config_unref(p->cfg);
    free(p->url);
    free(p->body);
    free(p);
}

/* Passive health. A replica that is up and serving requests through
 * llmcgi is not probed while one is in flight, nor within health_interval
 * of the last one's end: their outcomes feed the breaker (record), and a
 * probe would only get in their way -- llama-cpp-python's server ends a
 * stream it is sending with a bare [DONE] as soon as another request, a
 * GET /v1/models included, waits for its model (interrupt_requests, its
 * default). When is it quiet enough to be asked, at the earliest? Down
 * replicas are not postponed: nothing that counts is in flight on them.
 * A probe already under way when a request starts is not called back: the
 * window left is its round trip, after health_interval of quiet. Lock held. */
static int64_t quiet_from(const struct config_upstream *c, const struct replica *r, int64_t now)
{
    if (!r->up)
        return 0;
    int64_t interval = c->health_interval_ms * 1000000;
    return r->busy > 0 ? now + interval : r->quiet_at_ns ? r->quiet_at_ns + interval : 0;
}

/* When the replica is checked next, given what we know now. Lock held. */
static int64_t next_check(const struct upstream *u, const struct config_upstream *c, const struct replica *r,
                          int64_t now)
{
    int64_t ms = c->health_interval_ms;
    if (!r->up) {
        int64_t down_ms = u->child ? CHILD_PROBE_MS : DOWN_PROBE_MS;
        if (down_ms < ms)
            ms = down_ms;
    }
    return now + ms * 1000000;
}

static void probe_done(struct probe *p, CURLcode code)
{
    struct upstream *u = p->u;
    long status = 0;
    curl_easy_getinfo(p->easy, CURLINFO_RESPONSE_CODE, &status);
    int64_t now = util_now_ns();
    if (p->replica < 0) {
        char **names = NULL;
        size_t dropped = 0;
        if (code == CURLE_OK && status == 200)
            names = gateway_parse_model_list(p->body ? p->body : "", p->len, u->type == UPSTREAM_TGI, &dropped);
        if (dropped)
            log_warn("upstream %s: ignored %zu model id%s in its %s that %s not 1-%d printable ASCII bytes without "
                     "spaces, quotes, backslashes or <>", u->name, dropped, dropped == 1 ? "" : "s",
                     u->type == UPSTREAM_TGI ? "/info" : "model list", dropped == 1 ? "is" : "are",
                     GATEWAY_MODEL_ID_MAX);
        pthread_mutex_lock(&u->lock);
        u->models_at_ns = now;          /* a failed fetch is retried at the next refresh too */
        if (names) {
            gateway_free_names(u->models);
            u->models = names;
        }
        pthread_mutex_unlock(&u->lock);
        if (!names)
            log_debug("upstream %s: could not read its model list from %s (HTTP %ld, %s)", u->name, p->url, status,
                      curl_easy_strerror(code));
        return;
    }
    /* A plain HTTP service may answer its root with 404: anything below 500 means alive. */
    bool ok = code == CURLE_OK && status >= 200 && (status < 300 || (u->type == UPSTREAM_HTTP && status < 500));
    const char *category = code != CURLE_OK ? uc_category(uc_result_of_code(code), code, 0)
                                            : uc_category(UC_OK, code, status);
    if (!ok && !category)
        category = "bad answer";        /* a redirect or 1xx where a 2xx was due */
    char detail[CURL_ERROR_SIZE + 64];
    if (code != CURLE_OK)
        snprintf(detail, sizeof detail, "%s", p->error[0] ? p->error : curl_easy_strerror(code));
    else
        snprintf(detail, sizeof detail, "HTTP %ld", status);
    pthread_mutex_lock(&u->lock);
    struct replica *r = &u->replicas[p->replica];
    if (ok)
        r->latency_us = (now - p->started_ns) / 1000;
    record(u, p->c, r, ok, category, detail, true);
    r->next_check_ns = next_check(u, p->c, r, now);
    pthread_mutex_unlock(&u->lock);
}

/* Starts every probe that is due; returns when the earliest next one is. */
static void launch_probe(struct probe *p, CURLM *multi, struct probe **list)
{
    if (!p)
        return;
    if (curl_multi_add_handle(multi, p->easy) != CURLM_OK) {
        probe_free(p);
        return;
    }
    p->next = *list;
    *list = p;
}

static void unlink_probe(struct probe **list, struct probe *p)
{
    for (struct probe **pp = list; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            return;
        }
}

static int64_t start_due(struct gateway *g, struct config *cfg, CURLM *multi, struct probe **list)
{
    int64_t now = util_now_ns(), next = now + 1000LL * 1000000;
    pthread_mutex_lock(&g->lock);
    for (size_t k = 0; k < g->n_ups; k++) {
        struct upstream *u = g->ups[k];
        const struct config_upstream *c = config_find_upstream(cfg, u->name);
        if (!c)
            continue;
        pthread_mutex_lock(&u->lock);
        int models_at = -1;              /* model lists come from the first replica that is up and quiet */
        if (c->type != UPSTREAM_HTTP && now - u->models_at_ns >= MODELS_REFRESH_NS)
            for (size_t i = 0; i < u->n_replicas && models_at < 0; i++)
                if (u->replicas[i].up && quiet_from(c, &u->replicas[i], now) <= now)
                    models_at = (int)i;
        if (models_at < 0 && c->type != UPSTREAM_HTTP && now - u->models_at_ns >= MODELS_STALE_NS)
            for (size_t i = 0; i < u->n_replicas && models_at < 0; i++)    /* never quiet: a list stale */
                if (u->replicas[i].up)                                       /* for minutes is worse than */
                    models_at = (int)i;                                      /* one interrupted stream */
        if (models_at >= 0)
            u->models_at_ns = now;       /* not twice while one is in flight */
        for (size_t i = 0; i < u->n_replicas; i++) {
            struct replica *r = &u->replicas[i];
            int64_t quiet = quiet_from(c, r, now);
            if (quiet > r->next_check_ns)
                r->next_check_ns = quiet;   /* postponed, not skipped: it stays in the schedule */
            if (r->next_check_ns > now) {
                if (r->next_check_ns < next)
                    next = r->next_check_ns;
                continue;
            }
            r->next_check_ns = now + (c->health_timeout_ms + 60000) * 1000000;   /* until it completes */
            pthread_mutex_unlock(&u->lock);
            launch_probe(probe_new(u, cfg, c, (int)i, (int)i, c->health_path), multi, list);
            pthread_mutex_lock(&u->lock);
        }
        pthread_mutex_unlock(&u->lock);
        if (models_at >= 0)
            launch_probe(probe_new(u, cfg, c, -1, models_at, c->type == UPSTREAM_TGI ? "/info" : "/v1/models"), multi,
                         list);
    }
    pthread_mutex_unlock(&g->lock);
    return next;
}

static void *health_main(void *arg)
{
    struct gateway *g = arg;
    CURLM *multi = curl_multi_init();
    if (!multi) {
        log_error("health checks: cannot set up libcurl; upstream health will not be checked");
        return NULL;
    }
    struct probe *list = NULL;
    while (!atomic_load(&g->stopping)) {
        pthread_mutex_lock(&g->lock);
        struct config *cfg = config_ref(g->cfg);
        pthread_mutex_unlock(&g->lock);

        int64_t next = start_due(g, cfg, multi, &list);
        int running = 0;
        curl_multi_perform(multi, &running);
        CURLMsg *m;
        int left;
        bool finished = false;
        while ((m = curl_multi_info_read(multi, &left))) {
            if (m->msg != CURLMSG_DONE)
                continue;
            struct probe *p = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&p);
            CURLcode code = m->data.result;
            curl_multi_remove_handle(multi, m->easy_handle);
            unlink_probe(&list, p);
            probe_done(p, code);
            probe_free(p);
            finished = true;
        }
        if (finished)       /* `next` was reckoned while it was in flight: reckon again with its next check */
            next = util_now_ns();
        int64_t wait_ms = (next - util_now_ns()) / 1000000;
        if (wait_ms < 0)
            wait_ms = 0;
        if (list && wait_ms > 100)
            wait_ms = 100;
        struct curl_waitfd wfd = {.fd = g->wake_fd, .events = CURL_WAIT_POLLIN};
        curl_multi_poll(multi, &wfd, 1, (int)wait_ms, NULL);
        if (wfd.revents) {
            uint64_t v;
            if (read(g->wake_fd, &v, sizeof v) < 0 && errno != EAGAIN)
                log_debug("health checks: wake-up read: %s", strerror(errno));
        }
        config_unref(cfg);
    }
    while (list) {              /* abandon the probes still in flight */
        struct probe *p = list;
        list = p->next;
        curl_multi_remove_handle(multi, p->easy);
        probe_free(p);
    }
    curl_multi_cleanup(multi);
    return NULL;
}

/* ------------------------------------------------------------------ life cycle */

static void wake(struct gateway *g)
{
    uint64_t one = 1;
    if (write(g->wake_fd, &one, sizeof one) < 0 && errno != EAGAIN)
        log_debug("gateway: wake-up write: %s", strerror(errno));
}

/* Builds the upstream list for cfg, reusing entries of `old` (n_old) where
 * nothing that matters changed. Lock held. */
static int build_list(struct gateway *g, struct config *cfg, const struct config *old_cfg, char *err, size_t errlen)
{
    struct upstream **list = calloc(cfg->n_upstreams + 1, sizeof *list);
    if (!list) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        const struct config_upstream *c = &cfg->upstreams[i];
        for (size_t k = 0; k < g->n_ups && !list[i]; k++) {
            struct upstream *u = g->ups[k];
            if (u && same_identity(u, c, old_cfg ? config_find_upstream(old_cfg, c->name) : NULL)) {
                list[i] = u;
                g->ups[k] = NULL;       /* moved */
            }
        }
        if (list[i])
            continue;
        char cerr[256] = "";
        if (!(list[i] = upstream_new(c)) || start_child(list[i], c, cerr, sizeof cerr) < 0) {
            snprintf(err, errlen, "upstream %s: %s", c->name, cerr[0] ? cerr : "out of memory");
            for (size_t k = 0; k <= i; k++)
                upstream_put(list[k]);
            free(list);
            return -1;
        }
        if (c->launch)
            log_notice("upstream %s: managed child started; waiting for %s%s to answer", c->name, c->urls[0],
                       c->health_path);
    }
    for (size_t k = 0; k < g->n_ups; k++) {     /* removed by the reload */
        if (!g->ups[k])
            continue;
        log_notice("upstream %s: removed from the configuration", g->ups[k]->name);
        g->ups[k]->retired = true;
        upstream_put(g->ups[k]);
    }
    free(g->ups);
    g->ups = list;
    g->n_ups = cfg->n_upstreams;
    return 0;
}

int gateway_start(struct gateway **out, struct config *cfg, char *err, size_t errlen)
{
    *out = NULL;
    struct gateway *g = calloc(1, sizeof *g);
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (pthread_mutex_init(&g->lock, NULL) != 0) {
        free(g);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    g->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    g->cfg = config_ref(cfg);
    if (g->wake_fd < 0 || build_list(g, cfg, NULL, err, errlen) < 0) {
        if (g->wake_fd < 0)
            snprintf(err, errlen, "eventfd: %s", strerror(errno));
        gateway_stop(g);
        return -1;
    }
    if (cfg->n_upstreams) {
        int e = pthread_create(&g->thread, NULL, health_main, g);
        if (e) {
            snprintf(err, errlen, "cannot start the health-check thread: %s", strerror(e));
            gateway_stop(g);
            return -1;
        }
        g->thread_started = true;
    }
    *out = g;
    return 0;
}

void gateway_reconfigure(struct gateway *g, struct config *cfg)
{
    char err[300];
    pthread_mutex_lock(&g->lock);
    struct config *old = g->cfg;
    if (build_list(g, cfg, old, err, sizeof err) < 0) {
        log_error("reload: %s; upstreams keep the previous configuration", err);
        pthread_mutex_unlock(&g->lock);
        return;
    }
    g->cfg = config_ref(cfg);
    pthread_mutex_unlock(&g->lock);
    config_unref(old);
    if (cfg->n_upstreams && !g->thread_started) {
        if (pthread_create(&g->thread, NULL, health_main, g) == 0)
            g->thread_started = true;
        else
            log_error("cannot start the health-check thread");
    }
    wake(g);
}

void gateway_stop(struct gateway *g)
{
    if (!g)
        return;
    atomic_store(&g->stopping, true);
    if (g->thread_started) {
        wake(g);
        pthread_join(g->thread, NULL);
    }
    for (size_t k = 0; k < g->n_ups; k++)
        upstream_put(g->ups[k]);
    free(g->ups);
    config_unref(g->cfg);
    if (g->wake_fd >= 0)
        close(g->wake_fd);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

void gateway_stop_children(struct gateway *g)
{
    if (!g)
        return;
    pthread_mutex_lock(&g->lock);
    for (size_t k = 0; k < g->n_ups; k++) {
        struct upstream *u = g->ups[k];
        pthread_mutex_lock(&u->lock);
        struct supervisor *child = u->child;
        u->child = NULL;
        pthread_mutex_unlock(&u->lock);
        supervisor_stop(child);
    }
    pthread_mutex_unlock(&g->lock);
}

struct upstream *gateway_get(struct gateway *g, const char *name)
{
    struct upstream *found = NULL;
    pthread_mutex_lock(&g->lock);
    for (size_t k = 0; k < g->n_ups && !found; k++)
        if (strcmp(g->ups[k]->name, name) == 0) {
            found = g->ups[k];
            atomic_fetch_add(&found->refs, 1);
        }
    pthread_mutex_unlock(&g->lock);
    return found;
}
