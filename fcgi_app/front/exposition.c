/* exposition.c -- what GET /metrics serves: the counters of metrics.c, then the live gauges of the responder threads, the local models (registry) and the upstreams (gateway), read as typed structs. */
#include "config.h"
#include "exposition.h"
#include "conf.h"
#include "constraint_cache.h"
#include "gateway.h"
#include "metrics.h"
#include "registry.h"
#include "server.h"
#include "util.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>


static void render_server(struct strbuf *b, struct server *srv)
{
    int busy = atomic_load(&srv->busy);
    char lab[200];
    metrics_family(b, "llmcgi_responder_threads", "gauge", "Responder threads, by state.");
    metrics_labels(lab, sizeof lab, (const char *const[]){"state", "busy", NULL});
    metrics_sample(b, "llmcgi_responder_threads", lab, busy);
    metrics_labels(lab, sizeof lab, (const char *const[]){"state", "idle", NULL});
    metrics_sample(b, "llmcgi_responder_threads", lab, srv->threads > busy ? srv->threads - busy : 0);
    metrics_family(b, "llmcgi_requests_in_flight", "gauge", "Requests being answered now.");
    metrics_sample(b, "llmcgi_requests_in_flight", NULL, busy);
    metrics_family(b, "llmcgi_connections_accepted_total", "counter", "FastCGI connections accepted.");
    metrics_sample_u64(b, "llmcgi_connections_accepted_total", NULL, atomic_load(&srv->connections));
}

/* The local models in memory, read from the registry now. */
static void render_local(struct strbuf *b, struct server *srv)
{
    struct registry_model_stats *all = NULL;
    size_t n = 0;
    if (srv->reg && registry_stats(srv->reg, &all, &n) < 0)
        n = 0;
    char lab[600];
    enum { INT, U64, SIZE, FREE };  /* how a field of struct engine_stats is read */
    static const struct {
        const char *name, *help;
        int kind;
        size_t off;                 /* of the field in struct engine_stats (FREE: computed) */
    } gs[] = {
        {"llmcgi_queue_depth", "Sequences waiting to join a local model's running batch.", INT,
         offsetof(struct engine_stats, queued)},
        {"llmcgi_running_sequences", "Sequences in a local model's running batch.", INT,
         offsetof(struct engine_stats, running)},
        {"llmcgi_kv_blocks_used", "KV-cache blocks held by sequences of a local model.", INT,
         offsetof(struct engine_stats, kv_blocks_used)},
        {"llmcgi_kv_blocks_free", "KV-cache blocks free in a local model's pool.", FREE, 0},
        {"llmcgi_prefix_cache_blocks",
         "KV-cache blocks a local model's prefix cache keeps, held by no sequence (counted free: taken back on demand).",
         INT, offsetof(struct engine_stats, kv_blocks_cached)},
        {"llmcgi_prefix_cache_queries_total", "Prompt tokens looked up in a local model's prefix cache.", U64,
         offsetof(struct engine_stats, prefix_cache_queries)},
        {"llmcgi_prefix_cache_hits_total", "Prompt tokens found in a local model's prefix cache (prefill skipped).",
         U64, offsetof(struct engine_stats, prefix_cache_hits)},
        {"llmcgi_mask_cache_hits_total",
         "Constrained decoding steps whose allowed-token mask a local model had kept (mask_cache).", U64,
         offsetof(struct engine_stats, mask_cache_hits)},
        {"llmcgi_mask_cache_walks_total",
         "Allowed-token masks a local model computed by walking its vocabulary (not kept, or put out).", U64,
         offsetof(struct engine_stats, mask_cache_walks)},
        {"llmcgi_mask_cache_bytes", "Bytes of allowed-token masks a local model keeps now (at most mask_cache).",
         SIZE, offsetof(struct engine_stats, mask_cache_bytes)},
    };
    for (size_t k = 0; k < ARRAY_LEN(gs); k++) {
        metrics_family(b, gs[k].name, gs[k].kind == U64 ? "counter" : "gauge", gs[k].help);
        for (size_t i = 0; i < n; i++) {
            if (all[i].state != REGISTRY_READY)
                continue;
            const struct engine_stats *st = &all[i].engine;
            const char *field = (const char *)st + gs[k].off;
            metrics_labels(lab, sizeof lab, (const char *const[]){"model", all[i].name, NULL});
            if (gs[k].kind == U64)
                metrics_sample_u64(b, gs[k].name, lab, *(const uint64_t *)(const void *)field);
            else if (gs[k].kind == SIZE)
                metrics_sample_u64(b, gs[k].name, lab, *(const size_t *)(const void *)field);
            else
                metrics_sample(b, gs[k].name, lab,
                               gs[k].kind == FREE ? (double)st->kv_blocks_total - st->kv_blocks_used
                                                  : (double)*(const int *)(const void *)field);
        }
    }
    static const char *const states[] = {"loading", "ready", "failed"};
    static const enum registry_state codes[] = {REGISTRY_LOADING, REGISTRY_READY, REGISTRY_FAILED};
    metrics_family(b, "llmcgi_model_state", "gauge", "1 for the state each local model in memory is in, else 0.");
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < ARRAY_LEN(states); k++) {
            metrics_labels(lab, sizeof lab, (const char *const[]){"model", all[i].name, "state", states[k], NULL});
            metrics_sample(b, "llmcgi_model_state", lab, all[i].state == codes[k]);
        }
    }
    registry_stats_free(all, n);
}

