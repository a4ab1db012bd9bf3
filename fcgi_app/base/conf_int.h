/* conf_int.h -- what conf.c (the file's two passes, the key table, the checks across keys) and conf_keys.c (one key's value parsed and checked into its field) share. Not for other modules: they use conf.h. */
#ifndef LLMCGI_CONF_INT_H
#define LLMCGI_CONF_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum key_type {
    K_LONG,         /* integer within [min, max] */
    K_SIZE,         /* bytes with k/M/G suffix within [min, max] */
    K_DURATION,     /* milliseconds with ms/s/m/h suffix within [min, max] */
    K_BOOL,
    K_MODE,         /* octal file mode */
    K_LEVEL,        /* log level */
    K_LISTEN,       /* listen address */
    K_LOG,          /* "stderr" or a path */
    K_ACCESS_LOG,   /* "stderr", "off" or a path */
    K_LOGFMT,       /* access log format: "text" or "json" (a bool: json) */
    K_PREFIX,       /* URL path prefix */
    K_PATH,         /* a path, relative ones taken from the config file's directory */
    K_STRING,       /* any non-empty text */
    K_NAME,         /* a model name (letters, digits, . _ : / -) */
    K_UPTYPE,       /* upstream type */
    K_URLS,         /* one or more http(s) URLs */
    K_MODELS,       /* model names, name=target aliases, or "*" */
    K_HEADER,       /* "Name: value"; repeatable */
    K_URLPATH,      /* an absolute URL path such as /health */
    K_DEVICE,       /* auto, cpu, cuda, cuda:N */
    K_TEMPLATE,     /* a chat template name */
    K_CIDRS,        /* addresses and CIDR blocks */
    K_WEB_SERVERS,  /* addresses and CIDR blocks, or "any" (web_server_addrs) */
    K_ORIGINS,      /* CORS origins, or "*" */
    K_TASK,         /* a model's task */
    K_FRACTION,     /* a number from 0 to 1 (double) */
    K_CATEGORIES,   /* moderation categories: CATEGORY=LABEL[,LABEL] ... */
    K_POOLING,      /* embeddings' pooling: mean or last (a bool: last) */
    K_DTYPE,        /* a model's weight format: auto, f32, f16, bf16, q8 */
    K_KV_DTYPE,     /* a model's KV cache format: auto, f32, f16 */
    K_TUNING,       /* a model's kernels' tuning: auto, latency, throughput */
};

struct key_def {
    const char *name;
    enum key_type type;
    size_t offset;
    int64_t min, max;
    const char *def;        /* default, parsed like a value; NULL = unset */
};

/* Converts `value` for key `k` into the field at base+offset. Returns 0, or
 * -1 with a message in err. Strings are malloc'ed and replace (and free) the
 * previous value, so defaults can be overridden. */
int conf_apply_key(const struct key_def *k, void *base, const char *value, const char *dir,
              char *err, size_t errlen);

void conf_free_strv(char **v, size_t n);

/* A model name: 1 to 128 of letters, digits and . _ : / - */
bool conf_valid_model_name(const char *s);

#endif
