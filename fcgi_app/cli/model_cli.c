/* model_cli.c -- llmcgi-model: pulls Hugging Face GPT-2 model repositories into models_dir (resumable, sha256-checked), lists and removes them. */
#include "config.h"
#include "model_cli.h"
#include "conf.h"
#include "router.h"
#include "util.h"

#include <ctype.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define DEFAULT_CONFIG LLMCGI_SYSCONFDIR "/llmcgi/llmcgi.conf"

static const char usage_text[] =
    "usage: llmcgi-model [-c FILE] pull NAME [--revision R] [--dir MODELS_DIR]\n"
    "       llmcgi-model [-c FILE] list [--dir MODELS_DIR]\n"
    "       llmcgi-model [-c FILE] rm NAME [--dir MODELS_DIR]\n"
    "\n"
    "Manages the GPT-2 model directories llmcgi serves from models_dir.\n"
    "\n"
    "  pull NAME     download a Hugging Face model (gpt2, openai-community/gpt2)\n"
    "                into MODELS_DIR/NAME: safetensors weights, config and\n"
    "                tokenizer files, each checked; an interrupted pull resumes\n"
    "  list          the model directories, their size and whether they are complete\n"
    "  rm NAME       remove MODELS_DIR/NAME\n"
    "\n"
    "  -c, --config FILE      configuration file whose models_dir is used\n"
    "                         (default " DEFAULT_CONFIG ")\n"
    "  -d, --dir DIR          the models directory, overriding the configuration\n"
    "  -r, --revision R       branch, tag or commit to pull (default main)\n"
    "  -h, --help             this text\n"
    "\n"
    "Environment: HF_ENDPOINT (default " DEFAULT_ENDPOINT "), HF_TOKEN (sent as\n"
    "Authorization: Bearer, for gated and private models).\n";

/* ------------------------------------------------------------------ small helpers */

/* Human-readable bytes into buf. */
const char *human(char *buf, size_t len, double bytes)
{
    static const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (bytes >= 1024 && u < 4) {
        bytes /= 1024;
        u++;
    }
    snprintf(buf, len, u ? "%.1f %s" : "%.0f %s", bytes, unit[u]);
    return buf;
}

/* Creates dir and its missing parents (mode 0755). 0 or -1 with errno. */
int mkdir_p(const char *dir)
{
    char p[PATH_MAX];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST)
            return -1;
        *s = '/';
    }
    if (mkdir(p, 0755) != 0 && errno != EEXIST)
        return -1;
    struct stat st;
    if (stat(p, &st) != 0)
        return -1;
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    int r = (flag == FTW_DP) ? rmdir(path) : unlink(path);
    if (r != 0 && errno != ENOENT) {
        fprintf(stderr, "llmcgi-model: cannot remove %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* rm -rf that never follows a symbolic link (a link is removed, not its target)
 * and stays on one file system. 0, or -1 after printing why. */
int rm_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(st.st_mode)) {
        if (unlink(path) != 0) {
            fprintf(stderr, "llmcgi-model: cannot remove %s: %s\n", path, strerror(errno));
            return -1;
        }
        return 0;
    }
    return nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) == 0 ? 0 : -1;
}

/* Is `name` a model name we accept: config_model_relpath_ok and at most ORG/NAME
 * (the depth the server's models_dir scan reaches)? */
bool model_name_ok(const char *name)
{
    if (!config_model_relpath_ok(name))
        return false;
    const char *slash = strchr(name, '/');
    return !slash || !strchr(slash + 1, '/');
}

/* Splits DIR/NAME into the directory that holds the model ("DIR" or "DIR/ORG")
 * and the last segment. */
int model_paths(const char *dir, const char *name, char *parent, size_t plen, const char **base)
{
    const char *slash = strrchr(name, '/');
    *base = slash ? slash + 1 : name;
    int n = slash ? snprintf(parent, plen, "%s/%.*s", dir, (int)(slash - name), name)
                  : snprintf(parent, plen, "%s", dir);
    return n < 0 || (size_t)n >= plen ? -1 : 0;
}

/* ------------------------------------------------------------------ list */

/* Sum of the regular files' sizes in dir (one level), and whether the model looks complete;
 * missing gets the names of what is not there. */
static long long dir_size(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    long long total = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        char p[PATH_MAX + 256];
        struct stat st;
        if (snprintf(p, sizeof p, "%s/%s", dir, de->d_name) < (int)sizeof p && stat(p, &st) == 0 &&
            S_ISREG(st.st_mode))
            total += (long long)st.st_size;
    }
    closedir(d);
    return total;
}

static bool is_file(const char *dir, const char *f)
{
    char p[PATH_MAX + 256];
    struct stat st;
    return snprintf(p, sizeof p, "%s/%s", dir, f) < (int)sizeof p && stat(p, &st) == 0 && S_ISREG(st.st_mode) &&
           st.st_size > 0;
}

