/* test_config.c -- the config file: defaults, every key type, and file:line errors for bad input. */
#include "config.h"
#include "cidr.h"
#include "conf.h"
#include "router.h"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[] = "/tmp/llmcgi-conf-XXXXXX";
static char path[256];

static void write_file(const char *text)
{
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

/* Loads `text`; returns the config or NULL, with the errors joined by '\n' in errbuf. */
static struct config *load(const char *text, char *errbuf, size_t len)
{
    struct config_errors errs = {0};
    struct config *c;
    write_file(text);
    config_load(path, &c, &errs);
    errbuf[0] = '\0';
    for (size_t i = 0; i < errs.n; i++) {
        strncat(errbuf, errs.msg[i], len - strlen(errbuf) - 2);
        strcat(errbuf, "\n");
    }
    config_errors_free(&errs);
    return c;
}

/* Expects `text` to be refused with an error containing `want`. */
static void refused(const char *text, const char *want, const char *what)
{
    char err[4096];
    struct config *c = load(text, err, sizeof err);
    ok(c == NULL, "refused: %s", what);
    has_str(err, want, "  message for %s", what);
    config_unref(c);
}

/* Expects `text` to be refused with an error on `line` (0: file-wide) containing `msg`. */
static void refused_at(const char *text, int line, const char *msg, const char *what)
{
    char err[4096], prefix[300];
    struct config *c = load(text, err, sizeof err);
    ok(c == NULL, "refused: %s", what);
    config_unref(c);
    if (line)
        snprintf(prefix, sizeof prefix, "%s:%d: ", path, line);
    else
        snprintf(prefix, sizeof prefix, "%s: ", path);
    bool found = false;
    for (char *l = err; *l && !found;) {
        char *end = strchr(l, '\n');
        if (end)
            *end = '\0';
        found = strncmp(l, prefix, strlen(prefix)) == 0 && strstr(l + strlen(prefix), msg);
        l = end ? end + 1 : l + strlen(l);
    }
    if (!ok(found, "  line %d says \"%s\"", line, msg))
        printf("#   got: %s\n", err);
}

/* The embeddings keys: pooling, normalize. */
static void test_embeddings_keys(void)
{
    char err[4096];
    struct config *c = load("[model a]\npath = /m/a\n[model b]\npath = /m/b\npooling = last\nnormalize = off\n",
                            err, sizeof err);
    if (ok(c != NULL, "the embeddings keys load") || (printf("# %s", err), 0)) {
        const struct config_model *a = config_find_model(c, "a"), *b = config_find_model(c, "b");
        ok(!a->pool_last && a->normalize, "defaults: pooling mean, normalize on");
        ok(b->pool_last && !b->normalize, "pooling = last, normalize = off");
    }
    config_unref(c);
    refused_at("[model a]\npath = /m\npooling = max\n", 3, "pooling must be mean or last, got \"max\"",
               "an unknown pooling");
    refused_at("[model a]\npath = /m\nnormalize = perhaps\n", 3, "normalize", "normalize not on or off");
}

/* dtype: auto (the default), f32, f16, bf16, q8; anything else refused with its line. */
static void test_dtype_key(void)
{
    char err[4096];
    struct config *c = load("[model a]\npath = /m/a\n[model b]\npath = /m/b\ndtype = q8\n[model c]\npath = /m/c\n"
                            "dtype = f32\n[model d]\npath = /m/d\ndtype = f16\n[model e]\npath = /m/e\ndtype = bf16\n",
                            err, sizeof err);
    if (ok(c != NULL, "the dtype key loads") || (printf("# %s", err), 0)) {
        is_int(config_find_model(c, "a")->dtype, LLM_DTYPE_AUTO, "dtype defaults to auto");
        is_int(config_find_model(c, "b")->dtype, LLM_DTYPE_Q8, "dtype = q8");
        is_int(config_find_model(c, "c")->dtype, LLM_DTYPE_F32, "dtype = f32");
        is_int(config_find_model(c, "d")->dtype, LLM_DTYPE_F16, "dtype = f16");
        is_int(config_find_model(c, "e")->dtype, LLM_DTYPE_BF16, "dtype = bf16");
    }
    config_unref(c);
    refused_at("[model a]\npath = /m\n\ndtype = int4\n", 4, "dtype must be auto, f32, f16, bf16 or q8, got \"int4\"",
               "an unknown dtype");
    refused_at("[model a]\npath = /m\ndtype = Q8\n", 3, "dtype must be auto, f32, f16, bf16 or q8", "dtype is lower case");
    refused_at("[model a]\npath = /m\n\n\ndtype = fp16\n", 5, "dtype must be auto, f32, f16, bf16 or q8, got \"fp16\"",
               "fp16 is not a dtype name (f16 is)");
}

/* kv_dtype: auto (the default), f32, f16; anything else refused with its line. */
static void test_kv_dtype_key(void)
{
    char err[4096];
    struct config *c = load("[model a]\npath = /m/a\n[model b]\npath = /m/b\nkv_dtype = f16\n[model c]\npath = /m/c\n"
                            "kv_dtype = f32\n[model d]\npath = /m/d\nkv_dtype = auto\n",
                            err, sizeof err);
    if (ok(c != NULL, "the kv_dtype key loads") || (printf("# %s", err), 0)) {
        is_int(config_find_model(c, "a")->kv_dtype, LLM_KV_AUTO, "kv_dtype defaults to auto");
        is_int(config_find_model(c, "b")->kv_dtype, LLM_KV_F16, "kv_dtype = f16");
        is_int(config_find_model(c, "c")->kv_dtype, LLM_KV_F32, "kv_dtype = f32");
        is_int(config_find_model(c, "d")->kv_dtype, LLM_KV_AUTO, "kv_dtype = auto");
    }
    config_unref(c);
    refused_at("[model a]\npath = /m\n\nkv_dtype = bf16\n", 4, "kv_dtype must be auto, f32 or f16, got \"bf16\"",
               "bf16 is not a kv_dtype");
    refused_at("[model a]\npath = /m\nkv_dtype = F16\n", 3, "kv_dtype must be auto, f32 or f16", "kv_dtype is lower case");
    refused_at("kv_dtype = f16\n", 1, "kv_dtype", "kv_dtype outside a [model] section");
}

/* tuning: auto (the default), latency, throughput; anything else refused with its line. */
static void test_tuning_key(void)
{
    char err[4096];
    struct config *c = load("[model a]\npath = /m/a\n[model b]\npath = /m/b\ntuning = latency\n[model c]\n"
                            "path = /m/c\ntuning = throughput\n[model d]\npath = /m/d\ntuning = auto\n",
                            err, sizeof err);
    if (ok(c != NULL, "the tuning key loads") || (printf("# %s", err), 0)) {
        is_int(config_find_model(c, "a")->tuning, LLM_TUNING_AUTO, "tuning defaults to auto");
        is_int(config_find_model(c, "b")->tuning, LLM_TUNING_LATENCY, "tuning = latency");
        is_int(config_find_model(c, "c")->tuning, LLM_TUNING_THROUGHPUT, "tuning = throughput");
        is_int(config_find_model(c, "d")->tuning, LLM_TUNING_AUTO, "tuning = auto");
    }
    config_unref(c);
    refused_at("[model a]\npath = /m\n\ntuning = fast\n", 4,
               "tuning must be auto, latency or throughput, got \"fast\"", "an unknown tuning");
    refused_at("[model a]\npath = /m\ntuning = Throughput\n", 3, "tuning must be auto, latency or throughput",
               "tuning is lower case");
    refused_at("tuning = latency\n", 1, "tuning", "tuning outside a [model] section");
}

/* The structured-output caches: constraint_cache ([server], compiled DFAs shared by every model) and
 * mask_cache (per model, its allowed-token masks): sizes, 0 allowed (nothing kept), refused with their line. */
static void test_constraint_cache_keys(void)
{
    char err[4096];
    struct config *c = load("[server]\n[model a]\npath = /m/a\n", err, sizeof err);
    if (ok(c != NULL, "the cache keys' defaults load") || (printf("# %s", err), 0)) {
        is_int((long long)c->constraint_cache, 64LL << 20, "constraint_cache defaults to 64M");
        is_int((long long)config_find_model(c, "a")->mask_cache, 32LL << 20, "mask_cache defaults to 32M");
    }
    config_unref(c);
    c = load("[server]\nconstraint_cache = 0\n[model a]\npath = /m/a\nmask_cache = 256k\n[model b]\npath = /m/b\n"
             "mask_cache = 0\n", err, sizeof err);
    if (ok(c != NULL, "the cache keys set") || (printf("# %s", err), 0)) {
        is_int((long long)c->constraint_cache, 0, "constraint_cache = 0: nothing kept");
        is_int((long long)config_find_model(c, "a")->mask_cache, 256 << 10, "mask_cache = 256k");
        is_int((long long)config_find_model(c, "b")->mask_cache, 0, "mask_cache = 0");
    }
    config_unref(c);
    refused_at("[server]\nconstraint_cache = plenty\n", 2, "constraint_cache must be a size", "a constraint_cache that is no size");
    refused_at("[model a]\npath = /m\n\nmask_cache = -1\n", 4, "mask_cache must be a size", "a negative mask_cache");
    refused_at("[model a]\nmask_cache = 2048G\npath = /m\n", 2, "mask_cache must be a size", "a mask_cache over 1T");
}

/* The classification keys: task, max_inputs, categories, safe_labels, flag_threshold, moderation_model, classify_model. */
static void test_classifier_keys(void)
{
    char err[4096];
    struct config *c = load("[model a]\npath = /m/a\n", err, sizeof err);
    if (ok(c != NULL, "defaults of the classification keys")) {
        const struct config_model *m = config_find_model(c, "a");
        is_str(model_task_name(m->task), "auto", "default task auto (from the checkpoint)");
        is_int(m->max_inputs, 32, "default max_inputs 32");
        ok(m->categories == NULL && m->safe_labels == NULL && m->flag_threshold == 0.5,
           "no categories, no safe labels, flag_threshold 0.5");
        ok(config_classifier_default(c, true) == NULL && config_classifier_default(c, false) == NULL,
           "no classification default without a classifier section");
    }
    config_unref(c);
    c = load("[server]\nmoderation_model = mod\n[model sent]\npath = /m/s\ntask = classify\nmax_inputs = 4\n"
             "[model mod]\npath = /m/m\ntask = moderate\ncategories = hate=h,hh violence/graphic=v\n"
             "flag_threshold = 0.25\n[model mod2]\npath = /m/m2\ntask = moderate\nsafe_labels = ok neutral\n",
             err, sizeof err);
    if (ok(c != NULL, "every classification key loads") || (printf("# %s", err), 0)) {
        const struct config_model *m = config_find_model(c, "mod");
        is_str(model_task_name(m->task), "moderate", "task moderate");
        is_str(m->categories, "hate=h,hh violence/graphic=v", "categories kept as written");
        ok(m->flag_threshold == 0.25, "flag_threshold 0.25");
        is_int(config_find_model(c, "sent")->max_inputs, 4, "max_inputs 4");
        is_str(config_find_model(c, "mod2")->safe_labels, "ok neutral", "safe_labels");
        is_str(config_classifier_default(c, true), "mod", "moderation_model");
        is_str(config_classifier_default(c, false), "mod", "/classify falls back to moderation_model");
    }
    config_unref(c);
    c = load("[model g]\npath = /m/g\n[model s]\npath = /m/s\ntask = classify\n", err, sizeof err);
    ok(c && config_classifier_default(c, false) && !strcmp(config_classifier_default(c, false), "s") &&
           config_classifier_default(c, true) == NULL,
       "without the [server] keys: the first classify section for /classify, none for moderation");
    config_unref(c);
    refused_at("[model a]\npath = /m\ntask = summarize\n", 3,
               "task must be auto, generate, classify or moderate, got \"summarize\"", "an unknown task");
    refused_at("[model a]\npath = /m\ntask = moderate\nflag_threshold = 1.5\n", 4,
               "flag_threshold must be a number from 0 to 1, got \"1.5\"", "a threshold above 1");
    refused_at("[model a]\npath = /m\ntask = moderate\ncategories = hate\n", 4,
               "categories: \"hate\" is not CATEGORY=LABEL[,LABEL...]", "a category without labels");
    refused_at("[model a]\npath = /m\ntask = classify\ncategories = hate=h\n", 1,
               "categories and safe_labels are for task = moderate", "categories on a classify model");
    refused_at("[model a]\npath = /m\ntask = moderate\ncategories = hate=h\nsafe_labels = ok\n", 1,
               "safe_labels only applies when categories is not set", "both categories and safe_labels");
    refused_at("[model a]\npath = /m\nmax_inputs = 0\n", 3, "max_inputs must be a whole number from 1",
               "max_inputs 0");
    refused_at("[server]\nmoderation_model = a\n[model a]\npath = /m\ntask = classify\n", 3,
               "[model a] is the moderation_model: set its task = moderate", "a moderation_model that is no moderator");
    refused_at("[server]\nclassify_model = zz\n", 0, "classify_model \"zz\" is not a [model] of this file",
               "a classify_model that is not configured");
}

/* [model NAME] sections and the [server] keys of local models: defaults, every key, and each bad value at its line. */
static void test_models(void)
{
    char err[4096];
    struct config *c = load("[model a]\npath = /m/a\n", err, sizeof err);
    ok(c != NULL, "a [model] with only a path loads");
    if (c) {
        const struct config_model *m = config_find_model(c, "a");
        is_str(m->device, "auto", "default device auto");
        is_int(m->threads, 0, "default threads 0 (every core)");
        is_int(m->max_concurrent, 16, "default max_concurrent 16");
        is_int(m->max_queue, 64, "default max_queue 64");
        is_int(m->max_input_tokens, 0, "default max_input_tokens 0 (the context)");
        is_int(m->max_total_tokens, 0, "default max_total_tokens 0 (the context)");
        is_int(m->max_new_tokens, 256, "default max_new_tokens 256");
        is_int(m->max_batch_tokens, 256, "default max_batch_tokens 256");
        is_int((long long)m->kv_cache, 0, "default kv_cache 0 (automatic)");
        ok(m->prefix_cache, "default prefix_cache on");
        is_str(m->chat_template, "auto", "default chat_template auto");
        is_int(m->timeout_ms, 600000, "default timeout 10m");
        ok(c->models_dir == NULL, "no models_dir by default");
        is_int(c->max_loaded_models, 4, "default max_loaded_models 4");
        is_int((long long)c->models_memory, 0, "no models_memory budget by default");
        is_int(c->model_defaults.max_concurrent, 16, "models_dir models get the [model] defaults");
    }
    config_unref(c);

    c = load("[server]\nmodels_dir = models\nmax_loaded_models = 2\nmodels_memory = 2G\ndefault_model = org/m\n"
             "[model b]\npath = /m/b\ndevice = cuda:1\nthreads = 2\nmax_concurrent = 4\nmax_queue = 0\n"
             "max_input_tokens = 100\nmax_total_tokens = 200\nmax_new_tokens = 50\nmax_batch_tokens = 8\n"
             "kv_cache = 64M\nprefix_cache = off\nchat_template = dialogpt\ntimeout = 30s\n", err, sizeof err);
    ok(c != NULL, "every model key loads");
    if (!c)
        printf("# %s", err);
    if (c) {
        const struct config_model *m = config_find_model(c, "b");
        char want[300];
        snprintf(want, sizeof want, "%s/models", dir);
        is_str(c->models_dir, want, "models_dir relative to the file");
        is_int(c->max_loaded_models, 2, "max_loaded_models");
        is_int((long long)c->models_memory, 2LL << 30, "models_memory 2G");
        is_str(c->default_model, "org/m", "a default_model under models_dir is accepted");
        is_str(m->device, "cuda:1", "device cuda:1");
        is_int(m->threads, 2, "threads");
        is_int(m->max_concurrent, 4, "max_concurrent");
        is_int(m->max_queue, 0, "max_queue 0");
        is_int(m->max_input_tokens, 100, "max_input_tokens");
        is_int(m->max_total_tokens, 200, "max_total_tokens");
        is_int(m->max_new_tokens, 50, "max_new_tokens");
        is_int(m->max_batch_tokens, 8, "max_batch_tokens");
        is_int((long long)m->kv_cache, 64 << 20, "kv_cache 64M");
        ok(!m->prefix_cache, "prefix_cache off");
        is_str(m->chat_template, "dialogpt", "chat_template");
        is_int(m->timeout_ms, 30000, "timeout 30s");
    }
    config_unref(c);

    refused_at("[model a]\npath = /m\n\nprefix_cache = sometimes\n", 4,
               "prefix_cache must be on or off, got \"sometimes\"", "prefix_cache neither on nor off");
    refused_at("[model a]\npath = /m\ndevice = tpu\n", 3, "device must be auto, cpu, cuda or cuda:N, got \"tpu\"",
               "an unknown device");
    refused_at("[model a]\npath = /m\nchat_template = llama3\n", 3,
               "chat_template must be auto, plain or dialogpt, got \"llama3\"", "an unknown chat template");
    refused_at("[model a]\npath = /m\nmax_concurrent = 0\n", 3, "max_concurrent must be a whole number from 1",
               "max_concurrent 0");
    refused_at("[model a]\npath = /m\nmax_concurrent = 32\nmax_batch_tokens = 16\n", 1,
               "max_batch_tokens (16) must be at least max_concurrent (32)", "max_batch_tokens below max_concurrent");
    refused_at("[model a]\npath = /m\nmax_input_tokens = 300\nmax_total_tokens = 300\n", 1,
               "max_input_tokens (300) must be below max_total_tokens (300)", "max_input_tokens >= max_total_tokens");
    refused_at("[model a]\npath = /m\ntimeout = 0\n", 3, "timeout must be a duration", "timeout 0");
    refused_at("[model a]\npath = /m\nkv_cache = lots\n", 3, "kv_cache must be a size", "a kv_cache that is no size");
    refused_at("[model a]\npath = /m\nmax_concurent = 3\n", 3,
               "unknown key \"max_concurent\" in [model] (did you mean \"max_concurrent\"?)", "a misspelt model key");
    refused_at("[server]\nmax_loaded_models = 0\n", 2, "max_loaded_models must be a whole number from 1",
               "max_loaded_models 0");
    test_classifier_keys();
    test_embeddings_keys();
    test_dtype_key();
    test_kv_dtype_key();
    test_tuning_key();
    test_constraint_cache_keys();
    refused_at("[server]\ndefault_model = ../x\nmodels_dir = /m\n", 0, "default_model \"../x\" is neither",
               "a default_model that is no safe directory name");

    static const struct { const char *name; bool ok; } names[] = {
        {"gpt2", true}, {"openai-community/gpt2", true}, {"a/b/c", true}, {"DialoGPT-small_v1.5", true},
        {"", false}, {"/etc", false}, {"../x", false}, {"a/../../etc", false}, {"a//b", false}, {"a/", false},
        {".", false}, {"a/./b", false}, {".hidden", false}, {"a b", false}, {"a:b", false}, {"a\\b", false},
    };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        ok(config_model_relpath_ok(names[i].name) == names[i].ok, "models_dir name \"%s\" %s", names[i].name,
           names[i].ok ? "accepted" : "refused");
}

/* [upstream NAME] sections: every key, the defaults per type, and each bad value at its line. */
static void test_upstreams(void)
{
    char err[4096];
    size_t errlen = sizeof err;
    struct config *c = load("[upstream tgi1]\ntype = tgi\nurl = http://127.0.0.1:8080/ http://127.0.0.1:8081/base//\n"
                            "models = llama alias=meta/llama-3\nconnect_timeout = 2s\nfirst_byte_timeout = 30s\n"
                            "total_timeout = 10m\nstream_idle_timeout = 60s\nmax_concurrent = 8\nqueue_timeout = 500ms\n"
                            "retries = 1\nretry_backoff = 50ms\napi_key = sk-secret\nheader = X-One: 1\n"
                            "header = X-Two:two  words\nweight = 3\nhealth_path = /ready\nhealth_interval = 1s\n"
                            "health_timeout = 500ms\nhealth_fall = 2\nhealth_rise = 1\n"
                            "launch = /usr/bin/text-generation-launcher --port 8080\nlaunch_stop_timeout = 3s\n"
                            "max_response = 1M\n",
                            err, errlen);
    ok(c != NULL, "a full tgi upstream loads");
    if (!c)
        tap_diag("%s", err);
    const struct config_upstream *u = c ? config_find_upstream(c, "tgi1") : NULL;
    ok(u != NULL, "found by name");
    if (u) {
        is_int(u->type, UPSTREAM_TGI, "type tgi");
        is_str(upstream_type_name(u->type), "tgi", "its name");
        is_int(u->line, 1, "line of the header");
        is_int(u->n_urls, 2, "two replicas");
        is_str(u->urls[0], "http://127.0.0.1:8080", "trailing slash dropped");
        is_str(u->urls[1], "http://127.0.0.1:8081/base", "a base path kept, its slashes dropped");
        is_int(u->n_models, 2, "two models");
        ok(u->n_models == 2 && strcmp(u->models[0].name, "llama") == 0 && strcmp(u->models[0].target, "llama") == 0,
           "a plain model is its own target");
        ok(u->n_models == 2 && strcmp(u->models[1].name, "alias") == 0 &&
               strcmp(u->models[1].target, "meta/llama-3") == 0,
           "an alias NAME=TARGET");
        ok(!u->catch_all, "no catch-all");
        ok(u->path_prefix == NULL, "no path_prefix");
        is_int(u->connect_timeout_ms, 2000, "connect_timeout");
        is_int(u->first_byte_timeout_ms, 30000, "first_byte_timeout");
        is_int(u->total_timeout_ms, 600000, "total_timeout");
        is_int(u->stream_idle_timeout_ms, 60000, "stream_idle_timeout");
        is_int(u->max_concurrent, 8, "max_concurrent");
        is_int(u->queue_timeout_ms, 500, "queue_timeout");
        is_int(u->retries, 1, "retries");
        is_int(u->retry_backoff_ms, 50, "retry_backoff");
        is_str(u->api_key, "sk-secret", "api_key");
        is_int(u->n_headers, 2, "repeated header keys are all kept");
        if (u->n_headers == 2) {
            is_str(u->headers[0], "X-One: 1", "header one");
            is_str(u->headers[1], "X-Two: two  words", "header two, normalised after the colon");
        }
        is_int(u->weight, 3, "weight");
        is_str(u->health_path, "/ready", "health_path");
        is_int(u->health_interval_ms, 1000, "health_interval");
        is_int(u->health_timeout_ms, 500, "health_timeout");
        is_int(u->health_fall, 2, "health_fall");
        is_int(u->health_rise, 1, "health_rise");
        is_str(u->launch, "/usr/bin/text-generation-launcher --port 8080", "launch");
        is_int(u->launch_stop_timeout_ms, 3000, "launch_stop_timeout");
        is_int(u->max_response, 1 << 20, "max_response");
    }
    ok(c && config_find_upstream(c, "nope") == NULL, "an unknown upstream is not found");
    config_unref(c);

    /* Defaults, and health_path by type. */
    c = load("[server]\ndefault_model = gpt\n[upstream o]\ntype = openai\nurl = https://api.example.com/v1\n"
             "models = gpt *\n[upstream t]\ntype = transformers-serve\nurl = http://[::1]:8000\nmodels = Qwen/Qwen2-0.5B\n"
             "[upstream h]\ntype = http\nurl = http://localhost:9000\npath_prefix = /images/\n"
             "[upstream g]\ntype = tgi\nurl = http://h:1\n",
             err, errlen);
    ok(c != NULL, "one upstream of each type loads");
    if (!c)
        tap_diag("%s", err);
    if (c) {
        is_int(c->n_upstreams, 4, "four upstreams");
        is_str(c->default_model, "gpt", "default_model routed by an upstream");
        const struct config_upstream *o = config_find_upstream(c, "o"), *t = config_find_upstream(c, "t"),
                                     *h = config_find_upstream(c, "h"), *g = config_find_upstream(c, "g");
        ok(o && t && h && g, "all four found");
        if (o && t && h && g) {
            is_int(o->type, UPSTREAM_OPENAI, "type openai");
            is_int(t->type, UPSTREAM_TRANSFORMERS, "type transformers-serve");
            is_int(h->type, UPSTREAM_HTTP, "type http");
            is_str(o->urls[0], "https://api.example.com/v1", "https URL with a base path");
            ok(o->catch_all && o->n_models == 1, "models with * is a catch-all besides its names");
            is_str(h->path_prefix, "/images", "path_prefix without its trailing slash");
            is_str(o->health_path, "/v1/models", "openai health_path default /v1/models");
            is_str(t->health_path, "/health", "transformers-serve health_path default /health");
            is_str(h->health_path, "/", "http health_path default /");
            is_str(g->health_path, "/health", "tgi health_path default /health");
            is_int(g->n_models, 0, "no models: whatever the upstream reports");
            is_int(g->connect_timeout_ms, 5000, "default connect_timeout 5s");
            is_int(g->first_byte_timeout_ms, 120000, "default first_byte_timeout 120s");
            is_int(g->total_timeout_ms, 1800000, "default total_timeout 30m");
            is_int(g->stream_idle_timeout_ms, 120000, "default stream_idle_timeout 120s");
            is_int(g->max_concurrent, 64, "default max_concurrent 64");
            is_int(g->queue_timeout_ms, 1000, "default queue_timeout 1s");
            is_int(g->retries, 2, "default retries 2");
            is_int(g->retry_backoff_ms, 100, "default retry_backoff 100ms");
            is_int(g->weight, 1, "default weight 1");
            is_int(g->health_interval_ms, 5000, "default health_interval 5s");
            is_int(g->health_timeout_ms, 2000, "default health_timeout 2s");
            is_int(g->health_fall, 3, "default health_fall 3");
            is_int(g->health_rise, 2, "default health_rise 2");
            is_int(g->launch_stop_timeout_ms, 10000, "default launch_stop_timeout 10s");
            is_int(g->max_response, 64 << 20, "default max_response 64M");
            ok(g->api_key == NULL && g->launch == NULL && g->n_headers == 0, "no api_key, launch or headers");
        }
    }
    config_unref(c);

    /* Errors, each at its line: key values at the key, section checks at the header. */
#define UP_REFUSED(line, msg, text, what) refused_at(text, line, msg, what)
    UP_REFUSED(2, "type must be one of tgi, transformers-serve, openai, http; got \"vllm\"",
               "[upstream a]\ntype = vllm\nurl = http://h:1\n", "an unknown type");
    UP_REFUSED(1, "[upstream a] needs a type", "[upstream a]\nurl = http://h:1\n", "no type");
    UP_REFUSED(1, "[upstream a] needs a url", "[upstream a]\ntype = tgi\n", "no url");
    UP_REFUSED(3, "\"ftp://h/x\": only http:// and https:// upstreams are supported",
               "[upstream a]\ntype = tgi\nurl = ftp://h/x\n", "a URL that is not http");
    UP_REFUSED(3, "\"localhost:8080\" is not a URL", "[upstream a]\ntype = tgi\nurl = localhost:8080\n",
               "a URL without a scheme");
    UP_REFUSED(3, "\"http://user:pw@h:1\" carries credentials: put them in api_key or header instead",
               "[upstream a]\ntype = tgi\nurl = http://user:pw@h:1\n", "a URL with user:password");
    UP_REFUSED(3, "carries credentials", "[upstream a]\ntype = tgi\nurl = http://user@h:1\n", "a URL with a user");
    UP_REFUSED(3, "carries credentials", "[upstream a]\ntype = tgi\nurl = http://:pw@h:1\n",
               "a URL with only a password");
    UP_REFUSED(3, "\"http://h:1/x?key=1\": an upstream URL takes no query or fragment",
               "[upstream a]\ntype = tgi\nurl = http://h:1/x?key=1\n", "a URL with a query");
    UP_REFUSED(3, "takes no query or fragment", "[upstream a]\ntype = tgi\nurl = http://h:1/#top\n",
               "a URL with a fragment");
    UP_REFUSED(3, "is not a URL", "[upstream a]\ntype = tgi\nurl = http://h:99999\n", "a URL with a bad port");
    UP_REFUSED(3, "\"http://\" is not a URL", "[upstream a]\ntype = tgi\nurl = http://\n", "a URL without a host");
    UP_REFUSED(3, "carries credentials", "[upstream a]\ntype = tgi\nurl = http://ok:1 http://u:p@bad:2\n",
               "a second replica URL checked too");
    UP_REFUSED(3, "url needs 1 to 64 replica URLs", "[upstream a]\ntype = tgi\nurl = , ,\n", "an empty url list");
    UP_REFUSED(4, "models: \"name!\" is not a model name",
               "[upstream a]\ntype = tgi\nurl = http://h:1\nmodels = good bad name!\n", "a bad model name");
    UP_REFUSED(4, "models: \"a=b?c\" is not a model name",
               "[upstream a]\ntype = tgi\nurl = http://h:1\nmodels = a=b?c\n", "a bad alias target");
    UP_REFUSED(4, "models: \"=x\" is not a model name",
               "[upstream a]\ntype = tgi\nurl = http://h:1\nmodels = =x\n", "an alias without a name");
    UP_REFUSED(4, "models: \"m\" is listed twice", "[upstream a]\ntype = tgi\nurl = http://h:1\nmodels = m m=n\n",
               "a model listed twice");
    UP_REFUSED(4, "header must be \"Name: value\"", "[upstream a]\ntype = tgi\nurl = http://h:1\nheader = NoColon\n",
               "a header without a colon");
    UP_REFUSED(4, "header must be \"Name: value\"", "[upstream a]\ntype = tgi\nurl = http://h:1\nheader = : v\n",
               "a header without a name");
    UP_REFUSED(4, "header must be \"Name: value\"", "[upstream a]\ntype = tgi\nurl = http://h:1\nheader = X Y: v\n",
               "a header name with a space");
    UP_REFUSED(5, "header: Host is set by llmcgi itself",
               "[upstream a]\ntype = tgi\nurl = http://h:1\nheader = X-Ok: 1\nheader = Host: evil\n",
               "the Host header is reserved");
    UP_REFUSED(4, "header: content-length is set by llmcgi itself",
               "[upstream a]\ntype = tgi\nurl = http://h:1\nheader = content-length: 5\n",
               "Content-Length reserved, any case");
    UP_REFUSED(1, "[upstream img] of type http needs a path_prefix",
               "[upstream img]\ntype = http\nurl = http://h:1\n", "an http upstream without path_prefix");
    UP_REFUSED(1, "[upstream img] of type http needs a path_prefix",
               "[upstream img]\ntype = http\nurl = http://h:1\npath_prefix = /\n", "path_prefix / is no prefix");
    UP_REFUSED(1, "[upstream img]: path_prefix /v1 would hide llmcgi's own routes",
               "[upstream img]\ntype = http\nurl = http://h:1\npath_prefix = /v1\n", "path_prefix /v1");
    UP_REFUSED(1, "[upstream img]: path_prefix /models would hide llmcgi's own routes",
               "[upstream img]\ntype = http\nurl = http://h:1\npath_prefix = /models\n", "path_prefix /models");
    UP_REFUSED(1, "path_prefix /health would hide", "[upstream img]\ntype = http\nurl = http://h:1\npath_prefix = /health\n",
               "path_prefix /health");
    UP_REFUSED(1, "path_prefix /v1/models/x would hide",
               "[upstream img]\ntype = http\nurl = http://h:1\npath_prefix = /v1/models/x\n", "a path under a route");
    UP_REFUSED(4, "path_prefix must be a path", "[upstream img]\ntype = http\nurl = http://h:1\npath_prefix = img\n",
               "a path_prefix without a slash");
    UP_REFUSED(1, "[upstream a]: path_prefix is for http upstreams; tgi upstreams are routed by models",
               "[upstream a]\ntype = tgi\nurl = http://h:1\npath_prefix = /img\n", "path_prefix on a tgi upstream");
    UP_REFUSED(1, "[upstream img]: an http upstream is routed by path_prefix, not models",
               "[upstream img]\ntype = http\nurl = http://h:1\npath_prefix = /img\nmodels = m\n", "models on http");
    UP_REFUSED(5, "[upstream b]: path_prefix /img is already used by [upstream a]",
               "[upstream a]\ntype = http\nurl = http://h:1\npath_prefix = /img\n"
               "[upstream b]\ntype = http\nurl = http://h:2\npath_prefix = /img/\n",
               "two http upstreams on one prefix");
    UP_REFUSED(4, "upstream \"a\" is already defined on line 1",
               "[upstream a]\ntype = tgi\nurl = http://h:1\n[upstream a]\ntype = tgi\nurl = http://h:2\n",
               "a duplicate upstream name");
    UP_REFUSED(1, "[upstream NAME] needs a name", "[upstream a/b]\ntype = tgi\nurl = http://h:1\n",
               "an upstream name with a slash");
    UP_REFUSED(1, "[upstream NAME] needs a name", "[upstream]\ntype = tgi\nurl = http://h:1\n",
               "an upstream without a name");
    UP_REFUSED(3, "[upstream a]: model \"gpt2\" is also a local [model]",
               "[model gpt2]\npath = /m\n[upstream a]\ntype = tgi\nurl = http://h:1\nmodels = gpt2\n",
               "a model also a local [model]");
    UP_REFUSED(0, "default_model \"nope\" is neither a [model], nor routed by any [upstream], nor a directory name "
                  "under models_dir",
               "[server]\ndefault_model = nope\n[upstream a]\ntype = tgi\nurl = http://h:1\nmodels = m\n",
               "default_model unknown");
    UP_REFUSED(3, "unknown key \"modles\" in [upstream] (did you mean \"models\"?)",
               "[upstream a]\ntype = tgi\nmodles = x\nurl = http://h:1\n", "a misspelt upstream key");
    UP_REFUSED(4, "duplicate key \"url\" (first set on line 3)",
               "[upstream a]\ntype = tgi\nurl = http://h:1\nurl = http://h:2\n", "a duplicate url");
    UP_REFUSED(4, "connect_timeout must be a duration", "[upstream a]\ntype = tgi\nurl = http://h:1\nconnect_timeout = 0\n",
               "connect_timeout 0");
    UP_REFUSED(4, "retries must be a whole number from 0 to 10", "[upstream a]\ntype = tgi\nurl = http://h:1\nretries = 11\n",
               "too many retries");
    UP_REFUSED(4, "max_response must be a size", "[upstream a]\ntype = tgi\nurl = http://h:1\nmax_response = 10\n",
               "max_response below 1k");
    UP_REFUSED(4, "health_path must be a URL path starting with /",
               "[upstream a]\ntype = tgi\nurl = http://h:1\nhealth_path = health\n", "a relative health_path");
    UP_REFUSED(4, "api_key must not be empty", "[upstream a]\ntype = tgi\nurl = http://h:1\napi_key =\n", "an empty api_key");
#undef UP_REFUSED

    c = load("[upstream a]\ntype = tgi\nurl = http://h:1\nmodels = *\n[server]\ndefault_model = anything\n", err, errlen);
    ok(c != NULL && config_find_upstream(c, "a")->catch_all, "models = * routes every model, default_model too");
    config_unref(c);
    c = load("[upstream a]\ntype = tgi\nurl = http://h:1\nmodels = x=y\n[server]\ndefault_model = x\n", err, errlen);
    ok(c != NULL, "default_model routed by an alias");
    config_unref(c);
    c = load("[upstream a]\ntype = tgi\nurl = http://h:1\nmodels = x=y\n[server]\ndefault_model = y\n", err, errlen);
    ok(c == NULL, "default_model naming only an alias's target is refused");
    config_unref(c);
    c = load("[upstream a]\ntype = openai\nurl = http://h:1\nmodels = gpt2\n[upstream b]\ntype = http\n"
             "url = http://h:2\npath_prefix = /gpt2\n[model m]\npath = /m\n",
             err, errlen);
    ok(c != NULL, "a local model, an upstream model and an http upstream together");
    if (!c)
        tap_diag("%s", err);
    config_unref(c);
    c = load("[upstream a]\ntype = tgi\nurl = http://h:1\nheader = X-A: 1\nheader = X-A: 2\nheader = X-B:\n", err, errlen);
    ok(c && config_find_upstream(c, "a")->n_headers == 3, "the same header name may repeat; an empty value is fine");
    config_unref(c);
    c = load("[upstream a]\ntype = tgi\nurl = http://h:1\n  http://h:2\n", err, errlen);
    ok(c && config_find_upstream(c, "a")->n_urls == 2, "url continued on an indented line");
    config_unref(c);

    /* Every problem of an upstream is reported. */
    c = load("[upstream a]\ntype = http\nurl = http://u:p@h:1\nmodels = m\nheader = Host: x\n", err, errlen);
    ok(c == NULL && strstr(err, ":3:") && strstr(err, ":5:") && strstr(err, ":1: [upstream a] needs a url") &&
           strstr(err, "needs a path_prefix") && strstr(err, "not models"),
       "all of an upstream's problems are reported");
    if (c == NULL && !strstr(err, ":5:"))
        tap_diag("%s", err);
}

/* config_default_model: default_model, else the one model the config
 * names when it names exactly one, else none. */
static void test_default_model(void)
{
    char err[2048];
    static const struct {
        const char *text, *want, *what;
    } cases[] = {
        {"[model a]\npath = /m/a\n", "a", "one [model] is the default"},
        {"[upstream u]\ntype = tgi\nurl = http://h:1\nmodels = x\n", "x", "one upstream model is the default"},
        {"[upstream u]\ntype = tgi\nurl = http://h:1\nmodels = x\n[upstream v]\ntype = tgi\nurl = http://h:2\n"
         "models = x\n[upstream h]\ntype = http\nurl = http://h:3\npath_prefix = /img\n", "x",
         "one name over two upstreams (and an http upstream) is one model"},
        {"[model a]\npath = /m/a\n[model b]\npath = /m/b\n", NULL, "two [model]s: no default"},
        {"[model a]\npath = /m/a\n[upstream u]\ntype = tgi\nurl = http://h:1\nmodels = x\n", NULL,
         "a [model] and another upstream model: no default"},
        {"[model a]\npath = /m/a\n[model b]\npath = /m/b\n[server]\ndefault_model = b\n", "b",
         "default_model wins"},
        {"[model a]\npath = /m/a\n[server]\nmodels_dir = /m\n", NULL, "models_dir serves other names: no default"},
        {"[upstream u]\ntype = tgi\nurl = http://h:1\n", NULL, "an upstream without a list: no default"},
        {"[upstream u]\ntype = tgi\nurl = http://h:1\nmodels = x *\n", NULL, "models = *: no default"},
        {"[server]\n", NULL, "no model: no default"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct config *c = load(cases[i].text, err, sizeof err);
        ok(c != NULL, "%s: loads %s", cases[i].what, err);
        if (!c)
            continue;
        const char *got = config_default_model(c);
        if (cases[i].want)
            is_str(got, cases[i].want, "%s", cases[i].what);
        else
            ok(got == NULL, "%s (%s)", cases[i].what, got ? got : "none");
        config_unref(c);
    }
}

/* config_check_paths: a model path (or models_dir) that is not a readable
 * directory is a warning at its path line; a good one is none. */
static void test_check_paths(void)
{
    char err[2048], text[1024], file[300];
    snprintf(file, sizeof file, "%s/not-a-dir", dir);
    write_file("");
    FILE *f = fopen(file, "w");
    if (f)
        fclose(f);
    snprintf(text, sizeof text,
             "[model good]\npath = %s\n\n[model ghost]\nmax_concurrent = 2\npath = /nonexistent/ghost\n\n"
             "[model flat]\npath = %s\n\n[server]\nmodels_dir = /nonexistent/models\n", dir, file);
    write_file(text);
    struct config *c = load(text, err, sizeof err);
    ok(c != NULL, "missing model paths are no error: %s", err);
    if (!c)
        return;
    struct config_errors w = {0};
    config_check_paths(c, &w);
    ok(w.n == 3, "three warnings (%zu)", w.n);
    char want[400];
    snprintf(want, sizeof want, "%s:6: [model ghost]: path /nonexistent/ghost does not exist", path);
    ok(w.n > 0 && strstr(w.msg[0], want), "the missing path, at its line: %s", w.n ? w.msg[0] : "-");
    snprintf(want, sizeof want, "%s:9: [model flat]: path %s is not a directory", path, file);
    ok(w.n > 1 && strstr(w.msg[1], want), "a file is not a model directory: %s", w.n > 1 ? w.msg[1] : "-");
    ok(w.n > 2 && strstr(w.msg[2], "models_dir /nonexistent/models does not exist"), "models_dir too: %s",
       w.n > 2 ? w.msg[2] : "-");
    config_errors_free(&w);
    config_unref(c);
    unlink(file);
}

/* web_server_addrs: who may connect over TCP; a TCP listen other machines can reach needs it. */
static void test_web_servers(void)
{
    char err[4096];
    struct config *c = load("[server]\nlisten = 10.0.0.5:9000\nweb_server_addrs = 10.0.0.1 10.0.1.0/24, fd00::/8\n",
                            err, sizeof err);
    ok(c && c->n_web_server_addrs == 3 && !c->web_server_addrs_any, "web_server_addrs: addresses and CIDR blocks");
    if (c)
        ok(cidr_list_contains(c->web_server_addrs, c->n_web_server_addrs, "10.0.1.77") &&
               cidr_list_contains(c->web_server_addrs, c->n_web_server_addrs, "10.0.0.1") &&
               !cidr_list_contains(c->web_server_addrs, c->n_web_server_addrs, "10.0.0.2"),
           "  the blocks are the ones written");
    config_unref(c);
    c = load("[server]\nlisten = :9000\nweb_server_addrs = any\n", err, sizeof err);
    ok(c && c->web_server_addrs_any && c->n_web_server_addrs == 0, "web_server_addrs = any, said on purpose");
    config_unref(c);
    c = load("[server]\nlisten = 127.0.0.2:9000\n", err, sizeof err);
    ok(c && !c->web_server_addrs_any && c->n_web_server_addrs == 0, "a loopback TCP listen needs no list");
    config_unref(c);
    const char *local[] = {"[::1]:9000", "localhost:9000", "unix:/run/x.sock"};
    for (size_t i = 0; i < sizeof local / sizeof *local; i++) {
        char text[200];
        snprintf(text, sizeof text, "[server]\nlisten = %s\n", local[i]);
        c = load(text, err, sizeof err);
        ok(c != NULL, "listen = %s needs no web_server_addrs: %s", local[i], err);
        config_unref(c);
    }
    const char *exposed[] = {":9000", "*:9000", "0.0.0.0:9000", "[::]:9000", "10.0.0.5:9000", "llm1.example:9000"};
    for (size_t i = 0; i < sizeof exposed / sizeof *exposed; i++) {
        char text[200];
        snprintf(text, sizeof text, "[server]\nthreads = 4\nlisten = %s\n", exposed[i]);
        refused_at(text, 3, "can be reached from other machines and FastCGI has no authentication: set "
                   "web_server_addrs", exposed[i]);
    }
    refused_at("[server]\nlisten = 10.0.0.5:9000\nweb_server_addrs = 10.0.0.300\n", 3,
               "web_server_addrs: \"10.0.0.300\" is not an IPv4 or IPv6 address (or \"any\"",
               "a bad address in web_server_addrs");
    refused_at("[server]\nweb_server_addrs = 10.0.0.0/40\n", 2,
               "web_server_addrs: \"10.0.0.0/40\": the prefix length must be 0 to 32", "a prefix too long");
    refused_at("[server]\nweb_server_addrs = ,\n", 2, "web_server_addrs: list the web servers' addresses",
               "an empty list");
    refused_at("[limits]\ntrusted_proxies = nope\n", 2, "trusted_proxies: \"nope\" is not an IPv4",
               "trusted_proxies still names itself in its errors");
}

int main(void)
{
    char err[4096], want[512];
    config_set_path_in_use(router_path_in_use);      /* as llmcgi's main does */
    if (!mkdtemp(dir))
        return 1;
    snprintf(path, sizeof path, "%s/llmcgi.conf", dir);

    struct config *c = load("[server]\n", err, sizeof err);
    ok(c != NULL, "an empty [server] section loads");
    if (c) {
        is_int(c->threads, 96, "default threads: room for a default model's batch and queue (16 + 64)");
        is_int(c->max_body, 8 << 20, "default max_body 8M");
        is_int(c->shutdown_timeout_ms, 30000, "default shutdown_timeout 30s");
        is_int(c->sse_keepalive_ms, 15000, "default sse_keepalive 15s");
        is_int(c->read_timeout_ms, 60000, "default read_timeout 60s");
        is_int(c->socket_mode, 0660, "default socket_mode");
        is_str(c->access_log, "stderr", "default access log");
        ok(c->listen == NULL, "no default listen address");
        ok(!c->test_endpoints, "test endpoints off by default");
        is_str(c->path_prefix, "", "no prefix by default");
        is_int(c->n_models, 0, "no models");
    }
    config_unref(c);

    c = load("; comment\n# comment\n[server]\nlisten = unix:/run/x.sock ; inline comment\n"
             "threads=4\nmax_body = 512k\nshutdown_timeout = 2m\nsse_keepalive = 250ms\n"
             "socket_mode = 0666\naccess_log = logs/access.log\nerror_log = /var/log/e.log\n"
             "log_level = debug\ntest_endpoints = on\npath_prefix = /llm/\n"
             "\n[model gpt2]\npath = models/gpt2\n[model org/name-1.5]\npath = /abs/path\n",
             err, sizeof err);
    ok(c != NULL, "a full file loads");
    if (!c)
        tap_diag("%s", err);
    if (c) {
        is_str(c->listen, "unix:/run/x.sock", "listen, inline comment stripped");
        is_int(c->threads, 4, "threads");
        is_int(c->max_body, 512 << 10, "max_body 512k");
        is_int(c->shutdown_timeout_ms, 120000, "shutdown_timeout 2m");
        is_int(c->sse_keepalive_ms, 250, "sse_keepalive 250ms");
        is_int(c->socket_mode, 0666, "socket_mode");
        snprintf(want, sizeof want, "%s/logs/access.log", dir);
        char *real = realpath(dir, NULL);
        snprintf(want, sizeof want, "%s/logs/access.log", real);
        is_str(c->access_log, want, "relative log path taken from the config's directory");
        is_str(c->error_log, "/var/log/e.log", "absolute log path kept");
        is_int(c->log_level, LL_DEBUG, "log_level");
        ok(c->test_endpoints, "test_endpoints on");
        is_str(c->path_prefix, "/llm", "trailing slash of the prefix dropped");
        is_int(c->n_models, 2, "two models");
        const struct config_model *m = config_find_model(c, "gpt2");
        snprintf(want, sizeof want, "%s/models/gpt2", real);
        ok(m && strcmp(m->path, want) == 0, "model path resolved: %s", m ? m->path : "-");
        ok(config_find_model(c, "org/name-1.5") != NULL, "model names may contain / . -");
        ok(config_find_model(c, "nope") == NULL, "unknown model not found");
        free(real);
    }
    config_unref(c);

    c = load("[server]\nlisten = tcp\n  continued\nthreads = 2\n", err, sizeof err);
    ok(c == NULL, "continuation lines are joined to the value before them");
    snprintf(want, sizeof want, "%s:2: listen: expected unix:/path or host:port, got \"tcp continued\"", path);
    has_str(err, want, "  and the joined value is what gets checked");
    config_unref(c);

    struct config *r = load("[server]\nthreads = 3\n", err, sizeof err);
    ok(r && config_ref(r) == r, "config_ref returns the same snapshot");
    config_unref(r);
    ok(r && r->threads == 3, "still alive after one unref");
    config_unref(r);

    /* Errors: each with file:line. */
    snprintf(want, sizeof want, "%s:3: threads must be a whole number from 1 to 1024, got \"0\"", path);
    refused("[server]\n\nthreads = 0\n", want, "threads out of range");
    snprintf(want, sizeof want, "%s:2: unknown key \"treads\" in [server] (did you mean \"threads\"?)", path);
    refused("[server]\ntreads = 4\n", want, "a misspelt key, with a suggestion");
    snprintf(want, sizeof want, "%s:3: duplicate key \"threads\" (first set on line 2)", path);
    refused("[server]\nthreads = 4\nthreads = 5\n", want, "a duplicate key");
    snprintf(want, sizeof want, "%s:1: \"threads\" is outside any section", path);
    refused("threads = 4\n", want, "a key before any section");
    snprintf(want, sizeof want, "%s:2: expected \"key = value\" or \"[section]\", got \"garbage\"", path);
    refused("[server]\ngarbage\n", want, "a line that is neither key nor section");
    snprintf(want, sizeof want, "%s:1: section header without a closing ']'", path);
    refused("[server\n", want, "an unclosed section header");
    snprintf(want, sizeof want, "%s:1: unknown section [serverr]", path);
    refused("[serverr]\n", want, "an unknown section");
    snprintf(want, sizeof want, "%s:3: second [server] section (the first is on line 1)", path);
    refused("[server]\n\n[server]\n", want, "two [server] sections");
    snprintf(want, sizeof want, "%s:1: [model gpt2] needs a path", path);
    refused("[model gpt2]\n", want, "a model without a path");
    snprintf(want, sizeof want, "%s:3: model \"a\" is already defined on line 1", path);
    refused("[model a]\npath=/x\n[model a]\npath=/y\n", want, "a model defined twice");
    snprintf(want, sizeof want, "%s:1: [model NAME] needs a name", path);
    refused("[model bad name!]\npath=/x\n", want, "a model name with bad characters");
    snprintf(want, sizeof want, "%s:2: max_body must be a size like", path);
    refused("[server]\nmax_body = 2T\n", want, "a size with an unknown unit");
    snprintf(want, sizeof want, "%s:2: sse_keepalive must be a duration like 250ms, 15s, 2m or 1h, from 100ms to 1h", path);
    refused("[server]\nsse_keepalive = 10ms\n", want, "a duration below its minimum");
    snprintf(want, sizeof want, "%s:2: test_endpoints must be on or off", path);
    refused("[server]\ntest_endpoints = sometimes\n", want, "a bad boolean");
    snprintf(want, sizeof want, "%s:2: listen: bad port", path);
    refused("[server]\nlisten = 127.0.0.1:99999\n", want, "a port out of range");
    snprintf(want, sizeof want, "%s:2: listen: bad port", path);
    refused("[server]\nlisten = 127.0.0.1:0000000000000000000000009000\n", want,
            "a port with 28 digits (once a stack overflow, found in review)");
    snprintf(want, sizeof want, "%s:4: an indented line continues the value above; a section header must start the line", path);
    refused("[model a]\npath = /a\n\n  [model b]\n", want, "an indented section header");
    snprintf(want, sizeof want, "%s:2: listen: unix socket path must be absolute", path);
    refused("[server]\nlisten = unix:relative.sock\n", want, "a relative unix socket");
    snprintf(want, sizeof want, "%s:2: socket_mode must be an octal file mode", path);
    refused("[server]\nsocket_mode = rw\n", want, "a bad mode");
    snprintf(want, sizeof want, "%s:2: log_level must be one of", path);
    refused("[server]\nlog_level = loud\n", want, "a bad log level");
    snprintf(want, sizeof want, "%s:2: path_prefix must be a path", path);
    refused("[server]\npath_prefix = llm\n", want, "a prefix without a leading slash");
    snprintf(want, sizeof want, "%s:2: line longer than 196 characters", path);
    char longline[400];
    snprintf(longline, sizeof longline, "[server]\nerror_log = /%0250d\n", 0);
    refused(longline, want, "a line too long for the parser");
    snprintf(want, sizeof want, "%s:2: unknown key \"keys\" in [auth]", path);
    refused("[auth]\nkeys = x\n", want, "an unknown key in [auth]");
    snprintf(want, sizeof want, "%s:1: [limits] takes no name", path);
    refused("[limits x]\n", want, "a named [limits]");
    snprintf(want, sizeof want, "%s:2: auth_failures_per_minute must be", path);
    refused("[limits]\nauth_failures_per_minute = -1\n", want, "a negative auth_failures_per_minute");
    refused("[limits]\nauth_failures_per_minute = many\n", want, "a word for auth_failures_per_minute");
    snprintf(want, sizeof want, "%s:2: body_timeout must be a duration", path);
    refused("[server]\nbody_timeout = 2d\n", want, "a body_timeout with an unknown unit");
    refused("[server]\nbody_timeout = 2h\n", want, "a body_timeout above 1h");
    struct config *d = load("[server]\nbody_timeout = 0\n[limits]\nauth_failures_per_minute = 0\n", err, sizeof err);
    ok(d && d->body_timeout_ms == 0 && d->auth_failures_per_minute == 0, "body_timeout and auth_failures_per_minute 0: off");
    config_unref(d);
    d = load("[server]\n", err, sizeof err);
    ok(d && d->body_timeout_ms == 60000 && d->auth_failures_per_minute == 30, "their defaults: 60s and 30");
    config_unref(d);

    c = load("[server]\nthreads = 8\nthreads = 9\n  16\nlisten_backlog = 10\n", err, sizeof err);
    ok(c == NULL && strstr(err, ":3: duplicate key \"threads\"") && !strstr(err, "listen_backlog"),
       "a continuation of a refused key joins nothing else");
    if (!strstr(err, ":3:"))
        tap_diag("%s", err);

    c = load("[server]\nread_timeout = 1500ms\n", err, sizeof err);
    ok(c && c->read_timeout_ms == 1500, "read_timeout");
    config_unref(c);
    c = load("[server]\nhead_timeout = 2s\n", err, sizeof err);
    ok(c && c->head_timeout_ms == 2000, "head_timeout");
    config_unref(c);
    c = load("[server]\n", err, sizeof err);
    ok(c && c->head_timeout_ms == 10000, "head_timeout's default: 10s");
    config_unref(c);
    snprintf(want, sizeof want, "%s:2: head_timeout must be a duration", path);
    refused("[server]\nhead_timeout = 0\n", want, "a head_timeout of 0 (a head is always bounded)");
    refused("[server]\nhead_timeout = 2h\n", want, "a head_timeout above 1h");

    /* Several problems are all reported, in one pass. */
    c = load("[server]\nthreads = x\nmax_body = y\nbogus = 1\n", err, sizeof err);
    ok(c == NULL && strstr(err, ":2:") && strstr(err, ":3:") && strstr(err, ":4:"),
       "every problem of a file is reported, not just the first");

    struct config_errors errs = {0};
    ok(config_load("/nonexistent/llmcgi.conf", &c, &errs) < 0 && errs.n == 1 &&
           strstr(errs.msg[0], "/nonexistent/llmcgi.conf: cannot open: No such file or directory"),
       "a missing file: %s", errs.n ? errs.msg[0] : "-");
    config_errors_free(&errs);

    test_upstreams();
    test_web_servers();
    test_models();
    test_check_paths();
    test_default_model();

    unlink(path);
    rmdir(dir);
    return tap_done();
}
