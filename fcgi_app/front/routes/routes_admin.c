/* routes_admin.c -- the server's own endpoints: GET /health, GET /v1/models, GET /v1/models/{id}, GET /metrics, GET /status. */
#include "config.h"
#include "routes_admin.h"
#include "auth.h"
#include "catalog.h"
#include "conf.h"
#include "gateway.h"
#include "exposition.h"
#include "metrics.h"
#include "registry.h"
#include "response.h"
#include "server.h"
#include "util.h"

#include <json-c/json.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Sends obj (and frees it); a NULL obj means an allocation failed. */
static int send_owned(struct req *r, json_object *obj)
{
    if (!obj)
        return resp_error(r, 500, "out of memory");
    int rc = resp_json(r, 200, obj);
    json_object_put(obj);
    return rc;
}

/* 200 with what a load balancer or an operator wants to know at a glance. */
int route_health(struct req *r)
{
    struct server *srv = r->srv;
    json_object *o = json_object_new_object(), *threads = json_object_new_object(),
                *models = json_object_new_object(), *cuda = json_object_new_object();
    if (!o || !threads || !models || !cuda) {
        json_object_put(o);
        json_object_put(threads);
        json_object_put(models);
        json_object_put(cuda);
        return send_owned(r, NULL);
    }
    json_object_object_add(o, "status", json_object_new_string("ok"));
    json_object_object_add(o, "version", json_object_new_string(PACKAGE_VERSION));
    json_object_object_add(o, "uptime_seconds",
                           json_object_new_int64((util_now_ns() - srv->started_ns) / 1000000000));
    json_object_object_add(threads, "total", json_object_new_int(srv->threads));
    json_object_object_add(threads, "busy", json_object_new_int(atomic_load(&srv->busy)));
    json_object_object_add(o, "threads", threads);
    json_object_object_add(o, "requests", json_object_new_uint64(atomic_load(&srv->requests)));
    json_object_object_add(o, "connections", json_object_new_uint64(atomic_load(&srv->connections)));
    json_object_object_add(models, "configured", json_object_new_int((int)r->cfg->n_models));
    json_object_object_add(o, "models", models);
    json_object_object_add(models, "on_demand", json_object_new_boolean(r->cfg->models_dir != NULL));  /* not its path: /status has paths */
    json_object_object_add(cuda, "built", json_object_new_boolean(srv->gpu.built));
    json_object_object_add(cuda, "devices", json_object_new_int(srv->gpu.devices));
    if (srv->gpu.devices > 0)
        json_object_object_add(cuda, "device", json_object_new_string(srv->gpu.name));
    else if (srv->gpu.error[0])
        json_object_object_add(cuda, "error", json_object_new_string(srv->gpu.error));
    json_object_object_add(o, "cuda", cuda);
    const char *why = "unavailable";
    bool local_ok = local_health(r, o, &why);   /* the default model still loading: not ready */
    if (!gateway_health(r, o) || !local_ok) {   /* upstreams configured, none reachable: not ready */
        json_object_object_add(o, "status", json_object_new_string(why));
        resp_header(r, "Retry-After", "1");
        int rc = resp_json(r, 503, o);
        json_object_put(o);
        return rc;
    }
    return send_owned(r, o);
}

static json_object *model_object(const struct config *cfg, const struct config_model *m)
{
    json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    json_object_object_add(o, "id", json_object_new_string(m->name));
    json_object_object_add(o, "object", json_object_new_string("model"));
    json_object_object_add(o, "created", json_object_new_int64((int64_t)cfg->loaded_at));
    json_object_object_add(o, "owned_by", json_object_new_string("llmcgi"));
    return o;
}

/* The OpenAI model list, from the [model NAME] sections of the config. */
int route_models(struct req *r)
{
    json_object *o = json_object_new_object(), *data = json_object_new_array();
    if (!o || !data) {
        json_object_put(o);
        json_object_put(data);
        return send_owned(r, NULL);
    }
    json_object_object_add(o, "object", json_object_new_string("list"));
    local_list_models(r, data, false);
    upstream_list_models(r, data, false);
    auth_filter_models(r->key, data);           /* a key sees only the models it may use */
    json_object_object_add(o, "data", data);
    return send_owned(r, o);
}

int route_model(struct req *r)
{
    const char *id = req_param(r, "id");
    json_object *data = json_object_new_array();
    if (!data)
        return send_owned(r, NULL);
    if (id && local_serves(r, id)) {
        local_list_models(r, data, false);
        if (!model_list_find(data, id)) {       /* a model directory beyond the listing's reach */
            json_object *one = model_object(r->cfg, &(struct config_model){.name = (char *)id});
            if (one)
                json_object_array_add(data, one);
        }
    } else {
        upstream_list_models(r, data, false);
    }
    auth_filter_models(r->key, data);           /* another key's model "does not exist" for this one */
    json_object *found = json_object_get(model_list_find(data, id));
    json_object_put(data);
    if (found)
        return send_owned(r, found);
    return resp_model_not_found(r, id);
}

/* ------------------------------------------------------------------ /metrics, /status
 *
 * Both are operator endpoints (ROUTE_OPS in the route table): whether they
 * need an API key is decided by [auth] before the router runs; these
 * handlers assume the caller may see them. Neither shows secrets: no API
 * keys, no upstream URLs (replicas are numbered), no request contents. */

