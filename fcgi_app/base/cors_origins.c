/* cors_origins.c -- the [cors] allow_origins syntax: exact origins ("scheme://host[:port]") or "*". */
#include "config.h"
#include "cors_origins.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "scheme://host[:port]": what a browser sends in Origin (no path, no trailing slash). */
static bool origin_ok(const char *o)
{
    const char *p = strstr(o, "://");
    if (!p || p == o || strlen(o) > 200)
        return false;
    for (const char *s = o; s < p; s++)
        if (!isalpha((unsigned char)*s) && !(s > o && (isdigit((unsigned char)*s) || strchr("+.-", *s))))
            return false;
    p += 3;
    if (!*p)
        return false;
    for (; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr(".-:[]_", *p))
            return false;
    return true;
}

int cors_parse_origins(const char *value, char ***out, size_t *n, bool *any, char *err, size_t errlen)
{
    *out = NULL;
    *n = 0;
    *any = false;
    size_t cap = 1;
    for (const char *p = value; *p; p++)
        cap += *p == ' ' || *p == '\t' || *p == ',';
    char **v = calloc(cap, sizeof *v);
    char *copy = strdup(value), *save = NULL;
    if (!v || !copy) {
        snprintf(err, errlen, "out of memory");
        goto bad;
    }
    for (char *w = strtok_r(copy, " \t,", &save); w; w = strtok_r(NULL, " \t,", &save)) {
        if (strcmp(w, "*") == 0) {
            *any = true;
            continue;
        }
        if (!origin_ok(w)) {
            snprintf(err, errlen, "allow_origins: \"%s\" is not an origin like https://app.example or "
                     "http://localhost:8080 (scheme://host[:port], no path)", w);
            goto bad;
        }
        if (!(v[*n] = strdup(w))) {
            snprintf(err, errlen, "out of memory");
            goto bad;
        }
        (*n)++;
    }
    if (*any && *n) {
        snprintf(err, errlen, "allow_origins: \"*\" allows every origin; list origins or \"*\", not both");
        goto bad;
    }
    if (!*any && !*n) {
        snprintf(err, errlen, "allow_origins needs one or more origins, or *");
        goto bad;
    }
    free(copy);
    *out = v;
    return 0;
bad:
    for (size_t i = 0; v && i < *n; i++)
        free(v[i]);
    free(v);
    free(copy);
    *n = 0;
    *any = false;
    return -1;
}
