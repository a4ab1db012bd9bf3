/* cors.c -- CORS for browsers: an exact origin allowlist, preflight answers, Access-Control-* headers on answers.
 *
 * Origins are compared exactly (scheme, host and port, case-insensitively);
 * "*" is accepted only without allow_credentials (the config refuses the
 * pair), so "*" never goes out together with Access-Control-Allow-Credentials.
 * An origin not on the list gets no CORS headers at all, and its preflight a 403. */
#include "config.h"
#include "cors.h"
#include "conf.h"
#include "response.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ALLOW_METHODS "GET, HEAD, POST, OPTIONS"
#define ALLOW_HEADERS "Authorization, Content-Type, x-api-key, X-Request-Id"
#define EXPOSE_HEADERS "X-Request-Id, Retry-After, x-ratelimit-limit-requests, x-ratelimit-remaining-requests, " \
                       "x-ratelimit-reset-requests, x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens, " \
                       "x-ratelimit-reset-tokens"

bool cors_origin_allowed(const struct config *cfg, const char *origin)
{
    if (!origin || !*origin)
        return false;
    if (cfg->cors_any)
        return true;
    for (size_t i = 0; i < cfg->n_cors_origins; i++)
        if (strcasecmp(cfg->cors_origins[i], origin) == 0)
            return true;
    return false;
}

/* Access-Control-Request-Headers worth echoing: header names (RFC 9110
 * token characters) separated by commas and spaces, of a sane length. The
 * OpenAI JS SDK, for one, sends x-stainless-* headers a fixed list lacks. */
static bool request_headers_ok(const char *h)
{
    size_t n = 0;
    for (; h[n]; n++)
        if (!isalnum((unsigned char)h[n]) && !strchr("!#$%&'*+-.^_`|~, ", h[n]))
            return false;
    return n > 0 && n <= 1000;
}

static void allow_origin(struct req *r, const char *origin)
{
    if (r->cfg->cors_any && !r->cfg->cors_credentials) {
        resp_header(r, "Access-Control-Allow-Origin", "*");
    } else {
        resp_header(r, "Access-Control-Allow-Origin", "%s", origin);
        if (r->cfg->cors_credentials)
            resp_header(r, "Access-Control-Allow-Credentials", "true");
    }
}

enum front_rc cors_apply(struct req *r)
{
    const struct config *c = r->cfg;
    if (!c->cors_any && !c->n_cors_origins)
        return FRONT_OK;
    const char *origin = req_header(r, "Origin");
    bool listed = !c->cors_any || c->cors_credentials;
    if (listed)
        resp_header(r, "Vary", "Origin");       /* the answer depends on it, for caches */
    bool preflight = r->method == M_OPTIONS && origin && req_header(r, "Access-Control-Request-Method");
    if (!origin)
        return FRONT_OK;
    bool allowed = cors_origin_allowed(c, origin);
    if (preflight) {
        int rc;
        if (!allowed) {
            rc = resp_error(r, 403, "origin %.200s is not allowed (CORS)", origin);
        } else {
            allow_origin(r, origin);
            resp_header(r, "Access-Control-Allow-Methods", ALLOW_METHODS);
            const char *asked = req_header(r, "Access-Control-Request-Headers");
            if (asked && request_headers_ok(asked))
                resp_header(r, "Access-Control-Allow-Headers", ALLOW_HEADERS ", %s", asked);
            else
                resp_header(r, "Access-Control-Allow-Headers", ALLOW_HEADERS);
            resp_header(r, "Access-Control-Max-Age", "%lld", (long long)(c->cors_max_age_ms / 1000));
            rc = resp_start(r, 204, NULL, -1);
        }
        return rc < 0 ? FRONT_ERROR : FRONT_ANSWERED;
    }
    if (allowed) {
        allow_origin(r, origin);
        resp_header(r, "Access-Control-Expose-Headers", EXPOSE_HEADERS);
    }
    return FRONT_OK;
}
