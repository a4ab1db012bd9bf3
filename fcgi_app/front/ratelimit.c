/* ratelimit.c -- requests/min and tokens/min token buckets per API key and per client address, 429 + x-ratelimit-* headers.
 *
 * Who is limited ("subjects"): a request with an API key by its key's
 * bucket (the key's own limits, else [limits] requests_per_minute /
 * tokens_per_minute); a request without one (no [auth]) by its address's
 * bucket with those same limits; and, when [limits]
 * address_requests_per_minute / address_tokens_per_minute are set, every
 * request by its address on top. A bucket holds one minute's allowance and
 * refills continuously. Tokens are reserved at admission (an estimate of the
 * prompt plus the most it may generate) and corrected when the handler
 * reports what was used. */
#include "config.h"
#include "ratelimit.h"
#include "auth.h"
#include "log.h"
#include "metrics.h"
#include "response.h"
#include "server.h"
#include "util.h"

#include <arpa/inet.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define SLOTS 16384                 /* hash slots; chains stay short up to ~100k clients */
#define NAME_MAX_LEN 96

/* ------------------------------------------------------------------ addresses */

/* An IPv6 client is its /64: one host usually holds a whole /64 and can
 * take any address in it, so per-address limits count the prefix. */
static void limit_identity(char *out, size_t outlen)
{
    int family;
    unsigned char a[16];
    char text[INET6_ADDRSTRLEN];
    if (!cidr_parse_addr(out, &family, a) || family != AF_INET6)
        return;
    memset(a + 8, 0, 8);
    if (inet_ntop(AF_INET6, a, text, sizeof text))
        snprintf(out, outlen, "%s/64", text);
}

static void client_addr(const struct config *cfg, const char *remote, const char *xff, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s", remote && *remote ? remote : "-");
    if (!xff || !*xff || !cfg->n_trusted_proxies || !cidr_list_contains(cfg->trusted_proxies, cfg->n_trusted_proxies, remote))
        return;
    /* From the right: each hop added the address it received from. */
    const char *end = xff + strlen(xff);
    while (end > xff) {
        const char *start = end;
        while (start > xff && start[-1] != ',')
            start--;
        const char *a = start, *b = end;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        char hop[64];
        int family;
        unsigned char bin[16];
        if ((size_t)(b - a) >= sizeof hop)
            return;
        memcpy(hop, a, (size_t)(b - a));
        hop[b - a] = '\0';
        if (!cidr_parse_addr(hop, &family, bin))
            return;                         /* garbage: keep the last address we could trust */
        snprintf(out, outlen, "%s", hop);
        if (!cidr_list_contains(cfg->trusted_proxies, cfg->n_trusted_proxies, hop))
            return;
        end = start > xff ? start - 1 : xff;
    }
}

void ratelimit_client_addr(const struct config *cfg, const char *remote, const char *xff, char *out, size_t outlen)
{
    client_addr(cfg, remote, xff, out, outlen);
    limit_identity(out, outlen);
}

/* ------------------------------------------------------------------ bucket arithmetic */

void bucket_init(struct bucket *b, long per_minute, int64_t now_ns)
{
    b->level = (double)per_minute;
    b->at_ns = now_ns;
}

void bucket_refill(struct bucket *b, long per_minute, int64_t now_ns)
{
    if (now_ns > b->at_ns) {
        b->level += (double)(now_ns - b->at_ns) * (double)per_minute / 60e9;
        b->at_ns = now_ns;
    }
    if (b->level > (double)per_minute)
        b->level = (double)per_minute;
}

bool bucket_take(struct bucket *b, long per_minute, double n, int64_t now_ns, double *wait_s)
{
    bucket_refill(b, per_minute, now_ns);
    double need = n < (double)per_minute ? n : (double)per_minute;
    if (b->level + 1e-9 >= need) {
        b->level -= n;
        *wait_s = 0;
        return true;
    }
    *wait_s = (need - b->level) * 60.0 / (double)per_minute;
    return false;
}

void bucket_give(struct bucket *b, long per_minute, double n, int64_t now_ns)
{
    bucket_refill(b, per_minute, now_ns);
    b->level += n;
    if (b->level > (double)per_minute)
        b->level = (double)per_minute;
}

double bucket_reset_s(const struct bucket *b, long per_minute, int64_t now_ns)
{
    struct bucket t = *b;
    bucket_refill(&t, per_minute, now_ns);
    return per_minute > 0 ? ((double)per_minute - t.level) * 60.0 / (double)per_minute : 0;
}

