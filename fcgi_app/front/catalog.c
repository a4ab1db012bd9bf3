/* catalog.c -- the models this server answers for: whether a local engine or an upstream serves a name, the model lists and the health of local models and upstreams, for the listing and health routes. */
#include "config.h"
#include "catalog.h"
#include "conf.h"
#include "gateway.h"
#include "json_obj.h"
#include "registry.h"
#include "response.h"
#include "server.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------------ services */

/* What the catalog uses of the server (struct server): the local models
 * and the upstreams' live state. */
static struct registry *models(const struct req *r)
{
    return r->srv->reg;
}

static struct gateway *upstreams(const struct req *r)
{
    return r->srv->gw;
}

/* ------------------------------------------------------------------ which serves a name */

bool local_serves(struct req *r, const char *model)
{
    if (config_find_model(r->cfg, model))
        return true;
    for (size_t i = 0; i < r->cfg->n_upstreams; i++) {
        const struct config_upstream *c = &r->cfg->upstreams[i];
        for (size_t k = 0; k < c->n_models; k++)
            if (strcmp(c->models[k].name, model) == 0)
                return false;
    }
    return registry_is_local(r->cfg, model);
}

/* ------------------------------------------------------------------ local models */

struct local_list {
    struct req *r;
    json_object *data;
    bool legacy;
};

static void add_listed(void *ud, const char *name, int state)
{
    struct local_list *x = ud;
    for (size_t i = 0; i < json_object_array_length(x->data); i++) {
        json_object *id;
        if (json_object_object_get_ex(json_object_array_get_idx(x->data, i), "id", &id) &&
            strcmp(json_object_get_string(id), name) == 0)
            return;
    }
    json_object *o = json_object_new_object();
    if (!o)
        return;
    json_add_str(o, "id", name);
    if (x->legacy) {
        char endpoint[300];
        snprintf(endpoint, sizeof endpoint, "%s/generate", x->r->cfg->path_prefix);
        json_add_str(o, "name", name);
        json_add_str(o, "endpoint", endpoint);
    } else {
        json_add_str(o, "object", "model");
        json_object_object_add(o, "created", json_object_new_int64((int64_t)x->r->cfg->loaded_at));
        json_add_str(o, "owned_by", "llmcgi");
    }
    json_add_str(o, "state", state < 0 ? "not_loaded" : state == LM_LOADING ? "loading" : state == LM_READY ? "ready"
                                                                                                       : "failed");
    json_object_object_add(o, "available", json_object_new_boolean(state != LM_FAILED));
    json_object_array_add(x->data, o);
}

void local_list_models(struct req *r, json_object *data, bool legacy)
{
    struct local_list x = {.r = r, .data = data, .legacy = legacy};
    registry_each(models(r), r->cfg, add_listed, &x);
}

/* The public view of the local models (no paths): the ones in memory as the
 * registry tells them, and the pinned ones (the [model] sections and a
 * local default model) that are not, as "not_loaded" (a request loads
 * them). Caller owns it; NULL when out of memory. */
static json_object *public_models(struct req *r)
{
    json_object *st = registry_status_json(models(r), false);
    const struct config *cfg = r->cfg;
    for (size_t i = 0; st && i <= cfg->n_models; i++) {
        const char *name = i < cfg->n_models ? cfg->models[i].name : cfg->default_model;
        if (!name || json_object_object_get_ex(st, name, NULL) || (i == cfg->n_models && !local_serves(r, name)))
            continue;
        json_object *o = json_object_new_object();
        if (!o)
            break;
        json_add_str(o, "state", "not_loaded");
        json_object_object_add(o, "configured", json_object_new_boolean(i < cfg->n_models));
        json_object_object_add(o, "pinned", json_object_new_boolean(true));
        json_object_object_add(st, name, o);
    }
    return st;
}

/* A model's state in a public_models() object: "not_loaded" when absent. */
static const char *state_in(json_object *models, const char *name)
{
    json_object *mine, *s;
    if (models && json_object_object_get_ex(models, name, &mine) && json_object_object_get_ex(mine, "state", &s))
        return json_object_get_string(s);
    return "not_loaded";
}

bool local_model_health(struct req *r, const char *id, int *rc)
{
    if (!id || !local_serves(r, id))
        return false;
    json_object *st = public_models(r), *mine = NULL;
    const char *state = state_in(st, id);
    bool ok = strcmp(state, "ready") == 0 || strcmp(state, "not_loaded") == 0;
    json_object *o = json_object_new_object();
    json_add_str(o, "model_id", id);
    json_add_str(o, "status", ok ? "ok" : state);
    json_add_str(o, "state", state);
    json_object_object_add(o, "available", json_object_new_boolean(ok));
    json_object_object_add(o, "local", json_object_new_boolean(true));
    if (st && json_object_object_get_ex(st, id, &mine))
        json_object_object_add(o, "details", json_object_get(mine));
    json_object_put(st);
    if (!ok)
        resp_header(r, "Retry-After", "1");
    *rc = resp_json(r, ok ? 200 : 503, o);
    json_object_put(o);
    return true;
}

