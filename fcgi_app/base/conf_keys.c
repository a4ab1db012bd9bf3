/* conf_keys.c -- one llmcgi.conf key's value parsed and checked into its field of struct config (numbers, sizes, durations, URLs, model lists, headers, paths, addresses, origins, categories), the reason in err when it is wrong. */
#include "config.h"
#include "conf.h"
#include "conf_int.h"
#include "categories.h"
#include "keys.h"
#include "cors_origins.h"
#include "listen_spec.h"
#include "llm.h"
#include "cidr.h"
#include "util.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <ini.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const upstream_type_names[] = {
    [UPSTREAM_TGI] = "tgi",
    [UPSTREAM_TRANSFORMERS] = "transformers-serve",
    [UPSTREAM_OPENAI] = "openai",
    [UPSTREAM_HTTP] = "http",
};

const char *upstream_type_name(enum upstream_type t)
{
    return (unsigned)t < ARRAY_LEN(upstream_type_names) ? upstream_type_names[t] : "?";
}

/* Checks one replica URL: http or https, a host, no credentials, query or
 * fragment (credentials belong in api_key / header, where they are never
 * logged). Returns 0, or -1 with the reason in err. */
static int check_url(const char *url, char *err, size_t errlen)
{
    CURLU *u = curl_url();
    if (!u) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    char *scheme = NULL, *host = NULL, *user = NULL, *query = NULL, *frag = NULL;
    int rc = -1;
    CURLUcode uc = curl_url_set(u, CURLUPART_URL, url, 0);
    if (uc != CURLUE_OK) {
        snprintf(err, errlen, "\"%s\" is not a URL (%s)", url, curl_url_strerror(uc));
        goto out;
    }
    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
    curl_url_get(u, CURLUPART_HOST, &host, 0);
    curl_url_get(u, CURLUPART_USER, &user, 0);
    curl_url_get(u, CURLUPART_QUERY, &query, 0);
    curl_url_get(u, CURLUPART_FRAGMENT, &frag, 0);
    if (!scheme || (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0))
        snprintf(err, errlen, "\"%s\": only http:// and https:// upstreams are supported", url);
    else if (!host || !*host)
        snprintf(err, errlen, "\"%s\" has no host", url);
    else if (user)
        snprintf(err, errlen, "\"%s\" carries credentials: put them in api_key or header instead", url);
    else if (query || frag)
        snprintf(err, errlen, "\"%s\": an upstream URL takes no query or fragment", url);
    else
        rc = 0;
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(user);
    curl_free(query);
    curl_free(frag);
    curl_url_cleanup(u);
    return rc;
}

/* Splits `value` at spaces and commas into a new NULL-terminated array of
 * copies (caller frees with conf_free_strv). NULL when out of memory. */
static char **split_words(const char *value, size_t *n)
{
    char **v = calloc(strlen(value) / 2 + 2, sizeof *v);
    *n = 0;
    if (!v)
        return NULL;
    const char *s = value;
    for (;;) {
        s += strspn(s, " \t,");
        size_t len = strcspn(s, " \t,");
        if (!len)
            break;
        if (!(v[*n] = strndup(s, len)))
            break;
        (*n)++;
        s += len;
    }
    return v;
}

