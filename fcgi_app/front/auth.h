/* auth.c -- API keys: the keys file (hashes, names, allowed models, limits), checking the key a request presents, 401/403 answers. */
#ifndef LLMCGI_AUTH_H
#define LLMCGI_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "conf.h"
#include "request.h"
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

/* Removes from `list` (a json-c array of objects with an "id"; edited in
 * place, the caller keeps it) the models key k may not use; NULL k (no
 * keys) keeps everything. */
struct json_object;
void auth_filter_models(const struct auth_key *k, struct json_object *list);

/* Does `path` answer without a key under this config ("/health", "/metrics" unless protected)? */
bool auth_path_public(const struct config *cfg, const char *path);

/* Checks the key of r (Authorization: Bearer, or x-api-key) when the config
 * has keys and the path is not public; sets r->key. Returns 0 to go on, or
 * 1 after answering 401 (with WWW-Authenticate) in r->dialect's shape. */
int auth_check(struct req *r);

/* For an operator endpoint (/status, a protected /metrics): returns 0 when
 * there are no keys, the path is public, or r's key has `ops`; else 1 after
 * answering 403. Call after auth_check. */
int auth_check_ops(struct req *r);

/* The one check of a key's models= list, called by every route that names
 * a model (in its path, query or body) before it says anything about that
 * model. Returns 0 when r's key may use `model` (or there are no keys), or
 * 1 after answering exactly what a model that is not served gets
 * (resp_model_not_found): a restricted key cannot learn that others exist. */
int auth_check_model(struct req *r, const char *model);

#endif