/* Writes what a model directory lacks (", "-separated) into missing; empty when complete. */
static void model_missing(const char *dir, char *missing, size_t len)
{
    struct strbuf m = {0};
    static const char *const need[] = {"config.json", "vocab.json", "merges.txt"};
    for (size_t i = 0; i < sizeof need / sizeof *need; i++)
        if (!is_file(dir, need[i])) {
            strbuf_puts(&m, m.len ? ", " : "");
            strbuf_puts(&m, need[i]);
        }
    if (!is_file(dir, "model.safetensors")) {
        char idx[PATH_MAX + 64];
        snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", dir);
        json_object *root = is_file(dir, "model.safetensors.index.json") ? json_object_from_file(idx) : NULL, *map;
        if (!root || !json_object_object_get_ex(root, "weight_map", &map) ||
            !json_object_is_type(map, json_type_object)) {
            strbuf_puts(&m, m.len ? ", " : "");
            strbuf_puts(&m, "model.safetensors");
        } else {
            json_object_object_foreach(map, key, val)
            {
                (void)key;
                const char *f = json_object_get_string(val);
                if (!f || strchr(f, '/') || !is_file(dir, f)) {
                    strbuf_puts(&m, m.len ? ", " : "");
                    strbuf_puts(&m, f ? f : "(a shard)");
                    break;
                }
            }
        }
        json_object_put(root);
    }
    snprintf(missing, len, "%s", m.s && !m.nomem ? m.s : "");
    strbuf_free(&m);
}

static void list_one(const char *root, const char *name, bool partial)
{
    char dir[PATH_MAX + 256], size[32], missing[512];
    snprintf(dir, sizeof dir, "%s/%s", root, name);
    human(size, sizeof size, (double)dir_size(dir));
    if (partial) {
        printf("%-40s %10s  partial pull (run llmcgi-model pull again to resume)\n", name, size);
        return;
    }
    model_missing(dir, missing, sizeof missing);
    if (missing[0])
        printf("%-40s %10s  incomplete: no %s\n", name, size, missing);
    else
        printf("%-40s %10s  complete\n", name, size);
}

/* Model directories DIR/NAME and DIR/ORG/NAME (with config.json, as the server's
 * scan), and partial pulls .NAME.partial-pull. */
static int scan(const char *root, const char *rel, int depth, int *count)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s%s%s", root, *rel ? "/" : "", rel);
    DIR *d = opendir(path);
    if (!d) {
        if (depth > 0)
            return 0;
        fprintf(stderr, "llmcgi-model: cannot read %s: %s\n", root, strerror(errno));
        return -1;
    }
    char **names = NULL;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char **nn = realloc(names, (n + 1) * sizeof *names);
        if (!nn || !(nn[n] = strdup(de->d_name))) {
            names = nn ? nn : names;
            break;
        }
        names = nn;
        n++;
    }
    closedir(d);
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            if (strcmp(names[j], names[i]) < 0) {
                char *t = names[i];
                names[i] = names[j];
                names[j] = t;
            }
    for (size_t i = 0; i < n; i++) {
        const char *e = names[i];
        char name[PATH_MAX], cj[PATH_MAX + 32];
        struct stat st;
        size_t el = strlen(e);
        static const char suffix[] = ".partial-pull";
        if (e[0] == '.' && el > sizeof suffix && !strcmp(e + el - (sizeof suffix - 1), suffix)) {
            snprintf(name, sizeof name, "%s%s%.*s", rel, *rel ? "/" : "", (int)(el - sizeof suffix), e + 1);
            if (model_name_ok(name)) {
                char full[PATH_MAX];
                snprintf(full, sizeof full, "%s%s%s", rel, *rel ? "/" : "", e);
                list_one(root, full, true);
                (*count)++;
            }
            continue;
        }
        if (snprintf(name, sizeof name, "%s%s%s", rel, *rel ? "/" : "", e) >= (int)sizeof name ||
            !model_name_ok(name))
            continue;
        snprintf(cj, sizeof cj, "%s/%s/config.json", root, name);
        if (stat(cj, &st) == 0 && S_ISREG(st.st_mode)) {
            list_one(root, name, false);
            (*count)++;
        } else if (depth == 0) {
            scan(root, name, 1, count);
        }
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return 0;
}

static int cmd_list(const char *dir)
{
    int count = 0;
    if (scan(dir, "", 0, &count) != 0)
        return RC_FAIL;
    if (count == 0)
        fprintf(stderr, "no models in %s\n", dir);
    return RC_OK;
}

/* ------------------------------------------------------------------ rm */

