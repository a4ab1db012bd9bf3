/* generate_cli.c -- llmcgi-generate: runs a local GPT-2 model directory on one prompt and streams the text to stdout, speeds to stderr. */
#include "config.h"
#include "checkpoint.h"
#include "generation.h"
#include "llm.h"
#include "util.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The model shipped with llmcgi (models/llmcgi-tiny), where `make install` puts it. */
#ifndef LLMCGI_DEFAULT_MODEL
#define LLMCGI_DEFAULT_MODEL "/usr/local/share/llmcgi/models/llmcgi-tiny"
#endif

static const char usage_text[] =
    "usage: llmcgi-generate [-m MODEL_DIR] [options] PROMPT...\n"
    "       (PROMPT '-' reads the prompt from standard input)\n"
    "\n"
    "Runs a Hugging Face GPT-2 model directory (config.json, model.safetensors,\n"
    "vocab.json, merges.txt) on the CPU and streams the generated text.\n"
    "\n"
    "  -m, --model DIR            the model directory (default: the shipped model,\n"
    "                             " LLMCGI_DEFAULT_MODEL ")\n"
    "  -n, --max-tokens N         tokens to generate (default 128, fewer when the\n"
    "                             context is shorter)\n"
    "  -t, --temperature T        0 = greedy; default 1.0 (sampling)\n"
    "      --top-k K              keep the K most likely tokens (default 50; 0 = off)\n"
    "      --top-p P              nucleus sampling (default 1.0 = off)\n"
    "      --typical-p P          locally typical sampling (default 1.0 = off)\n"
    "      --repetition-penalty R Hugging Face's (default 1.0 = off)\n"
    "      --frequency-penalty F  OpenAI's, -2..2 (default 0)\n"
    "      --presence-penalty F   OpenAI's, -2..2 (default 0)\n"
    "  -s, --seed S               random seed (default: from the clock; printed)\n"
    "      --stop TEXT            stop before TEXT (up to 4 times)\n"
    "      --ignore-eos           keep going past <|endoftext|>\n"
    "      --logprobs N           print each token's logprob and N alternatives to stderr\n"
    "      --echo                 print the prompt before the generated text\n"
    "      --threads N            CPU threads (default: all cores)\n"
    "      --device D             auto, cpu, cuda, cuda:N (default auto: CUDA when usable)\n"
    "      --dtype T              auto (the checkpoint's on the CPU, half precision on a GPU), f32,\n"
    "                             f16, bf16, or q8 (int8 Q8_0 blocks, CPU only)\n"
    "      --kv-dtype K           the CPU's KV cache: auto (F16 under F16, BF16 and Q8_0 matrices,\n"
    "                             F32 under F32), f32 or f16\n"
    "      --tuning T             the CPU's kernels: auto (latency: one sequence), latency or\n"
    "                             throughput (AMX: F16 on the tiles, faster for many sequences)\n"
    "  -q, --quiet                no speeds or notes on stderr\n"
    "  -h, --help                 this text\n"
    "\n"
    "The defaults are Hugging Face generate()'s with do_sample: temperature 1,\n"
    "top-k 50. Speeds (prefill and decode tokens/s) go to stderr at the end.\n";

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Strict number parsing: the whole argument, in range. */
static int parse_long(const char *opt, const char *s, long lo, long hi, long *out)
{
    long v;
    if (util_parse_long(s, &v) != 0 || v < lo || v > hi) {
        fprintf(stderr, "llmcgi-generate: %s wants a whole number from %ld to %ld (got \"%s\")\n", opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_float(const char *opt, const char *s, float *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) {
        fprintf(stderr, "llmcgi-generate: %s wants a number (got \"%s\")\n", opt, s);
        return -1;
    }
    *out = (float)v;
    return 0;
}

/* The prompt: the arguments joined by spaces, or standard input for "-". Caller frees. */
static char *read_prompt(int argc, char **argv, size_t *len)
{
    if (argc == 1 && !strcmp(argv[0], "-")) {
        size_t cap = 4096, n = 0;
        char *b = malloc(cap);
        size_t got;
        while (b && (got = fread(b + n, 1, cap - n, stdin)) > 0) {
            n += got;
            if (n == cap) {
                char *nb = realloc(b, cap *= 2);
                if (!nb) {
                    free(b);
                    return NULL;
                }
                b = nb;
            }
        }
        *len = n;
        return b;
    }
    size_t n = 0;
    for (int i = 0; i < argc; i++)
        n += strlen(argv[i]) + 1;
    char *b = malloc(n + 1);
    if (!b)
        return NULL;
    size_t at = 0;
    for (int i = 0; i < argc; i++) {
        size_t l = strlen(argv[i]);
        memcpy(b + at, argv[i], l);
        at += l;
        if (i + 1 < argc)
            b[at++] = ' ';
    }
    b[at] = '\0';
    *len = at;
    return b;
}

/* Prints a token for --logprobs: its text with control bytes escaped. */
static void print_token(const struct tokenizer *tok, int32_t id)
{
    size_t n;
    const char *s = tokenizer_token_bytes(tok, id, &n);
    fputc('"', stderr);
    for (size_t i = 0; s && i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(stderr, "\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            fprintf(stderr, "\\x%02x", c);
        else
            fputc(c, stderr);
    }
    fputc('"', stderr);
}

enum {
    OPT_TOP_K = 256, OPT_TOP_P, OPT_TYPICAL_P, OPT_REP, OPT_FREQ, OPT_PRES, OPT_STOP, OPT_IGNORE_EOS,
    OPT_LOGPROBS, OPT_ECHO, OPT_THREADS, OPT_DEVICE, OPT_DTYPE, OPT_KV_DTYPE, OPT_TUNING,
};

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, NULL, 'm'},
        {"max-tokens", required_argument, NULL, 'n'},
        {"temperature", required_argument, NULL, 't'},
        {"top-k", required_argument, NULL, OPT_TOP_K},
        {"top-p", required_argument, NULL, OPT_TOP_P},
        {"typical-p", required_argument, NULL, OPT_TYPICAL_P},
        {"repetition-penalty", required_argument, NULL, OPT_REP},
        {"frequency-penalty", required_argument, NULL, OPT_FREQ},
        {"presence-penalty", required_argument, NULL, OPT_PRES},
        {"seed", required_argument, NULL, 's'},
        {"stop", required_argument, NULL, OPT_STOP},
        {"ignore-eos", no_argument, NULL, OPT_IGNORE_EOS},
        {"logprobs", required_argument, NULL, OPT_LOGPROBS},
        {"echo", no_argument, NULL, OPT_ECHO},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"device", required_argument, NULL, OPT_DEVICE},
        {"dtype", required_argument, NULL, OPT_DTYPE},
        {"kv-dtype", required_argument, NULL, OPT_KV_DTYPE},
        {"tuning", required_argument, NULL, OPT_TUNING},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *model_dir = LLMCGI_DEFAULT_MODEL;
    struct gen_params gp = {.sampling = sampler_params_default(), .max_new_tokens = 128};
    gp.sampling.do_sample = true;
    gp.sampling.temperature = 1.0f;
    gp.sampling.top_k = 50;
    bool max_given = false, seed_given = false, echo = false, quiet = false, logprobs = false;
    long threads = 0, v;
    struct llm_load_opts lo = {.device = LLM_DEVICE_AUTO};
    int c;
    while ((c = getopt_long(argc, argv, "m:n:t:s:qh", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_dir = optarg; break;
        case 'n':
            if (parse_long("--max-tokens", optarg, 1, 1 << 20, &v) != 0)
                return 2;
            gp.max_new_tokens = (int)v;
            max_given = true;
            break;
        case 't':
            if (parse_float("--temperature", optarg, &gp.sampling.temperature) != 0)
                return 2;
            break;
        case OPT_TOP_K:
            if (parse_long("--top-k", optarg, 0, INT_MAX, &v) != 0)
                return 2;
            gp.sampling.top_k = (int)v;
            break;
        case OPT_TOP_P:
            if (parse_float("--top-p", optarg, &gp.sampling.top_p) != 0)
                return 2;
            break;
        case OPT_TYPICAL_P:
            if (parse_float("--typical-p", optarg, &gp.sampling.typical_p) != 0)
                return 2;
            break;
        case OPT_REP:
            if (parse_float("--repetition-penalty", optarg, &gp.sampling.repetition_penalty) != 0)
                return 2;
            break;
        case OPT_FREQ:
            if (parse_float("--frequency-penalty", optarg, &gp.sampling.frequency_penalty) != 0)
                return 2;
            break;
        case OPT_PRES:
            if (parse_float("--presence-penalty", optarg, &gp.sampling.presence_penalty) != 0)
                return 2;
            break;
        case 's': {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end || optarg[0] == '-') {
                fprintf(stderr, "llmcgi-generate: --seed wants a whole number from 0 to 2^64-1 (got \"%s\")\n",
                        optarg);
                return 2;
            }
            gp.sampling.seed = s;
            seed_given = true;
            break;
        }
        case OPT_STOP:
            if (gp.n_stop == STOPSEQ_MAX) {
                fprintf(stderr, "llmcgi-generate: at most %d --stop strings\n", STOPSEQ_MAX);
                return 2;
            }
            gp.stop[gp.n_stop++] = optarg;
            break;
        case OPT_IGNORE_EOS: gp.ignore_eos = true; break;
        case OPT_LOGPROBS:
            if (parse_long("--logprobs", optarg, 0, SAMPLER_TOP_N_MAX, &v) != 0)
                return 2;
            gp.sampling.top_n = (int)v;
            logprobs = true;
            break;
        case OPT_ECHO: echo = true; break;
        case OPT_THREADS:
            if (parse_long("--threads", optarg, 1, 1024, &threads) != 0)
                return 2;
            break;
        case OPT_DEVICE:
            if (llm_device_parse(optarg, &lo.device, &lo.device_index) != 0) {
                fprintf(stderr, "llmcgi-generate: --device wants auto, cpu, cuda or cuda:N (got \"%s\")\n", optarg);
                return 2;
            }
            break;
        case OPT_DTYPE:
            if (llm_dtype_parse(optarg, &lo.dtype) != 0) {
                fprintf(stderr, "llmcgi-generate: --dtype wants auto, f32, f16, bf16 or q8 (got \"%s\")\n", optarg);
                return 2;
            }
            break;
        case OPT_KV_DTYPE:
            if (llm_kv_dtype_parse(optarg, &lo.kv_dtype) != 0) {
                fprintf(stderr, "llmcgi-generate: --kv-dtype wants auto, f32 or f16 (got \"%s\")\n", optarg);
                return 2;
            }
            break;
        case OPT_TUNING:
            if (llm_tuning_parse(optarg, &lo.tuning) != 0) {
                fprintf(stderr, "llmcgi-generate: --tuning wants auto, latency or throughput (got \"%s\")\n", optarg);
                return 2;
            }
            break;
        case 'q': quiet = true; break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: fputs(usage_text, stderr); return 2;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "llmcgi-generate: no prompt given\n\n%s", usage_text);
        return 2;
    }
    if (gp.sampling.temperature == 0.0f)
        gp.sampling.do_sample = false;
    if (gp.sampling.do_sample && !seed_given)
        gp.sampling.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    char err[1024];
    if (sampler_params_check(&gp.sampling, err, sizeof err) != SAMPLER_OK ||
        stopseq_validate(gp.stop, gp.stop_len, gp.n_stop, err, sizeof err) != STOPSEQ_OK) {
        fprintf(stderr, "llmcgi-generate: %s\n", err);
        return 2;
    }

    size_t plen;
    char *prompt = read_prompt(argc - optind, argv + optind, &plen);
    if (!prompt) {
        fprintf(stderr, "llmcgi-generate: out of memory reading the prompt\n");
        return 1;
    }
    int rc = 1;
    struct tokenizer *tok = NULL;
    struct gpt2_checkpoint *ck = NULL;
    struct llm_model *m = NULL;
    int32_t *ids = NULL, *blocks = NULL;
    float *logits = NULL;
    struct gen_seq g = {0};
    double t_load = now();

    if (tokenizer_load_dir(model_dir, &tok, err, sizeof err) != 0 ||
        gpt2_checkpoint_open(model_dir, &ck, err, sizeof err) != 0) {
        fprintf(stderr, "llmcgi-generate: %s\n", err);
        goto out;
    }
    const struct gpt2_config cfgv = ck->cfg, *cfg = &cfgv;   /* a copy: ck is closed once the model has its weights */
    if (cfg->classifier) {
        fprintf(stderr, "llmcgi-generate: %s is a sequence classifier (%s): it does not generate text; serve it "
                "with task = classify and POST /classify\n", model_dir, cfg->architecture);
        goto out;
    }
    if (tokenizer_vocab_size(tok) > cfg->vocab_size) {
        fprintf(stderr, "llmcgi-generate: %s: the tokenizer has %d tokens but the model only %d\n", model_dir,
                tokenizer_vocab_size(tok), cfg->vocab_size);
        goto out;
    }
    size_t n_ids = 0;
    int trc = tokenizer_encode(tok, prompt, plen, true, &ids, &n_ids);
    if (trc != 0) {
        fprintf(stderr, "llmcgi-generate: cannot tokenize the prompt: %s\n", tokenizer_strerror(trc));
        goto out;
    }
    if (n_ids == 0) {
        /* An empty prompt starts from <|endoftext|>, as GPT-2 was trained. */
        int32_t eos = tokenizer_eos_id(tok);
        if (eos < 0) {
            fprintf(stderr, "llmcgi-generate: the prompt is empty and the tokenizer has no <|endoftext|> to start from\n");
            goto out;
        }
        free(ids);
        ids = malloc(sizeof *ids);
        if (!ids)
            goto out;
        ids[0] = eos;
        n_ids = 1;
    }
    int P = cfg->n_positions, n = (int)n_ids;
    if (n >= P) {
        fprintf(stderr, "llmcgi-generate: the prompt is %d tokens; the model's context is %d\n", n, P);
        goto out;
    }
    if (!max_given && n + gp.max_new_tokens > P)
        gp.max_new_tokens = P - n;
    if (gen_seq_init(&g, tok, ids, n, cfg->vocab_size, P, &gp, err, sizeof err) != 0) {
        fprintf(stderr, "llmcgi-generate: %s\n", err);
        goto out;
    }

    int B = 16, chunk = P < 512 ? P : 512;
    lo.threads = (int)threads;
    lo.kv_block_tokens = B;
    lo.kv_blocks = (n + gp.max_new_tokens + B - 1) / B;
    lo.max_step_tokens = chunk;
    lo.max_step_logits = 1;
    lo.max_seqs = 1;   /* one sequence: tuning auto is latency */
    if (llm_load(ck, &lo, &m, err, sizeof err) != 0) {
        fprintf(stderr, "llmcgi-generate: %s\n", err);
        goto out;
    }
    gpt2_checkpoint_close(ck);
    ck = NULL;
    t_load = now() - t_load;
    if (!quiet && llm_get_info(m)->fallback[0])
        fprintf(stderr, "llmcgi-generate: %s\n", llm_get_info(m)->fallback);
    blocks = malloc(sizeof *blocks * (size_t)lo.kv_blocks);
    logits = malloc(sizeof *logits * (size_t)cfg->vocab_size);
    if (!blocks || !logits)
        goto out;
    for (int i = 0; i < lo.kv_blocks; i++)
        blocks[i] = i;
    if (echo) {
        fwrite(prompt, 1, plen, stdout);
        fflush(stdout);
    }

    /* Prefill in chunks, then one token per step. */
    double t0 = now();
    for (int at = 0; at < n; at += chunk) {
        int len = n - at < chunk ? n - at : chunk;
        struct llm_seq s = {ids + at, len, at, blocks, lo.kv_blocks, at + len == n ? LLM_LOGITS_LAST : LLM_LOGITS_NONE};
        if (llm_forward(m, &s, 1, logits, err, sizeof err) != 0) {
            fprintf(stderr, "llmcgi-generate: %s\n", err);
            goto out;
        }
    }
    double t_prefill = now() - t0, t1 = now();
    struct gen_event ev;
    for (;;) {
        if (gen_seq_next(&g, logits, &ev, err, sizeof err) != 0) {
            fprintf(stderr, "\nllmcgi-generate: %s\n", err);
            goto out;
        }
        if (ev.len) {
            fwrite(ev.text, 1, ev.len, stdout);
            fflush(stdout);
        }
        if (logprobs) {
            fprintf(stderr, "[%d] %d ", gen_seq_generated(&g) - 1, ev.tok.id);
            print_token(tok, ev.tok.id);
            fprintf(stderr, " %.4f", ev.tok.logprob);
            for (int k = 0; k < ev.tok.n_top; k++) {
                fprintf(stderr, k ? ", " : "  top: ");
                print_token(tok, ev.tok.top[k].id);
                fprintf(stderr, " %.4f", ev.tok.top[k].logprob);
            }
            fputc('\n', stderr);
        }
        if (ev.finish != FIN_NONE)
            break;
        int32_t last = g.ids[g.n_ids - 1];
        struct llm_seq s = {&last, 1, g.n_ids - 1, blocks, lo.kv_blocks, LLM_LOGITS_LAST};
        if (llm_forward(m, &s, 1, logits, err, sizeof err) != 0) {
            fprintf(stderr, "\nllmcgi-generate: %s\n", err);
            goto out;
        }
    }
    double t_decode = now() - t1;
    if (isatty(STDOUT_FILENO))
        putchar('\n');
    fflush(stdout);
    if (!quiet) {
        const struct llm_info *in = llm_get_info(m);
        int gen = gen_seq_generated(&g);
        fprintf(stderr,
                "\nllmcgi-generate: %s on %s, %s weights, %s KV, loaded in %.2f s\n"
                "  prefill: %d tokens in %.1f ms (%.1f tokens/s)\n"
                "  decode:  %d tokens in %.1f ms (%.1f tokens/s)\n"
                "  finish:  %s%s",
                model_dir, in->device_name, in->weight_format, in->kv_format, t_load, n, t_prefill * 1e3,
                n / t_prefill, gen, t_decode * 1e3, gen > 1 ? (gen - 1) / t_decode : 0.0, finish_name(ev.finish),
                gp.sampling.do_sample ? "" : ", greedy\n");
        if (gp.sampling.do_sample)
            fprintf(stderr, ", seed %llu\n", (unsigned long long)gp.sampling.seed);
    }
    rc = 0;
out:
    gen_seq_free(&g);
    llm_free(m);
    gpt2_checkpoint_close(ck);
    tokenizer_free(tok);
    free(ids);
    free(blocks);
    free(logits);
    free(prompt);
    return rc;
}
