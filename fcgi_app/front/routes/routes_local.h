/* routes_local.c -- generation on local models: requests in any client dialect (OpenAI chat and completions, TGI, the older model_id/prompt shape) run on the model's engine and are answered whole or streamed; GET /info and POST /tokenize. */
#ifndef LLMCGI_ROUTES_LOCAL_H
#define LLMCGI_ROUTES_LOCAL_H

#include <json-c/json.h>
#include <stdbool.h>

#include "dialect.h"
#include "request.h"

/* Is `model` served by a local model rather than an upstream? A [model]
 * section wins; then an upstream that lists the name; then a directory
 * under models_dir; catch-all upstreams come last. */
bool local_serves(struct req *r, const char *model);

/* Answers a generation request already read into g (borrowing from body)
 * on the local model `model`. variant: -1 OpenAI routes, 0 /generate,
 * 1 /generate_stream, 2 POST / (TGI answers a list). Returns 0, or -1 when
 * the client went away. */
int local_generate(struct req *r, enum client_kind kind, int variant, json_object *body, struct gen *g,
                   const char *model);

int route_info(struct req *r);          /* GET /info */
int route_tokenize(struct req *r);      /* POST /tokenize */

/* Adds the local models to an OpenAI model list (`data`), or to the older
 * clients' list when legacy. */
void local_list_models(struct req *r, json_object *data, bool legacy);

/* GET /models/{id}/health for a local model: answers and returns true, or
 * false when `id` is not local. *rc gets the handler's return. */
bool local_model_health(struct req *r, const char *id, int *rc);

/* Adds "local_models" to a /health object; false when the default model
 * is local and not ready (loading or failed): /health is then 503. */
bool local_health(struct req *r, json_object *health, const char **why);

#endif
