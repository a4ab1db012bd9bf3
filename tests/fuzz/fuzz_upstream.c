/* fuzz_upstream.c -- fuzzes what the gateway reads from upstreams: an answer body, parsed
 * (json_parse_upstream: the tree bound, the strict parse, the upstream checks) and read as
 * each call's whole answer and as a stream event and built into the client's (front/answer.c),
 * its error message, and the model lists of
 * /v1/models and TGI's /info. No crash, no leak. */
#include "config.h"
#include "answer.h"
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
            /* what the routes build next from a result (front/answer.c) */
            static const enum client_kind kinds[] = {CK_COMPLETION, CK_TGI, CK_LEGACY};
            for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
                struct answer_meta m = {.kind = kinds[k], .id = "id", .created = 1, .model = "m", .fingerprint = "fp"};
                struct answer_choice c = {.text = res.text, .text_len = res.text_len, .finish = res.finish};
                struct answer_usage u = {.prompt = res.prompt_tokens, .completion = res.completion_tokens, .cached = -1};
                struct answer_tgi_details det = {.finish = res.finish, .generated = res.completion_tokens,
                                                 .has_seed = res.has_seed, .seed = (uint64_t)res.seed};
                json_object *a = kinds[k] == CK_COMPLETION ? answer_openai(&m, &c, 1, &u)
                                                           : answer_tgi(&m, res.text, res.text_len, answer_tgi_details(&det), k == 1);
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
            if (d.text && d.text[d.text_len] != '\0')
                abort();                /* text_len bytes, then json-c's terminating NUL */
            if (d.error)
                (void)strlen(d.error);
            (void)answer_finish_openai(d.finish);
            (void)answer_finish_tgi(d.finish);
            struct answer_meta m = {.kind = CK_COMPLETION, .id = "id", .created = 1, .model = "m"};
            json_object *t = answer_tgi_token(d.token_id, d.text, d.text_len, d.has_logprob, d.logprob, d.special);
            json_object *e = answer_tgi_event(1, t, false, NULL, d.text, d.text_len, NULL);
            json_object_put(e);
            e = answer_chunk(&m, 0, NULL, d.text, d.text_len, NULL, d.finish, false);
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
