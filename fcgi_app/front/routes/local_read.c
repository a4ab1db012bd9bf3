/* local_read.c -- reading a local generation request: what the engine does not do is refused, prompts are rendered and tokenized within the model's limits, sampling parameters checked. */
#include "config.h"
#include "local_call.h"
#include "chat_template.h"
#include "conf.h"
#include "json_obj.h"
#include "response.h"
#include "tokenizer.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Refuses what the local engine does not do, rather than ignoring it. */
int lcall_check_unsupported(struct lcall *lc, json_object *body)
{
    json_object *v;
    if (lc->kind == CK_CHAT || lc->kind == CK_COMPLETION) {
        if ((v = json_field(body, "logit_bias")) && !json_object_is_type(v, json_type_object))
            return lcall_error(lc, 400, "logit_bias", "`logit_bias` must be an object of token ids to biases"), -1;
        if (v && json_object_object_length(v) > 0)
            return lcall_error(lc, 400, "logit_bias", "`logit_bias` is not supported by local models"), -1;
        /* tools, tool_choice and response_format: structured_read. The legacy function calling
         * fields: function_call "none" asks for what a local model does anyway */
        if ((v = json_field(body, "functions")) && !json_object_is_type(v, json_type_array))
            return lcall_error(lc, 400, "functions", "`functions` must be an array"), -1;
        if (v && json_object_array_length(v) > 0)
            return lcall_error(lc, 400, "functions", "`functions` are not supported by local GPT-2 models"), -1;
        static const char *const choices[] = {"function_call"};
        for (size_t i = 0; i < ARRAY_LEN(choices); i++) {
            if (!(v = json_field(body, choices[i])))
                continue;
            if (!json_object_is_type(v, json_type_string) && !json_object_is_type(v, json_type_object))
                return lcall_error(lc, 400, choices[i], "`%s` must be a string or an object", choices[i]), -1;
            if (!json_object_is_type(v, json_type_string) || strcmp(json_object_get_string(v), "none") != 0)
                return lcall_error(lc, 400, choices[i], "`%s` is not supported by local GPT-2 models (only \"none\")",
                                    choices[i]), -1;
        }
        if ((v = json_field(body, "suffix")))
            return lcall_error(lc, 400, "suffix", "`suffix` is not supported by local models"), -1;
        if ((v = json_field(body, "best_of")) && !(json_object_is_type(v, json_type_int) && json_object_get_int64(v) == 1))
            return lcall_error(lc, 400, "best_of", "`best_of` other than 1 is not supported by local models"), -1;
        if ((v = json_field(body, "user")) && !json_object_is_type(v, json_type_string))
            return lcall_error(lc, 400, "user", "`user` must be a string"), -1;
        return 0;
    }
    json_object *p = json_field(body, "parameters");
    if (!p)
        return 0;
    if ((v = json_field(p, "best_of")) && !(json_object_is_type(v, json_type_int) && json_object_get_int64(v) == 1))
        return lcall_error(lc, 422, NULL, "`best_of` other than 1 is not supported by local models"), -1;
    if ((v = json_field(p, "watermark")) && json_object_get_boolean(v))
        return lcall_error(lc, 422, NULL, "`watermark` is not supported by local models"), -1;
    if (json_field(p, "adapter_id"))
        return lcall_error(lc, 422, NULL, "`adapter_id` is not supported by local models"), -1;
    return 0;
}

/* Encodes text[0..len) for model m, unless it is sure to make more than
 * `limit` tokens (0: no limit): a text longer than limit times the most
 * bytes one token stands for is refused before it is encoded, so an
 * oversized input costs its parse and nothing more (encoding peaks at
 * under 20 times the text). Returns TOKENIZER_OK with *ids (the caller
 * frees) and *n; 1 when refused, with *ids NULL and *n the fewest tokens
 * the text makes; or a tokenizer error. */
int lcall_encode_bounded(const struct lmodel *m, const char *text, size_t len, int limit, int32_t **ids, size_t *n)
{
    size_t cover = tokenizer_max_cover(m->tok);
    if (limit > 0 && cover && len / cover > (size_t)limit) {
        *ids = NULL;
        *n = (len + cover - 1) / cover;
        return 1;
    }
    return tokenizer_encode(m->tok, text, len, true, ids, n);
}

