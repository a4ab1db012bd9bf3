/* dialect_answer.c -- what an upstream answers, read and checked: whole answers and stream events of the OpenAI, TGI and Responses APIs into struct gen_result / gen_delta, and its error messages. */
#include "config.h"
#include "dialect.h"
#include "json_obj.h"
#include "json_strict.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ reading upstream answers */

static enum finish finish_from(const char *s)
{
    if (!s)
        return FIN_NONE;
    if (strcmp(s, "length") == 0)
        return FIN_LENGTH;
    if (strcmp(s, "stop") == 0 || strcmp(s, "eos_token") == 0)
        return FIN_EOS;
    if (strcmp(s, "stop_sequence") == 0)
        return FIN_STOP_SEQUENCE;
    return FIN_OTHER;
}

/* json_str, and its length into *len (0 when NULL): generated text may hold NUL. */
static const char *text_of(json_object *v, size_t *len)
{
    const char *s = json_str(v);
    *len = s ? (size_t)json_object_get_string_len(v) : 0;
    return s;
}

/* ---------------------------------------------------- checking upstream answers
 *
 * Every answer and stream event from an upstream is checked here before
 * anything of it is read or relayed, on the pass-through paths as on the
 * translated ones: each field llmcgi reads or a client's API defines has
 * its type and range checked, and the first one wrong is named in err
 * ("`choices[0].message` must be an object"), for a 502 (or an error event
 * once a stream has started). Fields the APIs do not define pass as they
 * are. Token counts are whole numbers from 0 to INT32_MAX, so that sums of
 * them cannot overflow and no client sees a negative or absurd count. */

enum { T_STR = 1, T_INT = 2, T_NUM = 4, T_BOOL = 8, T_OBJ = 16, T_ARR = 32, T_NULL = 64 };

static bool type_in(json_object *v, unsigned types)
{
    switch (json_object_get_type(v)) {
    case json_type_null: return types & T_NULL;
    case json_type_string: return types & T_STR;
    case json_type_int: return types & (T_INT | T_NUM);
    case json_type_double: return types & T_NUM;
    case json_type_boolean: return types & T_BOOL;
    case json_type_object: return types & T_OBJ;
    case json_type_array: return types & T_ARR;
    }
    return false;
}

static const char *type_words(unsigned types)
{
    switch (types & ~(unsigned)T_NULL) {
    case T_STR: return types & T_NULL ? "a string or null" : "a string";
    case T_INT: return types & T_NULL ? "a whole number or null" : "a whole number";
    case T_NUM: return types & T_NULL ? "a number or null" : "a number";
    case T_BOOL: return "true or false";
    case T_OBJ: return types & T_NULL ? "an object or null" : "an object";
    case T_ARR: return types & T_NULL ? "a list or null" : "a list";
    default: return "of another type";
    }
}

/* o[key], when present, is of one of `types` (null counts as absent unless
 * T_NULL is not in types and `required`). `at` prefixes the name. */
static int check_field(json_object *o, const char *at, const char *key, unsigned types, bool required, char *err,
                       size_t errlen)
{
    json_object *v = NULL;
    bool there = json_object_object_get_ex(o, key, &v);
    if (!there || (!v && !(types & T_NULL) && !required))
        v = NULL, there = false;
    if (!there) {
        if (!required)
            return 0;
        snprintf(err, errlen, "`%s%s` is missing", at, key);
        return -1;
    }
    if (!type_in(v, types)) {
        snprintf(err, errlen, "`%s%s` must be %s", at, key, type_words(types));
        return -1;
    }
    return 0;
}

/* o[key], when present and not null, is a whole number from lo to hi. */
static int check_range(json_object *o, const char *at, const char *key, int64_t lo, uint64_t hi, char *err,
                       size_t errlen)
{
    json_object *v = json_field(o, key);
    if (!v)
        return 0;
    bool big = json_object_is_type(v, json_type_int) && json_object_get_int64(v) == INT64_MAX;
    int64_t i = json_object_get_int64(v);
    if (!json_object_is_type(v, json_type_int) || i < lo ||
        (big ? json_object_get_uint64(v) > hi : i >= 0 && (uint64_t)i > hi)) {
        snprintf(err, errlen, "`%s%s` must be a whole number from %lld to %llu", at, key, (long long)lo,
                 (unsigned long long)hi);
        return -1;
    }
    return 0;
}

