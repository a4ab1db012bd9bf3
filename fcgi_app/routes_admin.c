/* routes_admin.c -- the server's own endpoints: GET /health, GET /v1/models, GET /v1/models/{id}. */
#include "config.h"
#include "routes_admin.h"
#include "conf.h"
#include "response.h"
#include "routes_gateway.h"
#include "routes_local.h"
#include "server.h"
#include "util.h"

#include <json-c/json.h>

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
    json_object_object_add(models, "dir", r->cfg->models_dir ? json_object_new_string(r->cfg->models_dir) : NULL);
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
    gateway_list_models(r, data);
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
        gateway_list_models(r, data);
    }
    json_object *found = json_object_get(model_list_find(data, id));
    json_object_put(data);
    if (found)
        return send_owned(r, found);
    return resp_error_openai(r, 404, NULL, "model", "model_not_found", "The model `%s` does not exist", id ? id : "");
}
