/* metrics.c -- the process's Prometheus metrics: lock-free counters and histograms over bounded label sets, and their text exposition (format 0.0.4); front/exposition.c adds the live gauges for GET /metrics. */
#include "config.h"
#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------------ label tables */

/* Append-only: a name once published never moves or changes, so readers
 * scan [0, n) without a lock; writers serialise on mu. Slot 0 is "". */
struct ltable {
    pthread_mutex_t mu;
    atomic_int n;
    int cap;
    const char **names;     /* cap entries; each owned (strdup) except [0] */
};

static const char *model_names[METRICS_MAX_MODELS], *upstream_names[METRICS_MAX_UPSTREAMS],
    *route_names[METRICS_MAX_ROUTES], *scope_names[METRICS_MAX_SCOPES];
static struct ltable T_MODELS = {PTHREAD_MUTEX_INITIALIZER, 0, METRICS_MAX_MODELS, model_names};
static struct ltable T_UPS = {PTHREAD_MUTEX_INITIALIZER, 0, METRICS_MAX_UPSTREAMS, upstream_names};
static struct ltable T_ROUTES = {PTHREAD_MUTEX_INITIALIZER, 0, METRICS_MAX_ROUTES, route_names};
static struct ltable T_SCOPES = {PTHREAD_MUTEX_INITIALIZER, 0, METRICS_MAX_SCOPES, scope_names};

static atomic_ullong label_overflow;

static int lt_find(struct ltable *t, const char *name, int n)
{
    for (int i = 1; i < n; i++)
        if (t->names[i] == name || strcmp(t->names[i], name) == 0)
            return i;
    return -1;
}

static int lt_id(struct ltable *t, const char *name)
{
    if (!name || !*name)
        return 0;
    int n = atomic_load_explicit(&t->n, memory_order_acquire);
    int i = lt_find(t, name, n);
    if (i >= 0)
        return i;
    pthread_mutex_lock(&t->mu);
    n = atomic_load_explicit(&t->n, memory_order_relaxed);
    if (n == 0)
        t->names[n++] = "";
    i = lt_find(t, name, n);
    if (i < 0 && n < t->cap) {
        char *copy = strdup(name);
        if (copy) {
            t->names[n] = copy;
            i = n++;
        }
    }
    atomic_store_explicit(&t->n, n, memory_order_release);
    pthread_mutex_unlock(&t->mu);
    if (i < 0) {
        atomic_fetch_add_explicit(&label_overflow, 1, memory_order_relaxed);
        return 0;
    }
    return i;
}

static const char *lt_name(struct ltable *t, int id)
{
    int n = atomic_load_explicit(&t->n, memory_order_acquire);
    return id > 0 && id < n ? t->names[id] : "";
}

static int lt_count(struct ltable *t)
{
    int n = atomic_load_explicit(&t->n, memory_order_acquire);
    return n ? n : 1;
}

int metrics_model_id(const char *name)
{
    return lt_id(&T_MODELS, name);
}

int metrics_upstream_id(const char *name)
{
    return lt_id(&T_UPS, name);
}

const char *metrics_model_name(int id)
{
    return lt_name(&T_MODELS, id);
}

/* ------------------------------------------------------------------ histograms */

#define HMAX 18

struct hspec {
    const double *bounds;
    size_t nb;
    double scale;           /* sum is kept as an integer; value = sum / scale */
};

struct hist {
    atomic_ullong b[HMAX + 1];
    atomic_ullong sum;
};

