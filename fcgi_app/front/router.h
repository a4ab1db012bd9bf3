/* router.c -- the route table: (method, path pattern) -> handler, with JSON 404 and 405 + Allow. */
#ifndef LLMCGI_ROUTER_H
#define LLMCGI_ROUTER_H

#include <stdbool.h>
#include <stddef.h>

#include "request.h"

/* A handler answers the request completely. It returns 0, or -1 when the
 * client went away (nothing more can be sent). */
typedef int (*route_fn)(struct req *r);

enum route_flags {
    ROUTE_TEST = 1 << 0,            /* only when [server] test_endpoints = on */
    ROUTE_OPS = 1 << 1,             /* operator endpoints (/metrics, /status): the hook for [auth]
                                     * to require a key on them; nothing else treats them apart */
};

struct route {
    unsigned methods;               /* M_GET also admits HEAD */
    const char *pattern;            /* "/v1/models/{id*}": {x} one segment, {x*} the rest (>= 1 segment) */
    route_fn fn;
    enum api_dialect dialect;       /* error shape of the route */
    unsigned flags;
};

/* Looks (method, path) up in the table. On a match, returns the route with
 * its parameters decoded into r->params. Otherwise returns NULL and sets
 * *allow to the methods the path does accept (0 when no route has the path). */
const struct route *router_match(struct req *r, bool test_endpoints, unsigned *allow);

/* Answers r: runs the matched handler, or answers 404 / 405 (with Allow) /
 * OPTIONS (204 with Allow). Returns what the handler returned. */
int router_dispatch(struct req *r);

/* Would requests under `prefix` ("/images") reach one of llmcgi's own
 * routes? (Config check for http upstreams, which take a whole prefix.) */
bool router_path_in_use(const char *prefix);

/* "GET, HEAD, POST" for a method mask. */
void router_allow_string(unsigned methods, char *buf, size_t len);

#endif
