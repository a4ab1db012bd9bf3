/* keys.c -- the API keys file: one key per line (its SHA-256, name, allowed models, limits), read with the configuration.
 *
 * Keys are never stored or logged: only their SHA-256, and the entry's name. */
#include "config.h"
#include "keys.h"
#include "log.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define KEY_NAME_MAX 64
#define KEYS_LINE_MAX 4096

void auth_key_clear(struct auth_key *k)
{
    free(k->name);
    for (size_t i = 0; i < k->n_models; i++)
        free(k->models[i]);
    free(k->models);
    memset(k, 0, sizeof *k);
}

void auth_keys_free(struct auth_keys *ks)
{
    if (!ks)
        return;
    for (size_t i = 0; i < ks->n; i++)
        auth_key_clear(&ks->v[i]);
    free(ks->v);
    free(ks);
}

static bool valid_key_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > KEY_NAME_MAX)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("._@:-", *s))
            return false;
    return true;
}

static bool valid_model(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 128)
        return false;
    if (strcmp(s, "*") == 0)
        return true;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("._:/-", *s))
            return false;
    return true;
}

static int parse_limit(const char *opt, const char *v, long *out, char *err, size_t errlen)
{
    long n;
    if (util_parse_long(v, &n) < 0 || n < 0 || n > 1000000000L) {
        snprintf(err, errlen, "%s must be a whole number from 0 to 1000000000, got \"%s\"", opt, v);
        return -1;
    }
    *out = n;
    return 0;
}

