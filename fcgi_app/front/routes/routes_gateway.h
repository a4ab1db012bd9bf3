/* routes_gateway.c -- the gateway's routes: generation requests the dispatcher hands over, proxied to the upstream that serves the model, the model and health listings of upstreams (http upstreams: routes_http.h). */
#ifndef LLMCGI_ROUTES_GATEWAY_H
#define LLMCGI_ROUTES_GATEWAY_H

#include <json-c/json.h>
#include <stdbool.h>

#include "dialect.h"
#include "request.h"

/* A generation request the dispatcher (dispatch.c) read and checked, for a
 * model no local engine serves: tried on the upstreams that serve `model`,
 * answered in the client's dialect. body and g are borrowed. Returns 0, or
 * -1 when the client went away. */
int gateway_generate(struct req *r, enum client_kind kind, int variant, json_object *body, const struct gen *g,
                     const char *model);

int route_gw_models_legacy(struct req *r);      /* GET /models */
int route_gw_model_health(struct req *r);       /* GET /models/{id}/health */


#endif