static int check_count(json_object *o, const char *at, const char *key, char *err, size_t errlen)
{
    return check_range(o, at, key, 0, INT32_MAX, err, errlen);
}

static int check_usage(json_object *a, char *err, size_t errlen)
{
    json_object *u = json_field(a, "usage");
    if (check_field(a, "", "usage", T_OBJ | T_NULL, false, err, errlen) < 0)
        return -1;
    return !u ? 0
              : check_count(u, "usage.", "prompt_tokens", err, errlen) < 0 ||
                        check_count(u, "usage.", "completion_tokens", err, errlen) < 0 ||
                        check_count(u, "usage.", "total_tokens", err, errlen) < 0
                    ? -1
                    : 0;
}

/* One OpenAI choice: of a whole answer, or of a stream chunk. */
static int check_choice(enum upstream_call c, bool chunk, json_object *ch, size_t i, char *err, size_t errlen)
{
    char at[48];
    snprintf(at, sizeof at, "choices[%zu]", i);
    if (!json_object_is_type(ch, json_type_object)) {
        snprintf(err, errlen, "`%s` must be an object", at);
        return -1;
    }
    strcat(at, ".");
    if (check_range(ch, at, "index", 0, INT32_MAX, err, errlen) < 0 ||
        check_field(ch, at, "finish_reason", T_STR | T_NULL, false, err, errlen) < 0 ||
        check_field(ch, at, "logprobs", T_OBJ | T_NULL, false, err, errlen) < 0)
        return -1;
    if (c == UK_COMPLETION)
        return check_field(ch, at, "text", T_STR, !chunk, err, errlen);
    const char *key = chunk ? "delta" : "message";
    if (check_field(ch, at, key, T_OBJ, !chunk, err, errlen) < 0)
        return -1;
    json_object *m = json_field(ch, key);
    char mat[64];
    snprintf(mat, sizeof mat, "%s%s.", at, key);
    return !m ? 0
              : check_field(m, mat, "content", T_STR | T_NULL, false, err, errlen) < 0 ||
                        check_field(m, mat, "role", T_STR | T_NULL, false, err, errlen) < 0 ||
                        check_field(m, mat, "tool_calls", T_ARR | T_NULL, false, err, errlen) < 0
                    ? -1
                    : 0;
}

