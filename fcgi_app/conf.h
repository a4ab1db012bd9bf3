/* conf.c -- the llmcgi.conf INI file: parse with inih, validate every key with file:line, refcounted snapshots.
 *
 * A struct config is immutable once loaded. Requests hold a reference for
 * their whole life, so a SIGHUP reload swaps in a new snapshot without
 * disturbing requests in flight (see server.h). */
#ifndef LLMCGI_CONF_H
#define LLMCGI_CONF_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "log.h"

/* Lines longer than this are rejected (inih reads into a fixed buffer);
 * long values continue on indented lines. */
#define CONFIG_MAX_LINE 196

struct config_model {
    char *name;                 /* [model NAME] */
    char *path;                 /* model directory, absolute */
    int line;                   /* line of the section header */
};

struct config {
    atomic_int refs;
    char *file;                 /* the file it came from, as given */
    time_t loaded_at;

    /* [server] */
    char *listen;               /* "unix:/path" or "host:port"; NULL: must be inherited */
    long listen_backlog;
    unsigned socket_mode;
    long threads;
    uint64_t max_body;
    int64_t shutdown_timeout_ms;
    int64_t read_timeout_ms;
    int64_t sse_keepalive_ms;
    char *path_prefix;          /* "" or "/prefix" (no trailing slash) */
    char *error_log;            /* path or "stderr" */
    char *access_log;           /* path, "stderr" or "off" */
    enum log_level log_level;
    bool test_endpoints;

    struct config_model *models;
    size_t n_models;
};

struct config_errors {
    char **msg;                 /* "file:line: message", owned */
    size_t n;
};

/* Reads and validates `file`. On success returns 0 with *out a new snapshot
 * holding one reference that the caller owns. On failure returns -1, sets
 * *out = NULL and appends every problem found to errs (caller frees it with
 * config_errors_free, also on success, where it stays empty). */
int config_load(const char *file, struct config **out, struct config_errors *errs);

/* Takes another reference; returns c. */
struct config *config_ref(struct config *c);

/* Drops a reference; frees the snapshot with the last one. NULL is a no-op. */
void config_unref(struct config *c);

void config_errors_free(struct config_errors *e);

/* The model called `name`, or NULL. */
const struct config_model *config_find_model(const struct config *c, const char *name);

#endif
