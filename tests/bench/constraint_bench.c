/* constraint_bench.c -- constrained decoding's costs: the vocabulary trie's build, a typical schema's compile, and the mask per token (cold cache and warm) at batch 1 and 16, beside a decode step of a model when one is given; prints one JSON object. Not part of make check. */
#include "config.h"
#include "checkpoint.h"
#include "constraint.h"
#include "json_schema.h"
#include "llm.h"
#include "tokenizer.h"
#include "vocab_trie.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
 * token (EOS where the text is complete: the sequence starts over). Seconds per token. */
static double mask_cost(const struct vtrie *t, const struct tokenizer *tok, struct cdfa *d, int batch, int steps,
                        float *logits, int32_t V)
{
    int st[16];
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

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: constraint_bench TOKENIZER_DIR [MODEL_DIR [THREADS]]\n");
        return 2;
    }
    char err[512];
    struct tokenizer *tok;
    if (tokenizer_load_dir(argv[1], &tok, err, sizeof err) != 0) {
        fprintf(stderr, "constraint_bench: %s\n", err);
        return 1;
    }
    double t0 = now();
    struct vtrie *t = vtrie_new(tok);
    double trie_ms = (now() - t0) * 1e3;
    json_object *schema = json_tokener_parse(SCHEMA);
    struct cdfa *d = NULL;
    int reps = 20;
    t0 = now();
    for (int i = 0; i < reps; i++) {
        cdfa_put(d);
        if (cdfa_json_schema(schema, &d, err, sizeof err) != 0) {
            fprintf(stderr, "constraint_bench: %s\n", err);
            return 1;
        }
    }
    double compile_ms = (now() - t0) * 1e3 / reps;
    struct cdfa *any = NULL;
    t0 = now();
    if (cdfa_json_object(&any, err, sizeof err) != 0)
        return 1;
    double any_ms = (now() - t0) * 1e3;
    int32_t V = vtrie_vocab(t);
    float *logits = malloc(sizeof(float) * (size_t)V);
    int steps = 400;
    double cold1 = mask_cost(t, tok, d, 1, steps, logits, V);
    double warm1 = mask_cost(t, tok, d, 1, steps, logits, V);
    double warm16 = mask_cost(t, tok, d, 16, steps / 4, logits, V);
    double any16 = mask_cost(t, tok, any, 16, steps / 4, logits, V);
    printf("{\"trie_build_ms\": %.2f, \"trie_nodes\": %zu, \"schema_compile_ms\": %.3f, \"schema_states\": %d, "
           "\"json_object_compile_ms\": %.2f, \"json_object_states\": %d, \"mask_us_cold_b1\": %.2f, "
           "\"mask_us_warm_b1\": %.2f, \"mask_us_warm_b16\": %.2f, \"mask_us_json_object_b16\": %.2f",
           trie_ms, vtrie_nodes(t), compile_ms, cdfa_states(d), any_ms, cdfa_states(any), cold1 * 1e6, warm1 * 1e6,
           warm16 * 1e6, any16 * 1e6);
    if (argc > 2) {
        int threads = argc > 3 ? atoi(argv[3]) : 0;
        double s1 = step_time(argv[2], 1, threads), s16 = step_time(argv[2], 16, threads);
        printf(", \"step_ms_b1\": %.3f, \"step_ms_b16\": %.3f, \"mask_share_b1\": %.4f, \"mask_share_b16\": %.4f",
               s1 * 1e3, s16 * 1e3, warm1 / s1, warm16 * 16 / s16);
    }
    printf("}\n");
    free(logits);
    cdfa_put(d);
    cdfa_put(any);
    json_object_put(schema);
    vtrie_free(t);
    tokenizer_free(tok);
    return 0;
}
