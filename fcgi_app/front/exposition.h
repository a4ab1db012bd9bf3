/* exposition.c -- what GET /metrics serves: the counters of metrics.c, then the live gauges of the responder threads, the local models (registry) and the upstreams (gateway), read as typed structs. */
#ifndef LLMCGI_EXPOSITION_H
#define LLMCGI_EXPOSITION_H

#include "metrics.h"

struct server;
struct config;

/* Appends the whole exposition to out: the counters of metrics.h, then the live
 * gauges of srv (threads, connections, models, upstreams) read at this
 * moment; srv and cfg may be NULL (the unit tests). */
void metrics_render(struct strbuf *out, struct server *srv, const struct config *cfg);

#endif