/* An OpenAI answer (chunk = false) or stream chunk: choices and usage. */
static int check_openai(enum upstream_call c, bool chunk, json_object *a, char *err, size_t errlen)
{
    if (check_field(a, "", "id", T_STR, false, err, errlen) < 0 ||
        check_field(a, "", "object", T_STR, false, err, errlen) < 0 ||
        check_range(a, "", "created", 0, INT64_MAX, err, errlen) < 0 ||
        check_field(a, "", "model", T_STR, false, err, errlen) < 0 ||
        check_field(a, "", "choices", T_ARR, !chunk, err, errlen) < 0 || check_usage(a, err, errlen) < 0)
        return -1;
    json_object *ch = json_field(a, "choices");
    size_t n = ch ? json_object_array_length(ch) : 0;
    if (!chunk && n == 0) {
        snprintf(err, errlen, "`choices` is empty");
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if (check_choice(c, chunk, json_object_array_get_idx(ch, i), i, err, errlen) < 0)
            return -1;
    return 0;
}

/* A TGI token: {"id","text","logprob","special"}; ids are u32 in TGI. */
static int check_tgi_token(json_object *t, const char *at, char *err, size_t errlen)
{
    if (!json_object_is_type(t, json_type_object)) {
        snprintf(err, errlen, "`%s` must be an object", at);
        return -1;
    }
    char a[80];
    snprintf(a, sizeof a, "%s.", at);
    return check_range(t, a, "id", 0, UINT32_MAX, err, errlen) < 0 ||
                   check_field(t, a, "text", T_STR, false, err, errlen) < 0 ||
                   check_field(t, a, "logprob", T_NUM | T_NULL, false, err, errlen) < 0 ||
                   check_field(t, a, "special", T_BOOL, false, err, errlen) < 0
               ? -1
               : 0;
}

static int check_tgi_tokens(json_object *o, const char *at, const char *key, char *err, size_t errlen)
{
    if (check_field(o, at, key, T_ARR | T_NULL, false, err, errlen) < 0)
        return -1;
    json_object *l = json_field(o, key);
    for (size_t i = 0; l && i < json_object_array_length(l); i++) {
        char name[80];
        snprintf(name, sizeof name, "%s%s[%zu]", at, key, i);
        if (check_tgi_token(json_object_array_get_idx(l, i), name, err, errlen) < 0)
            return -1;
    }
    return 0;
}

/* TGI's details, of a whole answer or of a stream's last event. */
static int check_tgi_details(json_object *o, char *err, size_t errlen)
{
    if (check_field(o, "", "details", T_OBJ | T_NULL, false, err, errlen) < 0)
        return -1;
    json_object *d = json_field(o, "details");
    if (!d)
        return 0;
    if (check_field(d, "details.", "finish_reason", T_STR, false, err, errlen) < 0 ||
        check_count(d, "details.", "generated_tokens", err, errlen) < 0 ||
        check_count(d, "details.", "input_length", err, errlen) < 0 ||
        check_range(d, "details.", "seed", 0, UINT64_MAX - 1, err, errlen) < 0 ||
        check_tgi_tokens(d, "details.", "prefill", err, errlen) < 0 ||
        check_tgi_tokens(d, "details.", "tokens", err, errlen) < 0 ||
        check_field(d, "details.", "top_tokens", T_ARR | T_NULL, false, err, errlen) < 0 ||
        check_field(d, "details.", "best_of_sequences", T_ARR | T_NULL, false, err, errlen) < 0)
        return -1;
    return 0;
}

/* TGI's /generate answer (one object) or /generate_stream event. */
static int check_tgi(bool event, json_object *a, char *err, size_t errlen)
{
    if (check_field(a, "", "generated_text", T_STR | (event ? T_NULL : 0), !event, err, errlen) < 0 ||
        check_tgi_details(a, err, errlen) < 0)
        return -1;
    if (!event)
        return 0;
    if (check_range(a, "", "index", 0, INT32_MAX, err, errlen) < 0 ||
        check_field(a, "", "token", T_OBJ, true, err, errlen) < 0 ||
        check_tgi_token(json_field(a, "token"), "token", err, errlen) < 0 ||
        check_field(a, "", "top_tokens", T_ARR | T_NULL, false, err, errlen) < 0)
        return -1;
    return 0;
}

/* A token count already checked: a whole number from 0 to INT32_MAX, or
 * -1 when absent. */
static long count_of(json_object *o, const char *key)
{
    json_object *v = json_field(o, key);
    return v ? (long)json_object_get_int64(v) : -1;
}

static void read_usage(json_object *o, long *prompt, long *completion)
{
    json_object *u = json_field(o, "usage");
    if (!u)
        return;
    *prompt = count_of(u, "prompt_tokens");
    *completion = count_of(u, "completion_tokens");
}

static json_object *first_choice(json_object *o)
{
    json_object *ch = json_field(o, "choices");
    return ch && json_object_array_length(ch) ? json_object_array_get_idx(ch, 0) : NULL;
}

static void read_seed(json_object *d, bool *has, int64_t *seed)
{
    json_object *v = json_field(d, "seed");
    if (v)     /* TGI's seeds are u64: kept as their bits */
        *has = true, *seed = (int64_t)json_object_get_uint64(v);
}

/* ---------------------------------------------------- the Responses API's answers */

/* A response object's usage (input_tokens, output_tokens) and finish
 * (status incomplete: the length limit), checked. */
static int responses_meta(json_object *resp, long *in, long *out, enum finish *f, const char *at, char *err,
                          size_t errlen)
{
    json_object *u = json_field(resp, "usage"), *st = json_field(resp, "status");
    if (st && !json_object_is_type(st, json_type_string)) {
        snprintf(err, errlen, "`%sstatus` must be a string", at);
        return -1;
    }
    if (u && !json_object_is_type(u, json_type_object)) {
        snprintf(err, errlen, "`%susage` must be an object", at);
        return -1;
    }
    static const char *const keys[] = {"input_tokens", "output_tokens"};
    long *dst[] = {in, out};
    for (size_t i = 0; u && i < 2; i++) {
        json_object *v = json_field(u, keys[i]);
        if (!v)
            continue;
        int64_t n = json_object_get_int64(v);
        if (!json_object_is_type(v, json_type_int) || n < 0 || n > INT32_MAX) {
            snprintf(err, errlen, "`%susage.%s` must be a whole number from 0 to %d", at, keys[i], INT32_MAX);
            return -1;
        }
        *dst[i] = (long)n;
    }
    const char *s = json_str(st);
    *f = s && !strcmp(s, "incomplete") ? FIN_LENGTH : FIN_EOS;
    return 0;
}

/* A whole response: its output_text parts joined. */
static int read_responses_result(json_object *a, struct gen_result *res, char *err, size_t errlen)
{
    json_object *out = json_field(a, "output");
    if (!out || !json_object_is_type(out, json_type_array)) {
        snprintf(err, errlen, "`output` must be a list");
        return -1;
    }
    if (responses_meta(a, &res->prompt_tokens, &res->completion_tokens, &res->finish, "", err, errlen) < 0)
        return -1;
    size_t len = 0;
    char *text = calloc(1, 1);
    for (size_t i = 0; text && i < json_object_array_length(out); i++) {
        json_object *item = json_object_array_get_idx(out, i), *content = json_field(item, "content");
        const char *type = json_str(json_field(item, "type"));
        if (!json_object_is_type(item, json_type_object) || !type) {
            snprintf(err, errlen, "`output[%zu]` must be an object with a type", i);
            free(text);
            return -1;
        }
        if (strcmp(type, "message") != 0)
            continue;
        if (!content || !json_object_is_type(content, json_type_array)) {
            snprintf(err, errlen, "`output[%zu].content` must be a list", i);
            free(text);
            return -1;
        }
        for (size_t j = 0; j < json_object_array_length(content); j++) {
            json_object *part = json_object_array_get_idx(content, j), *t = json_field(part, "text");
            const char *pt = json_str(json_field(part, "type"));
            if (!pt || strcmp(pt, "output_text") != 0)
                continue;
            if (!t || !json_object_is_type(t, json_type_string)) {
                snprintf(err, errlen, "`output[%zu].content[%zu].text` must be a string", i, j);
                free(text);
                return -1;
            }
            size_t tl = (size_t)json_object_get_string_len(t);
            char *grown = realloc(text, len + tl + 1);
            if (!grown) {
                free(text);
                text = NULL;
                break;
            }
            text = grown;
            memcpy(text + len, json_object_get_string(t), tl + 1);
            len += tl;
        }
    }
    if (!text) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    res->text = text;
    res->text_len = len;                        /* it may hold NUL */
    return 0;
}

/* One stream event: text deltas, the end (completed or incomplete, with
 * usage), failures. Other events pass unread. */
static int read_responses_delta(json_object *e, struct gen_delta *d)
{
    const char *type = json_str(json_field(e, "type"));
    if (!type) {
        snprintf(d->bad, sizeof d->bad, "an event that is not a Responses API event (no `type`)");
        return -1;
    }
    if (!strcmp(type, "error")) {
        const char *msg = json_str(json_field(e, "message"));
        d->error = msg ? msg : "the upstream reported an error";
        return 0;
    }
    if (!strcmp(type, "response.failed")) {
        const char *msg = json_str(json_field(json_field(json_field(e, "response"), "error"), "message"));
        d->error = msg ? msg : "the upstream's response failed";
        return 0;
    }
    if (!strcmp(type, "response.output_text.delta")) {
        json_object *t = json_field(e, "delta");
        if (!t || !json_object_is_type(t, json_type_string)) {
            snprintf(d->bad, sizeof d->bad, "`delta` must be a string");
            return -1;
        }
        d->text = json_object_get_string(t);
        d->text_len = (size_t)json_object_get_string_len(t);
        return 0;
    }
    if (!strcmp(type, "response.completed") || !strcmp(type, "response.incomplete")) {
        json_object *r = json_field(e, "response");
        if (!r || !json_object_is_type(r, json_type_object)) {
            snprintf(d->bad, sizeof d->bad, "`response` must be an object");
            return -1;
        }
        return responses_meta(r, &d->prompt_tokens, &d->completion_tokens, &d->finish, "response.", d->bad,
                              sizeof d->bad);
    }
    return 0;
}

int dialect_read_result(enum upstream_call c, json_object *a, struct gen_result *res, char *err, size_t errlen)
{
    memset(res, 0, sizeof *res);
    res->prompt_tokens = res->completion_tokens = -1;
    json_object *text = NULL;
    if (c == UK_TGI && a && json_object_is_type(a, json_type_array) && json_object_array_length(a) == 1)
        a = json_object_array_get_idx(a, 0);
    if (!a || !json_object_is_type(a, json_type_object)) {
        snprintf(err, errlen, "the answer is not a JSON object");
        return -1;
    }
    if (c == UK_RESPONSES)
        return read_responses_result(a, res, err, errlen);
    if (c == UK_EMBEDDINGS) {                   /* passed through: its list and its usage checked */
        json_object *data = json_field(a, "data"), *u = json_field(a, "usage");
        if (!data || !json_object_is_type(data, json_type_array)) {
            snprintf(err, errlen, "`data` must be a list");
            return -1;
        }
        if (u && !json_object_is_type(u, json_type_object)) {
            snprintf(err, errlen, "`usage` must be an object");
            return -1;
        }
        if (u && check_range(u, "usage.", "prompt_tokens", 0, INT32_MAX, err, errlen) < 0)
            return -1;
        res->prompt_tokens = u ? count_of(u, "prompt_tokens") : -1;
        res->completion_tokens = 0;
        if (!(res->text = strdup(""))) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        return 0;
    }
    if (c == UK_TGI) {
        if (check_tgi(false, a, err, errlen) < 0)
            return -1;
        text = json_field(a, "generated_text");
        json_object *d = json_field(a, "details");
        if (d) {
            res->finish = finish_from(json_str(json_field(d, "finish_reason")));
            res->completion_tokens = count_of(d, "generated_tokens");
            read_seed(d, &res->has_seed, &res->seed);
            json_object *prefill = json_field(d, "prefill");
            if (prefill && json_object_array_length(prefill))
                res->prompt_tokens = (long)json_object_array_length(prefill);
            else
                res->prompt_tokens = count_of(d, "input_length");
        }
    } else {
        if (check_openai(c, false, a, err, errlen) < 0)
            return -1;
        json_object *ch = first_choice(a);
        if (c == UK_CHAT) {
            text = json_field(json_field(ch, "message"), "content");
        } else {
            text = json_field(ch, "text");
        }
        res->finish = finish_from(json_str(json_field(ch, "finish_reason")));
        read_usage(a, &res->prompt_tokens, &res->completion_tokens);
    }
    size_t n = 0;
    const char *s = text_of(text, &n);
    if (!(res->text = malloc(n + 1))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    memcpy(res->text, s ? s : "", n);
    res->text[n] = '\0';
    res->text_len = n;
    return 0;
}

void gen_result_free(struct gen_result *res)
{
    free(res->text);
    res->text = NULL;
}

int dialect_read_delta(enum upstream_call c, json_object *e, struct gen_delta *d)
{
    memset(d, 0, sizeof *d);
    d->token_id = -1;
    d->prompt_tokens = d->completion_tokens = -1;
    if (!e || !json_object_is_type(e, json_type_object)) {
        snprintf(d->bad, sizeof d->bad, "an event that is not a JSON object");
        return -1;
    }
    if (c == UK_RESPONSES)
        return read_responses_delta(e, d);
    json_object *err = json_field(e, "error");
    if (err) {
        const char *msg = json_str(err);
        if (!msg && json_object_is_type(err, json_type_object))
            msg = json_str(json_field(err, "message"));
        d->error = msg ? msg : "the upstream reported an error";
        return 0;
    }
    if (c == UK_TGI) {
        if (!json_field(e, "token")) {
            snprintf(d->bad, sizeof d->bad, "an event that is not a TGI token event");
            return -1;
        }
        if (check_tgi(true, e, d->bad, sizeof d->bad) < 0)
            return -1;
        json_object *tok = json_field(e, "token"), *det = json_field(e, "details");
        d->text = text_of(json_field(tok, "text"), &d->text_len);
        json_object *id = json_field(tok, "id"), *lp = json_field(tok, "logprob"), *sp = json_field(tok, "special");
        if (id)
            d->token_id = (long)json_object_get_int64(id);
        if (lp)
            d->has_logprob = true, d->logprob = json_object_get_double(lp);
        d->special = sp && json_object_get_boolean(sp);
        if (det) {
            d->finish = finish_from(json_str(json_field(det, "finish_reason")));
            if (d->finish == FIN_NONE)
                d->finish = FIN_OTHER;
            d->completion_tokens = count_of(det, "generated_tokens");
            d->prompt_tokens = count_of(det, "input_length");
            read_seed(det, &d->has_seed, &d->seed);
        }
        if (d->finish == FIN_NONE && json_str(json_field(e, "generated_text")))
            d->finish = FIN_OTHER;      /* the last event, sent without details */
        return 0;
    }
    if (!json_field(e, "choices") && !json_field(e, "usage")) {
        snprintf(d->bad, sizeof d->bad, "an event that is not a %s chunk",
                 c == UK_CHAT ? "chat completion" : "completion");
        return -1;
    }
    if (check_openai(c, true, e, d->bad, sizeof d->bad) < 0)
        return -1;
    read_usage(e, &d->prompt_tokens, &d->completion_tokens);
    json_object *ch = first_choice(e);
    if (!ch)
        return 0;                       /* the usage chunk has no choices */
    if (c == UK_CHAT) {
        json_object *delta = json_field(ch, "delta");
        d->text = delta ? text_of(json_field(delta, "content"), &d->text_len) : NULL;
    } else {
        d->text = text_of(json_field(ch, "text"), &d->text_len);
    }
    d->finish = finish_from(json_str(json_field(ch, "finish_reason")));
    return 0;
}

bool dialect_error_message(json_object *b, char *buf, size_t len)
{
    const char *msg = NULL;
    json_object *e = json_field(b, "error"), *d;
    if (e && json_object_is_type(e, json_type_object))
        msg = json_str(json_field(e, "message"));
    else if (e)
        msg = json_str(e);
    if (!msg && (d = json_field(b, "detail"))) {
        msg = json_str(d);
        if (!msg && json_object_is_type(d, json_type_array) && json_object_array_length(d) > 0) {
            /* FastAPI's validation errors: [{"loc":["body","stream"],"msg":"Input should be True"}] */
            json_object *e0 = json_object_array_get_idx(d, 0), *loc = json_field(e0, "loc");
            size_t n = loc && json_object_is_type(loc, json_type_array) ? json_object_array_length(loc) : 0;
            const char *field = n ? json_str(json_object_array_get_idx(loc, n - 1)) : NULL;
            msg = json_str(json_field(e0, "msg"));
            if (msg && field) {
                snprintf(buf, len, "`%s`: %s", field, msg);
                return true;
            }
        }
    }
    if (!msg)
        msg = json_str(json_field(b, "message"));
    if (!msg)
        return false;
    snprintf(buf, len, "%s", msg);
    return true;
}

