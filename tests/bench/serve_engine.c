/* serve_engine.c -- the engine alone for tests/bench/serve_local: the model loaded and its engine started with the settings llmcgi's registry gives [model bench], fed the same prompts as the HTTP rounds, one channel per stream, no HTTP; prints one JSON line per round.
 *
 * usage: serve_engine MODEL_DIR PROMPTS_FILE MAX_TOKENS MAX_CONCURRENT MAX_QUEUE MAX_BATCH_TOKENS
 *
 * Loads like registry.c's load() with device cpu, threads 0 (one per core),
 * dtype auto, tuning auto over max_concurrent sequences, prefix_cache on, KV blocks of 16 tokens, max_concurrent x
 * min(context, 512) / 16 of them; prints {"ready": ...} with the backend's
 * device string, weights, threads and the prompts' tokens (all of them).
 * Then reads one number C per line of
 * standard input and runs a round: C sequences submitted at once (prompts
 * 0..C-1 of PROMPTS_FILE, one per line, tokenized as the route does),
 * greedy (temperature 0: sampler defaults, no top logprobs), MAX_TOKENS
 * each, each on its own channel as each HTTP request has its own; one
 * thread waits on all the channels and counts the token events. It prints
 * {"streams": C, "tokens": N, "wall_s": T, "tok_s": N/T} where T runs from
 * the first submit to the last sequence's last event: the HTTP round's
 * aggregate without nginx, FastCGI, the responders and the client. A
 * line "q" or the end of input stops it. */