/* Prometheus text exposition, version 0.0.4. */
int route_metrics(struct req *r)
{
    struct strbuf b = {0};
    metrics_render(&b, r->srv, r->cfg);
    if (b.nomem || !b.s) {
        strbuf_free(&b);
        return resp_error(r, 500, "out of memory");
    }
    resp_header(r, "Cache-Control", "no-cache");
    int rc = resp_send(r, 200, METRICS_CONTENT_TYPE, b.s, b.len);
    strbuf_free(&b);
    return rc;
}

/* Is the bare word (or word=...) `name` in the query string? */
static bool query_has(const struct req *r, const char *name)
{
    size_t nl = strlen(name);
    for (const char *p = r->query; p && *p;) {
        size_t seg = strcspn(p, "&");
        if (seg >= nl && strncmp(p, name, nl) == 0 && (seg == nl || p[nl] == '='))
            return true;
        p += seg + (p[seg] == '&');
    }
    return false;
}

static json_object *pick(json_object *from, const char *const *keys)
{
    json_object *o = json_object_new_object(), *v;
    for (size_t i = 0; o && keys[i]; i++)
        if (json_object_object_get_ex(from, keys[i], &v))
            json_object_object_add(o, keys[i], json_object_get(v));
    return o;
}

/* Local models in memory: the compact view, or (full) everything the
 * registry says; both with kv_blocks_free. */
static json_object *status_models(struct req *r, bool full)
{
    static const char *const keys[] = {"state", "device", "backend", "queued", "running", "kv_blocks_used",
                                       "kv_blocks_total", "kv_blocks_cached", "prefix_cache_queries",
                                       "prefix_cache_hits", "error", NULL};
    json_object *all = r->srv->reg ? registry_status_json(r->srv->reg, true) : json_object_new_object();
    if (!all)
        return NULL;
    json_object *out = full ? json_object_get(all) : json_object_new_object();
    json_object_object_foreach(all, name, m) {
        json_object *o = full ? m : pick(m, keys), *u, *t;
        if (!o)
            continue;
        if (json_object_object_get_ex(m, "kv_blocks_used", &u) && json_object_object_get_ex(m, "kv_blocks_total", &t))
            json_object_object_add(o, "kv_blocks_free",
                                   json_object_new_int64(json_object_get_int64(t) - json_object_get_int64(u)));
        if (!full)
            json_object_object_add(out, name, o);
    }
    json_object_put(all);
    return out;
}

/* The configured upstreams: replicas up/down and requests in flight, or
 * (full) the gateway's whole view (per-replica state, probe latency, last
 * error). */
static json_object *status_upstreams(struct req *r, bool full)
{
    static const char *const keys[] = {"type", "available", "in_flight", NULL};
    json_object *out = json_object_new_object();
    for (size_t i = 0; out && r->srv->gw && i < r->cfg->n_upstreams; i++) {
        struct upstream *u = gateway_get(r->srv->gw, r->cfg->upstreams[i].name);
        if (!u)
            continue;
        json_object *st = upstream_status_json(u), *reps, *up;
        upstream_put(u);
        if (!st)
            continue;
        int n_up = 0, n = 0;
        if (json_object_object_get_ex(st, "replicas", &reps))
            for (size_t k = 0; k < json_object_array_length(reps); k++, n++)
                n_up += json_object_object_get_ex(json_object_array_get_idx(reps, k), "up", &up) &&
                        json_object_get_boolean(up);
        json_object *o = full ? json_object_get(st) : pick(st, keys);
        json_object_put(st);
        if (!o)
            continue;
        json_object_object_add(o, "replicas_up", json_object_new_int(n_up));
        json_object_object_add(o, "replicas_down", json_object_new_int(n - n_up));
        json_object_object_add(out, r->cfg->upstreams[i].name, o);
    }
    return out;
}

/* A php-fpm-style status page, in JSON: ?full adds every detail the
 * registry and the gateway have. requests_in_flight counts this request. */
int route_status(struct req *r)
{
    struct server *srv = r->srv;
    bool full = query_has(r, "full");
    json_object *o = json_object_new_object(), *threads = json_object_new_object();
    if (!o || !threads) {
        json_object_put(o);
        json_object_put(threads);
        return send_owned(r, NULL);
    }
    int64_t up_ns = util_now_ns() - srv->started_ns;
    int busy = atomic_load(&srv->busy);
    json_object_object_add(o, "version", json_object_new_string(PACKAGE_VERSION));
    json_object_object_add(o, "pid", json_object_new_int((int)getpid()));
    json_object_object_add(o, "start_time", json_object_new_int64(srv->started_unix));  /* fixed: not now - uptime, which moves by a second */
    json_object_object_add(o, "uptime_seconds", json_object_new_int64(up_ns / 1000000000));
    json_object_object_add(threads, "total", json_object_new_int(srv->threads));
    json_object_object_add(threads, "busy", json_object_new_int(busy));
    json_object_object_add(threads, "idle", json_object_new_int(srv->threads > busy ? srv->threads - busy : 0));
    json_object_object_add(o, "threads", threads);
    json_object_object_add(o, "accepted_connections", json_object_new_uint64(atomic_load(&srv->connections)));
    json_object_object_add(o, "requests_answered", json_object_new_uint64(atomic_load(&srv->requests)));
    json_object_object_add(o, "requests_in_flight", json_object_new_int(busy));
    if (r->cfg->models_dir)
        json_object_object_add(o, "models_dir", json_object_new_string(r->cfg->models_dir));
    json_object_object_add(o, "models", status_models(r, full));
    json_object_object_add(o, "upstreams", status_upstreams(r, full));
    return send_owned(r, o);
}
