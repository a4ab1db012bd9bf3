/* dispatch.c -- the generation dispatcher: where every generation request enters, read once in its client dialect and handed to classification, a local model or an upstream.
 *
 * POST /v1/chat/completions, /v1/completions, /v1/responses, /v1/embeddings,
 * /generate, /generate_stream and / come here whatever serves the model.
 * Embeddings of local models go to routes_classify.c (read like
 * classification), of upstream ones to routes_gateway.c (passed through). The body is read and checked
 * (dialect.c), the model named (or the default), the key's models= list and
 * the tokens/min limit applied; then a TGI body in the moderation
 * service's {"input_text"} shape goes to routes_classify.c, a model this
 * server runs to routes_local.c, anything else to the upstreams
 * (routes_gateway.c). This is the one route file that calls the others. */
#include "config.h"
#include "dispatch.h"
#include "auth.h"
#include "catalog.h"
#include "conf.h"
#include "dialect.h"
#include "ratelimit.h"
#include "response.h"
#include "routes_classify.h"
#include "routes_gateway.h"
#include "routes_local.h"

#include <json-c/json.h>
#include <stdio.h>

/* The model a request names (`model`, or `model_id` in the older shape),
 * or the default (config_default_model), into model[0..len). Returns 0, or -1 with err. */
static int request_model(struct req *r, enum client_kind kind, json_object *body, char *model, size_t len,
                         char *err, size_t errlen)
{
    const char *key = kind == CK_LEGACY ? "model_id" : "model";
    json_object *v = NULL;
    if (json_object_object_get_ex(body, key, &v) && !json_object_is_type(v, json_type_null)) {
        if (!json_object_is_type(v, json_type_string) || json_object_get_string_len(v) == 0 ||
            json_object_get_string_len(v) >= (int)len) {
            snprintf(err, errlen, "`%s` must be a model name", key);
            return -1;
        }
        snprintf(model, len, "%s", json_object_get_string(v));
        return 0;
    }
    const char *def = config_default_model(r->cfg);
    if (def) {
        snprintf(model, len, "%s", def);
        return 0;
    }
    snprintf(err, errlen, "`%s` is required (this server serves several models and has no default_model)", key);
    return -1;
}

/* Reserves tokens/min for the generation: the prompt estimated at 4 bytes
 * a token from the body (OpenAI's rule of thumb; corrected at the end)
 * plus the most it may generate. Returns FRONT_OK, or FRONT_ANSWERED after
 * answering 429. */
static enum front_rc admit_tokens(struct req *r, enum client_kind kind, const struct gen *g, const char *model)
{
    long max_new = g->max_tokens;
    if (kind == CK_EMBEDDINGS)
        max_new = -1;
    else if (max_new < 1) {
        const struct config_model *m = config_find_model(r->cfg, model);
        max_new = m ? m->max_new_tokens : r->cfg->model_defaults.max_new_tokens;
    }
    long n = g->n > 1 ? g->n : 1;
    long prompt = (long)((r->body_len + 3) / 4);
    if (max_new < 0)                            /* embeddings: nothing is generated */
        return ratelimit_reserve(r, prompt, prompt);
    return ratelimit_reserve(r, prompt, prompt + max_new * n);
}

/* variant: -1 for the OpenAI routes; 0 /generate, 1 /generate_stream, 2 POST /. */
static int dispatch(struct req *r, enum client_kind kind, int variant)
{
    json_object *body = req_json_body(r);
    if (!body)
        return r->client_gone ? -1 : 0;
    if (kind == CK_TGI && variant == 0 && classify_is_input_text(body)) {
        int crc = classify_input_text(r, body);   /* the moderation service's shape */
        json_object_put(body);
        return r->client_gone ? -1 : crc;
    }
    if (kind == CK_TGI && variant == 0 && !json_object_object_get_ex(body, "inputs", NULL) &&
        json_object_object_get_ex(body, "prompt", NULL))
        kind = CK_LEGACY;                       /* the older {"model_id","prompt",...} shape */
    struct gen g = {0};
    char model[256], err[300];
    int rc = 0;
    if (dialect_read_request(kind, body, &g, err, sizeof err) < 0 ||
        request_model(r, kind, body, model, sizeof model, err, sizeof err) < 0) {
        rc = r->dialect == DIALECT_OPENAI ? resp_error_openai(r, 400, NULL, NULL, NULL, "%s", err)
                                          : resp_error_tgi(r, 422, "validation", "%s", err);
        goto out;
    }
    if (auth_check_model(r, model) != FRONT_OK || admit_tokens(r, kind, &g, model) != FRONT_OK) {
        rc = r->client_gone ? -1 : 0;
        goto out;
    }
    if (variant == 1)
        g.stream = true;                        /* /generate_stream */
    else if (variant == 0)
        g.stream = false;                       /* /generate */
    if (kind == CK_EMBEDDINGS && local_serves(r, model))
        rc = classify_embeddings(r, body);
    else if (local_serves(r, model))            /* a response runs as the chat it means */
        rc = local_generate(r, kind, variant, kind == CK_RESPONSES ? g.owned : body, &g, model);
    else
        rc = gateway_generate(r, kind, variant, body, &g, model);
out:
    gen_free(&g);
    json_object_put(body);
    return r->client_gone ? -1 : rc;
}

int route_gen_chat(struct req *r)
{
    return dispatch(r, CK_CHAT, -1);
}

int route_gen_completions(struct req *r)
{
    return dispatch(r, CK_COMPLETION, -1);
}

int route_gen_responses(struct req *r)
{
    return dispatch(r, CK_RESPONSES, -1);
}

int route_gen_embeddings(struct req *r)
{
    return dispatch(r, CK_EMBEDDINGS, -1);
}

int route_gen_generate(struct req *r)
{
    return dispatch(r, CK_TGI, 0);
}

int route_gen_generate_stream(struct req *r)
{
    return dispatch(r, CK_TGI, 1);
}

int route_gen_compat(struct req *r)
{
    return dispatch(r, CK_TGI, 2);
}
