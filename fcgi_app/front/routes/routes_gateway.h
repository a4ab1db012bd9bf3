/* routes_gateway.c -- the gateway's routes: generation requests in any client dialect proxied to the upstream that serves the model, http upstreams passed through, the model and health listings of upstreams. */
#ifndef LLMCGI_ROUTES_GATEWAY_H
#define LLMCGI_ROUTES_GATEWAY_H

#include <json-c/json.h>
#include <stdbool.h>

#include "request.h"

int route_gw_chat(struct req *r);               /* POST /v1/chat/completions */
int route_gw_completions(struct req *r);        /* POST /v1/completions */
int route_gw_generate(struct req *r);           /* POST /generate (TGI, or {"model_id","prompt"}) */
int route_gw_generate_stream(struct req *r);    /* POST /generate_stream */
int route_gw_compat(struct req *r);             /* POST / ({"inputs","parameters","stream"}) */
int route_gw_models_legacy(struct req *r);      /* GET /models */
int route_gw_model_health(struct req *r);       /* GET /models/{id}/health */

/* Is r under the path_prefix of an http upstream? (Checked before the route table.) */
bool gateway_route_http(struct req *r);
int route_gw_http(struct req *r);

/* Adds the upstreams' models to an OpenAI model list (`data`), skipping
 * names already in it; and the upstreams' state to a /health object.
 * Return false when no upstream is available although some are configured. */
void gateway_list_models(struct req *r, json_object *data);

/* The entry of an OpenAI model list (`data`) whose "id" is `id`, borrowed
 * from data; NULL when none. */
json_object *model_list_find(json_object *data, const char *id);
bool gateway_health(struct req *r, json_object *health);

#endif