/* Only the default model decides: loading or failed, the node cannot serve
 * what clients send without naming a model; ready or not loaded (a request
 * loads it) it can. Any other model's state is shown, not judged. */
bool local_health(struct req *r, json_object *health, const char **why)
{
    json_object *st = public_models(r);
    bool ok = true;
    const char *def = config_default_model(r->cfg);
    if (def && local_serves(r, def)) {
        const char *state = state_in(st, def);
        if (strcmp(state, "loading") == 0 || strcmp(state, "failed") == 0) {
            ok = false;
            *why = strcmp(state, "failed") == 0 ? "unavailable" : "loading";
        }
    }
    if (st)
        json_object_object_add(health, "local_models", st);
    return ok;
}

/* ------------------------------------------------------------------ upstreams */

/* Calls fn for every model name an upstream offers: its configured names,
 * or (for "*" and for upstreams without a list) the names it reports. */
static void each_upstream_model(struct req *r, void (*fn)(void *ud, const char *model, const struct config_upstream *c,
                                                          bool available), void *ud)
{
    for (size_t i = 0; i < r->cfg->n_upstreams; i++) {
        const struct config_upstream *c = &r->cfg->upstreams[i];
        if (c->type == UPSTREAM_HTTP)
            continue;
        struct upstream *u = gateway_get(upstreams(r), c->name);
        if (!u)
            continue;
        bool avail = upstream_available(u);
        for (size_t m = 0; m < c->n_models; m++)
            fn(ud, c->models[m].name, c, avail);
        if (c->catch_all || c->n_models == 0) {
            json_object *names = upstream_discovered_models(u);
            for (size_t m = 0; names && m < json_object_array_length(names); m++)
                fn(ud, json_object_get_string(json_object_array_get_idx(names, m)), c, avail);
            json_object_put(names);
        }
        upstream_put(u);
    }
}

json_object *model_list_find(json_object *data, const char *id)
{
    for (size_t i = 0; id && i < json_object_array_length(data); i++) {
        json_object *o = json_object_array_get_idx(data, i), *v;
        if (json_object_object_get_ex(o, "id", &v) && strcmp(json_object_get_string(v), id) == 0)
            return o;
    }
    return NULL;
}

struct upstream_list {
    json_object *data;
    int64_t created;
    bool legacy;
    const char *prefix;
};

static void add_model(void *ud, const char *model, const struct config_upstream *c, bool available)
{
    struct upstream_list *x = ud;
    if (model_list_find(x->data, model))
        return;
    json_object *o = json_object_new_object();
    if (!o)
        return;
    json_object_object_add(o, "id", json_object_new_string(model));
    if (x->legacy) {
        char endpoint[300];
        snprintf(endpoint, sizeof endpoint, "%s/generate", x->prefix);
        json_object_object_add(o, "name", json_object_new_string(model));
        json_object_object_add(o, "endpoint", json_object_new_string(endpoint));
    } else {
        json_object_object_add(o, "object", json_object_new_string("model"));
        json_object_object_add(o, "created", json_object_new_int64(x->created));
        json_object_object_add(o, "owned_by", json_object_new_string(c->name));
    }
    json_object_object_add(o, "upstream", json_object_new_string(c->name));
    json_object_object_add(o, "available", json_object_new_boolean(available));
    json_object_array_add(x->data, o);
}

void upstream_list_models(struct req *r, json_object *data, bool legacy)
{
    struct upstream_list x = {.data = data, .created = (int64_t)r->cfg->loaded_at, .legacy = legacy,
                         .prefix = r->cfg->path_prefix};
    each_upstream_model(r, add_model, &x);
}

bool gateway_health(struct req *r, json_object *health)
{
    if (!r->cfg->n_upstreams)
        return true;
    json_object *ups = json_object_new_object();
    if (!ups)
        return true;
    bool any = false;
    for (size_t i = 0; i < r->cfg->n_upstreams; i++) {
        struct upstream *u = gateway_get(upstreams(r), r->cfg->upstreams[i].name);
        if (!u)
            continue;
        json_object *st = upstream_status_json(u);
        json_object *av;
        if (st && json_object_object_get_ex(st, "available", &av) && json_object_get_boolean(av))
            any = true;
        json_object_object_add(ups, r->cfg->upstreams[i].name, st);
        upstream_put(u);
    }
    json_object_object_add(health, "upstreams", ups);
    return any;
}
