/* router.c -- the route table: (method, path pattern) -> handler, with JSON 404 and 405 + Allow. */
#include "config.h"
#include "router.h"
#include "auth.h"
#include "conf.h"
#include "cors.h"
#include "ratelimit.h"
#include "response.h"
#include "routes_admin.h"
#include "routes_classify.h"
#include "dispatch.h"
#include "routes_gateway.h"
#include "routes_http.h"
#include "routes_local.h"
#include "routes_test.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct route routes[] = {
    {M_GET, "/health", route_health, DIALECT_TGI, 0},
    {M_GET, "/v1/models", route_models, DIALECT_OPENAI, 0},
    {M_GET, "/v1/models/{id*}", route_model, DIALECT_OPENAI, 0},
    {M_POST, "/v1/chat/completions", route_gen_chat, DIALECT_OPENAI, 0},
    {M_POST, "/v1/completions", route_gen_completions, DIALECT_OPENAI, 0},
    {M_POST, "/v1/responses", route_gen_responses, DIALECT_OPENAI, 0},
    {M_POST, "/v1/embeddings", route_gen_embeddings, DIALECT_OPENAI, 0},
    {M_POST, "/generate", route_gen_generate, DIALECT_TGI, 0},
    {M_POST, "/generate_stream", route_gen_generate_stream, DIALECT_TGI, 0},
    {M_POST, "/", route_gen_compat, DIALECT_TGI, 0},
    {M_GET, "/models", route_gw_models_legacy, DIALECT_TGI, 0},
    {M_GET, "/models/{id}/health", route_gw_model_health, DIALECT_TGI, 0},
    {M_GET, "/info", route_info, DIALECT_TGI, 0},
    {M_GET, "/metrics", route_metrics, DIALECT_TGI, ROUTE_OPS},
    {M_GET, "/status", route_status, DIALECT_TGI, ROUTE_OPS},
    {M_POST, "/tokenize", route_tokenize, DIALECT_TGI, 0},
    {M_POST, "/v1/moderations", route_moderations, DIALECT_OPENAI, 0},
    {M_POST, "/classify", route_classify, DIALECT_TGI, 0},

    {M_GET, "/_test/sse", route_test_sse, DIALECT_TGI, ROUTE_TEST},
    {M_POST, "/_test/release", route_test_release, DIALECT_TGI, ROUTE_TEST},
    {M_GET, "/_test/state", route_test_state, DIALECT_TGI, ROUTE_TEST},
    {M_GET, "/_test/slow", route_test_slow, DIALECT_TGI, ROUTE_TEST},
    {M_POST, "/_test/echo", route_test_echo, DIALECT_TGI, ROUTE_TEST},
};

/* Matches `path` against `pattern`, capturing parameters into r. */
static bool match_pattern(const char *pattern, const char *path, struct req *r)
{
    const char *p = pattern, *s = path;
    size_t n_params = 0;
    while (*p && *s) {
        if (*p == '{') {
            const char *close = strchr(p, '}');
            bool rest = close[-1] == '*';
            size_t seg = rest ? strlen(s) : strcspn(s, "/");
            if (seg == 0 || n_params >= REQ_MAX_PARAMS || seg >= REQ_PARAM_MAX)
                return false;
            struct req_param *prm = &r->params[n_params];
            if (util_url_decode(prm->value, s, seg) < 0)
                return false;
            size_t nl = (size_t)(close - p - 1) - rest;
            if (nl >= sizeof prm->name)
                return false;
            memcpy(prm->name, p + 1, nl);
            prm->name[nl] = '\0';
            n_params++;
            p = close + 1;
            s += seg;
            continue;
        }
        if (*p != *s)
            return false;
        p++;
        s++;
    }
    if (*p || *s)
        return false;
    r->n_params = n_params;
    return true;
}

static unsigned effective(unsigned methods)
{
    return methods & M_GET ? methods | M_HEAD : methods;
}

