/* gpu_bench.c -- times one model directory on one backend (CUDA, or the CPU for a rehearsal): decode steps at several batch sizes and contexts, prefill of whole prompts, and the device's copy bandwidth measured in the same process; prints one JSON object for tests/bench/gpu_decode.
 *
 *   gpu_bench --model DIR [--device cuda|cpu] [--batches 1,8,64,256] [--contexts 128,1024]
 *             [--steps 16] [--warmup 2] [--prompt 512] [--prefill-batches 1,8] [--reps 3]
 *             [--threads N] [--bw-mib 1024]
 *
 * Decode at batch B and context c: B sequences, each with its own KV blocks
 * filled by a prefill of c - warmup - steps random tokens, then warmup + steps
 * decode steps of one token per sequence (positions up to c - 1); the last
 * `steps` are timed, each step alone, and the median is reported. A step
 * includes what the engine's step includes: the metadata copy, the kernels,
 * the logits copy back to the host (B rows of vocab_size floats) and the
 * synchronisation.
 *
 * The floor of a decode step is the bytes it must read (the weights one
 * step reads, info.step_weight_bytes, plus every KV position each sequence
 * attends to) over the copy bandwidth measured here: a device-to-device
 * cudaMemcpy (a host memcpy on the CPU), counting bytes read plus bytes
 * written, best of 5. Prefill's floor is counted the same way (weights +
 * KV written); prefill is bound by arithmetic, so that floor is far below.
 *
 * Token ids come from a fixed generator: the same run on every machine. */
#include "config.h"
#include "checkpoint.h"
#include "llm.h"
#ifdef HAVE_CUDA
#include <cuda_runtime.h>
#endif

#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { MAXLIST = 16 };

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static uint64_t rng = 0x5eed1234u;

static int32_t next_token(int V)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (int32_t)((rng >> 33) % (uint64_t)V);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* "1,8,64" into out[]; returns the count, or -1. */
static int parse_list(const char *s, int *out)
{
    int n = 0;
    while (*s) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || end == s || v < 1 || v > 1 << 20 || n == MAXLIST)
            return -1;
        out[n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return -1;
    }
    return n;
}

static int max_of(const int *v, int n)
{
    int m = 0;
    for (int i = 0; i < n; i++)
        m = v[i] > m ? v[i] : m;
    return m;
}

/* Bytes read plus bytes written per second by one large copy, best of 5;
 * on the device when cuda, else in host memory. 0 when it could not run. */
static double copy_bandwidth(int cuda, size_t bytes, char *err, size_t errlen)
{
    double best = 0;
#ifdef HAVE_CUDA
    if (cuda) {
        void *a = NULL, *b = NULL;
        cudaEvent_t e0, e1;
        if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess) {
            snprintf(err, errlen, "cudaMalloc of 2 x %zu bytes failed", bytes);
            cudaFree(a);
            return 0;
        }
        cudaMemset(a, 1, bytes);
        cudaEventCreate(&e0);
        cudaEventCreate(&e1);
        cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);     /* warm-up */
        for (int r = 0; r < 5; r++) {
            float ms = 0;
            cudaEventRecord(e0, 0);
            cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
            cudaEventRecord(e1, 0);
            cudaEventSynchronize(e1);
            cudaEventElapsedTime(&ms, e0, e1);
            if (ms > 0 && 2.0 * (double)bytes / (ms * 1e-3) > best)
                best = 2.0 * (double)bytes / (ms * 1e-3);
        }
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) {
            snprintf(err, errlen, "device copy: %s", cudaGetErrorString(e));
            best = 0;
        }
        cudaEventDestroy(e0);
        cudaEventDestroy(e1);
        cudaFree(a);
        cudaFree(b);
        return best;
    }
#else
    (void)err;
    (void)errlen;
#endif
    (void)cuda;
    char *a = malloc(bytes), *b = malloc(bytes);
    if (!a || !b) {
        free(a);
        free(b);
        return 0;
    }
    memset(a, 1, bytes);
    memset(b, 2, bytes);
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        memcpy(b, a, bytes);
        double t = now() - t0;
        if (t > 0 && 2.0 * (double)bytes / t > best)
            best = 2.0 * (double)bytes / t;
    }
    volatile char sink = b[bytes / 2];
    (void)sink;
    free(a);
    free(b);
    return best;
}