void conf_free_strv(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

/* url = URL [URL ...] */
static int apply_urls(struct config_upstream *u, const char *value, char *err, size_t errlen)
{
    size_t n;
    char **v = split_words(value, &n);
    if (!v) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (n == 0 || n > 64) {
        conf_free_strv(v, n);
        snprintf(err, errlen, "url needs 1 to 64 replica URLs such as http://127.0.0.1:8080");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(v[i]);
        const char *sep = strstr(v[i], "://");  /* trailing slashes of the path only, not of "http://" */
        size_t keep = sep ? (size_t)(sep - v[i]) + 3 : 0;
        while (len > keep && v[i][len - 1] == '/')
            v[i][--len] = '\0';
        if (check_url(v[i], err, errlen) < 0) {
            conf_free_strv(v, n);
            return -1;
        }
    }
    conf_free_strv(u->urls, u->n_urls);
    u->urls = v;
    u->n_urls = n;
    return 0;
}

/* models = NAME [ALIAS=TARGET ...] [*] */
static int apply_models(struct config_upstream *u, const char *value, char *err, size_t errlen)
{
    size_t n;
    char **v = split_words(value, &n);
    if (!v) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    struct upstream_model *m = calloc(n + 1, sizeof *m);
    size_t nm = 0;
    bool all = false;
    int rc = -1;
    if (!m) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(v[i], "*") == 0) {
            all = true;
            continue;
        }
        char *eq = strchr(v[i], '=');
        if (eq)
            *eq = '\0';
        const char *target = eq ? eq + 1 : v[i];
        if (!conf_valid_model_name(v[i]) || !conf_valid_model_name(target)) {
            snprintf(err, errlen, "models: \"%s%s%s\" is not a model name (1-128 letters, digits and . _ : / -)"
                     " or NAME=UPSTREAM_NAME", v[i], eq ? "=" : "", eq ? eq + 1 : "");
            goto out;
        }
        for (size_t j = 0; j < nm; j++)
            if (strcmp(m[j].name, v[i]) == 0) {
                snprintf(err, errlen, "models: \"%s\" is listed twice", v[i]);
                goto out;
            }
        m[nm].name = strdup(v[i]);
        m[nm].target = strdup(target);
        nm++;
        if (!m[nm - 1].name || !m[nm - 1].target) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
    }
    if (nm == 0 && !all) {
        snprintf(err, errlen, "models needs at least one model name, or * for every model");
        goto out;
    }
    for (size_t i = 0; i < u->n_models; i++) {
        free(u->models[i].name);
        free(u->models[i].target);
    }
    free(u->models);
    u->models = m;
    u->n_models = nm;
    u->catch_all = all;
    m = NULL;
    nm = 0;
    rc = 0;
out:
    for (size_t i = 0; m && i < nm; i++) {
        free(m[i].name);
        free(m[i].target);
    }
    free(m);
    conf_free_strv(v, n);
    return rc;
}

