/* gen_gpt2_lib.c -- writes a GPT-2 model directory (config.json, safetensors weights, index, tokenizer files) with counter-hashed weights. */
#include "config.h"

#include "gen_gpt2.h"
#include "safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define GOLDEN 0x9e3779b97f4a7c15ull
#define SQRT3 1.7320508075688772
#define CHUNK 65536

void gen_gpt2_defaults(struct gen_gpt2_opts *o)
{
    memset(o, 0, sizeof *o);
    o->n_layer = 2;
    o->n_head = 2;
    o->n_embd = 64;
    o->n_inner = 0;
    o->n_positions = 128;
    o->vocab_size = 50257;
    o->dtype = CKPT_F32;
    o->seed = 1234;
    o->std = 0.08;
    o->shards = 1;
    o->activation = "gelu_new";
    o->pad_token_id = -1;
}

/* ------------------------------------------------------------------ values */

/* splitmix64's output function: a bijective 64-bit mixer. */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The per-tensor key: the seed mixed with FNV-1a of the name. */
static uint64_t tensor_key(uint64_t seed, const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    return mix64(mix64(seed + GOLDEN) ^ h);
}

enum kind { K_WEIGHT, K_GAIN, K_TRIL };

/* How a tensor's values are drawn: offset + uniform of standard deviation std * factor. */
struct draw {
    enum kind kind;
    double factor;
};

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* The distribution of a tensor, from its name (without "transformer."). */
static struct draw draw_for(const char *name)
{
    if (ends_with(name, ".attn.bias"))
        return (struct draw){K_TRIL, 0};
    bool ln = strncmp(name, "ln_f.", 5) == 0 || strstr(name, ".ln_1.") || strstr(name, ".ln_2.");
    if (ln && ends_with(name, ".weight"))
        return (struct draw){K_GAIN, 1.0};
    if (ends_with(name, ".bias"))
        return (struct draw){K_WEIGHT, 0.25};
    if (strcmp(name, "wpe.weight") == 0)
        return (struct draw){K_WEIGHT, 0.5};
    return (struct draw){K_WEIGHT, 1.0};
}

/* The step of the uniform grid: std * factor * sqrt(3) / 2^24, as a float. */
static float step_for(double std, double factor)
{
    return (float)(std * factor * SQRT3 / 16777216.0);
}

/* Element i of a tensor keyed `key`: (float)(m * step) with m an odd integer
 * in (-2^24, 2^24); the product is exact in double, so one rounding. */
static float value_at(uint64_t key, uint64_t i, float step, bool gain)
{
    uint64_t h = mix64(key + (i + 1) * GOLDEN);
    int32_t m = (int32_t)(2 * (h >> 40)) - ((1 << 24) - 1);
    double v = (double)m * (double)step;
    return gain ? (float)(1.0 + v) : (float)v;
}

float gen_gpt2_value(const struct gen_gpt2_opts *o, const char *name, uint64_t i)
{
    struct draw d = draw_for(name);
    if (d.kind == K_TRIL)
        return 0.0f;          /* not a float tensor; see write_tensor */
    return value_at(tensor_key(o->seed, name), i, step_for(o->std, d.factor), d.kind == K_GAIN);
}

/* ------------------------------------------------------------------ the tensor plan */

struct gtensor {
    char name[112];               /* as written (maybe with "transformer.") */
    char canon[96];               /* without the prefix: keys the values */
    enum st_dtype dtype;
    int ndim;
    int64_t shape[4];
    uint64_t nelem, nbytes;
    bool model;                   /* a weight (not a buffer) */
    int shard;
    uint64_t begin;               /* within its file's data region */
};

struct plan {
    struct gtensor *t;
    size_t n, cap;
};

static int plan_add(struct plan *p, const struct gen_gpt2_opts *o, const char *canon, enum st_dtype dt, bool model,
                    int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 64;
        struct gtensor *nt = realloc(p->t, cap * sizeof *nt);
        if (!nt)
            return -1;
        p->t = nt;
        p->cap = cap;
    }
    struct gtensor *t = &p->t[p->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->canon, sizeof t->canon, "%s", canon);
    bool pre = o->prefix && strcmp(canon, "lm_head.weight") != 0 && strcmp(canon, "score.weight") != 0;
    snprintf(t->name, sizeof t->name, "%s%s", pre ? "transformer." : "", canon);
    t->dtype = dt;
    t->model = model;
    t->ndim = ndim;
    int64_t d[4] = {d0, d1, d2, d3};
    t->nelem = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = d[i];
        t->nelem *= (uint64_t)d[i];
    }
    t->nbytes = t->nelem * st_dtype_bits(dt) / 8;
    return 0;
}

