/* harness.c -- runs single requests through the real request path (libfcgi, req_init, router, pool_answer) in one thread. */
#ifndef LLMCGI_HARNESS_H
#define LLMCGI_HARNESS_H

#include "fcgi_client.h"
#include "request.h"
#include "server.h"

struct harness {
    int listen_fd;
    char sock[108];
    char conf_dir[64];
    char conf_path[128];
    struct server srv;
};

/* Writes config_text to a temporary llmcgi.conf, loads it and sets up a
 * server around it plus a listening socket. Returns 0 or -1. */
int harness_init(struct harness *h, const char *config_text);
void harness_free(struct harness *h);

/* Sends one request ("NAME=VALUE" params, body), accepts it with libfcgi and
 * answers it with `handle` (NULL: exactly what a responder thread does, via
 * pool_answer). With close_first the client hangs up before the answer is
 * written (a client that went away). Fills *a; returns 0 or -1. */
int harness_run(struct harness *h, const char *const *params, const char *body, size_t len,
                int (*handle)(struct req *), int close_first, struct fcgi_answer *a);

/* The return value and r->client_gone of the last custom handler run. */
extern int harness_last_rc;
extern int harness_last_gone;

#endif
