/* constraint_bench.c -- constrained decoding's costs in one run: the compile of a typical schema, of any JSON object and of a cached repeat (medians), the vocabulary trie's build, and the mask per token (cold cache and warm) at batch 1 and 16 as a share of a decode step of the GPT-2 124M shape (a random-weight checkpoint written by gen_gpt2, or a model directory given); prints one JSON object. Not part of make check.
 *
 * Usage: constraint_bench TOKENIZER_DIR [MODEL_DIR|--gen|--no-model [THREADS]]
 *        constraint_bench --compile N     (only N compiles of each: for callgrind's instruction counts)
 * --gen (the default) writes the 124M checkpoint (F32, about 500 MB) into a
 * scratch directory under $TMPDIR and removes it after. */
#include "config.h"
#include "checkpoint.h"
#include "constraint.h"
#include "constraint_cache.h"
#include "../../tools/gen_gpt2.h"
#include "json_schema.h"
#include "llm.h"
#include "tokenizer.h"
#include "vocab_trie.h"

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static const char SCHEMA[] =
    "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":40},"
    "\"age\":{\"type\":\"integer\"},\"email\":{\"type\":\"string\",\"pattern\":\"^[a-z0-9.]+@[a-z]+\\\\.(com|org)$\"},"
    "\"tags\":{\"type\":\"array\",\"items\":{\"enum\":[\"admin\",\"user\",\"guest\"]},\"maxItems\":5},"
    "\"address\":{\"$ref\":\"#/$defs/Address\"},\"active\":{\"type\":\"boolean\"},"
    "\"score\":{\"anyOf\":[{\"type\":\"number\"},{\"type\":\"null\"}]}},"
    "\"required\":[\"name\",\"age\",\"address\"],\"additionalProperties\":false,"
    "\"$defs\":{\"Address\":{\"type\":\"object\",\"properties\":{\"street\":{\"type\":\"string\"},"
    "\"city\":{\"type\":\"string\"},\"zip\":{\"type\":\"string\",\"pattern\":\"^\\\\d{5}$\"}},"
    "\"required\":[\"street\",\"city\"]}}}";

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_rand(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}

/* steps tokens for each of batch sequences: mask, apply to a logits row, a random allowed
 * token (EOS where the text is complete: the sequence starts over). Seconds per token. The
 * random choices start from the same seed each call, so a second call walks the same
 * states: the first pays for the masks (cold), the second finds them cached (warm). */
static double mask_cost(const struct vtrie *t, const struct tokenizer *tok, struct cdfa *d, int batch, int steps,
                        float *logits, int32_t V)
{
    int st[16];
    rng = 0x9e3779b97f4a7c15ull;
    for (int b = 0; b < batch; b++)
        st[b] = cdfa_start(d);
    double spent = 0;
    int32_t allowed[4096];
    for (int step = 0; step < steps; step++)
        for (int b = 0; b < batch; b++) {
            for (int32_t i = 0; i < V; i++)
                logits[i] = 0.0f;
            double t0 = now();
            const uint64_t *m = vtrie_mask(t, d, st[b], -1);
            vtrie_apply(m, logits, V);
            spent += now() - t0;
            int n = 0;
            for (int32_t i = 0; i < V && n < 4096; i++)
                if (logits[i] == 0.0f)
                    allowed[n++] = i;
            if (n == 0 || (cdfa_accepts(d, st[b]) && next_rand() % 4 == 0)) {
                st[b] = cdfa_start(d);
                continue;
            }
            int32_t id = allowed[next_rand() % (uint64_t)n];
            size_t len;
            const char *bytes = tokenizer_token_bytes(tok, id, &len);
            t0 = now();
            st[b] = cdfa_walk(d, st[b], bytes, len);
            spent += now() - t0;
        }
    return spent / ((double)steps * batch);
}

