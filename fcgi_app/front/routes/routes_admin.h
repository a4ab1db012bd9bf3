/* routes_admin.c -- the server's own endpoints: GET /health, GET /v1/models, GET /v1/models/{id}, GET /metrics, GET /status. */
#ifndef LLMCGI_ROUTES_ADMIN_H
#define LLMCGI_ROUTES_ADMIN_H

#include "request.h"

int route_health(struct req *r);
int route_models(struct req *r);
int route_model(struct req *r);
int route_metrics(struct req *r);
int route_status(struct req *r);

#endif
