/* routes_test.c -- endpoints for the integration tests, on only with [server] test_endpoints = on.
 *
 *   GET  /_test/sse?id=X&events=N  an event stream of N events; event k > 0
 *                                  is sent only after the k-th release of X,
 *                                  with keep-alive comments while it waits
 *   POST /_test/release?id=X       lets stream X send its next event
 *   GET  /_test/state?id=X         {"sent","released","keepalives","disconnected","done"}
 *   GET  /_test/slow?ms=N          "start\n", flushed, then N ms later "end\n"
 *   POST /_test/echo               the parsed JSON body back
 *
 * Releases make streaming tests causal instead of timed: a client can only
 * release event k after it has seen event k-1, so a buffering proxy makes
 * the test fail (it never sees the event) rather than merely run slow. */
#ifndef LLMCGI_ROUTES_TEST_H
#define LLMCGI_ROUTES_TEST_H

#include "request.h"

struct testing;

/* The shared state of the test streams. NULL on allocation failure. */
struct testing *testing_new(void);
void testing_free(struct testing *t);

int route_test_sse(struct req *r);
int route_test_release(struct req *r);
int route_test_state(struct req *r);
int route_test_slow(struct req *r);
int route_test_echo(struct req *r);

#endif
