/* fuzz_json.c -- fuzzes the JSON body parser (json_parse_strict, json_check_request) and the Content-Type check on arbitrary bytes. */
#include "config.h"
#include "fuzz.h"
#include "request.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Does data hold the escape \ufffd (in any case)? */
static bool has_ufffd(const uint8_t *data, size_t size)
{
    for (size_t i = 0; i + 6 <= size; i++)
        if (data[i] == '\\' && data[i + 1] == 'u' && strncasecmp((const char *)data + i + 2, "fffd", 4) == 0)
            return true;
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    json_object *o = json_parse_strict((const char *)data, size, err, sizeof err);
    if (o) {
        char err2[256];
        static const char *const texts[] = {"prompt", "content", NULL};
        int checked = json_check_request((const char *)data, size, o, texts, err2, sizeof err2);
        /* what the server does next with a body: walk it and print it */
        const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
        if (!s)
            abort();
        /* a body that passes has no lone surrogate escape, so U+FFFD comes only from one that was sent
         * (json-c 0.16 made some valid surrogate pairs U+FFFD) */
        if (checked == 0 && strstr(s, "\xef\xbf\xbd") && !memmem(data, size, "\xef\xbf\xbd", 3) && !has_ufffd(data, size))
            abort();
        json_object_put(o);
    } else if (!err[0]) {
        /* only the literal null may come back without an object and a message */
        size_t a = 0, b = size;
        while (a < b && strchr(" \t\r\n", data[a]) && data[a])
            a++;
        while (b > a && strchr(" \t\r\n", data[b - 1]) && data[b - 1])
            b--;
        if (b - a != 4 || memcmp(data + a, "null", 4) != 0)
            abort();
    }
    char *ct = malloc(size + 1);
    memcpy(ct, data, size);
    ct[size] = '\0';
    (void)req_content_type_is_json(ct);
    free(ct);
    return 0;
}
