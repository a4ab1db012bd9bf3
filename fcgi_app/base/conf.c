/* conf.c -- the llmcgi.conf INI file: parse with inih, validate every key with file:line, refcounted snapshots.
 *
 * Two passes. Pass 1 runs inih over the file through our own line reader,
 * which counts lines (inih does not pass line numbers to the handler),
 * reports every malformed line rather than the first, joins indented
 * continuation lines and records section headers (even empty sections).
 * Pass 2 checks each recorded key against the table of known keys below and
 * converts it (conf_keys.c); the same table supplies the defaults, parsed by the
 * same code. */
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

/* ------------------------------------------------------------------ errors */

static void add_error(struct config_errors *e, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void add_error(struct config_errors *e, const char *file, int line, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char **grown = realloc(e->msg, (e->n + 1) * sizeof *grown);
    if (!grown)
        return;
    e->msg = grown;
    size_t len = strlen(file) + strlen(msg) + 16;
    if ((e->msg[e->n] = malloc(len)) == NULL)
        return;
    if (line > 0)
        snprintf(e->msg[e->n], len, "%s:%d: %s", file, line, msg);
    else
        snprintf(e->msg[e->n], len, "%s: %s", file, msg);
    e->n++;
}

void config_add_error(struct config_errors *e, const char *file, int line, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    add_error(e, file, line, "%s", msg);
}

/* What is wrong with `path` as a model directory, in `out`; false when nothing. */
static bool bad_dir(const char *path, char *out, size_t outlen)
{
    struct stat st;
    if (stat(path, &st) < 0)
        snprintf(out, outlen, "%s", errno == ENOENT ? "does not exist" : strerror(errno));
    else if (!S_ISDIR(st.st_mode))
        snprintf(out, outlen, "is not a directory");
    else if (access(path, R_OK | X_OK) < 0)
        snprintf(out, outlen, "cannot be read: %s", strerror(errno));
    else
        return false;
    return true;
}

void config_check_paths(const struct config *c, struct config_errors *warns)
{
    char why[200];
    for (size_t i = 0; i < c->n_models; i++) {
        const struct config_model *m = &c->models[i];
        if (m->path && bad_dir(m->path, why, sizeof why))
            add_error(warns, c->file, m->path_line ? m->path_line : m->line,
                      "[model %s]: path %s %s: the model cannot load until it is there", m->name, m->path, why);
    }
    if (c->models_dir && bad_dir(c->models_dir, why, sizeof why))
        add_error(warns, c->file, 0, "models_dir %s %s: no model can load from it until it is there", c->models_dir,
                  why);
}

void config_errors_free(struct config_errors *e)
{
    for (size_t i = 0; i < e->n; i++)
        free(e->msg[i]);
    free(e->msg);
    e->msg = NULL;
    e->n = 0;
}

/* ------------------------------------------------------------------ pass 1: lines */

struct raw_section {
    char type[CONFIG_MAX_LINE + 1];     /* "server", "model", ... */
    char name[CONFIG_MAX_LINE + 1];     /* "" when the header has none */
    int line;
};

struct raw_entry {
    size_t section;
    char *key;
    char *value;                        /* continuation lines joined with one space */
    int line;
};

struct pass1 {
    const char *file;
    FILE *fp;
    struct config_errors *errs;
    char *linebuf;
    size_t linecap;
    int line;
    bool continuation;                  /* the line inih is about to hand over continues a value */
    bool have_key;                      /* a key line was seen since the last header */
    bool last_key_kept;                 /* the last key line became an entry (continuations join it) */
    long section;                       /* index of the current section, -1 before any */
    struct raw_section *sections;
    size_t n_sections;
    struct raw_entry *entries;
    size_t n_entries;
    int first_bad_line;                 /* lines we already reported, so inih's own error is not repeated */
    int last_bad_line;
};

static void bad_line(struct pass1 *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bad_line(struct pass1 *p, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    add_error(p->errs, p->file, p->line, "%s", msg);
    p->last_key_kept = false;           /* indented lines after a refused line join nothing */
    if (!p->first_bad_line)
        p->first_bad_line = p->line;
    p->last_bad_line = p->line;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

/* Records a "[type name]" header; returns false when malformed. */
static bool record_section(struct pass1 *p, const char *header)
{
    char text[CONFIG_MAX_LINE + 1];
    snprintf(text, sizeof text, "%s", header);
    char *close = strchr(text, ']');
    if (!close) {
        bad_line(p, "section header without a closing ']'");
        return false;
    }
    *close = '\0';
    char *rest = trim(close + 1);
    if (*rest && *rest != ';' && *rest != '#') {
        bad_line(p, "unexpected text after the section header: \"%s\"", rest);
        return false;
    }
    char *inside = trim(text + 1);
    if (strlen(inside) >= 50) {                     /* inih keeps 50 bytes of a section name */
        bad_line(p, "section header longer than 49 characters: [%s]", inside);
        return false;
    }
    struct raw_section *grown = realloc(p->sections, (p->n_sections + 1) * sizeof *grown);
    if (!grown)
        return false;
    p->sections = grown;
    struct raw_section *s = &p->sections[p->n_sections];
    memset(s, 0, sizeof *s);
    s->line = p->line;
    size_t tl = strcspn(inside, " \t");
    memcpy(s->type, inside, tl);
    snprintf(s->name, sizeof s->name, "%s", trim(inside + tl));
    p->section = (long)p->n_sections++;
    return true;
}

/* inih's line source: fgets-like. Lines we reject are handed over empty. */
static char *reader(char *str, int num, void *stream)
{
    struct pass1 *p = stream;
    ssize_t n = getline(&p->linebuf, &p->linecap, p->fp);
    if (n < 0)
        return NULL;
    p->line++;
    p->continuation = false;
    char *buf = p->linebuf;
    size_t len = (size_t)n;
    while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        len--;
    if (memchr(buf, '\0', len)) {
        bad_line(p, "NUL byte in line");
        goto empty;
    }
    buf[len] = '\0';
    if (len > CONFIG_MAX_LINE || (int)len + 3 > num) {
        bad_line(p, "line longer than %d characters: continue long values on indented lines", CONFIG_MAX_LINE);
        goto empty;
    }
    char *s = buf;
    if (p->line == 1 && (unsigned char)s[0] == 0xEF && (unsigned char)s[1] == 0xBB && (unsigned char)s[2] == 0xBF)
        s += 3;
    char *t = s;
    while (isspace((unsigned char)*t))
        t++;
    /* The order of these tests is inih's own, so that both read a line alike. */
    if (*t == '\0' || *t == ';' || *t == '#') {
        /* blank or comment */
    } else if (t > s && p->have_key && *t == '[') {
        bad_line(p, "an indented line continues the value above; a section header must start the line");
        goto empty;
    } else if (t > s && p->have_key) {
        p->continuation = true;
    } else if (*t == '[') {
        p->have_key = false;
        if (!record_section(p, t))
            goto empty;
    } else if (!strpbrk(t, "=:")) {
        bad_line(p, "expected \"key = value\" or \"[section]\", got \"%s\"", t);
        goto empty;
    } else if (*t == '=' || *t == ':') {
        bad_line(p, "missing key name before '='");
        goto empty;
    } else {
        p->have_key = true;
    }
    memcpy(str, buf, len);
    str[len] = '\n';
    str[len + 1] = '\0';
    return str;
empty:
    str[0] = '\n';
    str[1] = '\0';
    return str;
}

/* Keys that may be given several times in a section (each adds one item). */
static bool key_repeatable(const char *name)
{
    return strcmp(name, "header") == 0;
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
    struct pass1 *p = user;
    (void)section;                      /* we track sections ourselves, with their lines */
    if (p->continuation) {
        if (!p->last_key_kept)
            return 1;                   /* the key it continues was refused (and reported) */
    } else {
        p->last_key_kept = false;
    }
    if (p->section < 0) {
        bad_line(p, "\"%s\" is outside any section (keys of the server go under [server])", name);
        return 1;
    }
    if (p->continuation) {
        struct raw_entry *e = &p->entries[p->n_entries - 1];
        size_t a = strlen(e->value), b = strlen(value);
        char *joined = realloc(e->value, a + b + 2);
        if (!joined)
            return 0;
        joined[a] = ' ';
        memcpy(joined + a + 1, value, b + 1);
        e->value = joined;
        return 1;
    }
    for (size_t i = 0; i < p->n_entries && !key_repeatable(name); i++) {
        struct raw_entry *e = &p->entries[i];
        if (e->section == (size_t)p->section && strcmp(e->key, name) == 0) {
            bad_line(p, "duplicate key \"%s\" (first set on line %d)", name, e->line);
            return 1;
        }
    }
    struct raw_entry *grown = realloc(p->entries, (p->n_entries + 1) * sizeof *grown);
    if (!grown)
        return 0;
    p->entries = grown;
    struct raw_entry *e = &p->entries[p->n_entries];
    e->section = (size_t)p->section;
    e->key = strdup(name);
    e->value = strdup(value);
    e->line = p->line;
    if (!e->key || !e->value) {
        free(e->key);
        free(e->value);
        return 0;
    }
    p->n_entries++;
    p->last_key_kept = true;
    return 1;
}

static void pass1_free(struct pass1 *p)
{
    for (size_t i = 0; i < p->n_entries; i++) {
        free(p->entries[i].key);
        free(p->entries[i].value);
    }
    free(p->entries);
    free(p->sections);
    free(p->linebuf);
}

/* ------------------------------------------------------------------ pass 2: keys */

#define S(field) offsetof(struct config, field)
#define M(field) offsetof(struct config_model, field)
#define U(field) offsetof(struct config_upstream, field)

static const struct key_def server_keys[] = {
    {"listen", K_LISTEN, S(listen), 0, 0, NULL},
    {"listen_backlog", K_LONG, S(listen_backlog), 1, 65535, "1024"},
    {"web_server_addrs", K_WEB_SERVERS, S(web_server_addrs), 0, 0, NULL},
    {"socket_mode", K_MODE, S(socket_mode), 0, 0777, "0660"},
    {"threads", K_LONG, S(threads), 1, 1024, "96"},
    {"max_body", K_SIZE, S(max_body), 1, 1 << 30, "8M"},
    {"shutdown_timeout", K_DURATION, S(shutdown_timeout_ms), 0, 3600000, "30s"},
    {"read_timeout", K_DURATION, S(read_timeout_ms), 100, 3600000, "60s"},
    {"body_timeout", K_DURATION, S(body_timeout_ms), 0, 3600000, "60s"},
    {"head_timeout", K_DURATION, S(head_timeout_ms), 100, 3600000, "10s"},
    {"sse_keepalive", K_DURATION, S(sse_keepalive_ms), 100, 3600000, "15s"},
    {"path_prefix", K_PREFIX, S(path_prefix), 0, 0, ""},
    {"error_log", K_LOG, S(error_log), 0, 0, "stderr"},
    {"access_log", K_ACCESS_LOG, S(access_log), 0, 0, "stderr"},
    {"access_log_format", K_LOGFMT, S(access_log_json), 0, 0, "text"},
    {"log_level", K_LEVEL, S(log_level), 0, 0, "info"},
    {"test_endpoints", K_BOOL, S(test_endpoints), 0, 0, "off"},
    {"default_model", K_NAME, S(default_model), 0, 0, NULL},
    {"models_dir", K_PATH, S(models_dir), 0, 0, NULL},
    {"max_loaded_models", K_LONG, S(max_loaded_models), 1, 1000, "4"},
    {"models_memory", K_SIZE, S(models_memory), 0, (int64_t)1 << 50, "0"},
    {"constraint_cache", K_SIZE, S(constraint_cache), 0, (int64_t)1 << 40, "64M"},
    {"moderation_model", K_NAME, S(moderation_model), 0, 0, NULL},
    {"classify_model", K_NAME, S(classify_model), 0, 0, NULL},
};

static const struct key_def model_keys[] = {
    {"path", K_PATH, M(path), 0, 0, NULL},
    {"device", K_DEVICE, M(device), 0, 0, "auto"},
    {"threads", K_LONG, M(threads), 0, 1024, "0"},
    {"dtype", K_DTYPE, M(dtype), 0, 0, "auto"},
    {"kv_dtype", K_KV_DTYPE, M(kv_dtype), 0, 0, "auto"},
    {"tuning", K_TUNING, M(tuning), 0, 0, "auto"},
    {"max_concurrent", K_LONG, M(max_concurrent), 1, 4096, "16"},
    {"max_queue", K_LONG, M(max_queue), 0, 100000, "64"},
    {"max_input_tokens", K_LONG, M(max_input_tokens), 0, 1 << 24, "0"},
    {"max_total_tokens", K_LONG, M(max_total_tokens), 0, 1 << 24, "0"},
    {"max_new_tokens", K_LONG, M(max_new_tokens), 1, 1 << 24, "256"},
    {"max_batch_tokens", K_LONG, M(max_batch_tokens), 1, 1 << 20, "256"},
    {"kv_cache", K_SIZE, M(kv_cache), 0, (int64_t)1 << 44, "0"},
    {"prefix_cache", K_BOOL, M(prefix_cache), 0, 0, "on"},
    {"mask_cache", K_SIZE, M(mask_cache), 0, (int64_t)1 << 40, "32M"},
    {"chat_template", K_TEMPLATE, M(chat_template), 0, 0, "auto"},
    {"timeout", K_DURATION, M(timeout_ms), 1, 86400000, "10m"},
    {"task", K_TASK, M(task), 0, 0, "auto"},
    {"max_inputs", K_LONG, M(max_inputs), 1, 4096, "32"},
    {"categories", K_CATEGORIES, M(categories), 0, 0, NULL},
    {"safe_labels", K_STRING, M(safe_labels), 0, 0, NULL},
    {"flag_threshold", K_FRACTION, M(flag_threshold), 0, 0, "0.5"},
    {"pooling", K_POOLING, M(pool_last), 0, 0, "mean"},
    {"normalize", K_BOOL, M(normalize), 0, 0, "on"},
};

static const struct key_def upstream_keys[] = {
    {"type", K_UPTYPE, U(type), 0, 0, NULL},
    {"url", K_URLS, U(urls), 0, 0, NULL},
    {"models", K_MODELS, U(models), 0, 0, NULL},
    {"path_prefix", K_PREFIX, U(path_prefix), 0, 0, NULL},
    {"connect_timeout", K_DURATION, U(connect_timeout_ms), 1, 600000, "5s"},
    {"first_byte_timeout", K_DURATION, U(first_byte_timeout_ms), 1, 86400000, "120s"},
    {"total_timeout", K_DURATION, U(total_timeout_ms), 1, 86400000, "30m"},
    {"stream_idle_timeout", K_DURATION, U(stream_idle_timeout_ms), 1, 86400000, "120s"},
    {"max_concurrent", K_LONG, U(max_concurrent), 1, 100000, "64"},
    {"queue_timeout", K_DURATION, U(queue_timeout_ms), 0, 600000, "1s"},
    {"retries", K_LONG, U(retries), 0, 10, "2"},
    {"retry_backoff", K_DURATION, U(retry_backoff_ms), 0, 60000, "100ms"},
    {"api_key", K_STRING, U(api_key), 0, 0, NULL},
    {"header", K_HEADER, U(headers), 0, 0, NULL},
    {"weight", K_LONG, U(weight), 1, 1000, "1"},
    {"health_path", K_URLPATH, U(health_path), 0, 0, NULL},
    {"health_interval", K_DURATION, U(health_interval_ms), 100, 3600000, "5s"},
    {"health_timeout", K_DURATION, U(health_timeout_ms), 10, 600000, "2s"},
    {"health_fall", K_LONG, U(health_fall), 1, 100, "3"},
    {"health_rise", K_LONG, U(health_rise), 1, 100, "2"},
    {"launch", K_STRING, U(launch), 0, 0, NULL},
    {"launch_stop_timeout", K_DURATION, U(launch_stop_timeout_ms), 0, 600000, "10s"},
    {"max_response", K_SIZE, U(max_response), 1024, (int64_t)1 << 34, "64M"},
};

static const struct key_def auth_keys[] = {
    {"keys_file", K_PATH, S(keys_file), 0, 0, NULL},
    {"protect_health", K_BOOL, S(protect_health), 0, 0, "off"},
    {"protect_metrics", K_BOOL, S(protect_metrics), 0, 0, "on"},
};

static const struct key_def limits_keys[] = {
    {"requests_per_minute", K_LONG, S(requests_per_minute), 0, 1000000000, "0"},
    {"tokens_per_minute", K_LONG, S(tokens_per_minute), 0, 1000000000, "0"},
    {"address_requests_per_minute", K_LONG, S(address_requests_per_minute), 0, 1000000000, "0"},
    {"address_tokens_per_minute", K_LONG, S(address_tokens_per_minute), 0, 1000000000, "0"},
    {"auth_failures_per_minute", K_LONG, S(auth_failures_per_minute), 0, 1000000000, "30"},
    {"max_clients", K_LONG, S(max_clients), 2, 10000000, "100000"},   /* >= 2: a request may hold two entries */
    {"trusted_proxies", K_CIDRS, S(trusted_proxies), 0, 0, NULL},
};

static const struct key_def cors_keys[] = {
    {"allow_origins", K_ORIGINS, S(cors_origins), 0, 0, NULL},
    {"allow_credentials", K_BOOL, S(cors_credentials), 0, 0, "off"},
    {"max_age", K_DURATION, S(cors_max_age_ms), 0, 86400000, "10m"},
};

static const struct key_def *find_key(const struct key_def *keys, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

/* "listen_backlg" -> "listen_backlog": the known key at edit distance <= 2. */
static const char *did_you_mean(const struct key_def *keys, size_t n, const char *name)
{
    size_t la = strlen(name);
    if (la > 40)
        return NULL;
    for (size_t k = 0; k < n; k++) {
        const char *b = keys[k].name;
        size_t lb = strlen(b);
        unsigned prev[48], cur[48];
        for (size_t j = 0; j <= lb; j++)
            prev[j] = (unsigned)j;
        for (size_t i = 1; i <= la; i++) {
            cur[0] = (unsigned)i;
            for (size_t j = 1; j <= lb; j++) {
                unsigned sub = prev[j - 1] + (name[i - 1] != b[j - 1]);
                unsigned del = prev[j] + 1, ins = cur[j - 1] + 1;
                cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
            }
            memcpy(prev, cur, (lb + 1) * sizeof *prev);
        }
        if (prev[lb] <= 2)
            return b;
    }
    return NULL;
}

/* The directory holding `file`, absolute; NULL on failure. Caller frees. */
static char *config_dir(const char *file)
{
    char *copy = strdup(file);
    if (!copy)
        return NULL;
    char *dir = realpath(dirname(copy), NULL);
    free(copy);
    return dir;
}

static bool key_is_string(enum key_type t)
{
    return t == K_LISTEN || t == K_LOG || t == K_ACCESS_LOG || t == K_PREFIX || t == K_PATH || t == K_STRING ||
           t == K_NAME || t == K_URLPATH || t == K_DEVICE || t == K_TEMPLATE || t == K_CATEGORIES;
}

static void model_free(struct config_model *m)
{
    free(m->name);
    for (size_t i = 0; i < ARRAY_LEN(model_keys); i++)
        if (key_is_string(model_keys[i].type))
            free(*(char **)((char *)m + model_keys[i].offset));
}

/* Sets every key of m that has a default. */
static void model_defaults(const struct config *c, struct config_model *m, struct config_errors *errs)
{
    char err[400];
    for (size_t k = 0; k < ARRAY_LEN(model_keys); k++)
        if (model_keys[k].def && conf_apply_key(&model_keys[k], m, model_keys[k].def, NULL, err, sizeof err) < 0)
            add_error(errs, c->file, 0, "internal: bad default for %s: %s", model_keys[k].name, err);
}

static void upstream_free(struct config_upstream *u)
{
    free(u->name);
    conf_free_strv(u->urls, u->n_urls);
    for (size_t i = 0; i < u->n_models; i++) {
        free(u->models[i].name);
        free(u->models[i].target);
    }
    free(u->models);
    conf_free_strv(u->headers, u->n_headers);
    for (size_t i = 0; i < ARRAY_LEN(upstream_keys); i++)
        if (key_is_string(upstream_keys[i].type))
            free(*(char **)((char *)u + upstream_keys[i].offset));
}

static void config_free(struct config *c)
{
    for (size_t i = 0; i < c->n_models; i++)
        model_free(&c->models[i]);
    free(c->models);
    model_free(&c->model_defaults);
    for (size_t i = 0; i < c->n_upstreams; i++)
        upstream_free(&c->upstreams[i]);
    free(c->upstreams);
    for (size_t i = 0; i < ARRAY_LEN(server_keys); i++)
        if (key_is_string(server_keys[i].type))
            free(*(char **)((char *)c + server_keys[i].offset));
    free(c->keys_file);
    auth_keys_free(c->keys);
    free(c->trusted_proxies);
    free(c->web_server_addrs);
    conf_free_strv(c->cors_origins, c->n_cors_origins);
    free(c->file);
    free(c);
}

static void apply_entries(struct config *c, struct pass1 *p, const char *dir, struct config_errors *errs)
{
    char err[400];
    for (size_t i = 0; i < p->n_entries; i++) {
        struct raw_entry *e = &p->entries[i];
        struct raw_section *s = &p->sections[e->section];
        const struct key_def *keys;
        size_t nkeys;
        void *base;
        if (strcmp(s->type, "server") == 0) {
            keys = server_keys, nkeys = ARRAY_LEN(server_keys), base = c;
        } else if (strcmp(s->type, "auth") == 0) {
            keys = auth_keys, nkeys = ARRAY_LEN(auth_keys), base = c;
        } else if (strcmp(s->type, "limits") == 0) {
            keys = limits_keys, nkeys = ARRAY_LEN(limits_keys), base = c;
        } else if (strcmp(s->type, "cors") == 0) {
            keys = cors_keys, nkeys = ARRAY_LEN(cors_keys), base = c;
        } else if (strcmp(s->type, "model") == 0) {
            base = NULL;
            for (size_t m = 0; m < c->n_models; m++)
                if (c->models[m].line == s->line)
                    base = &c->models[m];
            if (!base)
                continue;               /* the section itself was rejected */
            keys = model_keys, nkeys = ARRAY_LEN(model_keys);
        } else if (strcmp(s->type, "upstream") == 0) {
            base = NULL;
            for (size_t u = 0; u < c->n_upstreams; u++)
                if (c->upstreams[u].line == s->line)
                    base = &c->upstreams[u];
            if (!base)
                continue;
            keys = upstream_keys, nkeys = ARRAY_LEN(upstream_keys);
        } else {
            continue;                   /* unknown section: reported once, at its header */
        }
        const struct key_def *k = find_key(keys, nkeys, e->key);
        if (!k) {
            const char *hint = did_you_mean(keys, nkeys, e->key);
            add_error(errs, c->file, e->line, "unknown key \"%s\" in [%s]%s%s%s", e->key, s->type,
                      hint ? " (did you mean \"" : "", hint ? hint : "", hint ? "\"?)" : "");
            continue;
        }
        if (conf_apply_key(k, base, e->value, dir, err, sizeof err) < 0)
            add_error(errs, c->file, e->line, "%s", err);
        else if (strcmp(s->type, "model") == 0 && strcmp(k->name, "path") == 0)
            ((struct config_model *)base)->path_line = e->line;
        else if (base == c && strcmp(k->name, "listen") == 0)
            c->listen_line = e->line;
    }
}

static void collect_sections(struct config *c, struct pass1 *p, struct config_errors *errs)
{
    int server_line = 0, single_lines[3] = {0};
    static const char *const singles[3] = {"auth", "limits", "cors"};
    for (size_t i = 0; i < p->n_sections; i++) {
        struct raw_section *s = &p->sections[i];
        if (strcmp(s->type, "server") == 0) {
            if (s->name[0])
                add_error(errs, c->file, s->line, "[server] takes no name (got \"%s\")", s->name);
            else if (server_line)
                add_error(errs, c->file, s->line, "second [server] section (the first is on line %d)", server_line);
            else
                server_line = s->line;
        } else if (strcmp(s->type, "model") == 0) {
            if (!conf_valid_model_name(s->name)) {
                add_error(errs, c->file, s->line,
                          "[model NAME] needs a name of 1-128 letters, digits and . _ : / - (got \"%s\")", s->name);
                continue;
            }
            const struct config_model *dup = config_find_model(c, s->name);
            if (dup) {
                add_error(errs, c->file, s->line, "model \"%s\" is already defined on line %d", s->name, dup->line);
                continue;
            }
            struct config_model *grown = realloc(c->models, (c->n_models + 1) * sizeof *grown);
            if (!grown)
                return;
            c->models = grown;
            struct config_model *m = &c->models[c->n_models++];
            memset(m, 0, sizeof *m);
            m->name = strdup(s->name);
            m->line = s->line;
            model_defaults(c, m, errs);
        } else if (strcmp(s->type, "upstream") == 0) {
            if (!conf_valid_model_name(s->name) || strchr(s->name, '/')) {
                add_error(errs, c->file, s->line,
                          "[upstream NAME] needs a name of 1-128 letters, digits and . _ : - (got \"%s\")", s->name);
                continue;
            }
            const struct config_upstream *dup = config_find_upstream(c, s->name);
            if (dup) {
                add_error(errs, c->file, s->line, "upstream \"%s\" is already defined on line %d", s->name, dup->line);
                continue;
            }
            struct config_upstream *grown = realloc(c->upstreams, (c->n_upstreams + 1) * sizeof *grown);
            if (!grown)
                return;
            c->upstreams = grown;
            struct config_upstream *u = &c->upstreams[c->n_upstreams++];
            memset(u, 0, sizeof *u);
            u->name = strdup(s->name);
            u->line = s->line;
            char err[400];
            for (size_t k = 0; k < ARRAY_LEN(upstream_keys); k++)
                if (upstream_keys[k].def && conf_apply_key(&upstream_keys[k], u, upstream_keys[k].def, NULL, err, sizeof err) < 0)
                    add_error(errs, c->file, 0, "internal: bad default for %s: %s", upstream_keys[k].name, err);
        } else if (strcmp(s->type, "auth") == 0 || strcmp(s->type, "limits") == 0 || strcmp(s->type, "cors") == 0) {
            int k = s->type[0] == 'a' ? 0 : s->type[0] == 'l' ? 1 : 2;
            if (s->name[0])
                add_error(errs, c->file, s->line, "[%s] takes no name (got \"%s\")", singles[k], s->name);
            else if (single_lines[k])
                add_error(errs, c->file, s->line, "second [%s] section (the first is on line %d)", singles[k],
                          single_lines[k]);
            else
                single_lines[k] = s->line;
        } else {
            add_error(errs, c->file, s->line,
                      "unknown section [%s] (known: [server], [model NAME], [upstream NAME], [auth], [limits], [cors])",
                      s->type);
        }
    }
}

/* The line number in "file:LINE: message" (0 for file-wide messages). */
static long error_line(const char *msg, size_t prefix)
{
    return strtol(msg + prefix, NULL, 10);
}

/* Puts errors[from..] in line order (stable), as a reader of the file expects. */
static void sort_errors(struct config_errors *e, size_t from, const char *file)
{
    size_t prefix = strlen(file) + 1;
    for (size_t i = from + 1; i < e->n; i++) {
        char *m = e->msg[i];
        long line = error_line(m, prefix);
        size_t j = i;
        for (; j > from && error_line(e->msg[j - 1], prefix) > line; j--)
            e->msg[j] = e->msg[j - 1];
        e->msg[j] = m;
    }
}

/* The entry of `model` in u's models list, or NULL. */
static const struct upstream_model *upstream_routes(const struct config_upstream *u, const char *model)
{
    for (size_t i = 0; i < u->n_models; i++)
        if (strcmp(u->models[i].name, model) == 0)
            return &u->models[i];
    return NULL;
}

/* Would a path prefix hide one of the server's own routes? The router's
 * answer (router_path_in_use), handed in by config_set_path_in_use: the
 * route table is the front's, and this layer knows nothing of it. */
static bool (*path_in_use)(const char *prefix);

void config_set_path_in_use(bool (*in_use)(const char *prefix))
{
    path_in_use = in_use;
}

/* Checks what no single key can: required keys, and keys that fit the type. */
static void check_upstream(const struct config *c, struct config_upstream *u, struct config_errors *errs)
{
    if (!u->type_set) {
        add_error(errs, c->file, u->line, "[upstream %s] needs a type (tgi, transformers-serve, openai or http)", u->name);
        return;
    }
    if (!u->n_urls)
        add_error(errs, c->file, u->line, "[upstream %s] needs a url", u->name);
    if (u->type == UPSTREAM_HTTP) {
        if (!u->path_prefix || !*u->path_prefix)
            add_error(errs, c->file, u->line,
                      "[upstream %s] of type http needs a path_prefix such as /images (the requests it receives)",
                      u->name);
        else if (path_in_use && path_in_use(u->path_prefix))
            add_error(errs, c->file, u->line,
                      "[upstream %s]: path_prefix %s would hide llmcgi's own routes; choose another", u->name,
                      u->path_prefix);
        if (u->n_models || u->catch_all)
            add_error(errs, c->file, u->line, "[upstream %s]: an http upstream is routed by path_prefix, not models",
                      u->name);
        for (size_t j = 0; j < c->n_upstreams; j++) {
            const struct config_upstream *o = &c->upstreams[j];
            if (o != u && o->line < u->line && o->path_prefix && u->path_prefix && o->type == UPSTREAM_HTTP &&
                strcmp(o->path_prefix, u->path_prefix) == 0)
                add_error(errs, c->file, u->line, "[upstream %s]: path_prefix %s is already used by [upstream %s]",
                          u->name, u->path_prefix, o->name);
        }
    } else {
        if (u->path_prefix)
            add_error(errs, c->file, u->line,
                      "[upstream %s]: path_prefix is for http upstreams; %s upstreams are routed by models", u->name,
                      upstream_type_name(u->type));
        for (size_t m = 0; m < u->n_models; m++)
            if (config_find_model(c, u->models[m].name))
                add_error(errs, c->file, u->line, "[upstream %s]: model \"%s\" is also a local [model]", u->name,
                          u->models[m].name);
    }
    if (!u->health_path) {
        static const char *const defaults[] = {
            [UPSTREAM_TGI] = "/health", [UPSTREAM_TRANSFORMERS] = "/health",
            [UPSTREAM_OPENAI] = "/v1/models", [UPSTREAM_HTTP] = "/",
        };
        u->health_path = strdup(defaults[u->type]);
    }
}

/* FastCGI has no authentication: a TCP listen other machines can reach must
 * say which web servers may connect (web_server_addrs), or "any" on purpose. */
static void check_web_servers(const struct config *c, struct config_errors *errs)
{
    struct listen_spec sp;
    char perr[200];
    if (!c->listen || c->n_web_server_addrs || c->web_server_addrs_any ||
        listen_parse(c->listen, &sp, perr, sizeof perr) < 0 || sp.kind != LISTEN_TCP || listen_spec_loopback(&sp))
        return;
    add_error(errs, c->file, c->listen_line,
              "listen = %s can be reached from other machines and FastCGI has no authentication: set "
              "web_server_addrs to the web servers' addresses (or to \"any\" when a firewall already keeps "
              "everyone else out)", c->listen);
}

const char *model_task_name(enum model_task t)
{
    switch (t) {
    case TASK_AUTO: return "auto";
    case TASK_GENERATE: return "generate";
    case TASK_CLASSIFY: return "classify";
    case TASK_MODERATE: return "moderate";
    }
    return "?";
}

const char *config_classifier_default(const struct config *c, bool moderation)
{
    const char *set = moderation ? c->moderation_model : c->classify_model;
    if (set)
        return set;
    if (!moderation && c->moderation_model)
        return c->moderation_model;
    for (size_t i = 0; i < c->n_models; i++)
        if (c->models[i].task == TASK_MODERATE || (!moderation && c->models[i].task == TASK_CLASSIFY))
            return c->models[i].name;
    return NULL;
}

/* moderation_model must be a [model] with task = moderate; classify_model one
 * with task classify or moderate. */
static void check_classifier_defaults(const struct config *c, struct config_errors *errs)
{
    const char *names[2] = {c->moderation_model, c->classify_model};
    for (int i = 0; i < 2; i++) {
        if (!names[i])
            continue;
        const struct config_model *m = config_find_model(c, names[i]);
        if (!m)
            add_error(errs, c->file, 0, "%s \"%s\" is not a [model] of this file", i ? "classify_model" : "moderation_model",
                      names[i]);
        else if (m->task != TASK_MODERATE && (i == 0 || m->task != TASK_CLASSIFY))
            add_error(errs, c->file, m->line, "[model %s] is the %s: set its task = %s", m->name,
                      i ? "classify_model" : "moderation_model", i ? "classify (or moderate)" : "moderate");
    }
}

int config_load(const char *file, struct config **out, struct config_errors *errs)
{
    *out = NULL;
    struct pass1 p = {.file = file, .errs = errs, .section = -1};
    size_t errs_before = errs->n;
    char err[400];

    p.fp = fopen(file, "r");
    if (!p.fp) {
        add_error(errs, file, 0, "cannot open: %s", strerror(errno));
        return -1;
    }
    int rc = ini_parse_stream(reader, &p, handler, &p);
    fclose(p.fp);
    if (rc < 0) {
        add_error(errs, file, 0, "out of memory while reading");
    } else if (rc > 0 && (rc < p.first_bad_line || rc > p.last_bad_line || !p.first_bad_line)) {
        add_error(errs, file, rc, "syntax error");
    }

    struct config *c = calloc(1, sizeof *c);
    char *dir = config_dir(file);
    if (!c || !(c->file = strdup(file)) || !dir) {
        add_error(errs, file, 0, "cannot resolve the file's directory: %s", strerror(errno));
        free(dir);
        if (c)
            config_free(c);
        pass1_free(&p);
        return -1;
    }
    atomic_init(&c->refs, 1);
    c->loaded_at = time(NULL);
    for (size_t i = 0; i < ARRAY_LEN(server_keys); i++) {
        const struct key_def *k = &server_keys[i];
        if (k->def && conf_apply_key(k, c, k->def, dir, err, sizeof err) < 0)
            add_error(errs, file, 0, "internal: bad default for %s: %s", k->name, err);
    }
    model_defaults(c, &c->model_defaults, errs);
    static const struct { const struct key_def *k; size_t n; } more[] = {
        {auth_keys, ARRAY_LEN(auth_keys)}, {limits_keys, ARRAY_LEN(limits_keys)}, {cors_keys, ARRAY_LEN(cors_keys)},
    };
    for (size_t t = 0; t < ARRAY_LEN(more); t++)
        for (size_t i = 0; i < more[t].n; i++)
            if (more[t].k[i].def && conf_apply_key(&more[t].k[i], c, more[t].k[i].def, dir, err, sizeof err) < 0)
                add_error(errs, file, 0, "internal: bad default for %s: %s", more[t].k[i].name, err);
    collect_sections(c, &p, errs);
    apply_entries(c, &p, dir, errs);
    for (size_t i = 0; i < c->n_models; i++) {
        const struct config_model *m = &c->models[i];
        if (!m->path)
            add_error(errs, file, m->line, "[model %s] needs a path (the model's directory)", m->name);
        if (m->max_batch_tokens < m->max_concurrent)
            add_error(errs, file, m->line,
                      "[model %s]: max_batch_tokens (%ld) must be at least max_concurrent (%ld): every running "
                      "sequence takes one token of each step", m->name, m->max_batch_tokens, m->max_concurrent);
        if (m->max_input_tokens && m->max_total_tokens && m->max_input_tokens >= m->max_total_tokens)
            add_error(errs, file, m->line, "[model %s]: max_input_tokens (%ld) must be below max_total_tokens (%ld)",
                      m->name, m->max_input_tokens, m->max_total_tokens);
        if (m->task != TASK_MODERATE && (m->categories || m->safe_labels))
            add_error(errs, file, m->line, "[model %s]: categories and safe_labels are for task = moderate", m->name);
        if (m->categories && m->safe_labels)
            add_error(errs, file, m->line,
                      "[model %s]: safe_labels only applies when categories is not set (categories lists what counts)",
                      m->name);
    }
    check_classifier_defaults(c, errs);
    check_web_servers(c, errs);
    for (size_t i = 0; i < c->n_upstreams; i++)
        check_upstream(c, &c->upstreams[i], errs);
    if (c->cors_any && c->cors_credentials)
        add_error(errs, file, 0, "[cors]: allow_origins = * cannot go with allow_credentials = on (browsers refuse "
                  "credentials with a wildcard origin); list the origins");

    if (c->default_model && !config_find_model(c, c->default_model)) {
        bool routed = false;
        for (size_t i = 0; i < c->n_upstreams && !routed; i++)
            routed = upstream_routes(&c->upstreams[i], c->default_model) != NULL || c->upstreams[i].catch_all;
        if (!routed && !(c->models_dir && config_model_relpath_ok(c->default_model)))
            add_error(errs, file, 0,
                      "default_model \"%s\" is neither a [model], nor routed by any [upstream], nor a directory "
                      "name under models_dir", c->default_model);
    }
    free(dir);
    pass1_free(&p);
    if (errs->n > errs_before)
        sort_errors(errs, errs_before, file);
    else if (c->keys_file)
        auth_keys_load(c->keys_file, &c->keys, errs);     /* its errors name the keys file, in line order */
    if (errs->n > errs_before) {
        config_free(c);
        return -1;
    }
    *out = c;
    return 0;
}

struct config *config_ref(struct config *c)
{
    atomic_fetch_add(&c->refs, 1);
    return c;
}

void config_unref(struct config *c)
{
    if (c && atomic_fetch_sub(&c->refs, 1) == 1)
        config_free(c);
}

const struct config_upstream *config_find_upstream(const struct config *c, const char *name)
{
    for (size_t i = 0; i < c->n_upstreams; i++)
        if (c->upstreams[i].name && strcmp(c->upstreams[i].name, name) == 0)
            return &c->upstreams[i];
    return NULL;
}

bool config_model_relpath_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 128 || name[0] == '/' || name[n - 1] == '/')
        return false;
    for (const char *seg = name; *seg;) {
        size_t len = strcspn(seg, "/");
        if (len == 0 || seg[0] == '.')      /* ".", ".." and hidden names */
            return false;
        for (size_t i = 0; i < len; i++)
            if (!isalnum((unsigned char)seg[i]) && !strchr("._-", seg[i]))
                return false;
        seg += len;
        if (*seg == '/')
            seg++;
    }
    return true;
}

const char *config_default_model(const struct config *c)
{
    if (c->default_model)
        return c->default_model;
    if (c->models_dir)
        return NULL;
    const char *sole = NULL;
    for (size_t i = 0; i < c->n_models; i++) {
        if (!c->models[i].name)
            continue;
        if (sole && strcmp(sole, c->models[i].name) != 0)
            return NULL;
        sole = c->models[i].name;
    }
    for (size_t i = 0; i < c->n_upstreams; i++) {
        const struct config_upstream *u = &c->upstreams[i];
        if (u->type == UPSTREAM_HTTP)
            continue;
        if (u->catch_all || u->n_models == 0)
            return NULL;
        for (size_t m = 0; m < u->n_models; m++) {
            if (sole && strcmp(sole, u->models[m].name) != 0)
                return NULL;
            sole = u->models[m].name;
        }
    }
    return sole;
}

const struct config_model *config_find_model(const struct config *c, const char *name)
{
    for (size_t i = 0; i < c->n_models; i++)
        if (c->models[i].name && strcmp(c->models[i].name, name) == 0)
            return &c->models[i];
    return NULL;
}