struct bench {
    struct llm_model *m;
    const struct llm_info *in;
    int V, B;                   /* vocabulary, KV block tokens */
    int S;                      /* most tokens per step */
    int blocks_per_seq;
    int32_t *tables;            /* [max sequences][blocks_per_seq]: sequence s owns blocks s*bps .. */
    int32_t *toks;              /* [S] */
    float *logits;              /* [max rows][V] */
    struct llm_seq *seqs;
    char err[512];
};

/* Fills positions [0, n) of sequences 0..B-1 with random tokens, several
 * sequences per step as the step's token budget allows. */
static int prefill_fill(struct bench *b, int B, int n)
{
    int s = 0;
    while (s < B && n > 0) {
        int k = 0, used = 0;
        for (; s < B && used + n <= b->S; s++, k++) {
            for (int t = 0; t < n; t++)
                b->toks[used + t] = next_token(b->V);
            b->seqs[k] = (struct llm_seq){b->toks + used, n, 0, b->tables + (size_t)s * b->blocks_per_seq,
                                          b->blocks_per_seq, LLM_LOGITS_NONE};
            used += n;
        }
        if (k == 0) {           /* one sequence longer than a step: chunks */
            for (int p = 0; p < n; p += b->S) {
                int c = n - p < b->S ? n - p : b->S;
                for (int t = 0; t < c; t++)
                    b->toks[t] = next_token(b->V);
                struct llm_seq one = {b->toks, c, p, b->tables + (size_t)s * b->blocks_per_seq, b->blocks_per_seq,
                                      LLM_LOGITS_NONE};
                if (llm_forward(b->m, &one, 1, b->logits, b->err, sizeof b->err) != 0)
                    return -1;
            }
            s++;
            continue;
        }
        if (llm_forward(b->m, b->seqs, k, b->logits, b->err, sizeof b->err) != 0)
            return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *model = NULL, *device = "cuda";
    int batches[MAXLIST] = {1, 8, 64, 256}, nb = 4, contexts[MAXLIST] = {128, 1024}, nc = 2;
    int pbatches[MAXLIST] = {1, 8}, npb = 2;
    int steps = 16, warmup = 2, prompt = 512, reps = 3, threads = 0, bw_mib = 1024;
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},   {"device", required_argument, 0, 'd'},
        {"batches", required_argument, 0, 'b'}, {"contexts", required_argument, 0, 'c'},
        {"steps", required_argument, 0, 's'},   {"warmup", required_argument, 0, 'w'},
        {"prompt", required_argument, 0, 'p'},  {"prefill-batches", required_argument, 0, 'P'},
        {"reps", required_argument, 0, 'r'},    {"threads", required_argument, 0, 't'},
        {"bw-mib", required_argument, 0, 'W'},  {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "m:d:", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'd': device = optarg; break;
        case 'b': nb = parse_list(optarg, batches); break;
        case 'c': nc = parse_list(optarg, contexts); break;
        case 'P': npb = parse_list(optarg, pbatches); break;
        case 's': steps = atoi(optarg); break;
        case 'w': warmup = atoi(optarg); break;
        case 'p': prompt = atoi(optarg); break;
        case 'r': reps = atoi(optarg); break;
        case 't': threads = atoi(optarg); break;
        case 'W': bw_mib = atoi(optarg); break;
        case 'h':
            printf("usage: gpu_bench --model DIR [--device cuda|cpu] [--batches 1,8,64,256] [--contexts 128,1024]\n"
                   "       [--steps 16] [--warmup 2] [--prompt 512] [--prefill-batches 1,8] [--reps 3]\n"
                   "       [--threads N] [--bw-mib 1024]\n");
            return 0;
        default: return 2;
        }
    }
    if (!model || nb < 1 || nc < 1 || npb < 1 || steps < 1 || warmup < 0 || prompt < 1 || reps < 1 || bw_mib < 1) {
        fprintf(stderr, "gpu_bench: --model DIR is required, and the lists and counts must be positive (--help)\n");
        return 2;
    }
    enum llm_device dev;
    int dev_index = 0;
    if (llm_device_parse(device, &dev, &dev_index) != 0) {
        fprintf(stderr, "gpu_bench: unknown device %s\n", device);
        return 2;
    }

    char err[512];
    struct gpt2_checkpoint *ck;
    if (gpt2_checkpoint_open(model, &ck, err, sizeof err) != 0) {
        fprintf(stderr, "gpu_bench: %s\n", err);
        return 1;
    }
    int P = ck->cfg.n_positions, maxB = max_of(batches, nb), maxc = max_of(contexts, nc), maxpb = max_of(pbatches, npb);
    for (int i = 0; i < nc; i++)
        if (contexts[i] > P || contexts[i] < warmup + steps + 1) {
            fprintf(stderr, "gpu_bench: context %d is outside [%d, n_positions %d]\n", contexts[i], warmup + steps + 1,
                    P);
            return 2;
        }
    if (prompt > P) {
        fprintf(stderr, "gpu_bench: --prompt %d is more than n_positions %d\n", prompt, P);
        return 2;
    }
    const int BT = 16;
    int bps = ((maxc > prompt ? maxc : prompt) + BT - 1) / BT;
    int nseq = maxB > maxpb ? maxB : maxpb;
    int S = maxpb * prompt > maxB ? maxpb * prompt : maxB;  /* the largest prefill step, or decode batch */
    int R = nseq;
    struct llm_load_opts lo = {.device = dev, .device_index = dev_index, .threads = threads, .kv_block_tokens = BT,
                               .kv_blocks = nseq * bps, .max_step_tokens = S, .max_step_logits = R};
    struct bench b = {0};
    double t0 = now();
    if (llm_load(ck, &lo, &b.m, err, sizeof err) != 0) {
        fprintf(stderr, "gpu_bench: loading %s on %s: %s\n", model, device, err);
        return 1;
    }
    double load_s = now() - t0;
    gpt2_checkpoint_close(ck);
    b.in = llm_get_info(b.m);
    b.V = b.in->out_dim;
    b.B = BT;
    b.S = S;
    b.blocks_per_seq = bps;
    b.tables = malloc(sizeof(int32_t) * (size_t)nseq * bps);
    b.toks = malloc(sizeof(int32_t) * (size_t)S);
    b.logits = malloc(sizeof(float) * (size_t)R * b.V);
    b.seqs = malloc(sizeof(struct llm_seq) * (size_t)(nseq > S ? nseq : S));
    if (!b.tables || !b.toks || !b.logits || !b.seqs) {
        fprintf(stderr, "gpu_bench: out of memory\n");
        return 1;
    }
    for (int i = 0; i < nseq * bps; i++)
        b.tables[i] = i;
    int is_cuda = !strcmp(b.in->backend, "cuda");
    double bw = copy_bandwidth(is_cuda, (size_t)bw_mib << 20, err, sizeof err);
    if (bw <= 0)
        fprintf(stderr, "gpu_bench: copy bandwidth: %s\n", err);
    double kv_per_tok = (double)b.in->kv_block_bytes / b.in->kv_block_tokens;

    printf("{\"model\": \"%s\", \"backend\": \"%s\", \"device\": \"%s\", \"dtype\": \"%s\", \"load_s\": %.3f,\n", model,
           b.in->backend, b.in->device_name, ckpt_dtype_name(b.in->weight_dtype), load_s);
    printf(" \"weight_bytes\": %zu, \"step_weight_bytes\": %zu, \"kv_bytes_per_token\": %.0f,\n", b.in->weight_bytes,
           b.in->step_weight_bytes, kv_per_tok);
    printf(" \"copy_bandwidth_gbs\": %.1f, \"steps\": %d, \"warmup\": %d,\n", bw * 1e-9, steps, warmup);
    fflush(stdout);

    /* decode */
    double *times = malloc(sizeof(double) * (size_t)(steps > reps ? steps : reps));
    printf(" \"decode\": [");
    int first = 1, rc = 0;
    for (int ci = 0; ci < nc && rc == 0; ci++) {
        for (int bi = 0; bi < nb && rc == 0; bi++) {
            int B = batches[bi], ctx = contexts[ci], pre = ctx - warmup - steps;
            double ts = now();
            if (prefill_fill(&b, B, pre) != 0) {
                rc = 1;
                break;
            }
            double fill_s = now() - ts, read_bytes = 0;
            for (int k = 0; k < warmup + steps && rc == 0; k++) {
                for (int s = 0; s < B; s++) {
                    b.toks[s] = next_token(b.V);
                    b.seqs[s] = (struct llm_seq){b.toks + s, 1, pre + k, b.tables + (size_t)s * bps, bps,
                                                 LLM_LOGITS_LAST};
                }
                double a = now();
                if (llm_forward(b.m, b.seqs, B, b.logits, b.err, sizeof b.err) != 0)
                    rc = 1;
                if (k >= warmup) {
                    times[k - warmup] = now() - a;
                    read_bytes += (double)b.in->step_weight_bytes + (double)B * (pre + k + 1) * kv_per_tok;
                }
            }
            if (rc)
                break;
            double us = median(times, steps) * 1e6, bytes = read_bytes / steps;
            printf("%s\n  {\"batch\": %d, \"context\": %d, \"us_per_step\": %.1f, \"tokens_per_s\": %.1f, "
                   "\"bytes_per_step\": %.0f, \"floor_us\": %.1f, \"fill_s\": %.2f}",
                   first ? "" : ",", B, ctx, us, B / (us * 1e-6), bytes, bw > 0 ? bytes / bw * 1e6 : 0.0, fill_s);
            first = 0;
            fflush(stdout);
        }
    }
    printf("],\n");

    /* prefill: pb prompts of `prompt` tokens from position 0 in one step, last row's logits each */
    printf(" \"prefill\": [");
    first = 1;
    for (int pi = 0; pi < npb && rc == 0; pi++) {
        int pb = pbatches[pi];
        for (int r = 0; r < reps + 1 && rc == 0; r++) {
            for (int s = 0; s < pb; s++) {
                for (int t = 0; t < prompt; t++)
                    b.toks[s * prompt + t] = next_token(b.V);
                b.seqs[s] = (struct llm_seq){b.toks + (size_t)s * prompt, prompt, 0, b.tables + (size_t)s * bps, bps,
                                             LLM_LOGITS_LAST};
            }
            double a = now();
            if (llm_forward(b.m, b.seqs, pb, b.logits, b.err, sizeof b.err) != 0)
                rc = 1;
            if (r > 0)                  /* the first is a warm-up */
                times[r - 1] = now() - a;
        }
        if (rc)
            break;
        double us = median(times, reps) * 1e6;
        double bytes = (double)b.in->step_weight_bytes + (double)pb * prompt * kv_per_tok;
        printf("%s\n  {\"batch\": %d, \"prompt\": %d, \"us_per_step\": %.1f, \"tokens_per_s\": %.1f, "
               "\"bytes_per_step\": %.0f, \"floor_us\": %.1f}",
               first ? "" : ",", pb, prompt, us, pb * prompt / (us * 1e-6), bytes, bw > 0 ? bytes / bw * 1e6 : 0.0);
        first = 0;
        fflush(stdout);
    }
    printf("],\n \"error\": ");
    if (rc) {
        printf("\"");
        for (const char *p = b.err; *p; p++) {
            if (*p == '"' || *p == '\\')
                putchar('\\');
            putchar((unsigned char)*p < 0x20 ? ' ' : *p);
        }
        printf("\"}\n");
        fprintf(stderr, "gpu_bench: %s\n", b.err);
    } else {
        printf("null}\n");
    }
    free(times);
    free(b.tables);
    free(b.toks);
    free(b.logits);
    free(b.seqs);
    llm_free(b.m);
    return rc;
}