/* header = Name: value (repeatable) */
static int apply_header(struct config_upstream *u, const char *value, char *err, size_t errlen)
{
    const char *colon = strchr(value, ':');
    size_t nl = colon ? (size_t)(colon - value) : 0;
    bool ok = nl > 0;
    for (size_t i = 0; ok && i < nl; i++)
        ok = isalnum((unsigned char)value[i]) || value[i] == '-' || value[i] == '_';
    if (!ok) {
        snprintf(err, errlen, "header must be \"Name: value\" with a name of letters, digits, - and _; got \"%s\"", value);
        return -1;
    }
    static const char *const reserved[] = {"host", "content-length", "transfer-encoding", "connection",
                                           "content-type", "accept"};
    for (size_t i = 0; i < ARRAY_LEN(reserved); i++)
        if (strlen(reserved[i]) == nl && strncasecmp(value, reserved[i], nl) == 0) {
            snprintf(err, errlen, "header: %.*s is set by llmcgi itself", (int)nl, value);
            return -1;
        }
    char **grown = realloc(u->headers, (u->n_headers + 1) * sizeof *grown);
    if (!grown) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    u->headers = grown;
    const char *v = colon + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    size_t len = nl + strlen(v) + 3;
    if (!(u->headers[u->n_headers] = malloc(len))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    snprintf(u->headers[u->n_headers++], len, "%.*s: %s", (int)nl, value, v);
    return 0;
}

static char *resolve_path(const char *dir, const char *value)
{
    if (value[0] == '/' || !dir)
        return strdup(value);
    size_t len = strlen(dir) + strlen(value) + 2;
    char *out = malloc(len);
    if (out)
        snprintf(out, len, "%s/%s", dir, value);
    return out;
}

/* Converts `value` for key `k` into the field at base+offset. Returns 0, or
 * -1 with a message in err. Strings are malloc'ed and replace (and free) the
 * previous value, so defaults can be overridden. */
int conf_apply_key(const struct key_def *k, void *base, const char *value, const char *dir,
              char *err, size_t errlen)
{
    char *field = (char *)base + k->offset;
    char *str = NULL;
    char d1[32], d2[32];

    switch (k->type) {
    case K_LONG: {
        long v;
        if (util_parse_long(value, &v) < 0 || v < k->min || v > k->max) {
            snprintf(err, errlen, "%s must be a whole number from %lld to %lld, got \"%s\"", k->name,
                     (long long)k->min, (long long)k->max, value);
            return -1;
        }
        *(long *)field = v;
        return 0;
    }
    case K_SIZE: {
        uint64_t v;
        if (util_parse_size(value, &v) < 0 || v < (uint64_t)k->min || v > (uint64_t)k->max) {
            snprintf(err, errlen, "%s must be a size like 512k, 8M or 1G, from %lld to %lld bytes, got \"%s\"",
                     k->name, (long long)k->min, (long long)k->max, value);
            return -1;
        }
        *(uint64_t *)field = v;
        return 0;
    }
    case K_DURATION: {
        int64_t v;
        if (util_parse_duration_ms(value, &v) < 0 || v < k->min || v > k->max) {
            util_format_duration(d1, sizeof d1, k->min);
            util_format_duration(d2, sizeof d2, k->max);
            snprintf(err, errlen, "%s must be a duration like 250ms, 15s, 2m or 1h, from %s to %s, got \"%s\"",
                     k->name, d1, d2, value);
            return -1;
        }
        *(int64_t *)field = v;
        return 0;
    }
    case K_BOOL:
        if (util_parse_bool(value, (bool *)field) < 0) {
            snprintf(err, errlen, "%s must be on or off, got \"%s\"", k->name, value);
            return -1;
        }
        return 0;
    case K_MODE: {
        unsigned v;
        if (util_parse_octal(value, &v) < 0 || v > (unsigned)k->max) {
            snprintf(err, errlen, "%s must be an octal file mode such as 0660, got \"%s\"", k->name, value);
            return -1;
        }
        *(unsigned *)field = v;
        return 0;
    }
    case K_LOGFMT:
        if (strcmp(value, "text") != 0 && strcmp(value, "json") != 0) {
            snprintf(err, errlen, "%s must be text or json; got \"%s\"", k->name, value);
            return -1;
        }
        *(bool *)field = strcmp(value, "json") == 0;
        return 0;
    case K_LEVEL:
        if (log_level_parse(value, (enum log_level *)field) < 0) {
            snprintf(err, errlen, "%s must be one of error, warn, notice, info, debug; got \"%s\"", k->name, value);
            return -1;
        }
        return 0;
    case K_LISTEN: {
        struct listen_spec sp;
        char perr[200];
        if (listen_parse(value, &sp, perr, sizeof perr) < 0) {
            snprintf(err, errlen, "%s: %s", k->name, perr);
            return -1;
        }
        str = strdup(value);
        break;
    }
    case K_LOG:
    case K_ACCESS_LOG:
        if (!*value) {
            snprintf(err, errlen, "%s must be stderr%s or a file path", k->name, k->type == K_ACCESS_LOG ? ", off" : "");
            return -1;
        }
        if (strcmp(value, "stderr") == 0 || (k->type == K_ACCESS_LOG && strcmp(value, "off") == 0))
            str = strdup(value);
        else
            str = resolve_path(dir, value);
        break;
    case K_PREFIX: {
        size_t len = strlen(value);
        while (len > 0 && value[len - 1] == '/')
            len--;
        if (len > 0 && (value[0] != '/' || strpbrk(value, "?#%\\ ") || strstr(value, "//"))) {
            snprintf(err, errlen, "%s must be a path such as /llm (no ?, #, %%, spaces or //), got \"%s\"", k->name, value);
            return -1;
        }
        str = strndup(value, len);
        break;
    }
    case K_PATH:
        if (!*value) {
            snprintf(err, errlen, "%s must not be empty", k->name);
            return -1;
        }
        str = resolve_path(dir, value);
        break;
    case K_STRING:
        if (!*value) {
            snprintf(err, errlen, "%s must not be empty", k->name);
            return -1;
        }
        str = strdup(value);
        break;
    case K_NAME:
        if (!conf_valid_model_name(value)) {
            snprintf(err, errlen, "%s must be a model name (1-128 letters, digits and . _ : / -), got \"%s\"",
                     k->name, value);
            return -1;
        }
        str = strdup(value);
        break;
    case K_DEVICE: {
        enum llm_device dev;
        int index;
        if (llm_device_parse(value, &dev, &index) != 0) {
            snprintf(err, errlen, "%s must be auto, cpu, cuda or cuda:N, got \"%s\"", k->name, value);
            return -1;
        }
        str = strdup(value);
        break;
    }
    case K_TEMPLATE:
        if (strcmp(value, "auto") != 0 && strcmp(value, "plain") != 0 && strcmp(value, "dialogpt") != 0) {
            snprintf(err, errlen, "%s must be auto, plain or dialogpt, got \"%s\"", k->name, value);
            return -1;
        }
        str = strdup(value);
        break;
    case K_POOLING:
        if (strcmp(value, "mean") != 0 && strcmp(value, "last") != 0) {
            snprintf(err, errlen, "%s must be mean or last, got \"%s\"", k->name, value);
            return -1;
        }
        *(bool *)field = strcmp(value, "last") == 0;
        return 0;
    case K_DTYPE:
        if (llm_dtype_parse(value, (enum llm_dtype *)field) != 0) {
            snprintf(err, errlen, "%s must be auto, f32, f16, bf16 or q8, got \"%s\"", k->name, value);
            return -1;
        }
        return 0;
    case K_KV_DTYPE:
        if (llm_kv_dtype_parse(value, (enum llm_kv_dtype *)field) != 0) {
            snprintf(err, errlen, "%s must be auto, f32 or f16, got \"%s\"", k->name, value);
            return -1;
        }
        return 0;
    case K_TUNING:
        if (llm_tuning_parse(value, (enum llm_tuning *)field) != 0) {
            snprintf(err, errlen, "%s must be auto, latency or throughput, got \"%s\"", k->name, value);
            return -1;
        }
        return 0;
    case K_URLPATH:
        if (value[0] != '/' || strpbrk(value, " \t#")) {
            snprintf(err, errlen, "%s must be a URL path starting with /, got \"%s\"", k->name, value);
            return -1;
        }
        str = strdup(value);
        break;
    case K_UPTYPE: {
        struct config_upstream *u = base;
        for (size_t i = 0; i < ARRAY_LEN(upstream_type_names); i++)
            if (strcmp(value, upstream_type_names[i]) == 0) {
                u->type = (enum upstream_type)i;
                u->type_set = true;
                return 0;
            }
        snprintf(err, errlen, "type must be one of tgi, transformers-serve, openai, http; got \"%s\"", value);
        return -1;
    }
    case K_TASK: {
        static const enum model_task tasks[] = {TASK_AUTO, TASK_GENERATE, TASK_CLASSIFY, TASK_MODERATE};
        for (size_t i = 0; i < ARRAY_LEN(tasks); i++)
            if (strcmp(value, model_task_name(tasks[i])) == 0) {
                *(enum model_task *)field = tasks[i];
                return 0;
            }
        snprintf(err, errlen, "%s must be auto, generate, classify or moderate, got \"%s\"", k->name, value);
        return -1;
    }
    case K_FRACTION: {
        char *end;
        double v = strtod(value, &end);
        if (end == value || *end || !(v >= 0.0 && v <= 1.0)) {
            snprintf(err, errlen, "%s must be a number from 0 to 1, got \"%s\"", k->name, value);
            return -1;
        }
        *(double *)field = v;
        return 0;
    }
    case K_CATEGORIES: {
        struct clf_categories cats;
        if (clf_categories_parse(value, NULL, NULL, 0, &cats, err, errlen) < 0)
            return -1;
        str = strdup(value);
        break;
    }
    case K_URLS:
        return apply_urls(base, value, err, errlen);
    case K_MODELS:
        return apply_models(base, value, err, errlen);
    case K_HEADER:
        return apply_header(base, value, err, errlen);
    case K_CIDRS: {
        struct config *c = base;
        char perr[200];
        free(c->trusted_proxies);
        if (cidr_parse_list(value, &c->trusted_proxies, &c->n_trusted_proxies, perr, sizeof perr) == 0)
            return 0;
        snprintf(err, errlen, "%s: %s", k->name, perr);
        return -1;
    }
    case K_WEB_SERVERS: {
        struct config *c = base;
        char perr[200];
        free(c->web_server_addrs);
        c->web_server_addrs = NULL;
        c->n_web_server_addrs = 0;
        c->web_server_addrs_any = strcmp(value, "any") == 0;
        if (c->web_server_addrs_any)
            return 0;
        if (cidr_parse_list(value, &c->web_server_addrs, &c->n_web_server_addrs, perr, sizeof perr) < 0) {
            snprintf(err, errlen, "%s: %s (or \"any\" to accept every address)", k->name, perr);
            return -1;
        }
        if (c->n_web_server_addrs == 0) {
            snprintf(err, errlen, "%s: list the web servers' addresses, or write \"any\"", k->name);
            return -1;
        }
        return 0;
    }
    case K_ORIGINS: {
        struct config *c = base;
        conf_free_strv(c->cors_origins, c->n_cors_origins);
        return cors_parse_origins(value, &c->cors_origins, &c->n_cors_origins, &c->cors_any, err, errlen);
    }
    }
    if (!str) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    free(*(char **)field);
    *(char **)field = str;
    return 0;
}

bool conf_valid_model_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 128)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("._:/-", *s))
            return false;
    return true;
}
