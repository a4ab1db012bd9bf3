/* tok_bench.c -- times llmcgi's tokenizer on a text file: encode and decode MB/s (driven by tests/bench/tokenizer).
 *
 * usage: tok_bench MODEL_DIR TEXT_FILE [ROUNDS [IDS_OUT]]
 *
 * Encodes the whole file in one call, then again as one call per line (the
 * size of prompts), then decodes the ids; ROUNDS times each (default 5),
 * keeping the best. Prints "key value" lines; writes the ids of the
 * whole-file encode to IDS_OUT (one per line) so the driver can compare
 * them with Hugging Face's. */
#include "config.h"
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL_DIR TEXT_FILE [ROUNDS [IDS_OUT]]\n", argv[0]);
        return 2;
    }
    int rounds = argc > 3 ? atoi(argv[3]) : 5;
    if (rounds < 1)
        rounds = 1;
    char err[512];
    struct tokenizer *t;
    double t0 = now_s();
    if (tokenizer_load_dir(argv[1], &t, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    double load_s = now_s() - t0;
    FILE *f = fopen(argv[2], "rb");
    if (!f) {
        perror(argv[2]);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)size + 1);
    size_t len = fread(text, 1, (size_t)size, f);
    fclose(f);

    int32_t *ids = NULL;
    size_t n = 0;
    double best_whole = 1e30, best_lines = 1e30, best_decode = 1e30;
    size_t lines = 0, line_ids = 0;
    for (int r = 0; r < rounds; r++) {
        free(ids);
        t0 = now_s();
        if (tokenizer_encode(t, text, len, true, &ids, &n) != 0)
            return 1;
        double dt = now_s() - t0;
        if (dt < best_whole)
            best_whole = dt;

        t0 = now_s();
        lines = line_ids = 0;
        for (size_t pos = 0; pos < len;) {
            const char *nl = memchr(text + pos, '\n', len - pos);
            size_t end = nl ? (size_t)(nl - text) + 1 : len;
            int32_t *li;
            size_t ln;
            if (tokenizer_encode(t, text + pos, end - pos, true, &li, &ln) != 0)
                return 1;
            line_ids += ln;
            lines++;
            free(li);
            pos = end;
        }
        dt = now_s() - t0;
        if (dt < best_lines)
            best_lines = dt;

        char *out;
        size_t olen;
        t0 = now_s();
        if (tokenizer_decode(t, ids, n, &out, &olen) != 0)
            return 1;
        dt = now_s() - t0;
        if (dt < best_decode)
            best_decode = dt;
        free(out);
    }
    double mb = (double)len / 1e6;
    printf("bytes %zu\n", len);
    printf("tokens %zu\n", n);
    printf("load_s %.4f\n", load_s);
    printf("encode_s %.4f\n", best_whole);
    printf("encode_mb_s %.2f\n", mb / best_whole);
    printf("lines %zu\n", lines);
    printf("encode_lines_s %.4f\n", best_lines);
    printf("encode_lines_mb_s %.2f\n", mb / best_lines);
    printf("decode_s %.4f\n", best_decode);
    printf("decode_mb_s %.2f\n", mb / best_decode);
    if (argc > 4) {
        FILE *o = fopen(argv[4], "w");
        if (!o) {
            perror(argv[4]);
            return 1;
        }
        for (size_t i = 0; i < n; i++)
            fprintf(o, "%d\n", (int)ids[i]);
        fclose(o);
    }
    free(ids);
    free(text);
    tokenizer_free(t);
    return 0;
}
