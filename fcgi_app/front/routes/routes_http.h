/* routes_http.c -- http upstreams: any request under an upstream's path_prefix passed through as it is (method, headers, body, the answer streamed back), with retries before the first byte. */
#ifndef LLMCGI_ROUTES_HTTP_H
#define LLMCGI_ROUTES_HTTP_H

#include <stdbool.h>

#include "request.h"

/* Is r under the path_prefix of an http upstream? (Checked before the route table.) */
bool gateway_route_http(struct req *r);
int route_gw_http(struct req *r);

#endif