/* Tokenizes text[0..len) (it may hold NUL) into prompt p; a text sure to exceed the model's input
 * (with no TGI `truncate` to cut it) is left unencoded, at_least set. */
static int tokenize_prompt(struct lcall *lc, struct prompt *p, const char *text, size_t len)
{
    size_t n = 0;
    p->text = text;
    p->len = len;
    int limit = lc->kind == CK_TGI && lc->g->truncate > 0 ? 0 : lc->m->max_input;
    int rc = lcall_encode_bounded(lc->m, text, len, limit, &p->ids, &n);
    if (rc < 0)
        return lcall_error(lc, 500, NULL, "cannot tokenize the prompt"), -1;
    p->at_least = rc == 1;
    p->n = n > INT_MAX ? INT_MAX : (int)n;
    return 0;
}

/* A prompt given as token ids (OpenAI completions). */
static int ids_prompt(struct lcall *lc, struct prompt *p, json_object *arr, size_t which)
{
    size_t n = json_object_array_length(arr);
    int vocab = tokenizer_vocab_size(lc->tok);
    p->ids = malloc(sizeof *p->ids * (n ? n : 1));
    if (!p->ids)
        return lcall_error(lc, 500, NULL, "out of memory"), -1;
    for (size_t i = 0; i < n; i++) {
        json_object *t = json_object_array_get_idx(arr, i);
        int64_t id = json_object_get_int64(t);
        if (!json_object_is_type(t, json_type_int) || id < 0 || id >= vocab ||
            !tokenizer_token_bytes(lc->tok, (int32_t)id, &(size_t){0}))
            return lcall_error(lc, 400, "prompt", "`prompt[%zu][%zu]` must be a token id from 0 to %d", which, i,
                                vocab - 1), -1;
        p->ids[i] = (int32_t)id;
    }
    p->n = (int)n;
    return 0;
}

/* Fills lc->prompts from the request. */
static int read_prompts(struct lcall *lc)
{
    struct gen *g = lc->g;
    if (lc->kind == CK_CHAT) {
        enum chat_template t = CHAT_TEMPLATE_AUTO;
        chat_template_parse(lc->m->set.chat_template, &t);
        t = chat_template_resolve(t, lc->m->dir);
        const char *const *stops = NULL;
        size_t n_stops = 0;
        char err[400];
        int32_t eos = lc->m->eos;
        size_t eos_len = 0;
        const char *eos_bytes = eos >= 0 ? tokenizer_token_bytes(lc->tok, eos, &eos_len) : NULL;
        char eos_text[64] = "";
        if (eos_bytes && eos_len < sizeof eos_text)
            memcpy(eos_text, eos_bytes, eos_len), eos_text[eos_len] = '\0';
        int rc = chat_template_render(t, g->messages, eos_text, &lc->chat_text, &lc->chat_len, &stops,
                                      &n_stops, err, sizeof err);
        if (rc != CHAT_TEMPLATE_OK)
            return lcall_error(lc, rc == CHAT_TEMPLATE_EINVAL ? 400 : 500, "messages", "%s", err), -1;
        size_t user = g->stop ? json_object_array_length(g->stop) : 0;
        if (user + n_stops > STOPSEQ_MAX)
            return lcall_error(lc, 400, "stop",
                                "at most %zu stop strings with this model: its chat template adds %zu of its own",
                                STOPSEQ_MAX - n_stops, n_stops), -1;
        for (size_t i = 0; i < n_stops; i++)
            lc->gp.stop[lc->gp.n_stop++] = stops[i];
        lc->n_prompts = 1;
        return tokenize_prompt(lc, &lc->prompts[0], lc->chat_text, lc->chat_len);
    }
    if (lc->kind == CK_COMPLETION && g->prompts) {
        json_object *list = g->prompts;
        size_t n = json_object_array_length(list);
        if (n == 0)
            return lcall_error(lc, 400, "prompt", "`prompt` must not be an empty list"), -1;
        bool all_ints = true;
        for (size_t i = 0; i < n; i++)
            all_ints &= json_object_is_type(json_object_array_get_idx(list, i), json_type_int);
        if (all_ints) {                         /* one prompt as token ids */
            lc->n_prompts = 1;
            return ids_prompt(lc, &lc->prompts[0], list, 0);
        }
        if (n > MAX_PROMPTS)
            return lcall_error(lc, 400, "prompt", "at most %d prompts in one request (got %zu)", MAX_PROMPTS, n), -1;
        for (size_t i = 0; i < n; i++) {
            json_object *p = json_object_array_get_idx(list, i);
            lc->n_prompts = (int)i + 1;
            if (json_object_is_type(p, json_type_string)) {
                if (tokenize_prompt(lc, &lc->prompts[i], json_object_get_string(p),
                                    (size_t)json_object_get_string_len(p)) < 0)
                    return -1;
            } else if (json_object_is_type(p, json_type_array)) {
                if (ids_prompt(lc, &lc->prompts[i], p, i) < 0)
                    return -1;
            } else {
                return lcall_error(lc, 400, "prompt",
                                    "`prompt[%zu]` must be a string or a list of token ids", i), -1;
            }
        }
        return 0;
    }
    if (!g->prompt)
        return lcall_error(lc, 400, "prompt", "`prompt` is required"), -1;
    lc->n_prompts = 1;
    return tokenize_prompt(lc, &lc->prompts[0], g->prompt, g->prompt_len);
}