static enum st_dtype st_of(enum ckpt_dtype d)
{
    return d == CKPT_F32 ? ST_F32 : d == CKPT_F16 ? ST_F16 : ST_BF16;
}

static int make_plan(const struct gen_gpt2_opts *o, struct plan *p)
{
    int64_t C = o->n_embd, I = o->n_inner > 0 ? o->n_inner : 4 * (int64_t)o->n_embd, V = o->vocab_size,
            P = o->n_positions;
    enum st_dtype dt = st_of(o->dtype);
    char n[96];
    int rc = 0;
    rc |= plan_add(p, o, "wte.weight", dt, true, 2, V, C, 0, 0);
    rc |= plan_add(p, o, "wpe.weight", dt, true, 2, P, C, 0, 0);
    for (int l = 0; l < o->n_layer && rc == 0; l++) {
        static const struct {
            const char *suffix;
            int ndim;
            int a0, a1;           /* 1: C, 3: 3C, 4: I */
        } lt[] = {
            {"ln_1.weight", 1, 1, 0},        {"ln_1.bias", 1, 1, 0},         {"attn.c_attn.weight", 2, 1, 3},
            {"attn.c_attn.bias", 1, 3, 0},   {"attn.c_proj.weight", 2, 1, 1}, {"attn.c_proj.bias", 1, 1, 0},
            {"ln_2.weight", 1, 1, 0},        {"ln_2.bias", 1, 1, 0},         {"mlp.c_fc.weight", 2, 1, 4},
            {"mlp.c_fc.bias", 1, 4, 0},      {"mlp.c_proj.weight", 2, 4, 1}, {"mlp.c_proj.bias", 1, 1, 0},
        };
        for (size_t i = 0; i < sizeof lt / sizeof lt[0]; i++) {
            int64_t d[2];
            for (int k = 0; k < 2; k++) {
                int a = k ? lt[i].a1 : lt[i].a0;
                d[k] = a == 1 ? C : a == 3 ? 3 * C : a == 4 ? I : 0;
            }
            snprintf(n, sizeof n, "h.%d.%s", l, lt[i].suffix);
            rc |= plan_add(p, o, n, dt, true, lt[i].ndim, d[0], d[1], 0, 0);
        }
        if (o->prefix) {
            /* The causal-mask buffers older transformers saved with the weights
             * (transformers ignores them on load; attn.masked_bias it would report). */
            snprintf(n, sizeof n, "h.%d.attn.bias", l);
            rc |= plan_add(p, o, n, ST_BOOL, false, 4, 1, 1, P, P);
        }
    }
    rc |= plan_add(p, o, "ln_f.weight", dt, true, 1, C, 0, 0, 0);
    rc |= plan_add(p, o, "ln_f.bias", dt, true, 1, C, 0, 0, 0);
    if (o->num_labels > 0)
        rc |= plan_add(p, o, "score.weight", dt, true, 2, o->num_labels, C, 0, 0);
    else if (o->untied)
        rc |= plan_add(p, o, "lm_head.weight", dt, true, 2, V, C, 0, 0);
    return rc;
}

/* File order inside a shard, as the safetensors writer does: wider element
 * types first, then by name, so every tensor stays aligned to its element size. */
static int cmp_file_order(const void *a, const void *b)
{
    const struct gtensor *x = a, *y = b;
    if (x->shard != y->shard)
        return x->shard < y->shard ? -1 : 1;
    unsigned bx = st_dtype_bits(x->dtype), by = st_dtype_bits(y->dtype);
    if (bx != by)
        return bx > by ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const struct gtensor *)a)->name, ((const struct gtensor *)b)->name);
}

uint64_t gen_gpt2_weight_bytes(const struct gen_gpt2_opts *o)
{
    struct plan p = {0};
    uint64_t total = 0;
    if (make_plan(o, &p) == 0) {
        for (size_t i = 0; i < p.n; i++)
            total += p.t[i].model ? p.t[i].nbytes : 0;
    }
    free(p.t);
    return total;
}