/* The compiled constraints every local model's requests share (constraint_cache). */
static void render_constraints(struct strbuf *b, struct server *srv)
{
    struct ccache_stats st;
    ccache_get_stats(srv->reg ? registry_constraints(srv->reg) : NULL, &st);
    static const struct {
        const char *name, *type, *help;
        size_t off;
    } cs[] = {
        {"llmcgi_constraint_cache_hits_total", "counter",
         "Structured-output constraints (schema, regex, choice) found compiled in the constraint cache.",
         offsetof(struct ccache_stats, hits)},
        {"llmcgi_constraint_cache_misses_total", "counter", "Structured-output constraints compiled anew.",
         offsetof(struct ccache_stats, misses)},
        {"llmcgi_constraint_cache_evictions_total", "counter",
         "Compiled constraints put out of the cache to stay within constraint_cache.",
         offsetof(struct ccache_stats, evictions)},
    };
    for (size_t k = 0; k < ARRAY_LEN(cs); k++) {
        metrics_family(b, cs[k].name, cs[k].type, cs[k].help);
        metrics_sample_u64(b, cs[k].name, NULL, *(const uint64_t *)(const void *)((const char *)&st + cs[k].off));
    }
    metrics_family(b, "llmcgi_constraint_cache_bytes", "gauge",
                   "Bytes the compiled constraints kept take now (at most constraint_cache).");
    metrics_sample_u64(b, "llmcgi_constraint_cache_bytes", NULL, st.bytes);
    metrics_family(b, "llmcgi_constraint_cache_entries", "gauge", "Compiled constraints kept now.");
    metrics_sample_u64(b, "llmcgi_constraint_cache_entries", NULL, st.entries);
}

/* The upstreams of cfg, read from the gateway now. */
static void render_upstreams(struct strbuf *b, struct server *srv, const struct config *cfg)
{
    size_t n = srv->gw && cfg ? cfg->n_upstreams : 0;
    struct upstream_gauges *g = calloc(n ? n : 1, sizeof *g);
    bool *have = calloc(n ? n : 1, sizeof *have);
    char lab[600], idx[16];
    if (!g || !have)
        n = 0;
    for (size_t i = 0; i < n; i++) {
        struct upstream *u = gateway_get(srv->gw, cfg->upstreams[i].name);
        if (u) {
            upstream_get_gauges(u, &g[i]);
            have[i] = true;
            upstream_put(u);
        }
    }
    metrics_family(b, "llmcgi_upstream_replica_up", "gauge",
                   "1 while an upstream replica is in rotation (health checks pass), else 0.");
    for (size_t i = 0; i < n; i++) {
        if (!have[i])
            continue;
        for (size_t k = 0; k < g[i].n_replicas; k++) {
            snprintf(idx, sizeof idx, "%zu", k);
            metrics_labels(lab, sizeof lab,
                           (const char *const[]){"upstream", cfg->upstreams[i].name, "replica", idx, NULL});
            metrics_sample(b, "llmcgi_upstream_replica_up", lab, g[i].up[k]);
        }
    }
    metrics_family(b, "llmcgi_upstream_in_flight", "gauge", "Requests holding a slot of an upstream now.");
    for (size_t i = 0; i < n; i++) {
        if (!have[i])
            continue;
        metrics_labels(lab, sizeof lab, (const char *const[]){"upstream", cfg->upstreams[i].name, NULL});
        metrics_sample(b, "llmcgi_upstream_in_flight", lab, (double)g[i].in_flight);
    }
    free(g);
    free(have);
}

void metrics_render(struct strbuf *out, struct server *srv, const struct config *cfg)
{
    metrics_render_counters(out);
    if (!srv)
        return;
    render_server(out, srv);
    render_local(out, srv);
    render_constraints(out, srv);
    render_upstreams(out, srv, cfg);
}