const struct route *router_match(struct req *r, bool test_endpoints, unsigned *allow)
{
    *allow = 0;
    for (size_t i = 0; i < ARRAY_LEN(routes); i++) {
        const struct route *rt = &routes[i];
        if ((rt->flags & ROUTE_TEST) && !test_endpoints)
            continue;
        if (!match_pattern(rt->pattern, r->path, r))
            continue;
        if (effective(rt->methods) & r->method)
            return rt;
        *allow |= effective(rt->methods);
    }
    r->n_params = 0;
    return NULL;
}

void router_allow_string(unsigned methods, char *buf, size_t len)
{
    static const struct { unsigned m; const char *name; } names[] = {
        {M_GET, "GET"}, {M_HEAD, "HEAD"}, {M_POST, "POST"}, {M_PUT, "PUT"},
        {M_PATCH, "PATCH"}, {M_DELETE, "DELETE"}, {M_OPTIONS, "OPTIONS"},
    };
    size_t pos = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < ARRAY_LEN(names); i++) {
        if (!(methods & names[i].m))
            continue;
        int n = snprintf(buf + pos, len - pos, "%s%s", pos ? ", " : "", names[i].name);
        if (n < 0 || (size_t)n >= len - pos)
            break;
        pos += (size_t)n;
    }
}

bool router_path_in_use(const char *prefix)
{
    size_t len = strlen(prefix);
    struct req *tmp = calloc(1, sizeof *tmp);
    bool used = false;
    for (size_t i = 0; i < ARRAY_LEN(routes) && !used; i++) {
        const char *p = routes[i].pattern;
        if (routes[i].flags & ROUTE_TEST)
            continue;
        used = (strncmp(p, prefix, len) == 0 && (p[len] == '\0' || p[len] == '/')) ||
               (tmp && match_pattern(p, prefix, tmp));
    }
    free(tmp);
    return used;
}

/* parse -> CORS -> (an address guessing keys: 429) -> auth -> rate limit -> route */
int router_dispatch(struct req *r)
{
    r->dialect = req_path_dialect(r->path);
    ratelimit_client_addr(r->cfg, r->remote_addr, req_header(r, "X-Forwarded-For"), r->client, sizeof r->client);
    enum front_rc fc = cors_apply(r);
    if (fc != FRONT_OK)
        return fc == FRONT_ERROR ? -1 : 0;      /* a preflight, answered */
    int rc;
    bool http = gateway_route_http(r);
    unsigned allow = 0;
    const struct route *rt = http ? NULL : router_match(r, r->cfg->test_endpoints, &allow);
    if (rt)
        r->dialect = rt->dialect;
    else if (http)
        r->dialect = DIALECT_TGI;
    if (ratelimit_auth_blocked(r) != FRONT_OK || auth_check(r) != FRONT_OK ||
        (rt && (rt->flags & ROUTE_OPS) && auth_check_ops(r) != FRONT_OK) || ratelimit_admit(r) != FRONT_OK) {
        rc = r->client_gone ? -1 : 0;
    } else if (http) {
        if (r->key && r->key->n_models) {
            rc = resp_error(r, 403, "the API key \"%s\" may only use its models, not %s", r->key->name, r->path);
        } else {
            rc = route_gw_http(r);
        }
    } else if (rt) {
        r->route = rt->pattern;
        rc = rt->fn(r);
    } else if (!allow) {
        rc = resp_error(r, 404, "no route for %s %s", r->method_name, r->path);
    } else {
        char list[96];
        router_allow_string(allow | M_OPTIONS, list, sizeof list);
        resp_header(r, "Allow", "%s", list);
        if (r->method == M_OPTIONS)
            rc = resp_start(r, 204, NULL, -1);  /* a 204 carries no body headers */
        else
            rc = resp_error(r, 405, "%s is not allowed on %s (allowed: %s)", r->method_name, r->path, list);
    }
    if (r->auth_failed)
        ratelimit_auth_failed(r);
    ratelimit_finish(r);
    return rc;
}