static const double B_REQUEST[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};
static const double B_TTFT[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
static const double B_ITL[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
static const double B_BATCH[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
static const struct hspec H_REQUEST = {B_REQUEST, ARRAY_LEN(B_REQUEST), 1e9};
static const struct hspec H_TTFT = {B_TTFT, ARRAY_LEN(B_TTFT), 1e9};
static const struct hspec H_ITL = {B_ITL, ARRAY_LEN(B_ITL), 1e9};
static const struct hspec H_BATCH = {B_BATCH, ARRAY_LEN(B_BATCH), 1};

/* v in the histogram's integer unit (ns, or sequences) */
static void hist_observe(struct hist *h, const struct hspec *s, int64_t v)
{
    if (v < 0)
        v = 0;
    double x = (double)v / s->scale;
    size_t i = 0;
    while (i < s->nb && x > s->bounds[i])
        i++;
    atomic_fetch_add_explicit(&h->b[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum, (unsigned long long)v, memory_order_relaxed);
}

static bool hist_empty(struct hist *h, const struct hspec *s)
{
    for (size_t i = 0; i <= s->nb; i++)
        if (atomic_load_explicit(&h->b[i], memory_order_relaxed))
            return false;
    return true;
}

static void hist_render(struct strbuf *b, const char *name, const char *labels, struct hist *h, const struct hspec *s)
{
    uint64_t counts[HMAX + 1];
    for (size_t i = 0; i <= s->nb; i++)
        counts[i] = atomic_load_explicit(&h->b[i], memory_order_relaxed);
    double sum = (double)atomic_load_explicit(&h->sum, memory_order_relaxed) / s->scale;
    metrics_histogram(b, name, labels, s->bounds, s->nb, counts, sum);
}

/* ------------------------------------------------------------------ the counters */

/* Requests by (route, model, status): open addressing on a packed key,
 * claimed with a compare-and-swap. Key 0 = empty slot. */
#define REQ_SLOTS 4096
#define DUR_SLOTS 1024

struct req_slot {
    atomic_uint key;
    atomic_ullong count;
};

struct dur_slot {
    atomic_uint key;
    struct hist h;
};

struct model_stats {
    struct hist ttft, itl, batch;
    atomic_ullong prompt_tokens, generated_tokens;
    atomic_ullong classified, flagged;     /* texts through a classifier; of those, flagged by moderation */
    atomic_ullong embedded;                /* inputs embedded */
};

struct upstream_stats {
    struct hist latency;
    atomic_ullong ok, failed, retries;
};

static struct {
    struct req_slot req[REQ_SLOTS];
    struct dur_slot dur[DUR_SLOTS];
    struct model_stats model[METRICS_MAX_MODELS];
    struct upstream_stats up[METRICS_MAX_UPSTREAMS];
    atomic_ullong rate_limited[METRICS_MAX_SCOPES];
    atomic_ullong dropped;          /* samples that found no free slot */
    int64_t start_mono_ns;
    double start_unix;
} M;

void metrics_init(void)
{
    memset(&M, 0, sizeof M);    /* before threads start: plain stores are fine */
    atomic_store(&label_overflow, 0);
    M.start_mono_ns = util_now_ns();
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    M.start_unix = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint32_t mix(uint32_t k)
{
    k ^= k >> 16;
    k *= 0x7feb352dU;
    k ^= k >> 15;
    k *= 0x846ca68bU;
    k ^= k >> 16;
    return k;
}

/* The slot index of key (claimed when new), or -1 when the table is full. */
#define FIND_SLOT(table, nslots, key, out)                                                          \
    do {                                                                                            \
        uint32_t h_ = mix(key);                                                                     \
        (out) = -1;                                                                                 \
        for (uint32_t p_ = 0; p_ < (nslots); p_++) {                                                \
            uint32_t i_ = (h_ + p_) & ((nslots) - 1);                                               \
            unsigned cur_ = atomic_load_explicit(&(table)[i_].key, memory_order_acquire);           \
            if (cur_ == 0) {                                                                        \
                unsigned zero_ = 0;                                                                 \
                if (atomic_compare_exchange_strong(&(table)[i_].key, &zero_, (key))) {              \
                    (out) = (int)i_;                                                                \
                    break;                                                                          \
                }                                                                                   \
                cur_ = zero_;                                                                       \
            }                                                                                       \
            if (cur_ == (key)) {                                                                    \
                (out) = (int)i_;                                                                    \
                break;                                                                              \
            }                                                                                       \
        }                                                                                           \
    } while (0)

/* key layout: 1 (never 0) | route 6 bits | model 8 bits | status 10 bits */
static uint32_t pack(int route, int model, int status)
{
    return 1U << 31 | (uint32_t)route << 18 | (uint32_t)model << 10 | (uint32_t)status;
}

void metrics_request(const char *route, int status, int model_id, int64_t duration_ns)
{
    int rt = lt_id(&T_ROUTES, route ? route : "(none)");
    if (status < 100 || status > 999)
        status = 0;
    if (model_id < 0 || model_id >= METRICS_MAX_MODELS)
        model_id = 0;
    int i;
    uint32_t key = pack(rt, model_id, status);
    FIND_SLOT(M.req, REQ_SLOTS, key, i);
    if (i >= 0)
        atomic_fetch_add_explicit(&M.req[i].count, 1, memory_order_relaxed);
    else
        atomic_fetch_add_explicit(&M.dropped, 1, memory_order_relaxed);
    key = pack(rt, model_id, 0);
    FIND_SLOT(M.dur, DUR_SLOTS, key, i);
    if (i >= 0)
        hist_observe(&M.dur[i].h, &H_REQUEST, duration_ns);
    else
        atomic_fetch_add_explicit(&M.dropped, 1, memory_order_relaxed);
}

static struct model_stats *mstats(int id)
{
    return &M.model[id >= 0 && id < METRICS_MAX_MODELS ? id : 0];
}

void metrics_ttft(int model_id, int64_t ns)
{
    hist_observe(&mstats(model_id)->ttft, &H_TTFT, ns);
}

void metrics_itl(int model_id, int64_t ns)
{
    hist_observe(&mstats(model_id)->itl, &H_ITL, ns);
}

void metrics_tokens(int model_id, long prompt, long generated)
{
    struct model_stats *s = mstats(model_id);
    if (prompt > 0)
        atomic_fetch_add_explicit(&s->prompt_tokens, (unsigned long long)prompt, memory_order_relaxed);
    if (generated > 0)
        atomic_fetch_add_explicit(&s->generated_tokens, (unsigned long long)generated, memory_order_relaxed);
}

void metrics_classified(int model_id, long texts, long flagged)
{
    struct model_stats *s = mstats(model_id);
    if (texts > 0)
        atomic_fetch_add_explicit(&s->classified, (unsigned long long)texts, memory_order_relaxed);
    if (flagged > 0)
        atomic_fetch_add_explicit(&s->flagged, (unsigned long long)flagged, memory_order_relaxed);
}

void metrics_embedded(int model_id, long inputs)
{
    if (inputs > 0)
        atomic_fetch_add_explicit(&mstats(model_id)->embedded, (unsigned long long)inputs, memory_order_relaxed);
}

void metrics_batch(int model_id, int sequences)
{
    hist_observe(&mstats(model_id)->batch, &H_BATCH, sequences);
}

static struct upstream_stats *ustats(int id)
{
    return &M.up[id >= 0 && id < METRICS_MAX_UPSTREAMS ? id : 0];
}

void metrics_upstream_attempt(int upstream_id, bool ok, int64_t ns)
{
    struct upstream_stats *s = ustats(upstream_id);
    atomic_fetch_add_explicit(ok ? &s->ok : &s->failed, 1, memory_order_relaxed);
    hist_observe(&s->latency, &H_REQUEST, ns);
}

void metrics_upstream_retry(int upstream_id)
{
    atomic_fetch_add_explicit(&ustats(upstream_id)->retries, 1, memory_order_relaxed);
}

void metrics_rate_limited(const char *scope)
{
    int id = lt_id(&T_SCOPES, scope ? scope : "");
    atomic_fetch_add_explicit(&M.rate_limited[id], 1, memory_order_relaxed);
}

/* ------------------------------------------------------------------ exposition primitives */

size_t metrics_escape_label(char *out, size_t len, const char *v)
{
    size_t pos = 0;
    if (!len)
        return 0;
    for (; v && *v; v++) {
        const char *rep = *v == '\\' ? "\\\\" : *v == '"' ? "\\\"" : *v == '\n' ? "\\n" : NULL;
        size_t n = rep ? 2 : 1;
        if (pos + n >= len)
            break;
        if (rep)
            memcpy(out + pos, rep, 2);
        else
            out[pos] = *v;
        pos += n;
    }
    out[pos] = '\0';
    return pos;
}

void metrics_labels(char *out, size_t len, const char *const *kv)
{
    size_t pos = 0;
    if (!len)
        return;
    out[0] = '\0';
    for (size_t i = 0; kv && kv[i] && kv[i + 1]; i += 2) {
        int n = snprintf(out + pos, len - pos, "%s%s=\"", pos ? "," : "", kv[i]);
        if (n < 0 || (size_t)n >= len - pos)
            break;
        pos += (size_t)n;
        pos += metrics_escape_label(out + pos, len - pos, kv[i + 1]);
        if (pos + 1 >= len)
            break;
        out[pos++] = '"';
        out[pos] = '\0';
    }
}

void metrics_family(struct strbuf *b, const char *name, const char *type, const char *help)
{
    strbuf_puts(b, "# HELP ");
    strbuf_puts(b, name);
    strbuf_puts(b, " ");
    for (const char *p = help; *p; p++) {
        if (*p == '\\')
            strbuf_puts(b, "\\\\");
        else if (*p == '\n')
            strbuf_puts(b, "\\n");
        else
            strbuf_add(b, p, 1);
    }
    strbuf_puts(b, "\n# TYPE ");
    strbuf_puts(b, name);
    strbuf_puts(b, " ");
    strbuf_puts(b, type);
    strbuf_puts(b, "\n");
}

static void sample_head(struct strbuf *b, const char *name, const char *labels)
{
    strbuf_puts(b, name);
    if (labels && *labels) {
        strbuf_puts(b, "{");
        strbuf_puts(b, labels);
        strbuf_puts(b, "}");
    }
    strbuf_puts(b, " ");
}

static void fmt_double(char *buf, size_t len, double v)
{
    if (isnan(v))
        snprintf(buf, len, "NaN");
    else if (isinf(v))
        snprintf(buf, len, v > 0 ? "+Inf" : "-Inf");
    else
        snprintf(buf, len, "%.17g", v);
    /* %.17g of 0.1 is 0.10000000000000001: use the shortest form that reads back */
    if (isfinite(v)) {
        for (int prec = 1; prec <= 17; prec++) {
            char t[40];
            snprintf(t, sizeof t, "%.*g", prec, v);
            if (strtod(t, NULL) == v) {
                snprintf(buf, len, "%s", t);
                break;
            }
        }
    }
}

void metrics_sample(struct strbuf *b, const char *name, const char *labels, double value)
{
    char num[48];
    fmt_double(num, sizeof num, value);
    sample_head(b, name, labels);
    strbuf_puts(b, num);
    strbuf_puts(b, "\n");
}

void metrics_sample_u64(struct strbuf *b, const char *name, const char *labels, uint64_t value)
{
    char num[24];
    snprintf(num, sizeof num, "%llu", (unsigned long long)value);
    sample_head(b, name, labels);
    strbuf_puts(b, num);
    strbuf_puts(b, "\n");
}

void metrics_histogram(struct strbuf *b, const char *name, const char *labels, const double *bounds, size_t nb,
                       const uint64_t *counts, double sum)
{
    char sname[128], lab[1024], le[48];
    uint64_t cum = 0;
    bool has = labels && *labels;
    snprintf(sname, sizeof sname, "%s_bucket", name);
    for (size_t i = 0; i <= nb; i++) {
        cum += counts[i];
        if (i < nb)
            fmt_double(le, sizeof le, bounds[i]);
        else
            snprintf(le, sizeof le, "+Inf");
        snprintf(lab, sizeof lab, "%s%sle=\"%s\"", has ? labels : "", has ? "," : "", le);
        metrics_sample_u64(b, sname, lab, cum);
    }
    snprintf(sname, sizeof sname, "%s_sum", name);
    metrics_sample(b, sname, labels, sum);
    snprintf(sname, sizeof sname, "%s_count", name);
    metrics_sample_u64(b, sname, labels, cum);
}

/* ------------------------------------------------------------------ rendering */

static void render_requests(struct strbuf *b)
{
    char lab[1024], code[8];
    metrics_family(b, "llmcgi_requests_total", "counter",
                   "HTTP requests answered, by route pattern, status and model.");
    for (size_t i = 0; i < REQ_SLOTS; i++) {
        uint32_t key = atomic_load_explicit(&M.req[i].key, memory_order_acquire);
        if (!key)
            continue;
        int rt = (int)(key >> 18 & 63), model = (int)(key >> 10 & 255), status = (int)(key & 1023);
        snprintf(code, sizeof code, "%d", status);
        metrics_labels(lab, sizeof lab,
                       (const char *const[]){"route", lt_name(&T_ROUTES, rt), "status", code, "model",
                                             lt_name(&T_MODELS, model), NULL});
        metrics_sample_u64(b, "llmcgi_requests_total", lab, atomic_load_explicit(&M.req[i].count, memory_order_relaxed));
    }
    metrics_family(b, "llmcgi_request_duration_seconds", "histogram",
                   "Time from the request's arrival to its last byte, by route pattern and model.");
    for (size_t i = 0; i < DUR_SLOTS; i++) {
        uint32_t key = atomic_load_explicit(&M.dur[i].key, memory_order_acquire);
        if (!key)
            continue;
        int rt = (int)(key >> 18 & 63), model = (int)(key >> 10 & 255);
        metrics_labels(lab, sizeof lab,
                       (const char *const[]){"route", lt_name(&T_ROUTES, rt), "model", lt_name(&T_MODELS, model),
                                             NULL});
        hist_render(b, "llmcgi_request_duration_seconds", lab, &M.dur[i].h, &H_REQUEST);
    }
}

static void render_models(struct strbuf *b)
{
    char lab[600];
    int n = lt_count(&T_MODELS);
    static const struct {
        const char *name, *help;
        size_t off;
        const struct hspec *spec;
    } hs[] = {
        {"llmcgi_time_to_first_token_seconds", "Time from a local generation request's arrival to its first token.",
         offsetof(struct model_stats, ttft), &H_TTFT},
        {"llmcgi_inter_token_latency_seconds", "Time between two consecutive tokens of one local sequence.",
         offsetof(struct model_stats, itl), &H_ITL},
        {"llmcgi_batch_size", "Sequences carried by one engine step of a local model.",
         offsetof(struct model_stats, batch), &H_BATCH},
    };
    for (size_t k = 0; k < ARRAY_LEN(hs); k++) {
        metrics_family(b, hs[k].name, "histogram", hs[k].help);
        for (int i = 1; i < n; i++) {
            struct hist *h = (struct hist *)((char *)&M.model[i] + hs[k].off);
            if (hist_empty(h, hs[k].spec))
                continue;
            metrics_labels(lab, sizeof lab, (const char *const[]){"model", lt_name(&T_MODELS, i), NULL});
            hist_render(b, hs[k].name, lab, h, hs[k].spec);
        }
    }
    static const struct {
        const char *name, *help;
        size_t off;
    } cs[] = {
        {"llmcgi_prompt_tokens_total", "Prompt tokens of local generation requests.",
         offsetof(struct model_stats, prompt_tokens)},
        {"llmcgi_generation_tokens_total", "Tokens generated by local models.",
         offsetof(struct model_stats, generated_tokens)},
        {"llmcgi_classified_texts_total",
         "Texts classified by local sequence classifiers (/classify, /v1/moderations, input_text).",
         offsetof(struct model_stats, classified)},
        {"llmcgi_flagged_texts_total", "Texts a local moderation model flagged.", offsetof(struct model_stats, flagged)},
        {"llmcgi_embedded_inputs_total", "Inputs embedded by local models (/v1/embeddings).",
         offsetof(struct model_stats, embedded)},
    };
    for (size_t k = 0; k < ARRAY_LEN(cs); k++) {
        metrics_family(b, cs[k].name, "counter", cs[k].help);
        for (int i = 1; i < n; i++) {
            atomic_ullong *c = (atomic_ullong *)((char *)&M.model[i] + cs[k].off);
            metrics_labels(lab, sizeof lab, (const char *const[]){"model", lt_name(&T_MODELS, i), NULL});
            metrics_sample_u64(b, cs[k].name, lab, atomic_load(c));
        }
    }
}

static void render_upstream_counters(struct strbuf *b)
{
    char lab[600];
    int n = lt_count(&T_UPS);
    metrics_family(b, "llmcgi_upstream_requests_total", "counter",
                   "Attempts sent to upstream replicas, by result (ok: an answer came back; error: connect, "
                   "timeout or server failure).");
    for (int i = 1; i < n; i++) {
        const char *name = lt_name(&T_UPS, i);
        metrics_labels(lab, sizeof lab, (const char *const[]){"upstream", name, "result", "ok", NULL});
        metrics_sample_u64(b, "llmcgi_upstream_requests_total", lab, atomic_load(&M.up[i].ok));
        metrics_labels(lab, sizeof lab, (const char *const[]){"upstream", name, "result", "error", NULL});
        metrics_sample_u64(b, "llmcgi_upstream_requests_total", lab, atomic_load(&M.up[i].failed));
    }
    metrics_family(b, "llmcgi_upstream_retries_total", "counter",
                   "Attempts beyond the first for one client request (retries and failovers).");
    for (int i = 1; i < n; i++) {
        metrics_labels(lab, sizeof lab, (const char *const[]){"upstream", lt_name(&T_UPS, i), NULL});
        metrics_sample_u64(b, "llmcgi_upstream_retries_total", lab, atomic_load(&M.up[i].retries));
    }
    metrics_family(b, "llmcgi_upstream_request_duration_seconds", "histogram",
                   "Duration of one attempt to an upstream replica, to its last byte.");
    for (int i = 1; i < n; i++) {
        if (hist_empty(&M.up[i].latency, &H_REQUEST))
            continue;
        metrics_labels(lab, sizeof lab, (const char *const[]){"upstream", lt_name(&T_UPS, i), NULL});
        hist_render(b, "llmcgi_upstream_request_duration_seconds", lab, &M.up[i].latency, &H_REQUEST);
    }
}

static void render_misc(struct strbuf *b)
{
    char lab[300];
    metrics_family(b, "llmcgi_rate_limited_total", "counter", "Requests refused by a rate limit, by limit.");
    int n = lt_count(&T_SCOPES);
    for (int i = 1; i < n; i++) {
        metrics_labels(lab, sizeof lab, (const char *const[]){"scope", lt_name(&T_SCOPES, i), NULL});
        metrics_sample_u64(b, "llmcgi_rate_limited_total", lab, atomic_load(&M.rate_limited[i]));
    }
    metrics_family(b, "llmcgi_metrics_label_overflow_total", "counter",
                   "Samples recorded without their label value because a label table was full.");
    metrics_sample_u64(b, "llmcgi_metrics_label_overflow_total", NULL,
                       atomic_load(&label_overflow) + atomic_load(&M.dropped));
    metrics_family(b, "llmcgi_build_info", "gauge", "Always 1; the labels say which llmcgi this is.");
    metrics_labels(lab, sizeof lab, (const char *const[]){"version", PACKAGE_VERSION, NULL});
    metrics_sample(b, "llmcgi_build_info", lab, 1);
    metrics_family(b, "llmcgi_start_time_seconds", "gauge", "When the process started, in seconds since the epoch.");
    metrics_sample(b, "llmcgi_start_time_seconds", NULL, M.start_unix);
    metrics_family(b, "llmcgi_uptime_seconds", "gauge", "Seconds since the process started.");
    metrics_sample(b, "llmcgi_uptime_seconds", NULL, (double)(util_now_ns() - M.start_mono_ns) / 1e9);
}

void metrics_render_counters(struct strbuf *out)
{
    render_requests(out);
    render_models(out);
    render_upstream_counters(out);
    render_misc(out);
}
