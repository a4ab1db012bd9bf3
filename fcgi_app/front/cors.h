/* cors.c -- CORS for browsers: an exact origin allowlist, preflight answers, Access-Control-* headers on answers. */
#ifndef LLMCGI_CORS_H
#define LLMCGI_CORS_H

#include <stdbool.h>
#include <stddef.h>

#include "cors_origins.h"
#include "request.h"

/* Is `origin` allowed by the config? */
bool cors_origin_allowed(const struct config *cfg, const char *origin);

/* Runs first on every request when [cors] allow_origins is set. A preflight
 * (OPTIONS with Origin and Access-Control-Request-Method) is answered here:
 * 204 with the Access-Control-Allow-* headers, or 403 for an origin not
 * allowed; returns FRONT_ANSWERED then (FRONT_ERROR when the client went
 * away). Otherwise queues the CORS headers for an allowed origin (none for
 * others) and returns FRONT_OK. */
enum front_rc cors_apply(struct req *r);

#endif
