/* local_tokinfo.c -- GET /info and POST /tokenize on local models, as TGI answers them. */
#include "config.h"
#include "local_call.h"
#include "routes_local.h"
#include "auth.h"
#include "json_obj.h"
#include "response.h"
#include "server.h"
#include "stopseq.h"
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>

/* What this route family uses of the server (struct server): the local
 * models. (GET /info also reports the responder thread count.) */
static struct registry *models(const struct req *r)
{
    return r->srv->reg;
}

/* The model of /info and /tokenize into *name: ?model= (an empty one is
 * none) or "model" in the body, else the default (NULL when none). Returns
 * 0, or -1 after answering a malformed one: never read as if absent, which
 * would act on the default model instead. */
static int pick_model(struct req *r, json_object *body, char *buf, size_t len, const char **name)
{
    int status = r->dialect == DIALECT_OPENAI ? 400 : 422;
    json_object *v;
    int q = req_query(r, "model", buf, len);
    *name = NULL;
    if (q < 0)
        return resp_error(r, status, "the query parameter `model` is malformed: a model name of at most %zu bytes, "
                          "%%-escaped as %%XX, without %%00", len - 1), -1;
    if (q > 0 && *buf) {
        *name = buf;
        return 0;
    }
    if (body && (v = json_field(body, "model"))) {
        if (!json_object_is_type(v, json_type_string) || json_object_get_string_len(v) == 0 ||
            (size_t)json_object_get_string_len(v) >= len)
            return resp_error(r, status, "`model` must be a model name: a string of 1 to %zu bytes", len - 1), -1;
        snprintf(buf, len, "%s", json_object_get_string(v));
        *name = buf;
        return 0;
    }
    *name = config_default_model(r->cfg);
    return 0;
}

static struct lmodel *model_for(struct req *r, json_object *body)
{
    char buf[REQ_PARAM_MAX];
    const char *name;
    if (pick_model(r, body, buf, sizeof buf, &name) < 0)
        return NULL;
    struct lcall lc = {.r = r, .model = name};
    if (!name) {
        resp_error(r, r->dialect == DIALECT_OPENAI ? 400 : 422,
                   "name a model (?model=NAME); this server serves several models and has no default_model");
        return NULL;
    }
    if (auth_check_model(r, name) != FRONT_OK)
        return NULL;
    if (!registry_is_local(r->cfg, name)) {
        resp_model_not_found(r, name);
        return NULL;
    }
    return lcall_acquire_model(&lc);
}

int route_info(struct req *r)
{
    struct lmodel *m = model_for(r, NULL);
    if (!m)
        return r->client_gone ? -1 : 0;
    json_object *o = json_object_new_object();
    json_add_str(o, "model_id", m->name);
    json_object_object_add(o, "model_sha", NULL);
    json_add_str(o, "model_dtype", ckpt_dtype_name(m->info->weight_dtype));
    json_add_str(o, "model_device_type", m->info->backend);
    json_add_str(o, "model_pipeline_tag", "text-generation");
    json_object_object_add(o, "max_concurrent_requests", json_object_new_int64(m->max_concurrent + m->set.max_queue));
    json_object_object_add(o, "max_best_of", json_object_new_int(1));
    json_object_object_add(o, "max_stop_sequences", json_object_new_int(STOPSEQ_MAX));
    json_object_object_add(o, "max_input_tokens", json_object_new_int(m->max_input));
    json_object_object_add(o, "max_input_length", json_object_new_int(m->max_input));
    json_object_object_add(o, "max_total_tokens", json_object_new_int(m->max_total));
    json_object_object_add(o, "max_batch_total_tokens", json_object_new_int64(m->info->kv_blocks * (int64_t)m->info->kv_block_tokens));
    json_object_object_add(o, "max_batch_size", json_object_new_int64(m->max_concurrent));
    json_object_object_add(o, "max_client_batch_size", json_object_new_int(1));
    json_object_object_add(o, "max_waiting_tokens", json_object_new_int(0));
    json_object_object_add(o, "validation_workers", json_object_new_int(r->srv->threads));
    json_add_str(o, "router", "llmcgi");
    json_add_str(o, "version", PACKAGE_VERSION);
    json_object_object_add(o, "sha", NULL);
    json_object_object_add(o, "docker_label", NULL);
    registry_put(models(r), m);
    int rc = resp_json(r, 200, o);
    json_object_put(o);
    return rc;
}

/* POST /tokenize: the tokens of `inputs`, as TGI lists them. Bounded as
 * generation is: an input over the model's max_input_tokens is TGI's 422
 * (refused before encoding when its length alone proves it), so neither
 * the working memory nor the answer (at most max_input_tokens entries)
 * grows with what a client sends. */
int route_tokenize(struct req *r)
{
    json_object *body = req_json_body(r);
    if (!body)
        return r->client_gone ? -1 : 0;
    json_object *in = json_field(body, "inputs");
    if (!in || !json_object_is_type(in, json_type_string)) {
        json_object_put(body);
        return resp_error_tgi(r, 422, "validation", "`inputs` must be a string");
    }
    struct lmodel *m = model_for(r, body);
    if (!m) {
        json_object_put(body);
        return r->client_gone ? -1 : 0;
    }
    const char *text = json_object_get_string(in);
    size_t len = (size_t)json_object_get_string_len(in), n = 0;
    int32_t *ids = NULL;
    int rc = lcall_encode_bounded(m, text, len, m->max_input, &ids, &n);
    if (rc < 0) {
        rc = resp_error_tgi(r, 500, NULL, "cannot tokenize the input");
    } else if (rc == 1 || n > (size_t)m->max_input) {
        rc = resp_error_tgi(r, 422, "validation", "`inputs` must have less than %d tokens. Given: %s%zu",
                            m->max_input + 1, rc == 1 ? "at least " : "", n);
    } else {
        json_object *list = json_object_new_array_ext((int)n);
        size_t at = 0;
        for (size_t i = 0; list && i < n; i++) {
            json_object *t = json_object_new_object();
            size_t bl = 0;
            tokenizer_token_bytes(m->tok, ids[i], &bl);
            size_t sl;
            char *s = lcall_token_text(m->tok, ids[i], &sl);
            size_t stop = at + bl > len ? len : at + bl;
            json_object_object_add(t, "id", json_object_new_int(ids[i]));
            json_add_strn(t, "text", s, sl);       /* "\u0000" for byte 0 */
            json_object_object_add(t, "start", json_object_new_int64((int64_t)at));
            json_object_object_add(t, "stop", json_object_new_int64((int64_t)stop));
            free(s);
            at = stop;
            json_object_array_add(list, t);
        }
        rc = list ? resp_json(r, 200, list) : resp_error_tgi(r, 500, NULL, "out of memory");
        json_object_put(list);
    }
    free(ids);
    registry_put(models(r), m);
    json_object_put(body);
    return rc;
}