#include "config.h"
#include "checkpoint.h"
#include "engine.h"
#include "generation.h"
#include "llm.h"
#include "tokenizer.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_PROMPTS 256
#define KV_BLOCK_TOKENS 16      /* registry.c's */

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* One round of c streams; returns 0 and fills *tokens and *wall, or -1. */
static int round_of(struct engine *e, int32_t **ids, const int *n_ids, int c, int max_tokens, long *tokens,
                    double *wall)
{
    struct echan *ch[MAX_PROMPTS];
    bool done[MAX_PROMPTS] = {false};
    struct pollfd pf[MAX_PROMPTS];
    struct ebatch eb = {0};
    char err[400];
    int rc = 0, left = c;
    *tokens = 0;
    double t0 = now(), t_end = t0;
    for (int i = 0; i < c; i++) {
        struct eseq_req q = {.prompt = ids[i], .n_prompt = n_ids[i], .index = 0};
        q.params.sampling = sampler_params_default();
        q.params.max_new_tokens = max_tokens;
        if (!(ch[i] = echan_new()) || engine_submit(e, ch[i], &q, 1, err, sizeof err) != ENGINE_OK) {
            fprintf(stderr, "serve_engine: submit %d: %s\n", i, ch[i] ? err : "out of memory");
            for (int k = 0; k <= i; k++)
                echan_put(ch[k]);
            return -1;
        }
    }
    while (left > 0 && rc == 0) {
        int np = 0, map[MAX_PROMPTS];
        for (int i = 0; i < c; i++)
            if (!done[i]) {
                pf[np] = (struct pollfd){.fd = echan_fd(ch[i]), .events = POLLIN};
                map[np++] = i;
            }
        if (poll(pf, (nfds_t)np, 60000) <= 0) {
            fprintf(stderr, "serve_engine: no event in 60 s\n");
            rc = -1;
            break;
        }
        for (int k = 0; k < np; k++) {
            if (!(pf[k].revents & POLLIN))
                continue;
            int i = map[k];
            echan_take(ch[i], &eb);
            for (size_t j = 0; j < eb.n; j++) {
                if (eb.ev[j].kind == EV_ERROR) {
                    fprintf(stderr, "serve_engine: stream %d: %s\n", i, ebatch_text(&eb, &eb.ev[j]));
                    rc = -1;
                } else if (eb.ev[j].kind == EV_TOKEN) {
                    ++*tokens;
                    if (eb.ev[j].finish != FIN_NONE && !done[i]) {
                        done[i] = true;
                        left--;
                        t_end = now();
                    }
                }
            }
        }
    }
    ebatch_free(&eb);
    for (int i = 0; i < c; i++)
        echan_put(ch[i]);
    *wall = t_end - t0;
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: serve_engine MODEL_DIR PROMPTS_FILE MAX_TOKENS MAX_CONCURRENT MAX_QUEUE "
                        "MAX_BATCH_TOKENS\n");
        return 2;
    }
    const char *dir = argv[1];
    int max_tokens = atoi(argv[3]), max_conc = atoi(argv[4]), max_queue = atoi(argv[5]), mbt = atoi(argv[6]);
    char err[512];
    struct tokenizer *tok = NULL;
    struct gpt2_checkpoint *ck = NULL;
    if (tokenizer_load_dir(dir, &tok, err, sizeof err) != TOKENIZER_OK ||
        gpt2_checkpoint_open(dir, &ck, err, sizeof err) != 0) {
        fprintf(stderr, "serve_engine: %s\n", err);
        return 1;
    }
    FILE *f = fopen(argv[2], "r");
    if (!f) {
        perror(argv[2]);
        return 1;
    }
    static int32_t *ids[MAX_PROMPTS];
    static int n_ids[MAX_PROMPTS];
    int n = 0;
    char line[4096];
    while (n < MAX_PROMPTS && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        size_t k = 0;
        if (tokenizer_encode(tok, line, strlen(line), true, &ids[n], &k) != TOKENIZER_OK || k == 0) {
            fprintf(stderr, "serve_engine: cannot tokenize prompt %d\n", n);
            return 1;
        }
        n_ids[n++] = (int)k;
    }
    fclose(f);
    int ctx = ck->cfg.n_positions, per_ctx = (ctx + KV_BLOCK_TOKENS - 1) / KV_BLOCK_TOKENS;
    int blocks = max_conc * (((ctx < 512 ? ctx : 512) + KV_BLOCK_TOKENS - 1) / KV_BLOCK_TOKENS);
    struct llm_load_opts lo = {.device = LLM_DEVICE_CPU, .threads = 0, .kv_block_tokens = KV_BLOCK_TOKENS,
                               .kv_blocks = blocks < per_ctx ? per_ctx : blocks,
                               .max_step_tokens = mbt < ctx ? mbt : ctx, .max_step_logits = mbt < ctx ? mbt : ctx,
                               .max_seqs = max_conc};   /* tuning auto, as the registry resolves it */
    struct llm_model *m = NULL;
    int rc = llm_load(ck, &lo, &m, err, sizeof err);
    gpt2_checkpoint_close(ck);
    if (rc != 0) {
        fprintf(stderr, "serve_engine: %s\n", err);
        return 1;
    }
    const struct llm_info *in = llm_get_info(m);
    struct engine_opts eo = {.max_concurrent = max_conc, .max_queue = max_queue,
                             .max_batch_tokens = in->max_step_tokens, .prefix_cache = true};
    struct engine *e;
    if (engine_start(&e, m, tok, &eo, "bench", err, sizeof err) != 0) {
        fprintf(stderr, "serve_engine: %s\n", err);
        return 1;
    }
    long prompt_tokens = 0;
    for (int i = 0; i < n; i++)
        prompt_tokens += n_ids[i];
    printf("{\"ready\": true, \"device\": \"%s\", \"weights\": \"%s\", \"threads\": %d, \"prompts\": %d, "
           "\"prompt_tokens\": %ld}\n", in->device_name, in->weight_format, in->threads, n, prompt_tokens);
    fflush(stdout);
    rc = 0;
    while (fgets(line, sizeof line, stdin) && line[0] != 'q') {
        int c = atoi(line);
        if (c < 1 || c > n) {
            fprintf(stderr, "serve_engine: %d streams: want 1 to %d\n", c, n);
            rc = 1;
            break;
        }
        long tokens;
        double wall;
        if (round_of(e, ids, n_ids, c, max_tokens, &tokens, &wall) != 0) {
            rc = 1;
            break;
        }
        printf("{\"streams\": %d, \"tokens\": %ld, \"wall_s\": %.6f, \"tok_s\": %.3f}\n", c, tokens, wall,
               wall > 0 ? tokens / wall : 0.0);
        fflush(stdout);
    }
    engine_stop(e);
    tokenizer_free(tok);
    for (int i = 0; i < n; i++)
        free(ids[i]);
    return rc;
}
