/* replay_main.c -- runs a fuzz harness over its committed corpus (one TAP line per input), for `make check`.
 *
 * Without arguments it reads $LLMCGI_SRCDIR/tests/fuzz/corpus/<program name>/;
 * with arguments, each is a file or a directory of inputs (reproducing a crash
 * found by `make fuzz`: tests/fuzz/fuzz_json crash-file). Any crash or
 * sanitizer report fails the run. */
#include "fuzz.h"

#include <dirent.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int count;

static void run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        printf("not ok %d - cannot open %s\n", ++count, path);
        return;
    }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(len > 0 ? (size_t)len : 1);
    size_t n = fread(buf, 1, (size_t)len, f);
    fclose(f);
    LLVMFuzzerTestOneInput(buf, n);
    free(buf);
    printf("ok %d - %s (%zu bytes)\n", ++count, path, n);
    fflush(stdout);
}

static void run_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0) {
        printf("not ok %d - %s does not exist\n", ++count, path);
        return;
    }
    if (!S_ISDIR(st.st_mode)) {
        run_file(path);
        return;
    }
    struct dirent **names;
    int n = scandir(path, &names, NULL, alphasort);
    for (int i = 0; i < n; i++) {
        if (names[i]->d_name[0] != '.') {
            char full[4096];
            snprintf(full, sizeof full, "%s/%s", path, names[i]->d_name);
            run_file(full);
        }
        free(names[i]);
    }
    free(names);
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            run_path(argv[i]);
    } else {
        const char *src = getenv("LLMCGI_SRCDIR");
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/tests/fuzz/corpus/%s", src ? src : ".", basename(argv[0]));
        run_path(dir);
    }
    printf("1..%d\n", count);
    return 0;
}
