/* fuzz_upstream.c -- fuzzes what the gateway reads from upstreams: an answer body, parsed
 * (json_parse_upstream: the tree bound, the strict parse, the upstream checks) and read as
 * each call's whole answer and as a stream event, its error message, and the model lists of
 * /v1/models and TGI's /info. No crash, no leak. */
#include "config.h"
#include "dialect.h"
#include "fuzz.h"
#include "gateway.h"
#include "request.h"

#include <stdlib.h>
#include <string.h>

/* Names from a model list or TGI's /info are safe ids (gateway_model_id_ok), at most 4096. */
static void check_names(char **names)
{
    for (size_t i = 0; names && names[i]; i++)
        if (!gateway_model_id_ok(names[i], strlen(names[i])) || i >= 4096)
            abort();
    gateway_free_names(names);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    json_object *o = json_parse_upstream((const char *)data, size, err, sizeof err);
    static const enum upstream_call calls[] = {UK_CHAT, UK_COMPLETION, UK_TGI};
    for (size_t i = 0; i < sizeof calls / sizeof *calls; i++) {
        struct gen_result res;
        err[0] = '\0';
        if (dialect_read_result(calls[i], o, &res, err, sizeof err) == 0) {
            if (!res.text)
                abort();
            /* what the routes build next from a result */
            struct gen g;
            memset(&g, 0, sizeof g);
            g.prompt = "p";
            g.details = true;
            g.return_full_text = size && (data[0] & 1);
            static const enum client_kind kinds[] = {CK_COMPLETION, CK_TGI, CK_LEGACY};
            for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
                json_object *a = dialect_client_answer(kinds[k], &g, &res, "m", "id", 1, k == 1);
                if (!a || !json_object_to_json_string_ext(a, JSON_C_TO_STRING_PLAIN))
                    abort();
                json_object_put(a);
            }
        } else if (!err[0]) {
            abort();                    /* a refusal always says why */
        }
        gen_result_free(&res);

        struct gen_delta d;
        if (dialect_read_delta(calls[i], o, &d) == 0) {
            if (d.text)
                (void)strlen(d.text);
            if (d.error)
                (void)strlen(d.error);
            (void)finish_openai(d.finish);
            (void)finish_tgi(d.finish);
            json_object *e = dialect_tgi_event(1, &d, d.text, NULL);
            json_object_put(e);
            e = dialect_completion_chunk("id", 1, "m", d.text, d.finish);
            json_object_put(e);
        }
    }
    char msg[128];
    if (dialect_error_message(o, msg, sizeof msg) && strlen(msg) >= sizeof msg)
        abort();
    json_object_put(o);

    size_t dropped;
    check_names(gateway_parse_model_list((const char *)data, size, false, &dropped));
    check_names(gateway_parse_model_list((const char *)data, size, true, &dropped));
    return 0;
}