static double step_time(const char *dir, int batch, int threads)
{
    char err[512];
    struct gpt2_checkpoint *ck;
    if (gpt2_checkpoint_open(dir, &ck, err, sizeof err) != 0) {
        fprintf(stderr, "constraint_bench: %s\n", err);
        return -1;
    }
    int B = 16, ctx = 64, steps = 8, per = (ctx + steps) / B + 1;
    struct llm_load_opts o = {.device = LLM_DEVICE_CPU, .threads = threads, .kv_block_tokens = B,
                              .kv_blocks = per * batch, .max_step_tokens = ctx + batch, .max_step_logits = batch};
    struct llm_model *m;
    if (llm_load(ck, &o, &m, err, sizeof err) != 0) {
        fprintf(stderr, "constraint_bench: %s\n", err);
        return -1;
    }
    gpt2_checkpoint_close(ck);
    const struct llm_info *in = llm_get_info(m);
    int V = in->cfg.vocab_size;
    float *logits = malloc(sizeof(float) * (size_t)V * (size_t)batch);
    int32_t toks[64], next[16], tables[16][16];
    for (int i = 0; i < ctx; i++)
        toks[i] = (int32_t)((i * 7919 + 13) % V);
    struct llm_seq seqs[16];
    for (int b = 0; b < batch; b++) {
        for (int k = 0; k < per; k++)
            tables[b][k] = b * per + k;
        struct llm_seq s = {toks, ctx, 0, tables[b], per, LLM_LOGITS_LAST};
        if (llm_forward(m, &s, 1, logits, err, sizeof err) != 0)
            return -1;
    }
    double t0 = now();
    for (int step = 0; step < steps; step++) {
        for (int b = 0; b < batch; b++) {
            next[b] = (int32_t)((step * 31 + b * 17) % V);
            seqs[b] = (struct llm_seq){&next[b], 1, ctx + step, tables[b], per, LLM_LOGITS_LAST};
        }
        if (llm_forward(m, seqs, batch, logits, err, sizeof err) != 0)
            return -1;
    }
    double dt = (now() - t0) / steps;
    free(logits);
    llm_free(m);
    return dt;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

#define REPS 21

/* Median milliseconds of a compile of the typical schema (which 0), any JSON object (1),
 * or a repeat found in the cache (2: the canonical text made and looked up, as structured.c does). */
static double compile_ms(int which, struct cdfa **last)
{
    char err[512];
    double t[REPS];
    struct ccache *cache = ccache_new(CCACHE_BYTES);
    json_object *schema = json_tokener_parse(SCHEMA);
    if (which == 2) {                       /* the first request compiles and keeps it */
        struct cdfa *d = NULL;
        size_t len;
        const char *key = json_object_to_json_string_length(schema, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
        if (cdfa_json_schema(schema, &d, err, sizeof err) != 0 || ccache_add(cache, CC_SCHEMA, key, len, d) != 0)
            return -1;
        cdfa_put(d);
    }
    for (int i = 0; i < REPS; i++) {
        json_object *s = which == 2 ? json_tokener_parse(SCHEMA) : NULL;   /* a new request's body */
        struct cdfa *d = NULL;
        double t0 = now();
        int rc;
        if (which == 0) {
            rc = cdfa_json_schema(schema, &d, err, sizeof err);
        } else if (which == 1) {
            rc = cdfa_json_object(&d, err, sizeof err);
        } else {
            size_t len;
            const char *key = json_object_to_json_string_length(s, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
            rc = (d = ccache_get(cache, CC_SCHEMA, key, len)) ? 0 : -1;
        }
        t[i] = (now() - t0) * 1e3;
        json_object_put(s);
        if (rc != 0) {
            fprintf(stderr, "constraint_bench: compile %d: %s\n", which, which == 2 ? "a cache miss" : err);
            return -1;
        }
        if (last && i == REPS - 1)
            *last = d;
        else
            cdfa_put(d);
    }
    json_object_put(schema);
    ccache_free(cache);
    return median(t, REPS);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

int main(int argc, char **argv)
{
    char err[512];
    if (argc == 3 && strcmp(argv[1], "--compile") == 0) {
        json_object *schema = json_tokener_parse(SCHEMA);
        for (int i = 0; i < atoi(argv[2]); i++) {
            struct cdfa *d = NULL, *any = NULL;
            if (cdfa_json_schema(schema, &d, err, sizeof err) != 0 || cdfa_json_object(&any, err, sizeof err) != 0) {
                fprintf(stderr, "constraint_bench: %s\n", err);
                return 1;
            }
            cdfa_put(d);
            cdfa_put(any);
        }
        json_object_put(schema);
        return 0;
    }
    if (argc < 2) {
        fprintf(stderr, "usage: constraint_bench TOKENIZER_DIR [MODEL_DIR|--gen|--no-model [THREADS]]\n"
                        "       constraint_bench --compile N\n");
        return 2;
    }
    struct tokenizer *tok;
    if (tokenizer_load_dir(argv[1], &tok, err, sizeof err) != 0) {
        fprintf(stderr, "constraint_bench: %s\n", err);
        return 1;
    }
    double t0 = now();
    struct vtrie *t = vtrie_new(tok);
    double trie_ms = (now() - t0) * 1e3;
    struct cdfa *d = NULL, *any = NULL;
    double schema_ms = compile_ms(0, &d), any_ms = compile_ms(1, &any), cached_ms = compile_ms(2, NULL);
    if (schema_ms < 0 || any_ms < 0 || cached_ms < 0)
        return 1;
    int32_t V = vtrie_vocab(t);
    float *logits = malloc(sizeof(float) * (size_t)V);
    int steps = 400;
    double cold1 = mask_cost(t, tok, d, 1, steps, logits, V);
    double warm1 = mask_cost(t, tok, d, 1, steps, logits, V);
    double cold16 = mask_cost(t, tok, d, 16, steps / 4, logits, V);
    double warm16 = mask_cost(t, tok, d, 16, steps / 4, logits, V);
    mask_cost(t, tok, any, 16, steps / 4, logits, V);
    double any16 = mask_cost(t, tok, any, 16, steps / 4, logits, V);
    printf("{\"schema_compile_ms\": %.3f, \"schema_states\": %d, \"json_object_compile_ms\": %.3f, "
           "\"json_object_states\": %d, \"cached_repeat_ms\": %.4f, \"trie_build_ms\": %.2f, \"trie_nodes\": %zu, "
           "\"mask_us_cold_b1\": %.2f, \"mask_us_warm_b1\": %.2f, \"mask_us_cold_b16\": %.2f, "
           "\"mask_us_warm_b16\": %.2f, \"mask_us_json_object_warm_b16\": %.2f",
           schema_ms, cdfa_states(d), any_ms, cdfa_states(any), cached_ms, trie_ms, vtrie_nodes(t), cold1 * 1e6,
           warm1 * 1e6, cold16 * 1e6, warm16 * 1e6, any16 * 1e6);
    fflush(stdout);
    const char *model = argc > 2 ? argv[2] : "--gen";
    char scratch[4096] = "";
    if (strcmp(model, "--gen") == 0) {              /* the 124M shape, random weights */
        const char *tmp = getenv("TMPDIR");
        snprintf(scratch, sizeof scratch, "%s/constraint_bench.XXXXXX", tmp && *tmp ? tmp : "/tmp");
        struct gen_gpt2_opts o;
        gen_gpt2_defaults(&o);
        o.n_layer = 12, o.n_head = 12, o.n_embd = 768, o.n_positions = 1024;
        o.tokenizer_dir = argv[1];
        if (!mkdtemp(scratch) || (o.out_dir = scratch, gen_gpt2_write(&o, err, sizeof err) != 0)) {
            fprintf(stderr, "constraint_bench: writing the 124M checkpoint: %s\n", scratch[0] ? err : "mkdtemp");
            model = NULL;
        } else {
            model = scratch;
        }
    } else if (strcmp(model, "--no-model") == 0) {
        model = NULL;
    }
    if (model) {
        int threads = argc > 3 ? atoi(argv[3]) : 0;
        double s1 = step_time(model, 1, threads), s16 = step_time(model, 16, threads);
        if (s1 > 0 && s16 > 0)
            printf(", \"model\": \"%s\", \"step_ms_b1\": %.3f, \"step_ms_b16\": %.3f, \"mask_share_b1\": %.5f, "
                   "\"mask_share_b16\": %.5f, \"mask_share_cold_b1\": %.5f, \"mask_share_cold_b16\": %.5f",
                   scratch[0] ? "gpt2-124M random (F32)" : model, s1 * 1e3, s16 * 1e3, warm1 / s1, warm16 * 16 / s16,
                   cold1 / s1, cold16 * 16 / s16);
    }
    printf("}\n");
    if (scratch[0])
        nftw(scratch, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(logits);
    cdfa_put(d);
    cdfa_put(any);
    vtrie_free(t);
    tokenizer_free(tok);
    return 0;
}
