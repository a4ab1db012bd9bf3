/* fcgi_client.c -- a minimal FastCGI client for tests: send one request as a web server would, read the answer. */
#ifndef LLMCGI_FCGI_CLIENT_H
#define LLMCGI_FCGI_CLIENT_H

#include <stddef.h>

struct fcgi_answer {
    int status;             /* from "Status:", 200 when absent */
    char *head;             /* header block, NUL-terminated, owned */
    char *body;             /* NUL-terminated, owned */
    size_t body_len;
    int ended;              /* FCGI_END_REQUEST arrived */
};

/* A listening unix socket in a fresh temporary directory. Returns the fd,
 * path in path_out (>= 108 bytes). */
int fcgi_test_listen(char *path_out);

/* Removes the socket and its directory. */
void fcgi_test_unlisten(int fd, const char *path);

/* Connects to path and sends a complete request: BEGIN_REQUEST, the params
 * ("NAME=VALUE" strings, NULL-terminated list), the body as STDIN, then shuts
 * the write side. Returns the connected fd, or -1. */
int fcgi_client_request(const char *path, const char *const *params, const char *body, size_t body_len);

/* Reads STDOUT records until END_REQUEST or EOF into a (caller frees with
 * fcgi_answer_free). Returns 0, or -1 on a protocol error. Closes nothing. */
int fcgi_client_read(int fd, struct fcgi_answer *a);

void fcgi_answer_free(struct fcgi_answer *a);

/* The value of header `name` in a->head (case-insensitive), copied into
 * buf; NULL when absent. */
const char *fcgi_answer_header(const struct fcgi_answer *a, const char *name, char *buf, size_t len);

#endif
