/* registry.c -- the local models: [model] sections preloaded in the background, directories under models_dir loaded on first use, the least recently used idle model unloaded under max_loaded_models / models_memory.
 *
 * The models of [model] sections and the default model are pinned: they
 * count against max_loaded_models and models_memory, but only models loaded
 * on demand are ever unloaded to make room; when the pinned and busy ones
 * fill the budget, an on-demand load is refused (503) instead.
 *
 * A model is loaded by a thread of its own, so loading one never holds up
 * requests to another. Requests take a reference with registry_get() for as
 * long as they use a model; only a model nobody holds is unloaded. Models
 * outlive config reloads while their section (path and settings) stays the
 * same; a changed or removed one is retired: it finishes the requests it has
 * and is unloaded, and the next request loads the new one. */
#ifndef LLMCGI_REGISTRY_H
#define LLMCGI_REGISTRY_H

#include <json-c/json.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "classify.h"
#include "conf.h"
#include "constraint_cache.h"
#include "engine.h"
#include "tokenizer.h"

struct registry;

enum lmodel_state { LM_LOADING, LM_READY, LM_FAILED };

/* One local model. The settings are fixed when it is created; tok, engine
 * and info are set once (state READY) and read-only from then on. */
struct lmodel {
    char *name;                 /* the name requests use */
    char *dir;                  /* its directory */
    bool configured;            /* from a [model] section */
    bool pinned;                /* configured or the default model: never unloaded to make room (under mu) */
    struct config_model set;    /* its settings (strings owned) */

    struct tokenizer *tok;
    struct engine *engine;
    const struct llm_info *info;
    int context;                /* n_positions */
    int max_input, max_total;   /* the limits, resolved against the context */
    int max_concurrent;         /* the batch size the engine really has (at most the context) */
    int32_t eos;                /* the end-of-text token, -1 when none */
    size_t bytes;               /* weights + KV pool (estimated until loaded) */
    enum model_task task;       /* once READY: generate, classify or moderate (never auto) */
    /* classifiers (task classify or moderate): */
    char **labels;              /* id2label, n_labels of them; owned */
    int n_labels;
    int pad;                    /* pad_token_id, -1 for none: where texts are pooled (classify.h) */
    enum clf_fn fn;             /* logits -> scores */
    struct clf_categories cats; /* moderate: the categories, resolved against the labels */
    int max_inputs;             /* texts per classification or embeddings request: max_inputs, at most what
                                 * the engine can hold at once */

    /* the registry's, under its lock */
    enum lmodel_state state;
    char error[400];            /* why it failed to load, its directory named by the model's name (public) */
    int refs;
    bool retired;               /* out of the lookup; freed when the last reference goes */
    int64_t last_used_ns;
    int64_t load_started_ns, load_ns;
    pthread_t loader;
    bool loader_joinable;
    struct lmodel *next;
};

/* Creates the registry for cfg and starts loading its [model] sections.
 * Returns 0, or -1 with err (out of memory). */
int registry_start(struct registry **out, const struct config *cfg, char *err, size_t errlen);

/* Adopts a reloaded config: unchanged models stay, changed and removed
 * ones are retired, new ones start loading. */
void registry_reconfigure(struct registry *r, const struct config *cfg);

/* Waits for the loads in progress, stops every engine (requests still in
 * them get a 503 event) and frees everything. NULL is fine. */
void registry_stop(struct registry *r);

/* The compiled constraints kept across requests (constraint_cache.h): the
 * registry's, valid until registry_stop; NULL when r is. Thread-safe. */
struct ccache *registry_constraints(struct registry *r);

/* Is `name` a local model of cfg: a [model] section, or a directory with a
 * config.json under models_dir? */
bool registry_is_local(const struct config *cfg, const char *name);

/* The model `name` with a reference the caller gives back with
 * registry_put(), loading it first when it is not in memory (it may come
 * back LOADING: wait with registry_wait). NULL when it is not a local model
 * (*status 404) or cannot be loaded now (*status 503, err says why). */
struct lmodel *registry_get(struct registry *r, const struct config *cfg, const char *name, int *status, char *err,
                            size_t errlen);
void registry_put(struct registry *r, struct lmodel *m);

/* Waits until m is READY or FAILED. Returns 0 then; -1 when deadline_ns
 * (CLOCK_MONOTONIC) passed first or watch_fd (the client's connection, -1
 * for none) hung up. */
int registry_wait(struct registry *r, struct lmodel *m, int64_t deadline_ns, int watch_fd);

/* Is a model still loading? (Shutdown does not wait for a load: a stuck
 * one would hold it forever.) */
bool registry_loading(struct registry *r);

/* m's state, read under the lock. */
enum lmodel_state registry_state(struct registry *r, struct lmodel *m);

/* A new object {NAME: {state, pinned, device, running, queued,
 * kv_blocks_used, kv_blocks_total, requests, cancelled, ...}} of the models
 * in memory (caller owns it). with_paths adds each model's directory: for
 * the operator's /status only, never a public answer. */
json_object *registry_status_json(struct registry *r, bool with_paths);

/* One model in memory as the metrics see it: typed, so a renamed /status key
 * cannot silently zero a gauge. */
enum registry_state { REGISTRY_LOADING, REGISTRY_READY, REGISTRY_FAILED };
struct registry_model_stats {
    char *name;                     /* owned */
    enum registry_state state;
    struct engine_stats engine;     /* REGISTRY_READY only; else zeros */
};

/* The models in memory, in the order /status lists them: *out a new array of
 * *n entries (caller frees it with registry_stats_free). Returns 0, or -1
 * when out of memory (*out NULL, *n 0). */
int registry_stats(struct registry *r, struct registry_model_stats **out, size_t *n);
void registry_stats_free(struct registry_model_stats *v, size_t n);

/* Is `name` pinned under cfg: a [model] section or the default model?
 * Pinned models are never unloaded to make room for another. */
bool registry_pinned(const struct config *cfg, const char *name);

/* Calls fn for every local model name: the [model] sections, the models in
 * memory, and the model directories under models_dir (two levels deep,
 * at most 256). `state` is the in-memory state, or -1 when not loaded. */
void registry_each(struct registry *r, const struct config *cfg,
                   void (*fn)(void *ud, const char *name, int state), void *ud);

#endif
