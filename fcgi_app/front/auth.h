/* auth.c -- checking the API key a request presents against the keys file (keys.c), models a key may use, 401/403 answers. */
#ifndef LLMCGI_AUTH_H
#define LLMCGI_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "conf.h"
#include "keys.h"
#include "request.h"

/* Removes from `list` (a json-c array of objects with an "id"; edited in
 * place, the caller keeps it) the models key k may not use; NULL k (no
 * keys) keeps everything. */
struct json_object;
void auth_filter_models(const struct auth_key *k, struct json_object *list);

/* Does `path` answer without a key under this config ("/health", "/metrics" unless protected)? */
bool auth_path_public(const struct config *cfg, const char *path);

/* Checks the key of r (Authorization: Bearer, or x-api-key) when the config
 * has keys and the path is not public; sets r->key. Returns FRONT_OK to go
 * on, or FRONT_ANSWERED after answering 401 (with WWW-Authenticate) in
 * r->dialect's shape. */
enum front_rc auth_check(struct req *r);

/* For an operator endpoint (/status, a protected /metrics): returns FRONT_OK
 * when there are no keys, the path is public, or r's key has `ops`; else
 * FRONT_ANSWERED after answering 403. Call after auth_check. */
enum front_rc auth_check_ops(struct req *r);

/* The one check of a key's models= list, called by every route that names
 * a model (in its path, query or body) before it says anything about that
 * model. Returns FRONT_OK when r's key may use `model` (or there are no
 * keys), or FRONT_ANSWERED after answering exactly what a model that is not
 * served gets (resp_model_not_found): a restricted key cannot learn that
 * others exist. */
enum front_rc auth_check_model(struct req *r, const char *model);

#endif
