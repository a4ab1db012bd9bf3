/* fuzz_target.c -- fuzzes the request-target split, prefix removal, query decoding and route matching. */
#include "config.h"
#include "fuzz.h"
#include "request.h"
#include "router.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *uri = malloc(size + 1);
    memcpy(uri, data, size);
    uri[size] = '\0';

    static struct req r;
    const char *query;
    const char *prefixes[] = {"", "/llm"};
    for (size_t i = 0; i < 2; i++) {
        memset(&r, 0, sizeof r);
        if (req_split_target(uri, prefixes[i], r.path, sizeof r.path, &query) != 0)
            continue;
        if (strlen(r.path) >= sizeof r.path || r.path[0] != '/')
            abort();
        r.query = query ? query : "";
        char value[128];
        req_query(&r, "id", value, sizeof value);
        req_query(&r, "", value, sizeof value);
        unsigned allow;
        r.method = M_GET;
        router_match(&r, true, &allow);
        for (size_t p = 0; p < r.n_params; p++)
            if (strlen(r.params[p].value) >= sizeof r.params[p].value)
                abort();
    }
    char *dec = malloc(size + 1);
    long n = util_url_decode(dec, uri, size);
    if (n > (long)size)
        abort();
    free(dec);
    free(uri);
    return 0;
}
