/* auth.c -- checking the API key a request presents against the keys file (keys.c), models a key may use, 401/403 answers.
 *
 * The keys file is read with the configuration (config_load), so `llmcgi
 * --check` validates it and SIGHUP reloads it with everything else; a
 * request keeps the snapshot (and the key entry) it started with. Keys are
 * never stored or logged: only their SHA-256, and the entry's name. */
#include "config.h"
#include "auth.h"
#include "log.h"
#include "response.h"
#include "util.h"

#include <json-c/json.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void auth_filter_models(const struct auth_key *k, json_object *list)
{
    if (!k || !k->n_models || !json_object_is_type(list, json_type_array))
        return;
    for (size_t i = json_object_array_length(list); i-- > 0;) {
        json_object *id;
        if (!json_object_object_get_ex(json_object_array_get_idx(list, i), "id", &id) ||
            !auth_key_allows(k, json_object_get_string(id)))
            json_object_array_del_idx(list, i, 1);
    }
}

bool auth_path_public(const struct config *cfg, const char *path)
{
    if (strcmp(path, "/health") == 0)
        return !cfg->protect_health;
    if (strcmp(path, "/metrics") == 0)
        return !cfg->protect_metrics;
    return false;
}

/* The key the client presents: "Authorization: Bearer KEY", else "x-api-key: KEY"; NULL when none. */
static const char *presented_key(const struct req *r, bool *malformed)
{
    *malformed = false;
    const char *a = req_header(r, "Authorization");
    if (a && *a && strncasecmp(a, "Bearer ", 7) == 0) {
        a += 7;
        while (*a == ' ')
            a++;
        return *a ? a : NULL;
    }
    /* not a Bearer (e.g. Basic from an auth_basic in front): x-api-key may still carry the key */
    const char *x = req_header(r, "x-api-key");
    if (x && *x)
        return x;
    *malformed = a && *a;
    return NULL;
}

static enum front_rc unauthorized(struct req *r, bool presented)
{
    if (presented)
        resp_header(r, "WWW-Authenticate", "Bearer realm=\"llmcgi\", error=\"invalid_token\"");
    else
        resp_header(r, "WWW-Authenticate", "Bearer realm=\"llmcgi\"");
    const char *msg = presented ? "Incorrect API key provided" :
                                  "Missing API key: send it as \"Authorization: Bearer KEY\" or \"x-api-key: KEY\"";
    if (r->dialect == DIALECT_OPENAI)
        resp_error_openai(r, 401, "invalid_request_error", NULL, "invalid_api_key", "%s", msg);
    else
        resp_error_tgi(r, 401, "unauthorized", "%s", msg);
    return FRONT_ANSWERED;
}

enum front_rc auth_check(struct req *r)
{
    r->key = NULL;
    if (!r->cfg->keys || auth_path_public(r->cfg, r->path))
        return FRONT_OK;
    bool malformed;
    const char *k = presented_key(r, &malformed);
    if (!k)
        return unauthorized(r, malformed);
    r->key = auth_keys_find(r->cfg->keys, k);
    if (!r->key) {
        log_info("request %s: refused an unknown API key from %s", r->id, r->remote_addr);
        r->auth_failed = true;
        return unauthorized(r, true);
    }
    return FRONT_OK;
}

enum front_rc auth_check_ops(struct req *r)
{
    if (!r->key || r->key->ops)
        return FRONT_OK;                               /* no keys, a public path, or an operator */
    resp_error_tgi(r, 403, "forbidden", "the API key \"%s\" is not an operator key: %s needs a key "
                   "marked ops in the keys file", r->key->name, r->path);
    return FRONT_ANSWERED;
}

enum front_rc auth_check_model(struct req *r, const char *model)
{
    if (auth_key_allows(r->key, model))
        return FRONT_OK;
    log_info("request %s: the API key \"%s\" may not use model %s: answered as a model that does not exist", r->id,
             r->key->name, model);
    resp_model_not_found(r, model);
    return FRONT_ANSWERED;
}
