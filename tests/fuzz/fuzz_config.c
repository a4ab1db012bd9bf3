/* fuzz_config.c -- fuzzes the two files an operator writes: the config (config_load, with every
 * section and key validator) and the API keys file (auth_keys_load), each read from the same bytes.
 * No crash, no leak, success exactly when no error was reported, and every error says where. */
#include "config.h"
#include "auth.h"
#include "conf.h"
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The loaders read files: each input is written to one scratch file of this process. */
static const char *scratch(void)
{
    static char path[64];
    if (!path[0])
        snprintf(path, sizeof path, "/tmp/llmcgi-fuzz-config.%ld", (long)getpid());
    return path;
}

static int write_file(const char *path, const uint8_t *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t put = size ? fwrite(data, 1, size, f) : 0;
    return fclose(f) == 0 && put == size ? 0 : -1;
}

/* A load either succeeds with no errors or fails with at least one, each "file[:line]: message". */
static void check(int rc, const void *out, const struct config_errors *e)
{
    if (rc == 0 ? !out || e->n : out || !e->n)
        abort();
    for (size_t i = 0; i < e->n; i++)
        if (!e->msg[i] || !strchr(e->msg[i], ':') || strlen(e->msg[i]) < 3)
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = scratch();
    if (write_file(path, data, size) != 0)
        return 0;

    struct config *c = NULL;
    struct config_errors e = {0};
    int rc = config_load(path, &c, &e);
    check(rc, c, &e);
    config_unref(c);
    config_errors_free(&e);

    struct auth_keys *k = NULL;
    struct config_errors ke = {0};
    rc = auth_keys_load(path, &k, &ke);
    check(rc, k, &ke);
    auth_keys_free(k);
    config_errors_free(&ke);
    return 0;
}
