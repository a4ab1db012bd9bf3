/* pool.c -- the responder threads: each accepts FastCGI connections and answers requests until told to stop. */
#ifndef LLMCGI_POOL_H
#define LLMCGI_POOL_H

#include <stddef.h>
#include <stdint.h>

struct server;
struct pool;

/* Starts n responder threads on listen_fd (which is made non-blocking).
 * Call with every signal blocked: the threads inherit the mask, so signals
 * reach only the thread that waits for them. Returns 0 with *out set, or
 * -1 with err (threads already started are stopped again). */
int pool_start(struct pool **out, struct server *srv, int listen_fd, int n, char *err, size_t errlen);

/* Tells every thread to stop accepting; each finishes the request it is
 * answering, then exits. Returns at once. */
void pool_stop(struct pool *p);

/* Threads that have not exited yet. */
int pool_running(struct pool *p);

/* Answers one accepted request completely (parse, route, respond, access
 * log, finish): what each responder thread does per request. Exposed for
 * the unit tests, which drive it without threads. */
struct FCGX_Request;
void pool_answer(struct server *srv, struct FCGX_Request *freq);

/* Joins the threads (waiting for them) and frees the pool. Call it only
 * when every thread is leaving: after pool_stop(), once pool_running() is 0. */
void pool_free(struct pool *p);

#endif