/* The sampling settings, in each API's own semantics. */
static int read_sampling(struct lcall *lc)
{
    struct gen *g = lc->g;
    struct sampler_params *s = &lc->gp.sampling;
    *s = sampler_params_default();
    switch (lc->kind) {
    case CK_CHAT:
    case CK_RESPONSES:                  /* read as the chat it means (routes_local.c) */
    case CK_COMPLETION:                 /* OpenAI: sampling unless temperature is 0; default temperature 1 */
        lc->sampling = !(g->has_temperature && g->temperature == 0);
        s->temperature = g->has_temperature && lc->sampling ? (float)g->temperature : 1.0f;
        if (g->has_top_p)
            s->top_p = g->top_p > 0 ? (float)g->top_p : 1e-9f;    /* 0: only the most likely token */
        if (g->has_freq)
            s->frequency_penalty = (float)g->freq;
        if (g->has_pres)
            s->presence_penalty = (float)g->pres;
        lc->want_logprobs = g->logprobs;
        lc->top_n = g->logprobs ? (int)g->top_logprobs : 0;
        lc->prompt_logprobs = lc->kind == CK_COMPLETION && g->echo && g->logprobs && !lc->stream;
        break;
    case CK_TGI:                        /* TGI: sampling when do_sample or a warper that changes anything */
        lc->sampling = dialect_tgi_samples(g);
        if (g->has_temperature)
            s->temperature = (float)g->temperature;
        if (g->has_top_k)
            s->top_k = (int)g->top_k;
        if (g->has_top_p)
            s->top_p = (float)g->top_p;
        if (g->has_typical)
            s->typical_p = (float)g->typical;
        if (g->has_rep)
            s->repetition_penalty = (float)g->rep;
        if (g->has_freq)
            s->frequency_penalty = (float)g->freq;
        lc->top_n = (int)g->top_logprobs;
        lc->prompt_logprobs = g->decoder_input_details;
        lc->keep_tokens = g->details || lc->top_n > 0;
        break;
    case CK_LEGACY:                     /* the older shape: sampling when a temperature or top_p is given */
        lc->sampling = g->has_temperature || g->has_top_p;
        if (g->has_temperature)
            s->temperature = (float)g->temperature;
        if (g->has_top_p)
            s->top_p = (float)g->top_p;
        if (g->has_rep)
            s->repetition_penalty = (float)g->rep;
        break;
    case CK_EMBEDDINGS:                 /* routes_classify.c's, never here */
        break;
    }
    s->do_sample = lc->sampling;
    s->top_n = lc->top_n;
    lc->seed = g->has_seed ? (uint64_t)g->seed : util_random_u64() >> 1;
    s->seed = lc->seed;
    lc->keep_tokens |= lc->want_logprobs;
    char err[300];
    if (sampler_params_check(s, err, sizeof err) != SAMPLER_OK)
        return lcall_error(lc, 400, NULL, "%s", err), -1;
    if (g->stop)
        for (size_t i = 0; i < json_object_array_length(g->stop) && lc->gp.n_stop < STOPSEQ_MAX; i++) {
            json_object *s1 = json_object_array_get_idx(g->stop, i);
            lc->gp.stop[lc->gp.n_stop] = json_object_get_string(s1);
            lc->gp.stop_len[lc->gp.n_stop++] = (size_t)json_object_get_string_len(s1);   /* may hold NUL */
        }
    return 0;
}