static int parse_models(struct auth_key *k, char *v, char *err, size_t errlen)
{
    if (k->models) {
        snprintf(err, errlen, "models= given twice");
        return -1;
    }
    if (!*v) {
        snprintf(err, errlen, "models= needs one or more model names separated by commas");
        return -1;
    }
    size_t n = 1;
    for (const char *p = v; *p; p++)
        n += *p == ',';
    k->models = calloc(n, sizeof *k->models);
    if (!k->models) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    char *save = NULL;
    for (char *m = strtok_r(v, ",", &save); m; m = strtok_r(NULL, ",", &save)) {
        if (!valid_model(m)) {
            snprintf(err, errlen, "models=: \"%s\" is not a model name (letters, digits and . _ : / -, or *)", m);
            return -1;
        }
        if (strcmp(m, "*") == 0) {
            snprintf(err, errlen, "models=*: leave models= out to allow every model");
            return -1;
        }
        if (!(k->models[k->n_models++] = strdup(m))) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    if (k->n_models != n) {
        snprintf(err, errlen, "models=: empty model name (two commas, or a comma at an end)");
        return -1;
    }
    return 0;
}

int auth_key_parse_line(char *line, struct auth_key *k, char *err, size_t errlen)
{
    memset(k, 0, sizeof *k);
    k->requests_per_minute = k->tokens_per_minute = -1;
    char *hash = NULL, *save = NULL;
    char *hashmark = strchr(line, '#');
    if (hashmark)
        *hashmark = '\0';
    int field = 0;
    bool rpm = false, tpm = false;
    for (char *w = strtok_r(line, " \t\r\n", &save); w; w = strtok_r(NULL, " \t\r\n", &save), field++) {
        if (field == 0) {
            hash = w;
            if (sha256_from_hex(w, k->hash) < 0) {
                snprintf(err, errlen, "the first field must be the key's SHA-256 as 64 hex digits "
                         "(printf %%s \"$KEY\" | sha256sum), got %zu characters", strlen(w));
                goto bad;
            }
            continue;
        }
        if (field == 1) {
            if (strchr(w, '=') || !valid_key_name(w)) {
                snprintf(err, errlen, "the second field must be the key's name (1-%d letters, digits and . _ @ : -), got \"%s\"",
                         KEY_NAME_MAX, w);
                goto bad;
            }
            if (!(k->name = strdup(w))) {
                snprintf(err, errlen, "out of memory");
                goto bad;
            }
            continue;
        }
        if (strcmp(w, "ops") == 0) {
            if (k->ops) {
                snprintf(err, errlen, "ops given twice");
                goto bad;
            }
            k->ops = true;
            continue;
        }
        char *eq = strchr(w, '=');
        if (!eq) {
            snprintf(err, errlen, "expected ops or option=value (models=, requests_per_minute=, tokens_per_minute=), got \"%s\"", w);
            goto bad;
        }
        *eq = '\0';
        const char *v = eq + 1;
        if (strcmp(w, "models") == 0) {
            if (parse_models(k, eq + 1, err, errlen) < 0)
                goto bad;
        } else if (strcmp(w, "requests_per_minute") == 0) {
            if (rpm) {
                snprintf(err, errlen, "requests_per_minute= given twice");
                goto bad;
            }
            rpm = true;
            if (parse_limit(w, v, &k->requests_per_minute, err, errlen) < 0)
                goto bad;
        } else if (strcmp(w, "tokens_per_minute") == 0) {
            if (tpm) {
                snprintf(err, errlen, "tokens_per_minute= given twice");
                goto bad;
            }
            tpm = true;
            if (parse_limit(w, v, &k->tokens_per_minute, err, errlen) < 0)
                goto bad;
        } else {
            snprintf(err, errlen, "unknown option \"%s\" (known: models, requests_per_minute, tokens_per_minute, ops)", w);
            goto bad;
        }
    }
    if (field == 0)
        return 0;
    if (field == 1) {
        (void)hash;
        snprintf(err, errlen, "a key needs a name after its hash");
        goto bad;
    }
    return 1;
bad:
    auth_key_clear(k);
    return -1;
}

int auth_keys_load(const char *file, struct auth_keys **out, struct config_errors *errs)
{
    *out = NULL;
    FILE *fp = fopen(file, "r");
    if (!fp) {
        config_add_error(errs, file, 0, "cannot open the keys file: %s", strerror(errno));
        return -1;
    }
    struct auth_keys *ks = calloc(1, sizeof *ks);
    size_t before = errs->n, cap = 0;
    char *line = NULL;
    size_t linecap = 0;
    ssize_t len;
    int lineno = 0;
    bool nomem = !ks;
    while (!nomem && (len = getline(&line, &linecap, fp)) >= 0) {
        lineno++;
        char err[300];
        struct auth_key k;
        if (len > KEYS_LINE_MAX) {
            config_add_error(errs, file, lineno, "line longer than %d bytes", KEYS_LINE_MAX);
            continue;
        }
        if (memchr(line, '\0', (size_t)len)) {
            config_add_error(errs, file, lineno, "NUL byte in the line");
            continue;
        }
        int rc = auth_key_parse_line(line, &k, err, sizeof err);
        if (rc < 0) {
            config_add_error(errs, file, lineno, "%s", err);
            continue;
        }
        if (rc == 0)
            continue;
        k.line = lineno;
        bool dup = false;
        for (size_t i = 0; i < ks->n && !dup; i++) {
            if (strcmp(ks->v[i].name, k.name) == 0) {
                config_add_error(errs, file, lineno, "key name \"%s\" is already used on line %d", k.name, ks->v[i].line);
                dup = true;
            } else if (memcmp(ks->v[i].hash, k.hash, SHA256_LEN) == 0) {
                config_add_error(errs, file, lineno, "the same key hash is already on line %d (\"%s\")", ks->v[i].line,
                                 ks->v[i].name);
                dup = true;
            }
        }
        if (dup) {
            auth_key_clear(&k);
            continue;
        }
        if (ks->n == cap) {
            size_t ncap = cap ? 2 * cap : 16;
            struct auth_key *grown = realloc(ks->v, ncap * sizeof *grown);
            if (!grown) {
                auth_key_clear(&k);
                nomem = true;
                break;
            }
            ks->v = grown;
            cap = ncap;
        }
        ks->v[ks->n++] = k;
    }
    bool read_error = ferror(fp);
    free(line);
    fclose(fp);
    if (nomem)
        config_add_error(errs, file, 0, "out of memory reading the keys file");
    else if (read_error)
        config_add_error(errs, file, 0, "cannot read the keys file");
    if (errs->n > before) {
        auth_keys_free(ks);
        return -1;
    }
    *out = ks;
    return 0;
}

const struct auth_key *auth_keys_find(const struct auth_keys *ks, const char *presented)
{
    unsigned char h[SHA256_LEN];
    if (!ks || sha256(presented, strlen(presented), h) < 0)
        return NULL;
    const struct auth_key *found = NULL;
    for (size_t i = 0; i < ks->n; i++) {
        bool eq = sha256_equal(h, ks->v[i].hash);
        found = eq ? &ks->v[i] : found;     /* no early exit: every entry costs the same */
    }
    return found;
}

bool auth_key_allows(const struct auth_key *k, const char *model)
{
    if (!k || k->n_models == 0)
        return true;
    for (size_t i = 0; i < k->n_models; i++)
        if (strcmp(k->models[i], model) == 0)
            return true;
    return false;
}
