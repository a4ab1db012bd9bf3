/* gen-gpt2.c -- command line: writes a deterministic random-weight GPT-2 model directory in Hugging Face layout (no torch needed). */
#include "config.h"

#include "gen_gpt2.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: gen-gpt2 --out DIR [options]\n"
            "Writes a GPT-2 model directory (config.json, generation_config.json,\n"
            "model.safetensors or shards + model.safetensors.index.json) whose weights\n"
            "are a pure function of the seed (the same bytes on every machine).\n"
            "\n"
            "  --layers N        blocks (default 2)\n"
            "  --heads H         attention heads (default 2)\n"
            "  --embd C          width, a multiple of H (default 64)\n"
            "  --inner N         MLP width (default: null in config.json, i.e. 4*C)\n"
            "  --positions P     context length (default 128)\n"
            "  --vocab V         vocabulary (default 50257)\n"
            "  --dtype T         f32, f16 or bf16 (default f32)\n"
            "  --seed S          (default 1234)\n"
            "  --std X           weight standard deviation (default 0.08); logits spread\n"
            "                    about sqrt(C) * X (see tools/gen_gpt2.h)\n"
            "  --shards N        split into N shard files with an index (default 1)\n"
            "  --prefix          \"transformer.\" tensor names and attn.bias buffers (old HF files)\n"
            "  --untied          tie_word_embeddings false and an own lm_head.weight\n"
            "  --activation A    gelu_new (default), gelu_pytorch_tanh, gelu, relu, quick_gelu\n"
            "  --tokenizer DIR   copy vocab.json and merges.txt from DIR\n"
            "  --classifier N    GPT2ForSequenceClassification with N labels (score.weight)\n"
            "  --labels A,B,..   the labels' names (default LABEL_0, LABEL_1, ...)\n"
            "  --problem-type T  single_label_classification, multi_label_classification\n"
            "                    or regression (default: null)\n"
            "  --pad-token-id N  config.json's pad_token_id (default: null)\n"
            "\n"
            "124M shape: gen-gpt2 --out DIR --layers 12 --heads 12 --embd 768 --positions 1024\n");
}

static int parse_int(const char *s, const char *opt, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 0 || v > 1 << 30) {
        fprintf(stderr, "gen-gpt2: %s: not a valid number: %s\n", opt, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"out", required_argument, 0, 'o'},       {"layers", required_argument, 0, 'l'},
        {"heads", required_argument, 0, 'h'},     {"embd", required_argument, 0, 'e'},
        {"inner", required_argument, 0, 'i'},     {"positions", required_argument, 0, 'p'},
        {"vocab", required_argument, 0, 'v'},     {"dtype", required_argument, 0, 'd'},
        {"seed", required_argument, 0, 's'},      {"std", required_argument, 0, 'x'},
        {"shards", required_argument, 0, 'n'},    {"prefix", no_argument, 0, 'P'},
        {"untied", no_argument, 0, 'u'},          {"activation", required_argument, 0, 'a'},
        {"tokenizer", required_argument, 0, 't'}, {"help", no_argument, 0, 'H'},
        {"classifier", required_argument, 0, 'c'}, {"labels", required_argument, 0, 'L'},
        {"problem-type", required_argument, 0, 'T'}, {"pad-token-id", required_argument, 0, 'D'},
        {0, 0, 0, 0},
    };
    struct gen_gpt2_opts o;
    gen_gpt2_defaults(&o);
    int c, rc = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'o':
            o.out_dir = optarg;
            break;
        case 'l':
            rc |= parse_int(optarg, "--layers", &o.n_layer);
            break;
        case 'h':
            rc |= parse_int(optarg, "--heads", &o.n_head);
            break;
        case 'e':
            rc |= parse_int(optarg, "--embd", &o.n_embd);
            break;
        case 'i':
            rc |= parse_int(optarg, "--inner", &o.n_inner);
            break;
        case 'p':
            rc |= parse_int(optarg, "--positions", &o.n_positions);
            break;
        case 'v':
            rc |= parse_int(optarg, "--vocab", &o.vocab_size);
            break;
        case 'n':
            rc |= parse_int(optarg, "--shards", &o.shards);
            break;
        case 'd':
            if (strcmp(optarg, "f32") == 0)
                o.dtype = CKPT_F32;
            else if (strcmp(optarg, "f16") == 0)
                o.dtype = CKPT_F16;
            else if (strcmp(optarg, "bf16") == 0)
                o.dtype = CKPT_BF16;
            else {
                fprintf(stderr, "gen-gpt2: --dtype: f32, f16 or bf16, not %s\n", optarg);
                rc = -1;
            }
            break;
        case 's':
            errno = 0;
            o.seed = strtoull(optarg, &end, 0);
            if (errno || end == optarg || *end || optarg[0] == '-') {
                fprintf(stderr, "gen-gpt2: --seed: not a valid number: %s\n", optarg);
                rc = -1;
            }
            break;
        case 'x':
            errno = 0;
            o.std = strtod(optarg, &end);
            if (errno || end == optarg || *end) {
                fprintf(stderr, "gen-gpt2: --std: not a valid number: %s\n", optarg);
                rc = -1;
            }
            break;
        case 'P':
            o.prefix = true;
            break;
        case 'u':
            o.untied = true;
            break;
        case 'a':
            o.activation = optarg;
            break;
        case 't':
            o.tokenizer_dir = optarg;
            break;
        case 'c':
            rc |= parse_int(optarg, "--classifier", &o.num_labels);
            break;
        case 'L':
            o.labels = optarg;
            break;
        case 'T':
            o.problem_type = optarg;
            break;
        case 'D':
            rc |= parse_int(optarg, "--pad-token-id", &o.pad_token_id);
            break;
        case 'H':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "gen-gpt2: unexpected argument %s\n", argv[optind]);
        rc = -1;
    }
    if (!o.out_dir) {
        fprintf(stderr, "gen-gpt2: --out DIR is required\n");
        usage(stderr);
        return 2;
    }
    if (rc)
        return 2;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char err[1024];
    if (gen_gpt2_write(&o, err, sizeof err) < 0) {
        fprintf(stderr, "gen-gpt2: %s\n", err);
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    uint64_t bytes = gen_gpt2_weight_bytes(&o);
    printf("gen-gpt2: wrote %s: %llu parameters, %llu bytes of %s weights, %d file%s, %.2f s\n", o.out_dir,
           (unsigned long long)(bytes / ckpt_dtype_size(o.dtype)), (unsigned long long)bytes,
           ckpt_dtype_name(o.dtype), o.shards > 1 ? o.shards : 1, o.shards > 1 ? "s" : "",
           (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    return 0;
}
