/* fuzz_request.c -- fuzzes what a generation request goes through before it reaches a model: the
 * body parsed (json_parse_strict), read as each client dialect (dialect_read_request) and, for
 * chat, its messages rendered by both chat templates. No crash, no leak, and a refusal always
 * comes with a message. */
#include "config.h"
#include "chat_template.h"
#include "dialect.h"
#include "fuzz.h"
#include "request.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[300];
    json_object *body = json_parse_strict((const char *)data, size, err, sizeof err);
    if (!body || !json_object_is_type(body, json_type_object)) {
        json_object_put(body);
        return 0;
    }
    static const enum client_kind kinds[] = {CK_CHAT, CK_COMPLETION, CK_TGI, CK_LEGACY};
    for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
        struct gen g;
        err[0] = '\0';
        if (dialect_read_request(kinds[k], body, &g, err, sizeof err) < 0) {
            if (!err[0])
                abort();                        /* every refusal says why */
            continue;
        }
        if (kinds[k] != CK_CHAT)
            continue;
        static const enum chat_template ts[] = {CHAT_TEMPLATE_PLAIN, CHAT_TEMPLATE_DIALOGPT};
        for (size_t t = 0; t < sizeof ts / sizeof *ts; t++) {
            char *out = NULL;
            const char *const *stops = NULL;
            size_t n_stops = 0, out_len = 0;
            err[0] = '\0';
            int rc = chat_template_render(ts[t], g.messages, "<|endoftext|>", &out, &out_len, &stops, &n_stops, err,
                                          sizeof err);
            if (rc == CHAT_TEMPLATE_OK ? !out || out_len > size * 2 + 64 * json_object_array_length(g.messages)
                                       : !err[0] || out)
                abort();
            free(out);
        }
    }
    json_object_put(body);
    return 0;
}
