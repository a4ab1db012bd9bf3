/* checkpoint.c -- opens a Hugging Face GPT-2 directory: config.json (json-c) and checked, mapped safetensors weights (the dtypes and their conversions: ckpt_dtype.c). */
#include "config.h"

#include "checkpoint.h"
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Bounds on config values beyond which a config is refused as absurd. */
#define MAX_LAYERS 512
#define MAX_HEADS 1024
#define MAX_EMBD 65536
#define MAX_POSITIONS (1 << 20)
#define MAX_VOCAB (1 << 22)
#define MAX_INNER (1 << 20)
#define MAX_CONFIG_BYTES (16u << 20)
#define MAX_INDEX_BYTES (64u << 20)
#define MAX_SHARDS 65536

/* ------------------------------------------------------------------ helpers */

/* dir + "/" + name, malloc-ed (caller frees), or NULL. */
static char *path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p)
        return NULL;
    memcpy(p, dir, a);
    size_t o = a;
    if (a == 0 || dir[a - 1] != '/')
        p[o++] = '/';
    memcpy(p + o, name, b + 1);
    return p;
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* Reads a whole regular file of at most max bytes and parses it as one JSON
 * value. Returns the value (caller puts it) or NULL with err naming path. */
static struct json_object *read_json_file(const char *path, size_t max, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        st_errf(err, errlen, "%s: %s", path, errno == ENOENT ? "not found" : strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        st_errf(err, errlen, "%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    if ((uint64_t)st.st_size > max) {
        st_errf(err, errlen, "%s: %lld bytes is more than the %zu accepted", path, (long long)st.st_size, max);
        close(fd);
        return NULL;
    }
    size_t len = (size_t)st.st_size, got = 0;
    char *buf = malloc(len + 1);
    if (!buf) {
        st_errf(err, errlen, "%s: out of memory", path);
        close(fd);
        return NULL;
    }
    while (got < len) {
        ssize_t r = read(fd, buf + got, len - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (got != len) {
        st_errf(err, errlen, "%s: read error", path);
        free(buf);
        return NULL;
    }
    struct json_tokener *tok = json_tokener_new();
    if (!tok) {
        st_errf(err, errlen, "%s: out of memory", path);
        free(buf);
        return NULL;
    }
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    struct json_object *o = json_tokener_parse_ex(tok, buf, (int)len);
    size_t end = json_tokener_get_parse_end(tok);
    if (!o) {
        enum json_tokener_error je = json_tokener_get_error(tok);
        st_errf(err, errlen, "%s: invalid JSON (%s at byte %zu)", path,
             je == json_tokener_continue ? "it ends too early" : json_tokener_error_desc(je), end);
    } else {
        for (size_t i = end; i < len; i++) {
            if (buf[i] != ' ' && buf[i] != '\n' && buf[i] != '\r' && buf[i] != '\t') {
                st_errf(err, errlen, "%s: invalid JSON (bytes after the value at byte %zu)", path, i);
                json_object_put(o);
                o = NULL;
                break;
            }
        }
    }
    json_tokener_free(tok);
    free(buf);
    return o;
}

/* ------------------------------------------------------------------ config.json */

static const char *type_name(struct json_object *o)
{
    return json_type_to_name(json_object_get_type(o));
}

/* Whether root has one of keys[] (NULL-terminated; the first found wins);
 * *val is its value (NULL for a JSON null) and *which its name. */
static bool lookup(struct json_object *root, const char *const *keys, struct json_object **val, const char **which)
{
    for (; *keys; keys++) {
        if (json_object_object_get_ex(root, *keys, val)) {
            *which = *keys;
            return true;
        }
    }
    return false;
}

/* Reads an integer key (or its aliases) in [lo, hi] into *out; absent
 * keeps *out; null sets *is_null when that pointer is given (else it is a
 * type error). Returns 0 or -1 with err. */
static int cfg_int(struct json_object *root, const char *const *keys, long long lo, long long hi, int *out,
                   bool *is_null, const char *path, char *err, size_t errlen)
{
    const char *k;
    struct json_object *v;
    if (!lookup(root, keys, &v, &k))
        return 0;
    if (!v) {
        if (is_null) {
            *is_null = true;
            return 0;
        }
        st_errf(err, errlen, "%s: %s must be an integer, not null", path, k);
        return -1;
    }
    if (!json_object_is_type(v, json_type_int)) {
        st_errf(err, errlen, "%s: %s must be an integer, not %s", path, k, type_name(v));
        return -1;
    }
    int64_t x = json_object_get_int64(v);
    if (x < lo || x > hi) {
        st_errf(err, errlen, "%s: %s = %s is out of range [%lld, %lld]", path, k, json_object_to_json_string(v), lo, hi);
        return -1;
    }
    *out = (int)x;
    return 0;
}

static int cfg_bool(struct json_object *root, const char *key, bool *out, const char *path, char *err, size_t errlen)
{
    struct json_object *v;
    if (!json_object_object_get_ex(root, key, &v))
        return 0;
    if (!v || !json_object_is_type(v, json_type_boolean)) {
        st_errf(err, errlen, "%s: %s must be true or false, not %s", path, key, v ? type_name(v) : "null");
        return -1;
    }
    *out = json_object_get_boolean(v);
    return 0;
}

/* An optional string key copied into out[outlen]; null counts as absent. */
static int cfg_str(struct json_object *root, const char *key, char *out, size_t outlen, bool *present,
                   const char *path, char *err, size_t errlen)
{
    struct json_object *v;
    *present = false;
    if (!json_object_object_get_ex(root, key, &v) || !v)
        return 0;
    if (!json_object_is_type(v, json_type_string)) {
        st_errf(err, errlen, "%s: %s must be a string, not %s", path, key, type_name(v));
        return -1;
    }
    const char *s = json_object_get_string(v);
    if ((size_t)json_object_get_string_len(v) >= outlen || strlen(s) != (size_t)json_object_get_string_len(v)) {
        char pb[128];
        st_errf(err, errlen, "%s: %s \"%s\" is not a value llmcgi knows", path, key, st_printable(s, pb, sizeof pb));
        return -1;
    }
    memcpy(out, s, strlen(s) + 1);
    *present = true;
    return 0;
}

static const struct {
    const char *name;
    enum ckpt_act act;
} activations[] = {
    {"gelu_new", CKPT_ACT_GELU_TANH}, {"gelu_pytorch_tanh", CKPT_ACT_GELU_TANH}, {"gelu", CKPT_ACT_GELU_ERF},
    {"relu", CKPT_ACT_RELU},          {"quick_gelu", CKPT_ACT_QUICK_GELU},       {NULL, CKPT_ACT_GELU_TANH},
};

#define MAX_LABELS 4096         /* /classify ranks every label of every text */
#define MAX_LABEL_BYTES 256

void ckpt_labels_free(char **labels, int n)
{
    for (int i = 0; labels && i < n; i++)
        free(labels[i]);
    free(labels);
}

/* A sequence classifier's keys: id2label (keys "0".."n-1", string values),
 * num_labels (must agree with id2label; alone it names LABEL_0..), and
 * problem_type, as transformers' PretrainedConfig reads them. With labels
 * not NULL, *labels gets the num_labels names (caller frees with
 * ckpt_labels_free). Returns 0, or -1 with err naming path and key. */
static int classifier_config(struct json_object *root, struct gpt2_config *cfg, char ***labels, const char *path,
                             char *err, size_t errlen)
{
    static const char *const k_num[] = {"num_labels", NULL};
    int num = 0;
    bool null_num = false;
    char pb[128];
    if (cfg_int(root, k_num, 1, MAX_LABELS, &num, &null_num, path, err, errlen) < 0)
        return -1;
    struct json_object *map = NULL;
    if (json_object_object_get_ex(root, "id2label", &map) && map && !json_object_is_type(map, json_type_object)) {
        st_errf(err, errlen, "%s: id2label must be an object of \"index\": \"label\", not %s", path, type_name(map));
        return -1;
    }
    int n = map ? json_object_object_length(map) : num ? num : 2;
    if (map && (n < 1 || n > MAX_LABELS)) {
        st_errf(err, errlen, "%s: id2label has %d labels (1 to %d are accepted)", path, n, MAX_LABELS);
        return -1;
    }
    if (map && num && num != n) {
        st_errf(err, errlen, "%s: num_labels = %d disagrees with the %d labels of id2label", path, num, n);
        return -1;
    }
    char **names = labels ? calloc((size_t)n, sizeof *names) : NULL;
    if (labels && !names) {
        st_errf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    int rc = -1;
    if (map) {
        bool *seen = calloc((size_t)n, sizeof *seen);
        if (!seen) {
            st_errf(err, errlen, "%s: out of memory", path);
            goto out;
        }
        json_object_object_foreach(map, key, val)
        {
            char *end;
            long i = strtol(key, &end, 10);
            if (!*key || *end || key[0] == '-' || key[0] == '+' || i < 0 || i >= n || seen[i]) {
                st_errf(err, errlen, "%s: id2label key \"%s\" is not one of the indices 0 to %d (each once)", path,
                        st_printable(key, pb, sizeof pb), n - 1);
                free(seen);
                goto out;
            }
            seen[i] = true;
            if (!val || !json_object_is_type(val, json_type_string) || json_object_get_string_len(val) == 0 ||
                json_object_get_string_len(val) > MAX_LABEL_BYTES ||
                strlen(json_object_get_string(val)) != (size_t)json_object_get_string_len(val)) {
                st_errf(err, errlen, "%s: id2label[\"%ld\"] must be a label of 1 to %d bytes", path, i,
                        MAX_LABEL_BYTES);
                free(seen);
                goto out;
            }
            if (names && !(names[i] = strdup(json_object_get_string(val)))) {
                st_errf(err, errlen, "%s: out of memory", path);
                free(seen);
                goto out;
            }
        }
        free(seen);
    } else {
        for (int i = 0; names && i < n; i++) {
            char b[32];
            snprintf(b, sizeof b, "LABEL_%d", i);
            if (!(names[i] = strdup(b))) {
                st_errf(err, errlen, "%s: out of memory", path);
                goto out;
            }
        }
    }
    cfg->num_labels = n;
    char pt[64];
    bool present;
    if (cfg_str(root, "problem_type", pt, sizeof pt, &present, path, err, errlen) < 0)
        goto out;
    cfg->problem = CKPT_PROBLEM_NONE;
    if (present) {
        if (!strcmp(pt, "single_label_classification"))
            cfg->problem = CKPT_PROBLEM_SINGLE;
        else if (!strcmp(pt, "multi_label_classification"))
            cfg->problem = CKPT_PROBLEM_MULTI;
        else if (!strcmp(pt, "regression"))
            cfg->problem = CKPT_PROBLEM_REGRESSION;
        else {
            st_errf(err, errlen,
                    "%s: problem_type \"%s\" is not supported (single_label_classification, "
                    "multi_label_classification, regression)", path, st_printable(pt, pb, sizeof pb));
            goto out;
        }
    }
    if (cfg->problem == CKPT_PROBLEM_SINGLE && n == 1) {
        st_errf(err, errlen, "%s: problem_type single_label_classification needs at least 2 labels", path);
        goto out;
    }
    rc = 0;
out:
    if (labels && rc == 0)
        *labels = names;
    else
        ckpt_labels_free(names, n);
    return rc;
}

int gpt2_config_load(const char *path, struct gpt2_config *cfg, char *err, size_t errlen)
{
    static const char *const k_layer[] = {"n_layer", "num_hidden_layers", NULL};
    static const char *const k_head[] = {"n_head", "num_attention_heads", NULL};
    static const char *const k_embd[] = {"n_embd", "hidden_size", NULL};
    static const char *const k_pos[] = {"n_positions", "max_position_embeddings", "n_ctx", NULL};
    static const char *const k_inner[] = {"n_inner", NULL};
    static const char *const k_vocab[] = {"vocab_size", NULL};
    static const char *const k_bos[] = {"bos_token_id", NULL};
    static const char *const k_eos[] = {"eos_token_id", NULL};

    memset(cfg, 0, sizeof *cfg);
    strcpy(cfg->model_type, "gpt2");
    cfg->n_layer = 12;
    cfg->n_head = 12;
    cfg->n_embd = 768;
    cfg->n_positions = 1024;
    cfg->n_inner = 0;
    cfg->vocab_size = 50257;
    cfg->layer_norm_epsilon = 1e-5f;
    strcpy(cfg->activation, "gelu_new");
    cfg->act = CKPT_ACT_GELU_TANH;
    cfg->tie_word_embeddings = true;
    cfg->scale_attn_weights = true;
    cfg->scale_attn_by_inverse_layer_idx = false;
    cfg->bos_token_id = 50256;
    cfg->eos_token_id = 50256;

    struct json_object *root = read_json_file(path, MAX_CONFIG_BYTES, err, errlen);
    if (!root)
        return -1;
    int rc = -1;
    char pb2[128];
    if (!json_object_is_type(root, json_type_object)) {
        st_errf(err, errlen, "%s: not a JSON object", path);
        goto out;
    }

    /* The architecture first: a LLaMA config is refused as such, not for a missing key. */
    bool have_type = false;
    char model_type[64] = "";
    struct json_object *v;
    if (json_object_object_get_ex(root, "model_type", &v) && v) {
        if (!json_object_is_type(v, json_type_string)) {
            st_errf(err, errlen, "%s: model_type must be a string, not %s", path, type_name(v));
            goto out;
        }
        st_printable(json_object_get_string(v), model_type, sizeof model_type);
        have_type = true;
    }
    char arch[128] = "";
    if (json_object_object_get_ex(root, "architectures", &v) && v) {
        if (!json_object_is_type(v, json_type_array)) {
            st_errf(err, errlen, "%s: architectures must be a list, not %s", path, type_name(v));
            goto out;
        }
        if (json_object_array_length(v) > 0) {
            struct json_object *a0 = json_object_array_get_idx(v, 0);
            if (!a0 || !json_object_is_type(a0, json_type_string)) {
                st_errf(err, errlen, "%s: architectures[0] must be a string", path);
                goto out;
            }
            st_printable(json_object_get_string(a0), arch, sizeof arch);
        }
    }
    bool is_gpt2 = have_type ? strcmp(model_type, "gpt2") == 0 : (arch[0] == '\0' || strncmp(arch, "GPT2", 4) == 0);
    if (!is_gpt2) {
        if (arch[0])
            st_errf(err, errlen, "%s: unsupported architecture %s (model_type %s): llmcgi runs GPT-2 models", path, arch,
                 have_type ? model_type : "not given");
        else
            st_errf(err, errlen, "%s: unsupported model_type %s: llmcgi runs GPT-2 models", path, model_type);
        goto out;
    }
    if (strlen(arch) >= sizeof cfg->architecture) {
        st_errf(err, errlen, "%s: architectures[0] \"%s\" is too long", path, arch);
        goto out;
    }
    strcpy(cfg->architecture, arch);

    bool null_inner = false, null_bos = false, null_eos = false, present;
    if (cfg_int(root, k_layer, 1, MAX_LAYERS, &cfg->n_layer, NULL, path, err, errlen) < 0 ||
        cfg_int(root, k_head, 1, MAX_HEADS, &cfg->n_head, NULL, path, err, errlen) < 0 ||
        cfg_int(root, k_embd, 1, MAX_EMBD, &cfg->n_embd, NULL, path, err, errlen) < 0 ||
        cfg_int(root, k_pos, 1, MAX_POSITIONS, &cfg->n_positions, NULL, path, err, errlen) < 0 ||
        cfg_int(root, k_inner, 1, MAX_INNER, &cfg->n_inner, &null_inner, path, err, errlen) < 0 ||
        cfg_int(root, k_vocab, 1, MAX_VOCAB, &cfg->vocab_size, NULL, path, err, errlen) < 0 ||
        cfg_int(root, k_bos, 0, INT_MAX - 1, &cfg->bos_token_id, &null_bos, path, err, errlen) < 0 ||
        cfg_int(root, k_eos, 0, INT_MAX - 1, &cfg->eos_token_id, &null_eos, path, err, errlen) < 0)
        goto out;
    if (null_inner || cfg->n_inner == 0)
        cfg->n_inner = 4 * cfg->n_embd;
    if (null_bos)
        cfg->bos_token_id = -1;
    if (null_eos)
        cfg->eos_token_id = -1;
    if (cfg->n_embd % cfg->n_head != 0) {
        st_errf(err, errlen, "%s: n_embd %d is not divisible by n_head %d", path, cfg->n_embd, cfg->n_head);
        goto out;
    }

    if (json_object_object_get_ex(root, "layer_norm_epsilon", &v)) {
        if (!v || !(json_object_is_type(v, json_type_double) || json_object_is_type(v, json_type_int))) {
            st_errf(err, errlen, "%s: layer_norm_epsilon must be a number, not %s", path, v ? type_name(v) : "null");
            goto out;
        }
        double e = json_object_get_double(v);
        if (!(e > 0.0 && e < 1.0)) {
            st_errf(err, errlen, "%s: layer_norm_epsilon = %s is out of range (0, 1)", path, json_object_to_json_string(v));
            goto out;
        }
        cfg->layer_norm_epsilon = (float)e;
    }

    char act[64];
    if (cfg_str(root, "activation_function", act, sizeof act, &present, path, err, errlen) < 0)
        goto out;
    if (present) {
        int i = 0;
        while (activations[i].name && strcmp(activations[i].name, act) != 0)
            i++;
        if (!activations[i].name) {
            st_errf(err, errlen,
                 "%s: activation_function \"%s\" is not supported (gelu_new, gelu_pytorch_tanh, gelu, relu, quick_gelu)",
                 path, st_printable(act, pb2, sizeof pb2));
            goto out;
        }
        strcpy(cfg->activation, act);
        cfg->act = activations[i].act;
    }
    if (cfg_bool(root, "tie_word_embeddings", &cfg->tie_word_embeddings, path, err, errlen) < 0 ||
        cfg_bool(root, "scale_attn_weights", &cfg->scale_attn_weights, path, err, errlen) < 0 ||
        cfg_bool(root, "scale_attn_by_inverse_layer_idx", &cfg->scale_attn_by_inverse_layer_idx, path, err, errlen) < 0)
        goto out;
    bool cross = false;
    if (cfg_bool(root, "add_cross_attention", &cross, path, err, errlen) < 0)
        goto out;
    /* pad_token_id matters to classifiers only (where the pooling stops); a
     * negative one, which transformers accepts, matches no token: none */
    static const char *const k_pad[] = {"pad_token_id", NULL};
    bool null_pad = false;
    cfg->pad_token_id = -1;
    cfg->classifier = strcmp(cfg->architecture, "GPT2ForSequenceClassification") == 0;
    if (cfg->classifier &&
        cfg_int(root, k_pad, INT_MIN + 1, INT_MAX - 1, &cfg->pad_token_id, &null_pad, path, err, errlen) < 0)
        goto out;
    if (null_pad || cfg->pad_token_id < 0)
        cfg->pad_token_id = -1;
    if (cfg->classifier && classifier_config(root, cfg, NULL, path, err, errlen) < 0)
        goto out;
    if (cross) {
        st_errf(err, errlen, "%s: add_cross_attention (GPT-2 as an encoder-decoder half) is not supported", path);
        goto out;
    }
    rc = 0;
out:
    json_object_put(root);
    return rc;
}

/* ------------------------------------------------------------------ weights */

struct ckpt_priv {
    struct st_file **files;       /* owned */
    size_t n_files;
    struct json_object *weight_map; /* the index's weight_map (inside index_root) while opening, or NULL */
    struct json_object *index_root;
    char *label;                  /* file named in "missing tensor" messages; owned */
    void **copies;                /* aligned copies of tensors the file left unaligned; owned */
    size_t n_copies;
};

static void priv_free(struct ckpt_priv *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n_files; i++)
        st_close(p->files[i]);
    free(p->files);
    json_object_put(p->index_root);
    free(p->label);
    for (size_t i = 0; i < p->n_copies; i++)
        free(p->copies[i]);
    free(p->copies);
    free(p);
}

void gpt2_checkpoint_close(struct gpt2_checkpoint *ck)
{
    if (!ck)
        return;
    priv_free(ck->priv);
    ckpt_labels_free(ck->labels, ck->cfg.num_labels);
    free(ck->layers);
    free(ck->dir);
    free(ck);
}

void ckpt_tensor_done(const struct gpt2_checkpoint *ck, const struct ckpt_tensor *t)
{
    const struct ckpt_priv *p = ck->priv;
    if (!t->data)
        return;
    uintptr_t b = (uintptr_t)t->data, e = b + t->nbytes;
    for (size_t i = 0; i < p->n_files; i++) {
        const struct st_file *f = p->files[i];
        uintptr_t fb = (uintptr_t)f->map, fe = fb + f->size;
        if (b < fb || e > fe)
            continue;   /* not this mapping (or an aligned heap copy: left alone) */
        uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
        uintptr_t pb = (b + page - 1) & ~(page - 1), pe = e & ~(page - 1);
        /* A private, never-written file mapping: the pages fault back in from
         * the file if read again, so this only trims the resident set. */
        if (pe > pb)
            madvise((void *)pb, pe - pb, MADV_DONTNEED);
        return;
    }
}

static int add_file(struct ckpt_priv *p, const char *path, char *err, size_t errlen)
{
    struct st_file **nf = realloc(p->files, (p->n_files + 1) * sizeof *nf);
    if (!nf) {
        st_errf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    p->files = nf;
    struct st_file *f;
    if (st_open(path, &f, err, errlen) != ST_OK)
        return -1;
    p->files[p->n_files++] = f;
    return 0;
}

/* A shard's name from the index: a plain file name in the model directory. */
static bool plain_file_name(struct json_object *v)
{
    if (!json_object_is_type(v, json_type_string))
        return false;
    const char *s = json_object_get_string(v);
    size_t n = (size_t)json_object_get_string_len(v);
    if (n == 0 || n > 255 || strlen(s) != n || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '/' || s[i] == '\\' || (unsigned char)s[i] < 0x20)
            return false;
    }
    return true;
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int open_index(struct ckpt_priv *p, const char *dir, const char *index_path, char *err, size_t errlen)
{
    char pb[128], pb2[128];
    p->index_root = read_json_file(index_path, MAX_INDEX_BYTES, err, errlen);
    if (!p->index_root)
        return -1;
    if (!json_object_is_type(p->index_root, json_type_object)) {
        st_errf(err, errlen, "%s: not a JSON object", index_path);
        return -1;
    }
    struct json_object *wm, *md;
    if (!json_object_object_get_ex(p->index_root, "weight_map", &wm) || !wm ||
        !json_object_is_type(wm, json_type_object)) {
        st_errf(err, errlen, "%s: no \"weight_map\" object", index_path);
        return -1;
    }
    if (json_object_object_get_ex(p->index_root, "metadata", &md) && md && !json_object_is_type(md, json_type_object)) {
        st_errf(err, errlen, "%s: \"metadata\" is not an object", index_path);
        return -1;
    }
    p->weight_map = wm;
    /* Each distinct shard once (sorted, so that a huge index stays n log n). */
    size_t n = (size_t)json_object_object_length(wm);
    const char **names = calloc(n + 1, sizeof *names);
    size_t nn = 0;
    if (!names) {
        st_errf(err, errlen, "%s: out of memory", index_path);
        return -1;
    }
    int rc = 0;
    json_object_object_foreach(wm, tname, v)
    {
        if (!plain_file_name(v)) {
            st_errf(err, errlen, "%s: tensor %s: shard \"%s\" is not a plain file name in the model directory", index_path,
                 st_printable(tname, pb, sizeof pb),
                 json_object_is_type(v, json_type_string) ? st_printable(json_object_get_string(v), pb2, sizeof pb2)
                                                          : type_name(v));
            rc = -1;
            break;
        }
        if (nn < n)
            names[nn++] = json_object_get_string(v);
    }
    if (rc == 0) {
        qsort(names, nn, sizeof *names, cmp_str_ptr);
        size_t u = 0;
        for (size_t i = 0; i < nn; i++) {
            if (u == 0 || strcmp(names[u - 1], names[i]) != 0)
                names[u++] = names[i];
        }
        nn = u;
        if (nn > MAX_SHARDS) {
            st_errf(err, errlen, "%s: %zu shards is more than the %d accepted", index_path, nn, MAX_SHARDS);
            rc = -1;
        }
    }
    for (size_t i = 0; rc == 0 && i < nn; i++) {
        char *sp = path_join(dir, names[i]);
        if (!sp) {
            st_errf(err, errlen, "%s: out of memory", index_path);
            rc = -1;
            break;
        }
        rc = add_file(p, sp, err, errlen);
        free(sp);
    }
    free(names);
    return rc;
}

/* What config.json promises for one tensor. */
struct want {
    const char *name;             /* without "transformer." */
    bool prefixable;              /* may carry "transformer." */
    int ndim;
    int64_t shape[2];
};

static void fmt_shape(char *buf, size_t len, int ndim, const int64_t *shape)
{
    size_t o = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (o < len)
        snprintf(buf + o, len - o, "]");
}

/* Finds and checks one tensor; fills *out. Returns 0 or -1 with err. */
static int load_tensor(struct ckpt_priv *p, const struct want *w, struct ckpt_tensor *out, char *err, size_t errlen)
{
    char full[256];
    snprintf(full, sizeof full, "transformer.%s", w->name);
    const struct st_file *hf = NULL;
    const struct st_tensor *ht = NULL;
    for (size_t i = 0; i < p->n_files; i++) {
        const char *cands[2] = {w->name, w->prefixable ? full : NULL};
        for (int c = 0; c < 2; c++) {
            if (!cands[c])
                continue;
            const struct st_tensor *t = st_find(&p->files[i]->hdr, cands[c]);
            if (!t)
                continue;
            if (ht) {
                st_errf(err, errlen, "%s: tensor %s is stored twice (as %s in %s and as %s in %s)", p->label, w->name,
                     ht->name, hf->path, t->name, p->files[i]->path);
                return -1;
            }
            hf = p->files[i];
            ht = t;
        }
    }
    if (!ht) {
        struct json_object *where = NULL;
        if (p->weight_map && !json_object_object_get_ex(p->weight_map, w->name, &where))
            json_object_object_get_ex(p->weight_map, full, &where);
        if (where && json_object_is_type(where, json_type_string))
            st_errf(err, errlen, "%s: missing tensor %s (the index places it in %s, which does not hold it)", p->label,
                 w->name, json_object_get_string(where));
        else
            st_errf(err, errlen, "%s: missing tensor %s", p->label, w->name);
        return -1;
    }
    enum ckpt_dtype dt;
    switch (ht->dtype) {
    case ST_F32:
        dt = CKPT_F32;
        break;
    case ST_F16:
        dt = CKPT_F16;
        break;
    case ST_BF16:
        dt = CKPT_BF16;
        break;
    default:
        st_errf(err, errlen, "%s: tensor %s: dtype %s is not supported (llmcgi reads F32, F16 and BF16)", hf->path,
             ht->name, st_dtype_name(ht->dtype));
        return -1;
    }
    bool same = ht->ndim == w->ndim;
    for (int i = 0; same && i < w->ndim; i++)
        same = ht->shape[i] == w->shape[i];
    if (!same) {
        char got[128], want[64];
        fmt_shape(got, sizeof got, ht->ndim, ht->shape);
        fmt_shape(want, sizeof want, w->ndim, w->shape);
        st_errf(err, errlen, "%s: tensor %s: shape %s, expected %s from config.json", hf->path, ht->name, got, want);
        return -1;
    }
    const void *data = st_tensor_data(hf, ht);
    size_t esz = ckpt_dtype_size(dt), nbytes = (size_t)(ht->end - ht->begin);
    if ((uintptr_t)data % esz != 0) {
        /* The file leaves the tensor unaligned (a header length that is not
         * a multiple of 8): hand out an aligned copy instead. */
        void **nc = realloc(p->copies, (p->n_copies + 1) * sizeof *nc);
        if (!nc) {
            st_errf(err, errlen, "%s: out of memory", hf->path);
            return -1;
        }
        p->copies = nc;
        void *copy = malloc(nbytes ? nbytes : 1);
        if (!copy) {
            st_errf(err, errlen, "%s: tensor %s: out of memory for an aligned copy", hf->path, ht->name);
            return -1;
        }
        memcpy(copy, data, nbytes);
        p->copies[p->n_copies++] = copy;
        data = copy;
    }
    out->data = data;
    out->dtype = dt;
    out->ndim = ht->ndim;
    memset(out->shape, 0, sizeof out->shape);
    for (int i = 0; i < ht->ndim; i++)
        out->shape[i] = ht->shape[i];
    out->nbytes = nbytes;
    return 0;
}

/* Picks the weight files: model.safetensors, else the index's shards. */
static int open_weights(struct ckpt_priv *p, const char *dir, char *err, size_t errlen)
{
    char *single = path_join(dir, "model.safetensors");
    char *index = path_join(dir, "model.safetensors.index.json");
    int rc = -1;
    if (!single || !index) {
        st_errf(err, errlen, "%s: out of memory", dir);
        goto out;
    }
    if (exists(single)) {
        p->label = single;
        single = NULL;
        rc = add_file(p, p->label, err, errlen);
    } else if (exists(index)) {
        p->label = index;
        index = NULL;
        rc = open_index(p, dir, p->label, err, errlen);
    } else {
        static const char *const others[] = {"pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5",
                                             "flax_model.msgpack", "model.ckpt.index", NULL};
        for (int i = 0; others[i]; i++) {
            char *o = path_join(dir, others[i]);
            if (o && exists(o)) {
                st_errf(err, errlen,
                     "%s: llmcgi reads only safetensors weights (model.safetensors); convert this checkpoint, "
                     "e.g. with transformers: model.save_pretrained(dir, safe_serialization=True)",
                     o);
                free(o);
                goto out;
            }
            free(o);
        }
        st_errf(err, errlen, "%s: not found (nor model.safetensors.index.json)", single);
    }
out:
    free(single);
    free(index);
    return rc;
}

int gpt2_checkpoint_open(const char *dir, struct gpt2_checkpoint **out, char *err, size_t errlen)
{
    *out = NULL;
    struct gpt2_checkpoint *ck = calloc(1, sizeof *ck);
    struct ckpt_priv *p = calloc(1, sizeof *p);
    char *cfg_path = path_join(dir, "config.json");
    if (!ck || !p || !cfg_path || !(ck->dir = strdup(dir))) {
        st_errf(err, errlen, "%s: out of memory", dir);
        free(cfg_path);
        free(p);
        gpt2_checkpoint_close(ck);
        return -1;
    }
    ck->priv = p;
    int rc = gpt2_config_load(cfg_path, &ck->cfg, err, errlen);
    if (rc == 0 && ck->cfg.classifier) {
        /* the labels: read again (config.json is small), now keeping the names */
        struct json_object *root = read_json_file(cfg_path, MAX_CONFIG_BYTES, err, errlen);
        rc = root ? classifier_config(root, &ck->cfg, &ck->labels, cfg_path, err, errlen) : -1;
        json_object_put(root);
    }
    free(cfg_path);
    if (rc < 0 || open_weights(p, dir, err, errlen) < 0)
        goto fail;

    const struct gpt2_config *c = &ck->cfg;
    int64_t C = c->n_embd, I = c->n_inner, V = c->vocab_size, P = c->n_positions;
    ck->layers = calloc((size_t)c->n_layer, sizeof *ck->layers);
    if (!ck->layers) {
        st_errf(err, errlen, "%s: out of memory", dir);
        goto fail;
    }
    struct {
        struct want w;
        struct ckpt_tensor *t;
    } top[] = {
        {{"wte.weight", true, 2, {V, C}}, &ck->wte},
        {{"wpe.weight", true, 2, {P, C}}, &ck->wpe},
        {{"ln_f.weight", true, 1, {C, 0}}, &ck->ln_f_w},
        {{"ln_f.bias", true, 1, {C, 0}}, &ck->ln_f_b},
    };
    for (size_t i = 0; i < sizeof top / sizeof top[0]; i++) {
        if (load_tensor(p, &top[i].w, top[i].t, err, errlen) < 0)
            goto fail;
        ck->weight_bytes += top[i].t->nbytes;
    }
    for (int l = 0; l < c->n_layer; l++) {
        struct gpt2_layer_tensors *L = &ck->layers[l];
        struct {
            const char *suffix;
            int ndim;
            int64_t d0, d1;
            struct ckpt_tensor *t;
        } lt[] = {
            {"ln_1.weight", 1, C, 0, &L->ln_1_w},          {"ln_1.bias", 1, C, 0, &L->ln_1_b},
            {"attn.c_attn.weight", 2, C, 3 * C, &L->c_attn_w}, {"attn.c_attn.bias", 1, 3 * C, 0, &L->c_attn_b},
            {"attn.c_proj.weight", 2, C, C, &L->c_proj_w}, {"attn.c_proj.bias", 1, C, 0, &L->c_proj_b},
            {"ln_2.weight", 1, C, 0, &L->ln_2_w},          {"ln_2.bias", 1, C, 0, &L->ln_2_b},
            {"mlp.c_fc.weight", 2, C, I, &L->c_fc_w},      {"mlp.c_fc.bias", 1, I, 0, &L->c_fc_b},
            {"mlp.c_proj.weight", 2, I, C, &L->mlp_proj_w}, {"mlp.c_proj.bias", 1, C, 0, &L->mlp_proj_b},
        };
        for (size_t i = 0; i < sizeof lt / sizeof lt[0]; i++) {
            char name[96];
            snprintf(name, sizeof name, "h.%d.%s", l, lt[i].suffix);
            struct want w = {name, true, lt[i].ndim, {lt[i].d0, lt[i].d1}};
            if (load_tensor(p, &w, lt[i].t, err, errlen) < 0)
                goto fail;
            ck->weight_bytes += lt[i].t->nbytes;
        }
    }
    if (c->classifier) {
        /* GPT2ForSequenceClassification: score = nn.Linear(n_embd, num_labels, bias=False); no LM head */
        struct want w = {"score.weight", false, 2, {c->num_labels, C}};
        if (load_tensor(p, &w, &ck->score, err, errlen) < 0)
            goto fail;
        ck->weight_bytes += ck->score.nbytes;
    } else if (c->tie_word_embeddings) {
        ck->lm_head = ck->wte;
    } else {
        struct want w = {"lm_head.weight", false, 2, {V, C}};
        if (load_tensor(p, &w, &ck->lm_head, err, errlen) < 0)
            goto fail;
        ck->weight_bytes += ck->lm_head.nbytes;
    }
    /* The index was needed only to find the shards and name them in messages. */
    json_object_put(p->index_root);
    p->index_root = NULL;
    p->weight_map = NULL;
    *out = ck;
    return 0;
fail:
    gpt2_checkpoint_close(ck);
    return -1;
}
