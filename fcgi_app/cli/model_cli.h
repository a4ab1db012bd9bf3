/* model_cli.h -- what the two files of llmcgi-model share: model_cli.c (options, list, rm, the small helpers) and model_pull.c (pull from the Hugging Face hub). Not for other programs. */
#ifndef LLMCGI_MODEL_CLI_H
#define LLMCGI_MODEL_CLI_H

#include <stdbool.h>
#include <stddef.h>

#define DEFAULT_ENDPOINT "https://huggingface.co"
#define API_MAX_BYTES (16u << 20)       /* the model-info answer */
#define MAX_FILES 256                   /* files one pull fetches (shards included) */

/* Exit codes (doc/llmcgi-model.1 lists them). */
enum {
    RC_OK = 0,
    RC_FAIL = 1,        /* disk errors, unexpected answers, a repository without usable files */
    RC_USAGE = 2,       /* bad options, unsafe names, configuration problems */
    RC_NET = 3,         /* the hub or its CDN cannot be reached, or a transfer broke off */
    RC_AUTH = 4,        /* 401/403: gated or private (HF_TOKEN) */
    RC_NOTFOUND = 5,    /* 404: no such model, revision or file */
    RC_VERIFY = 6,      /* a download's sha256 or size is not the hub's */
};

/* Human-readable bytes into buf. */
const char *human(char *buf, size_t len, double bytes);

/* Creates dir and its missing parents (mode 0755). 0 or -1 with errno. */
int mkdir_p(const char *dir);

/* rm -rf that never follows a symbolic link (a link is removed, not its target)
 * and stays on one file system. 0, or -1 after printing why. */
int rm_tree(const char *path);

/* Is `name` a model name we accept: config_model_relpath_ok and at most ORG/NAME
 * (the depth the server's models_dir scan reaches)? */
bool model_name_ok(const char *name);

/* Splits DIR/NAME into the directory that holds the model ("DIR" or "DIR/ORG")
 * and the last segment. */
int model_paths(const char *dir, const char *name, char *parent, size_t plen, const char **base);

int cmd_pull(const char *dir, const char *name, const char *revision);

#endif
