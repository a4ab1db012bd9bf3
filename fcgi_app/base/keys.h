/* keys.c -- the API keys file: one key per line (its SHA-256, name, allowed models, limits), read with the configuration. */
#ifndef LLMCGI_KEYS_H
#define LLMCGI_KEYS_H

#include <stdbool.h>
#include <stddef.h>

#include "conf.h"
#include "sha256.h"

/* One line of the keys file:
 *   SHA256HEX NAME [models=a,b,...] [requests_per_minute=N] [tokens_per_minute=N] [ops]
 * Only the hash of a key is stored; the name identifies it in logs and limits.
 * `ops` marks an operator's key: only those read /status, and /metrics when
 * it is protected. */
struct auth_key {
    unsigned char hash[SHA256_LEN];
    char *name;                     /* owned */
    char **models;                  /* owned; n_models == 0: every model */
    size_t n_models;
    long requests_per_minute;       /* -1: [limits] requests_per_minute; 0: none */
    long tokens_per_minute;         /* -1: [limits] tokens_per_minute; 0: none */
    bool ops;                       /* may read the operator endpoints (ROUTE_OPS) */
    int line;
};

struct auth_keys {
    struct auth_key *v;             /* owned */
    size_t n;
};

/* Reads the keys file `file`. Returns 0 with *out a new set the caller owns
 * (auth_keys_free), or -1 with *out NULL after adding one "file:line: ..."
 * per bad line to errs. An empty file is valid (every request is refused). */
int auth_keys_load(const char *file, struct auth_keys **out, struct config_errors *errs);

/* Parses one line (modified in place) into k. Returns 1 for a key (k's
 * strings then owned by the caller: auth_key_clear), 0 for a blank or
 * comment line, -1 with the reason in err. Pure: unit-tested directly. */
int auth_key_parse_line(char *line, struct auth_key *k, char *err, size_t errlen);

/* Frees what k owns. */
void auth_key_clear(struct auth_key *k);

/* Frees a set from auth_keys_load. NULL is a no-op. */
void auth_keys_free(struct auth_keys *ks);

/* The entry whose hash is sha256(presented), or NULL. Every entry is
 * compared in constant time, without stopping at a match. */
const struct auth_key *auth_keys_find(const struct auth_keys *ks, const char *presented);

/* May key k use `model`? */
bool auth_key_allows(const struct auth_key *k, const char *model);
#endif
