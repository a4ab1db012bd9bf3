/* classify_bench.c -- times text classification (a classifier directory) or embeddings (a language model's: mean-pooled, normalised) through llmcgi's own path (tokenizer, engine, CPU backend); prints one JSON object for tests/bench/classify.
 *
 * usage: classify_bench MODEL_DIR TEXTS_FILE THREADS BATCH ROUNDS
 * TEXTS_FILE holds one text per line. Each round classifies (or embeds)
 * every text, BATCH texts submitted to the engine at once (as one request's
 * texts are); the best round counts. Also prints the first texts' scores
 * (or unit vectors) so the caller can check them against transformers'. */
#include "config.h"
#include "checkpoint.h"
#include "classify.h"
#include "engine.h"
#include "llm.h"
#include "tokenizer.h"
#include "util.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define MAX_TEXTS 4096

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: classify_bench MODEL_DIR TEXTS_FILE THREADS BATCH ROUNDS\n");
        return 2;
    }
    const char *dir = argv[1];
    int threads = atoi(argv[3]), batch = atoi(argv[4]), rounds = atoi(argv[5]);
    char err[512];
    struct tokenizer *tok = NULL;
    struct gpt2_checkpoint *ck = NULL;
    if (tokenizer_load_dir(dir, &tok, err, sizeof err) != 0 || gpt2_checkpoint_open(dir, &ck, err, sizeof err) != 0) {
        fprintf(stderr, "classify_bench: %s\n", err);
        return 1;
    }
    bool embed = !ck->cfg.classifier;          /* a language model: its embeddings */
    FILE *f = fopen(argv[2], "r");
    if (!f) {
        perror(argv[2]);
        return 1;
    }
    static int32_t *ids[MAX_TEXTS];
    static int n_ids[MAX_TEXTS];
    int n = 0, longest = 0;
    long tokens = 0;
    char line[65536];
    while (n < MAX_TEXTS && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        size_t k = 0;
        if (tokenizer_encode(tok, line, strlen(line), true, &ids[n], &k) != TOKENIZER_OK || k == 0)
            continue;
        n_ids[n] = embed ? (int)k : clf_pool_tokens(ids[n], (int)k, ck->cfg.pad_token_id);
        longest = n_ids[n] > longest ? n_ids[n] : longest;
        tokens += n_ids[n];
        n++;
    }
    fclose(f);
    int B = 16, per = (longest + B - 1) / B, conc = batch;
    int step_tokens = batch * longest < 4096 ? batch * longest : 4096;
    if (step_tokens < conc)
        step_tokens = conc;
    struct llm_load_opts lo = {.device = LLM_DEVICE_CPU, .threads = threads, .kv_block_tokens = B,
                               .kv_blocks = per * conc > (ck->cfg.n_positions + B - 1) / B
                                                ? per * conc : (ck->cfg.n_positions + B - 1) / B,
                               .max_step_tokens = step_tokens, .max_step_logits = step_tokens,
                               .max_seqs = conc};   /* tuning auto, as the registry resolves it */
    struct llm_model *m = NULL;
    double t0 = now();
    int rc = llm_load(ck, &lo, &m, err, sizeof err);
    gpt2_checkpoint_close(ck);
    if (rc != 0) {
        fprintf(stderr, "classify_bench: %s\n", err);
        return 1;
    }
    double load_s = now() - t0;
    const struct llm_info *in = llm_get_info(m);
    int NL = embed ? in->cfg.n_embd : in->out_dim;
    enum clf_fn fn = clf_function(&in->cfg);
    struct engine_opts eo = {conc, 0, step_tokens, false, 0};
    struct engine *e;
    if (engine_start(&e, m, tok, &eo, "bench", err, sizeof err) != 0) {
        fprintf(stderr, "classify_bench: %s\n", err);
        return 1;
    }
    float *logits = calloc((size_t)n * (size_t)NL, sizeof *logits);
    struct eseq_req *reqs = calloc((size_t)batch, sizeof *reqs);
    struct ebatch eb = {0};
    double best = 1e30;
    for (int r = 0; r < rounds; r++) {
        double ts = now();
        for (int i0 = 0; i0 < n; i0 += batch) {
            int k = n - i0 < batch ? n - i0 : batch;
            struct echan *c = echan_new();
            for (int j = 0; j < k; j++)
                reqs[j] = (struct eseq_req){.prompt = ids[i0 + j], .n_prompt = n_ids[i0 + j], .index = i0 + j,
                                            .classify = !embed, .embed = embed ? EMB_MEAN : EMB_NONE};
            if (engine_submit(e, c, reqs, k, err, sizeof err) != ENGINE_OK) {
                fprintf(stderr, "classify_bench: submit: %s\n", err);
                return 1;
            }
            int got = 0;
            while (got < k) {
                struct pollfd p = {.fd = echan_fd(c), .events = POLLIN};
                poll(&p, 1, 1000);
                echan_take(c, &eb);
                for (size_t q = 0; q < eb.n; q++) {
                    float *row = logits + (size_t)eb.ev[q].index * NL;
                    if (ebatch_scores(&eb, &eb.ev[q], row, NL) != NL)
                        continue;
                    if (embed)
                        emb_normalize(row, NL);   /* as the route does: part of the work */
                    got++;
                }
            }
            echan_put(c);
        }
        double el = now() - ts;
        best = el < best ? el : best;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"texts\": %d, \"tokens\": %ld, \"batch\": %d, \"threads\": %d, \"texts_per_s\": %.3f, "
           "\"tokens_per_s\": %.1f, \"load_s\": %.2f, \"peak_rss_kb\": %ld, \"device\": \"%s\", \"scores\": [",
           n, tokens, batch, in->threads, n / best, tokens / best, load_s, ru.ru_maxrss, in->device_name);
    double *s = calloc((size_t)NL, sizeof *s);
    for (int i = 0; i < n && i < 8; i++) {
        if (embed)
            for (int j = 0; j < NL; j++)
                s[j] = logits[(size_t)i * NL + j];
        else
            clf_scores(fn, logits + (size_t)i * NL, NL, s);
        printf("%s[", i ? ", " : "");
        for (int j = 0; j < NL; j++)
            printf("%s%.7g", j ? ", " : "", s[j]);
        printf("]");
    }
    printf("]}\n");
    free(s);
    ebatch_free(&eb);
    engine_stop(e);
    tokenizer_free(tok);
    for (int i = 0; i < n; i++)
        free(ids[i]);
    free(logits);
    free(reqs);
    return 0;
}