/* max_new_tokens and the length limits, with each API's wording. */
static int check_lengths(struct lcall *lc)
{
    struct lmodel *m = lc->m;
    struct gen *g = lc->g;
    bool openai = lc->r->dialect == DIALECT_OPENAI;
    for (int i = 0; i < lc->n_prompts; i++) {
        struct prompt *p = &lc->prompts[i];
        if (lc->kind == CK_TGI && g->truncate > 0 && p->n > g->truncate) {
            memmove(p->ids, p->ids + p->n - g->truncate, sizeof *p->ids * (size_t)g->truncate);
            p->n = (int)g->truncate;
        }
        if (p->n == 0) {
            if (lc->kind == CK_TGI)
                return lcall_error(lc, 422, NULL, "`inputs` cannot be empty"), -1;
            if (m->eos < 0)
                return lcall_error(lc, 400, "prompt", "the prompt is empty"), -1;
            p->ids[0] = m->eos;                 /* GPT-2 starts a text after <|endoftext|> */
            p->n = 1;
        }
        if (p->n > m->max_input) {
            if (openai)
                return resp_error_openai(lc->r, 400, NULL, lc->kind == CK_CHAT ? "messages" : "prompt",
                                         "context_length_exceeded",
                                         "This model's maximum context length is %d tokens (%d for the input). "
                                         "However, your %s resulted in %s%d tokens. Please reduce the length of the %s.",
                                         m->max_total, m->max_input, lc->kind == CK_CHAT ? "messages" : "prompt",
                                         p->at_least ? "at least " : "", p->n,
                                         lc->kind == CK_CHAT ? "messages" : "prompt"), -1;
            return lcall_error(lc, 422, NULL, "`inputs` must have less than %d tokens. Given: %s%d", m->max_input + 1,
                                p->at_least ? "at least " : "", p->n), -1;
        }
    }
    int longest = 0;
    for (int i = 0; i < lc->n_prompts; i++)
        longest = lc->prompts[i].n > longest ? lc->prompts[i].n : longest;
    long max_new;
    if (g->max_tokens > 0) {
        max_new = g->max_tokens;
        if (longest + max_new > m->max_total) {
            if (openai)
                return resp_error_openai(lc->r, 400, NULL, "max_tokens", "context_length_exceeded",
                                         "This model's maximum context length is %d tokens. However, you requested "
                                         "%ld tokens (%d in the %s, %ld in the completion). Please reduce the length "
                                         "of the %s or completion.", m->max_total, longest + max_new, longest,
                                         lc->kind == CK_CHAT ? "messages" : "prompt", max_new,
                                         lc->kind == CK_CHAT ? "messages" : "prompt"), -1;
            return lcall_error(lc, 422, NULL,
                                "`inputs` tokens + `max_new_tokens` must be <= %d. Given: %d `inputs` tokens and "
                                "%ld `max_new_tokens`", m->max_total, longest, max_new), -1;
        }
    } else {
        max_new = lc->kind == CK_COMPLETION ? 16 : m->set.max_new_tokens;   /* OpenAI's completions default */
        if (max_new > m->max_total - longest)
            max_new = m->max_total - longest;
        if (max_new < 1)
            return lcall_error(lc, openai ? 400 : 422, NULL,
                                "the prompt (%d tokens) leaves no room to generate within max_total_tokens %d",
                                longest, m->max_total), -1;
    }
    lc->gp.max_new_tokens = (int)max_new;
    return 0;
}

int lcall_read_request(struct lcall *lc)
{
    return read_prompts(lc) < 0 || read_sampling(lc) < 0 || check_lengths(lc) < 0 ? -1 : 0;
}