static int cmd_rm(const char *dir, const char *name)
{
    if (!model_name_ok(name)) {
        fprintf(stderr, "llmcgi-model: \"%s\" is not a model name llmcgi accepts\n", name);
        return RC_USAGE;
    }
    char parent[PATH_MAX], target[PATH_MAX + 256], tmp[PATH_MAX + 256], cj[PATH_MAX + 300];
    const char *base;
    if (model_paths(dir, name, parent, sizeof parent, &base) != 0) {
        fprintf(stderr, "llmcgi-model: %s/%s: path too long\n", dir, name);
        return RC_USAGE;
    }
    snprintf(target, sizeof target, "%s/%s", parent, base);
    snprintf(tmp, sizeof tmp, "%s/.%s.partial-pull", parent, base);
    /* ORG must be a real directory inside DIR, not a link to elsewhere. */
    struct stat st;
    if (strchr(name, '/') && lstat(parent, &st) == 0 && !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "llmcgi-model: %s is not a directory (a symbolic link?); not following it\n", parent);
        return RC_FAIL;
    }
    bool have_tmp = lstat(tmp, &st) == 0 && S_ISDIR(st.st_mode);
    if (lstat(target, &st) != 0) {
        if (!have_tmp) {
            fprintf(stderr, "llmcgi-model: no model %s in %s\n", name, dir);
            return RC_NOTFOUND;
        }
    } else if (S_ISLNK(st.st_mode)) {
        /* A link to a model kept elsewhere: remove the link only. */
        if (unlink(target) != 0) {
            fprintf(stderr, "llmcgi-model: cannot remove %s: %s\n", target, strerror(errno));
            return RC_FAIL;
        }
    } else {
        snprintf(cj, sizeof cj, "%s/config.json", target);
        if (!S_ISDIR(st.st_mode) || lstat(cj, &st) != 0) {
            fprintf(stderr, "llmcgi-model: %s is not a model directory (no config.json); not removing it\n", target);
            return RC_FAIL;
        }
        if (rm_tree(target) != 0)
            return RC_FAIL;
    }
    if (have_tmp && rm_tree(tmp) != 0)
        return RC_FAIL;
    if (strchr(name, '/'))
        rmdir(parent);          /* the ORG directory, when it is now empty */
    printf("removed %s\n", target);
    return RC_OK;
}

/* ------------------------------------------------------------------ main */

/* models_dir from the configuration file. Returns an exit code; *dir is owned by *cfg. */
static int config_models_dir(const char *file, struct config **cfg, const char **dir)
{
    struct config_errors errs = {0};
    config_set_path_in_use(router_path_in_use);      /* the same checks as llmcgi's */
    if (config_load(file, cfg, &errs) < 0) {
        for (size_t i = 0; i < errs.n; i++)
            fprintf(stderr, "%s\n", errs.msg[i]);
        config_errors_free(&errs);
        fprintf(stderr, "llmcgi-model: cannot use %s (give the models directory with --dir)\n", file);
        return RC_USAGE;
    }
    config_errors_free(&errs);
    if (!(*cfg)->models_dir) {
        fprintf(stderr, "llmcgi-model: %s sets no models_dir (set it, or give --dir)\n", file);
        return RC_USAGE;
    }
    *dir = (*cfg)->models_dir;
    return RC_OK;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"dir", required_argument, NULL, 'd'},
        {"revision", required_argument, NULL, 'r'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0},
    };
    const char *config_file = DEFAULT_CONFIG, *dir = NULL, *revision = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "c:d:r:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config_file = optarg; break;
        case 'd': dir = optarg; break;
        case 'r': revision = optarg; break;
        case 'h': fputs(usage_text, stdout); return RC_OK;
        default: fputs(usage_text, stderr); return RC_USAGE;
        }
    }
    int nargs = argc - optind;
    const char *cmd = nargs > 0 ? argv[optind] : NULL;
    bool named = cmd && (!strcmp(cmd, "pull") || !strcmp(cmd, "rm"));
    if (!cmd || (!named && strcmp(cmd, "list") != 0)) {
        fprintf(stderr, "llmcgi-model: %s%s%s\n%s", cmd ? "unknown command \"" : "no command given",
                cmd ? cmd : "", cmd ? "\"" : "", usage_text);
        return RC_USAGE;
    }
    if (nargs != (named ? 2 : 1)) {
        fprintf(stderr, "llmcgi-model: %s takes %s\n%s", cmd, named ? "one model NAME" : "no arguments", usage_text);
        return RC_USAGE;
    }
    if (revision && strcmp(cmd, "pull") != 0) {
        fprintf(stderr, "llmcgi-model: --revision is for pull\n");
        return RC_USAGE;
    }
    struct config *cfg = NULL;
    if (!dir) {
        int rc = config_models_dir(config_file, &cfg, &dir);
        if (rc != RC_OK) {
            config_unref(cfg);
            return rc;
        }
    }
    int rc;
    if (!strcmp(cmd, "pull")) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            fprintf(stderr, "llmcgi-model: cannot initialise libcurl\n");
            config_unref(cfg);
            return RC_FAIL;
        }
        rc = cmd_pull(dir, argv[optind + 1], revision ? revision : "main");
        curl_global_cleanup();
    } else if (!strcmp(cmd, "rm")) {
        rc = cmd_rm(dir, argv[optind + 1]);
    } else {
        rc = cmd_list(dir);
    }
    config_unref(cfg);
    return rc;
}