void ratelimit_format_reset(double seconds, char *out, size_t outlen)
{
    if (seconds <= 0) {
        snprintf(out, outlen, "0s");
        return;
    }
    if (seconds < 1) {
        snprintf(out, outlen, "%ldms", (long)ceil(seconds * 1000));
        return;
    }
    long s = (long)ceil(seconds - 1e-9);
    if (s < 60)
        snprintf(out, outlen, "%lds", s);
    else if (s < 3600)
        snprintf(out, outlen, "%ldm%lds", s / 60, s % 60);
    else
        snprintf(out, outlen, "%ldh%ldm%lds", s / 3600, s / 60 % 60, s % 60);
}

/* ------------------------------------------------------------------ the table */

struct entry {
    struct entry *hnext;            /* hash chain */
    struct entry *prev, *next;      /* recency list: head = most recent */
    uint64_t hash;
    struct bucket req, tok;
    long req_pm, tok_pm;            /* the limits it was last used with */
    char name[];
};

struct ratelimit {
    pthread_mutex_t lock;
    struct entry *slots[SLOTS];
    struct entry *head, *tail;
    size_t n;
};

struct ratelimit *ratelimit_new(void)
{
    struct ratelimit *rl = calloc(1, sizeof *rl);
    if (rl && pthread_mutex_init(&rl->lock, NULL) != 0) {
        free(rl);
        return NULL;
    }
    return rl;
}

void ratelimit_free(struct ratelimit *rl)
{
    if (!rl)
        return;
    for (struct entry *e = rl->head, *next; e; e = next) {
        next = e->next;
        free(e);
    }
    pthread_mutex_destroy(&rl->lock);
    free(rl);
}

size_t ratelimit_tracked(struct ratelimit *rl)
{
    pthread_mutex_lock(&rl->lock);
    size_t n = rl->n;
    pthread_mutex_unlock(&rl->lock);
    return n;
}