/* ------------------------------------------------------------------ writing */

struct sbuf {
    char *s;
    size_t len, cap;
    bool oom;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->len;
        int n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? room : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if (b->s && (size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + (size_t)n + 1)
            cap *= 2;
        char *ns = realloc(b->s, cap);
        if (!ns) {
            b->oom = true;
            return;
        }
        b->s = ns;
        b->cap = cap;
    }
}

static int write_all(FILE *f, const void *p, size_t n)
{
    return fwrite(p, 1, n, f) == n ? 0 : -1;
}

/* Streams tensor t's elements into f, converted to its dtype. */
static int write_tensor(FILE *f, const struct gen_gpt2_opts *o, const struct gtensor *t, void *buf)
{
    if (t->dtype == ST_BOOL) {              /* [1, 1, P, P]: row r sees columns <= r */
        uint8_t *b = buf;
        int64_t P = t->shape[2];
        for (int64_t r = 0; r < P; r++) {
            for (int64_t c = 0; c < P; c++)
                b[c] = c <= r;
            if (write_all(f, b, (size_t)P) < 0)
                return -1;
        }
        return 0;
    }
    struct draw d = draw_for(t->canon);
    uint64_t key = tensor_key(o->seed, t->canon);
    float step = step_for(o->std, d.factor);
    float *fv = buf;                        /* CHUNK floats, then CHUNK halves */
    uint16_t *hv = (uint16_t *)(fv + CHUNK);
    bool gain = d.kind == K_GAIN;
    for (uint64_t i0 = 0; i0 < t->nelem; i0 += CHUNK) {
        size_t n = t->nelem - i0 < CHUNK ? (size_t)(t->nelem - i0) : CHUNK;
        for (size_t j = 0; j < n; j++)
            fv[j] = value_at(key, i0 + j, step, gain);
        if (t->dtype == ST_F16) {
            for (size_t j = 0; j < n; j++)
                hv[j] = ckpt_f32_to_f16(fv[j]);
        } else if (t->dtype == ST_BF16) {
            for (size_t j = 0; j < n; j++)
                hv[j] = ckpt_f32_to_bf16(fv[j]);
        }
        if (write_all(f, t->dtype == ST_F32 ? (void *)fv : (void *)hv, n * (st_dtype_bits(t->dtype) / 8)) < 0)
            return -1;
    }
    return 0;
}

/* dir/name into a fixed buffer; -1 if it does not fit. */
static int join(char *out, size_t outlen, const char *dir, const char *name)
{
    int n = snprintf(out, outlen, "%s/%s", dir, name);
    return n < 0 || (size_t)n >= outlen ? -1 : 0;
}

