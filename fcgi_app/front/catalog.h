/* catalog.c -- the models this server answers for: whether a local engine or an upstream serves a name, the model lists and the health of local models and upstreams, for the listing and health routes. */
#ifndef LLMCGI_CATALOG_H
#define LLMCGI_CATALOG_H

#include <json-c/json.h>
#include <stdbool.h>

#include "request.h"

/* Is `model` served by a local model rather than an upstream? A [model]
 * section wins; then an upstream that lists the name; then a directory
 * under models_dir; catch-all upstreams come last. */
bool local_serves(struct req *r, const char *model);

/* Adds the local models to an OpenAI model list (`data`), or to the older
 * clients' list when legacy. */
void local_list_models(struct req *r, json_object *data, bool legacy);

/* GET /models/{id}/health for a local model: answers and returns true, or
 * false when `id` is not local. *rc gets the handler's return. */
bool local_model_health(struct req *r, const char *id, int *rc);

/* Adds "local_models" to a /health object; false when the default model
 * is local and not ready (loading or failed): /health is then 503. */
bool local_health(struct req *r, json_object *health, const char **why);

/* Adds the upstreams' models to a model list (`data`: OpenAI's, or the
 * older clients' when legacy), skipping names already in it. */
void upstream_list_models(struct req *r, json_object *data, bool legacy);

/* The entry of an OpenAI model list (`data`) whose "id" is `id`, borrowed
 * from data; NULL when none. */
json_object *model_list_find(json_object *data, const char *id);

/* Adds the upstreams' state to a /health object. Returns false when no
 * upstream is available although some are configured. */
bool gateway_health(struct req *r, json_object *health);

#endif