static uint64_t hash_name(const char *s)
{
    uint64_t h = 1469598103934665603ULL;        /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static void list_unlink(struct ratelimit *rl, struct entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        rl->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        rl->tail = e->prev;
    e->prev = e->next = NULL;
}

static void list_push(struct ratelimit *rl, struct entry *e)
{
    e->prev = NULL;
    e->next = rl->head;
    if (rl->head)
        rl->head->prev = e;
    rl->head = e;
    if (!rl->tail)
        rl->tail = e;
}

static void drop(struct ratelimit *rl, struct entry *e)
{
    struct entry **pp = &rl->slots[e->hash % SLOTS];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    list_unlink(rl, e);
    free(e);
    rl->n--;
}

/* An entry whose buckets are full again knows nothing a new one would not. */
static bool idle_full(struct entry *e, int64_t now)
{
    bucket_refill(&e->req, e->req_pm, now);
    bucket_refill(&e->tok, e->tok_pm, now);
    return e->req.level >= (double)e->req_pm && e->tok.level >= (double)e->tok_pm;
}

/* The entry called name, or NULL; unlike get(), it makes none. Lock held. */
static struct entry *find(struct ratelimit *rl, const char *name)
{
    uint64_t h = hash_name(name);
    struct entry *e = rl->slots[h % SLOTS];
    while (e && (e->hash != h || strcmp(e->name, name) != 0))
        e = e->hnext;
    return e;
}

/* The entry called name (made when missing), most recent now. Lock held. */
static struct entry *get(struct ratelimit *rl, const char *name, long req_pm, long tok_pm, long max, int64_t now)
{
    uint64_t h = hash_name(name);
    struct entry *e = find(rl, name);
    /* the least recent ones that refilled completely go (a few per call) */
    for (int i = 0; i < 4 && rl->tail && rl->tail != e && idle_full(rl->tail, now); i++)
        drop(rl, rl->tail);
    if (e) {
        list_unlink(rl, e);
        list_push(rl, e);
    } else {
        while (rl->n >= (size_t)(max > 0 ? max : 1) && rl->tail)
            drop(rl, rl->tail);
        size_t len = strlen(name) + 1;
        e = malloc(sizeof *e + len);
        if (!e)
            return NULL;
        memcpy(e->name, name, len);
        e->hash = h;
        bucket_init(&e->req, req_pm, now);
        bucket_init(&e->tok, tok_pm, now);
        e->hnext = rl->slots[h % SLOTS];
        rl->slots[h % SLOTS] = e;
        list_push(rl, e);
        rl->n++;
    }
    e->req_pm = req_pm;
    e->tok_pm = tok_pm;
    return e;
}

/* ------------------------------------------------------------------ requests */

struct subject {
    char name[NAME_MAX_LEN + 8];
    const char *what;               /* for messages: "API key \"x\"", "address 1.2.3.4" */
    char what_buf[NAME_MAX_LEN + 24];
    long rpm, tpm;
};

static size_t subjects(const struct req *r, struct subject s[2])
{
    const struct config *c = r->cfg;
    size_t n = 0;
    if (r->key) {
        long rpm = r->key->requests_per_minute >= 0 ? r->key->requests_per_minute : c->requests_per_minute;
        long tpm = r->key->tokens_per_minute >= 0 ? r->key->tokens_per_minute : c->tokens_per_minute;
        if (rpm || tpm) {
            snprintf(s[n].name, sizeof s[n].name, "k:%s", r->key->name);
            snprintf(s[n].what_buf, sizeof s[n].what_buf, "API key \"%s\"", r->key->name);
            s[n].rpm = rpm, s[n].tpm = tpm;
            n++;
        }
    } else if (c->requests_per_minute || c->tokens_per_minute) {
        snprintf(s[n].name, sizeof s[n].name, "a:%s", r->client);
        snprintf(s[n].what_buf, sizeof s[n].what_buf, "address %s", r->client);
        s[n].rpm = c->requests_per_minute, s[n].tpm = c->tokens_per_minute;
        n++;
    }
    if (c->address_requests_per_minute || c->address_tokens_per_minute) {
        snprintf(s[n].name, sizeof s[n].name, "x:%s", r->client);
        snprintf(s[n].what_buf, sizeof s[n].what_buf, "address %s", r->client);
        s[n].rpm = c->address_requests_per_minute, s[n].tpm = c->address_tokens_per_minute;
        n++;
    }
    for (size_t i = 0; i < n; i++)
        s[i].what = s[i].what_buf;
    return n;
}

static void limit_headers(struct req *r, const char *kind, long pm, const struct bucket *b, int64_t now)
{
    char reset[32];
    struct bucket t = *b;
    bucket_refill(&t, pm, now);
    ratelimit_format_reset(bucket_reset_s(&t, pm, now), reset, sizeof reset);
    resp_header(r, kind[0] == 'r' ? "x-ratelimit-limit-requests" : "x-ratelimit-limit-tokens", "%ld", pm);
    resp_header(r, kind[0] == 'r' ? "x-ratelimit-remaining-requests" : "x-ratelimit-remaining-tokens", "%ld",
                t.level > 0 ? (long)floor(t.level + 1e-9) : 0L);
    resp_header(r, kind[0] == 'r' ? "x-ratelimit-reset-requests" : "x-ratelimit-reset-tokens", "%s", reset);
}

/* kind: "requests", "tokens" or "auth_failures" (also the metrics label value) */
static enum front_rc too_many(struct req *r, const struct subject *s, const char *kind, long pm, double wait_s, double asked)
{
    long after = (long)ceil(wait_s);
    if (after < 1)
        after = 1;
    resp_header(r, "Retry-After", "%ld", after);
    char msg[400];
    if (kind[0] == 'a')
        snprintf(msg, sizeof msg, "Too many wrong API keys: %s may try %ld per minute; try again in %lds",
                 s->what, pm, after);
    else if (kind[0] == 'r')
        snprintf(msg, sizeof msg, "Rate limit reached for requests: %s may make %ld per minute; try again in %lds",
                 s->what, pm, after);
    else
        snprintf(msg, sizeof msg, "Rate limit reached for tokens: %s may use %ld per minute, this request needs "
                 "up to %.0f; try again in %lds", s->what, pm, asked, after);
    log_info("request %s: 429: %s", r->id, msg);
    metrics_rate_limited(kind);                 /* "requests" or "tokens": a fixed label value */
    if (r->dialect == DIALECT_OPENAI)
        resp_error_openai(r, 429, "rate_limit_error", NULL, kind[0] == 't' ? "tokens_exceeded" : "rate_limit_exceeded",
                          "%s", msg);
    else
        resp_error_tgi(r, 429, "overloaded", "%s", msg);
    return FRONT_ANSWERED;
}

/* Takes `n` of kind ("requests"/"tokens") from every subject, or none. */
static enum front_rc take_all(struct req *r, const char *kind, double n)
{
    struct subject s[2];
    size_t ns = subjects(r, s);
    struct ratelimit *rl = r->srv->rl;
    if (!ns || !rl)
        return FRONT_OK;
    bool req = kind[0] == 'r';
    int64_t now = util_now_ns();
    struct entry *got[2] = {0};
    enum front_rc rc = FRONT_OK;
    pthread_mutex_lock(&rl->lock);
    size_t i;
    for (i = 0; i < ns; i++) {
        long pm = req ? s[i].rpm : s[i].tpm;
        if (!pm)
            continue;
        struct entry *e = get(rl, s[i].name, s[i].rpm, s[i].tpm, r->cfg->max_clients, now);
        if (!e)
            continue;                       /* out of memory: let it through rather than fail */
        double wait;
        if (!bucket_take(req ? &e->req : &e->tok, pm, n, now, &wait)) {
            limit_headers(r, kind, pm, req ? &e->req : &e->tok, now);
            rc = too_many(r, &s[i], kind, pm, wait, n);
            break;
        }
        got[i] = e;
    }
    if (rc != FRONT_OK) {
        for (size_t j = 0; j < i; j++)
            if (got[j])
                bucket_give(req ? &got[j]->req : &got[j]->tok, req ? s[j].rpm : s[j].tpm, n, now);
    } else {
        for (size_t j = 0; j < ns; j++)
            if (got[j]) {
                limit_headers(r, kind, req ? s[j].rpm : s[j].tpm, req ? &got[j]->req : &got[j]->tok, now);
                break;                      /* the headers speak of the first limit (the key's) */
            }
    }
    pthread_mutex_unlock(&rl->lock);
    return rc;
}

enum front_rc ratelimit_admit(struct req *r)
{
    if (auth_path_public(r->cfg, r->path))
        return FRONT_OK;
    return take_all(r, "requests", 1);
}

/* Are wrong keys counted for r (a limit, keys, and a path that needs one)? */
static bool auth_limited(const struct req *r)
{
    return r->cfg->auth_failures_per_minute && r->cfg->keys && r->srv->rl && !auth_path_public(r->cfg, r->path);
}

/* The address's bucket of wrong keys ("f:ADDR": its req bucket, no tokens),
 * made when `make` (a wrong key to count); without `make`, NULL when the
 * address has sent none. auth_limited(r); lock held. */
static struct entry *auth_entry(struct req *r, int64_t now, bool make)
{
    char name[NAME_MAX_LEN + 8];
    snprintf(name, sizeof name, "f:%s", r->client);
    return make ? get(r->srv->rl, name, r->cfg->auth_failures_per_minute, 0, r->cfg->max_clients, now)
                : find(r->srv->rl, name);
}

enum front_rc ratelimit_auth_blocked(struct req *r)
{
    if (!auth_limited(r))
        return FRONT_OK;
    long pm = r->cfg->auth_failures_per_minute;
    int64_t now = util_now_ns();
    double wait = 0;
    pthread_mutex_lock(&r->srv->rl->lock);
    struct entry *e = auth_entry(r, now, false);
    bool blocked = false;
    if (e) {
        bucket_refill(&e->req, pm, now);
        if (e->req.level < 1.0 - 1e-9) {
            blocked = true;
            wait = (1.0 - e->req.level) * 60.0 / (double)pm;
        }
    }
    pthread_mutex_unlock(&r->srv->rl->lock);
    if (!blocked)
        return FRONT_OK;
    struct subject s;
    snprintf(s.what_buf, sizeof s.what_buf, "address %s", r->client);
    s.what = s.what_buf;
    return too_many(r, &s, "auth_failures", pm, wait, 1);
}

void ratelimit_auth_failed(struct req *r)
{
    if (!auth_limited(r))
        return;
    int64_t now = util_now_ns();
    double wait;
    pthread_mutex_lock(&r->srv->rl->lock);
    struct entry *e = auth_entry(r, now, true);
    if (e)
        bucket_take(&e->req, r->cfg->auth_failures_per_minute, 1, now, &wait);
    pthread_mutex_unlock(&r->srv->rl->lock);
}

enum front_rc ratelimit_reserve(struct req *r, long prompt_estimate, long tokens)
{
    if (tokens < 1)
        tokens = 1;
    if (take_all(r, "tokens", (double)tokens) != FRONT_OK)
        return FRONT_ANSWERED;
    r->tokens_reserved = tokens;
    r->prompt_estimate = prompt_estimate;
    return FRONT_OK;
}

void ratelimit_finish(struct req *r)
{
    if (r->tokens_reserved <= 0 || !r->srv->rl)
        return;
    long used;
    if (r->tokens_out >= 0)
        used = (r->tokens_in >= 0 ? r->tokens_in : r->prompt_estimate) + r->tokens_out;
    else if (r->status >= 400 || (r->client_gone && !r->status))
        used = 0;                           /* refused, failed or abandoned before generating */
    else
        return;                             /* not known: the reservation stands */
    double back = (double)(r->tokens_reserved - used);
    r->tokens_reserved = 0;
    if (back == 0)
        return;
    struct subject s[2];
    size_t ns = subjects(r, s);
    int64_t now = util_now_ns();
    pthread_mutex_lock(&r->srv->rl->lock);
    for (size_t i = 0; i < ns; i++) {
        if (!s[i].tpm)
            continue;
        struct entry *e = get(r->srv->rl, s[i].name, s[i].rpm, s[i].tpm, r->cfg->max_clients, now);
        if (e)
            bucket_give(&e->tok, s[i].tpm, back, now);
    }
    pthread_mutex_unlock(&r->srv->rl->lock);
}