/* Writes one safetensors file holding plan entries [a, b) (already in file order). */
static int write_shard(const struct gen_gpt2_opts *o, struct gtensor *t, size_t a, size_t b, const char *path,
                       void *buf, char *err, size_t errlen)
{
    struct sbuf h = {0};
    uint64_t off = 0;
    sb_printf(&h, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (size_t i = a; i < b; i++) {
        t[i].begin = off;
        sb_printf(&h, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t[i].name, st_dtype_name(t[i].dtype));
        for (int k = 0; k < t[i].ndim; k++)
            sb_printf(&h, "%s%lld", k ? "," : "", (long long)t[i].shape[k]);
        sb_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                  (unsigned long long)(off + t[i].nbytes));
        off += t[i].nbytes;
    }
    sb_printf(&h, "}");
    while (!h.oom && (8 + h.len) % 8 != 0)
        sb_printf(&h, " ");             /* the data region starts 8-byte aligned */
    if (h.oom) {
        free(h.s);
        st_errf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        st_errf(err, errlen, "%s: %s", tmp, strerror(errno));
        free(h.s);
        return -1;
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)((uint64_t)h.len >> (8 * i));
    int rc = write_all(f, len8, 8) | write_all(f, h.s, h.len);
    free(h.s);
    for (size_t i = a; i < b && rc == 0; i++)
        rc = write_tensor(f, o, &t[i], buf);
    if (fclose(f) != 0)
        rc = -1;
    if (rc < 0 || rename(tmp, path) < 0) {
        st_errf(err, errlen, "%s: write failed: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

static int write_json(const char *path, struct json_object *o, char *err, size_t errlen)
{
    const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                                                          JSON_C_TO_STRING_NOSLASHESCAPE);
    if (!s) {
        st_errf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    FILE *f = fopen(path, "w");
    if (!f) {
        st_errf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    int rc = fputs(s, f) < 0 || fputc('\n', f) == EOF ? -1 : 0;
    if (fclose(f) != 0)
        rc = -1;
    if (rc < 0)
        st_errf(err, errlen, "%s: write failed", path);
    return rc;
}

/* json-c builders that note a failed allocation in *bad (v NULL from a
 * failed constructor counts as a failure; put_null adds a JSON null). */
static void put(struct json_object *obj, const char *key, struct json_object *v, bool *bad)
{
    if (!v || json_object_object_add(obj, key, v) != 0) {
        json_object_put(v);
        *bad = true;
    }
}

static void put_null(struct json_object *obj, const char *key, bool *bad)
{
    if (json_object_object_add(obj, key, NULL) != 0)
        *bad = true;
}

/* The token id config.json and generation_config.json name for bos/eos. */
static int eos_id(const struct gen_gpt2_opts *o)
{
    return o->vocab_size > 50256 ? 50256 : o->vocab_size - 1;
}

/* id2label {"0": name, ...} and label2id {name: 0, ...} from o->labels
 * (comma-separated) or LABEL_i. Returns 0, or -1 (out of memory, too few names). */
static int add_labels(struct json_object *c, const struct gen_gpt2_opts *o)
{
    bool bad = false;
    struct json_object *id2 = json_object_new_object(), *l2i = json_object_new_object();
    const char *s = o->labels;
    for (int i = 0; i < o->num_labels && id2 && l2i; i++) {
        char name[128], key[16];
        if (s) {
            size_t len = strcspn(s, ",");
            if (len == 0 || len >= sizeof name) {
                bad = true;
                break;
            }
            memcpy(name, s, len);
            name[len] = '\0';
            s += len + (s[len] == ',');
        } else {
            snprintf(name, sizeof name, "LABEL_%d", i);
        }
        snprintf(key, sizeof key, "%d", i);
        put(id2, key, json_object_new_string(name), &bad);
        put(l2i, name, json_object_new_int(i), &bad);
    }
    if (!id2 || !l2i)
        bad = true;
    put(c, "id2label", id2, &bad);
    put(c, "label2id", l2i, &bad);
    return bad ? -1 : 0;
}

static int write_config(const struct gen_gpt2_opts *o, char *err, size_t errlen)
{
    char path[4200];
    if (join(path, sizeof path, o->out_dir, "config.json") < 0) {
        st_errf(err, errlen, "%s: path too long", o->out_dir);
        return -1;
    }
    int eos = eos_id(o);
    const char *dtname = o->dtype == CKPT_F32 ? "float32" : o->dtype == CKPT_F16 ? "float16" : "bfloat16";
    bool bad = false;
    struct json_object *c = json_object_new_object(), *arch = json_object_new_array();
    const char *arch_name = o->num_labels > 0 ? "GPT2ForSequenceClassification" : "GPT2LMHeadModel";
    if (!c || !arch || json_object_array_add(arch, json_object_new_string(arch_name)) != 0) {
        json_object_put(c);
        json_object_put(arch);
        st_errf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    /* Every key of transformers' GPT2Config, in sorted order. */
    put(c, "activation_function", json_object_new_string(o->activation), &bad);
    put(c, "add_cross_attention", json_object_new_boolean(0), &bad);
    put(c, "architectures", arch, &bad);
    put(c, "attn_pdrop", json_object_new_double_s(0.1, "0.1"), &bad);
    put(c, "bos_token_id", json_object_new_int(eos), &bad);
    put(c, "dtype", json_object_new_string(dtname), &bad);
    put(c, "embd_pdrop", json_object_new_double_s(0.1, "0.1"), &bad);
    put(c, "eos_token_id", json_object_new_int(eos), &bad);
    if (o->num_labels > 0 && add_labels(c, o) < 0)
        bad = true;
    put(c, "initializer_range", json_object_new_double_s(0.02, "0.02"), &bad);
    put(c, "layer_norm_epsilon", json_object_new_double_s(1e-5, "1e-05"), &bad);
    put(c, "model_type", json_object_new_string("gpt2"), &bad);
    put(c, "n_ctx", json_object_new_int(o->n_positions), &bad);
    put(c, "n_embd", json_object_new_int(o->n_embd), &bad);
    put(c, "n_head", json_object_new_int(o->n_head), &bad);
    if (o->n_inner > 0)
        put(c, "n_inner", json_object_new_int(o->n_inner), &bad);
    else
        put_null(c, "n_inner", &bad);
    put(c, "n_layer", json_object_new_int(o->n_layer), &bad);
    put(c, "n_positions", json_object_new_int(o->n_positions), &bad);
    if (o->num_labels > 0) {
        if (o->pad_token_id >= 0)
            put(c, "pad_token_id", json_object_new_int(o->pad_token_id), &bad);
        else
            put_null(c, "pad_token_id", &bad);
        if (o->problem_type)
            put(c, "problem_type", json_object_new_string(o->problem_type), &bad);
        else
            put_null(c, "problem_type", &bad);
    }
    put(c, "reorder_and_upcast_attn", json_object_new_boolean(0), &bad);
    put(c, "resid_pdrop", json_object_new_double_s(0.1, "0.1"), &bad);
    put(c, "scale_attn_by_inverse_layer_idx", json_object_new_boolean(0), &bad);
    put(c, "scale_attn_weights", json_object_new_boolean(1), &bad);
    put_null(c, "summary_activation", &bad);
    put(c, "summary_first_dropout", json_object_new_double_s(0.1, "0.1"), &bad);
    put(c, "summary_proj_to_labels", json_object_new_boolean(1), &bad);
    put(c, "summary_type", json_object_new_string("cls_index"), &bad);
    put(c, "summary_use_proj", json_object_new_boolean(1), &bad);
    put(c, "tie_word_embeddings", json_object_new_boolean(!o->untied), &bad);
    put(c, "torch_dtype", json_object_new_string(dtname), &bad);     /* "dtype" before transformers 5 */
    put(c, "use_cache", json_object_new_boolean(1), &bad);
    put(c, "vocab_size", json_object_new_int(o->vocab_size), &bad);
    int rc = -1;
    if (bad)
        st_errf(err, errlen, "%s: out of memory", path);
    else
        rc = write_json(path, c, err, errlen);
    json_object_put(c);
    if (rc < 0)
        return -1;

    if (join(path, sizeof path, o->out_dir, "generation_config.json") < 0) {
        st_errf(err, errlen, "%s: path too long", o->out_dir);
        return -1;
    }
    struct json_object *g = json_object_new_object();
    if (!g) {
        st_errf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    put(g, "_from_model_config", json_object_new_boolean(1), &bad);
    put(g, "bos_token_id", json_object_new_int(eos), &bad);
    put(g, "eos_token_id", json_object_new_int(eos), &bad);
    rc = -1;
    if (bad)
        st_errf(err, errlen, "%s: out of memory", path);
    else
        rc = write_json(path, g, err, errlen);
    json_object_put(g);
    return rc;
}

static int write_index(const struct gen_gpt2_opts *o, struct gtensor *t, size_t n, char names[][64], uint64_t total,
                       char *err, size_t errlen)
{
    char path[4200];
    if (join(path, sizeof path, o->out_dir, "model.safetensors.index.json") < 0) {
        st_errf(err, errlen, "%s: path too long", o->out_dir);
        return -1;
    }
    qsort(t, n, sizeof *t, cmp_name);
    bool bad = false;
    struct json_object *root = json_object_new_object(), *md = json_object_new_object(),
                       *wm = json_object_new_object();
    if (!root || !md || !wm) {
        json_object_put(root);
        json_object_put(md);
        json_object_put(wm);
        st_errf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    put(md, "total_size", json_object_new_int64((int64_t)total), &bad);
    for (size_t i = 0; i < n; i++)
        put(wm, t[i].name, json_object_new_string(names[t[i].shard]), &bad);
    put(root, "metadata", md, &bad);
    put(root, "weight_map", wm, &bad);
    int rc = -1;
    if (bad)
        st_errf(err, errlen, "%s: out of memory", path);
    else
        rc = write_json(path, root, err, errlen);
    json_object_put(root);
    return rc;
}

/* Copies src to dst byte for byte. */
static int copy_file(const char *src, const char *dst, char *err, size_t errlen)
{
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        st_errf(err, errlen, "%s: %s", src, strerror(errno));
        return -1;
    }
    int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0) {
        st_errf(err, errlen, "%s: %s", dst, strerror(errno));
        close(in);
        return -1;
    }
    char buf[65536];
    int rc = 0;
    for (;;) {
        ssize_t r = read(in, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            st_errf(err, errlen, "%s: %s", src, strerror(errno));
            rc = -1;
            break;
        }
        if (r == 0)
            break;
        for (ssize_t o = 0; o < r;) {
            ssize_t w = write(out, buf + o, (size_t)(r - o));
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                st_errf(err, errlen, "%s: %s", dst, strerror(errno));
                rc = -1;
                break;
            }
            o += w;
        }
        if (rc < 0)
            break;
    }
    close(in);
    if (close(out) < 0 && rc == 0) {
        st_errf(err, errlen, "%s: %s", dst, strerror(errno));
        rc = -1;
    }
    return rc;
}

/* mkdir -p. */
static int make_dirs(const char *dir, char *err, size_t errlen)
{
    char p[4096];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p) {
        st_errf(err, errlen, "%s: path too long", dir);
        return -1;
    }
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == '\0') {
            char c = *s;
            *s = '\0';
            if (mkdir(p, 0755) < 0 && errno != EEXIST) {
                st_errf(err, errlen, "%s: %s", p, strerror(errno));
                return -1;
            }
            *s = c;
            if (c == '\0')
                break;
        }
    }
    struct stat st;
    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
        st_errf(err, errlen, "%s: not a directory", dir);
        return -1;
    }
    return 0;
}

/* Removes weight files of an earlier run, so that a loader cannot pick a
 * stale model.safetensors over a new index (or the other way round). */
static void remove_old_weights(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char p[4400];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, "model.safetensors") == 0 || strcmp(e->d_name, "model.safetensors.index.json") == 0 ||
            fnmatch("model-*-of-*.safetensors", e->d_name, 0) == 0) {
            if (join(p, sizeof p, dir, e->d_name) == 0)
                unlink(p);
        }
    }
    closedir(d);
}

static bool known_activation(const char *a)
{
    static const char *const acts[] = {"gelu_new", "gelu_pytorch_tanh", "gelu", "relu", "quick_gelu", NULL};
    for (int i = 0; acts[i]; i++) {
        if (strcmp(a, acts[i]) == 0)
            return true;
    }
    return false;
}

int gen_gpt2_write(const struct gen_gpt2_opts *o, char *err, size_t errlen)
{
    if (!o->out_dir || !*o->out_dir) {
        st_errf(err, errlen, "no output directory");
        return -1;
    }
    if (o->n_layer < 1 || o->n_layer > 512 || o->n_head < 1 || o->n_head > 1024 || o->n_embd < 1 ||
        o->n_embd > 65536 || o->n_inner < 0 || o->n_inner > (1 << 20) || o->n_positions < 1 ||
        o->n_positions > (1 << 20) || o->vocab_size < 1 || o->vocab_size > (1 << 22)) {
        st_errf(err, errlen, "sizes out of range (layers 1..512, heads 1..1024, embd 1..65536, inner 0..2^20, "
                          "positions 1..2^20, vocab 1..2^22)");
        return -1;
    }
    if (o->n_embd % o->n_head != 0) {
        st_errf(err, errlen, "embd %d is not divisible by heads %d", o->n_embd, o->n_head);
        return -1;
    }
    if (!(o->std >= 0.0 && o->std <= 100.0)) {
        st_errf(err, errlen, "std must be in [0, 100]");
        return -1;
    }
    if (!o->activation || !known_activation(o->activation)) {
        st_errf(err, errlen, "unknown activation %s (gelu_new, gelu_pytorch_tanh, gelu, relu, quick_gelu)",
             o->activation ? o->activation : "(null)");
        return -1;
    }
    if (o->dtype != CKPT_F32 && o->dtype != CKPT_F16 && o->dtype != CKPT_BF16) {
        st_errf(err, errlen, "unknown dtype");
        return -1;
    }
    if (o->tokenizer_dir && o->vocab_size < 50257) {
        st_errf(err, errlen, "the GPT-2 tokenizer produces ids up to 50256: a vocab of %d is too small for it",
             o->vocab_size);
        return -1;
    }
    static const char *const tok_files[] = {"vocab.json", "merges.txt", NULL};
    for (int i = 0; o->tokenizer_dir && tok_files[i]; i++) {
        char src[4200];
        if (join(src, sizeof src, o->tokenizer_dir, tok_files[i]) < 0 || access(src, R_OK) < 0) {
            st_errf(err, errlen, "%s/%s: %s", o->tokenizer_dir, tok_files[i], strerror(errno));
            return -1;
        }
    }
    struct plan p = {0};
    if (make_plan(o, &p) < 0) {
        free(p.t);
        st_errf(err, errlen, "out of memory");
        return -1;
    }
    int shards = o->shards < 1 ? 1 : o->shards;
    if ((size_t)shards > p.n || shards > 99999) {
        free(p.t);
        st_errf(err, errlen, "%d shards for %zu tensors: at most one shard per tensor", shards, p.n);
        return -1;
    }
    if (make_dirs(o->out_dir, err, errlen) < 0) {
        free(p.t);
        return -1;
    }
    remove_old_weights(o->out_dir);

    /* Shards: consecutive runs of names, cut where the running size passes k/N of the total. */
    qsort(p.t, p.n, sizeof *p.t, cmp_name);
    uint64_t total = 0, run = 0;
    for (size_t i = 0; i < p.n; i++)
        total += p.t[i].nbytes;
    int s = 0;
    for (size_t i = 0; i < p.n; i++) {
        /* Never leave fewer tensors than remaining shards. */
        if (s < shards - 1 && (p.n - i == (size_t)(shards - 1 - s) ||
                               (run > 0 && run >= (total / (uint64_t)shards) * (uint64_t)(s + 1))))
            s++;
        p.t[i].shard = s;
        run += p.t[i].nbytes;
    }
    qsort(p.t, p.n, sizeof *p.t, cmp_file_order);

    char (*names)[64] = calloc((size_t)shards, sizeof *names);
    void *buf = malloc(CHUNK * 6 > 1 << 20 ? CHUNK * 6 : 1 << 20);    /* see write_tensor */
    int rc = names && buf ? 0 : -1;
    if (rc < 0)
        st_errf(err, errlen, "out of memory");
    size_t a = 0;
    for (int k = 0; k < shards && rc == 0; k++) {
        size_t b = a;
        while (b < p.n && p.t[b].shard == k)
            b++;
        if (shards == 1)
            snprintf(names[k], sizeof names[k], "model.safetensors");
        else
            snprintf(names[k], sizeof names[k], "model-%05d-of-%05d.safetensors", k + 1, shards);
        char path[4200];
        if (join(path, sizeof path, o->out_dir, names[k]) < 0) {
            st_errf(err, errlen, "%s: path too long", o->out_dir);
            rc = -1;
            break;
        }
        rc = write_shard(o, p.t, a, b, path, buf, err, errlen);
        a = b;
    }
    if (rc == 0 && shards > 1)
        rc = write_index(o, p.t, p.n, names, total, err, errlen);
    if (rc == 0)
        rc = write_config(o, err, errlen);
    if (rc == 0 && o->tokenizer_dir) {
        static const char *const optional[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                               NULL};
        char src[4200], dst[4200];
        for (int i = 0; tok_files[i] && rc == 0; i++) {
            if (join(src, sizeof src, o->tokenizer_dir, tok_files[i]) < 0 ||
                join(dst, sizeof dst, o->out_dir, tok_files[i]) < 0) {
                st_errf(err, errlen, "path too long");
                rc = -1;
                break;
            }
            rc = copy_file(src, dst, err, errlen);
        }
        for (int i = 0; optional[i] && rc == 0; i++) {
            if (join(src, sizeof src, o->tokenizer_dir, optional[i]) == 0 && access(src, F_OK) == 0 &&
                join(dst, sizeof dst, o->out_dir, optional[i]) == 0)
                rc = copy_file(src, dst, err, errlen);
        }
    }
    free(buf);
    free(names);
    free(p.t);
    return rc;
}
