/* registry.c -- the local models: [model] sections preloaded in the background, directories under models_dir loaded on first use, the least recently used idle model unloaded under max_loaded_models / models_memory. */
#include "config.h"
#include "registry.h"
#include "checkpoint.h"
#include "log.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define KV_BLOCK_TOKENS 16

#define LIST_MAX 256            /* model directories listed from models_dir */

struct registry {
    pthread_mutex_t mu;
    pthread_cond_t changed;     /* a load finished */
    struct lmodel *models;      /* guarded by mu */
    bool stopping;
    struct ccache *constraints; /* compiled constraints of every model's requests (its own lock) */
};

/* ------------------------------------------------------------------ settings */

static void settings_free(struct config_model *s)
{
    free(s->name);
    free(s->path);
    free(s->device);
    free(s->chat_template);
    free(s->categories);
    free(s->safe_labels);
    memset(s, 0, sizeof *s);
}

/* Copies a [model] section (or the defaults for models_dir) into dst. */
static int settings_copy(struct config_model *dst, const struct config_model *src, const char *name, const char *dir)
{
    *dst = *src;
    dst->name = strdup(name);
    dst->path = strdup(dir);
    dst->device = strdup(src->device ? src->device : "auto");
    dst->chat_template = strdup(src->chat_template ? src->chat_template : "auto");
    dst->categories = src->categories ? strdup(src->categories) : NULL;
    dst->safe_labels = src->safe_labels ? strdup(src->safe_labels) : NULL;
    if (!dst->name || !dst->path || !dst->device || !dst->chat_template || (src->categories && !dst->categories) ||
        (src->safe_labels && !dst->safe_labels)) {
        settings_free(dst);
        return -1;
    }
    return 0;
}

static bool str_eq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool settings_same(const struct config_model *a, const struct config_model *b)
{
    return str_eq(a->path, b->path) && str_eq(a->device, b->device) && str_eq(a->chat_template, b->chat_template) &&
           a->threads == b->threads && a->dtype == b->dtype && a->kv_dtype == b->kv_dtype && a->tuning == b->tuning && a->max_concurrent == b->max_concurrent && a->max_queue == b->max_queue &&
           a->max_input_tokens == b->max_input_tokens && a->max_total_tokens == b->max_total_tokens &&
           a->max_new_tokens == b->max_new_tokens && a->max_batch_tokens == b->max_batch_tokens &&
           a->kv_cache == b->kv_cache && a->prefix_cache == b->prefix_cache && a->mask_cache == b->mask_cache && a->timeout_ms == b->timeout_ms && a->task == b->task &&
           a->max_inputs == b->max_inputs && str_eq(a->categories, b->categories) &&
           str_eq(a->safe_labels, b->safe_labels) && a->flag_threshold == b->flag_threshold &&
           a->pool_last == b->pool_last && a->normalize == b->normalize;
}

/* ------------------------------------------------------------------ loading */

bool registry_pinned(const struct config *cfg, const char *name)
{
    return config_find_model(cfg, name) || (cfg->default_model && strcmp(cfg->default_model, name) == 0);
}

/* Copies err into out[len] with every occurrence of dir written as name:
 * a load error is shown by public endpoints, which name no paths (the
 * whole message goes to the log). */
static void redact_dir(char *out, size_t len, const char *err, const char *dir, const char *name)
{
    size_t dl = strlen(dir), o = 0;
    for (const char *p = err; *p && o + 1 < len;) {
        if (dl && strncmp(p, dir, dl) == 0) {
            int n = snprintf(out + o, len - o, "%s", name);
            o += n < 0 ? 0 : (size_t)n < len - o ? (size_t)n : len - o - 1;
            p += dl;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
}

static void lmodel_free(struct lmodel *m)
{
    if (m->loader_joinable) {
        /* The loader itself drops the last reference of a model retired
         * while it loaded: it cannot join itself, so it is detached. */
        if (pthread_equal(m->loader, pthread_self()))
            pthread_detach(m->loader);
        else
            pthread_join(m->loader, NULL);
    }
    engine_stop(m->engine);
    tokenizer_free(m->tok);
    ckpt_labels_free(m->labels, m->n_labels);
    clf_categories_free(&m->cats);
    settings_free(&m->set);
    free(m->name);
    free(m->dir);
    free(m);
}

/* KV blocks of a model: as configured, else room for every running
 * sequence to reach min(context, 512) tokens; never less than one full
 * context. Their pages are touched only as blocks are used. With kv_cache
 * this counts F32 blocks, an upper bound for estimate_bytes: load() hands
 * kv_cache to the backend (llm_load_opts.kv_bytes), which fits as many
 * blocks of its own KV type (twice as many in F16). */
static long kv_blocks_for(const struct config_model *set, const struct gpt2_config *cfg, size_t *block_bytes)
{
    int ctx = cfg->n_positions;
    *block_bytes = (size_t)cfg->n_layer * 2 * KV_BLOCK_TOKENS * (size_t)cfg->n_embd * sizeof(float);
    long per_ctx = (ctx + KV_BLOCK_TOKENS - 1) / KV_BLOCK_TOKENS;
    long blocks = set->kv_cache ? (long)(set->kv_cache / *block_bytes)
                                : set->max_concurrent * (((ctx < 512 ? ctx : 512) + KV_BLOCK_TOKENS - 1) / KV_BLOCK_TOKENS);
    if (blocks < per_ctx)
        blocks = per_ctx;
    return blocks > 1 << 24 ? 1 << 24 : blocks;
}

static size_t weights_on_disk(const char *dir);

/* What loading the model in dir will take: its *.safetensors files and its
 * KV pool (read from config.json). Called without the lock: it reads files. */
static size_t estimate_bytes(const char *dir, const struct config_model *set)
{
    char path[PATH_MAX], err[200];
    struct gpt2_config cfg;
    size_t block_bytes = 0, kv = 0;
    if (snprintf(path, sizeof path, "%s/config.json", dir) < (int)sizeof path &&
        gpt2_config_load(path, &cfg, err, sizeof err) == 0)
        kv = (size_t)kv_blocks_for(set, &cfg, &block_bytes) * block_bytes;
    return weights_on_disk(dir) + kv;
}

/* Loads m: tokenizer, weights onto the backend, the engine thread. Fills
 * m's read-only fields and *bytes; returns 0, or -1 with err. */
static int load(struct lmodel *m, size_t *bytes, char *err, size_t errlen)
{
    struct gpt2_checkpoint *ck = NULL;
    struct llm_model *lm = NULL;
    if (tokenizer_load_dir(m->dir, &m->tok, err, errlen) != TOKENIZER_OK)
        return -1;
    if (gpt2_checkpoint_open(m->dir, &ck, err, errlen) != 0)
        return -1;
    const struct gpt2_config *cfg = &ck->cfg;
    int ctx = cfg->n_positions;
    m->task = m->set.task != TASK_AUTO ? m->set.task : cfg->classifier ? TASK_CLASSIFY : TASK_GENERATE;
    if ((m->task != TASK_GENERATE) != cfg->classifier) {
        if (cfg->classifier)
            snprintf(err, errlen, "%s is a sequence classifier (%s): it does not generate; set task = classify or "
                     "moderate", m->dir, cfg->architecture);
        else
            snprintf(err, errlen, "%s is not a sequence classifier (architectures: %s) but task is %s; classify and "
                     "moderate need a GPT2ForSequenceClassification model", m->dir,
                     cfg->architecture[0] ? cfg->architecture : "none given", model_task_name(m->task));
        gpt2_checkpoint_close(ck);
        return -1;
    }
    if (cfg->classifier) {
        char cerr[300];
        if (m->task == TASK_MODERATE &&
            clf_categories_parse(m->set.categories, m->set.safe_labels, ck->labels, cfg->num_labels, &m->cats, cerr,
                                 sizeof cerr) < 0) {
            snprintf(err, errlen, "[model %s] (line %d): %s", m->name, m->set.line, cerr);
            gpt2_checkpoint_close(ck);
            return -1;
        }
        if (m->task == TASK_MODERATE && clf_function(cfg) == CLF_NONE) {
            snprintf(err, errlen, "[model %s] (line %d): task = moderate needs scores from 0 to 1, but %s is a "
                     "regression model (problem_type) whose scores are raw numbers; use task = classify",
                     m->name, m->set.line, m->dir);
            gpt2_checkpoint_close(ck);
            return -1;
        }
        m->labels = ck->labels;                 /* taken over */
        ck->labels = NULL;
        m->n_labels = cfg->num_labels;
        m->pad = cfg->pad_token_id;
        m->fn = clf_function(cfg);
    }
    if (tokenizer_vocab_size(m->tok) > cfg->vocab_size) {
        snprintf(err, errlen, "%s: the tokenizer has %d tokens, more than the model's vocab_size %d", m->dir,
                 tokenizer_vocab_size(m->tok), cfg->vocab_size);
        gpt2_checkpoint_close(ck);
        return -1;
    }
    struct llm_load_opts o = {.threads = (int)m->set.threads, .kv_block_tokens = KV_BLOCK_TOKENS,
                              .max_step_tokens = (int)m->set.max_batch_tokens,
                              .max_step_logits = (int)m->set.max_batch_tokens,
                              .dtype = m->set.dtype, .kv_dtype = m->set.kv_dtype, .tuning = m->set.tuning,
                              .max_seqs = (int)m->set.max_concurrent};
    if (llm_device_parse(m->set.device, &o.device, &o.device_index) != 0)
        o.device = LLM_DEVICE_AUTO;
    size_t block_bytes;
    o.kv_blocks = (int)kv_blocks_for(&m->set, cfg, &block_bytes);
    if (m->set.kv_cache) {
        o.kv_blocks = 0;                        /* the backend fits them in its KV type */
        o.kv_bytes = (size_t)m->set.kv_cache;
    }
    if (ctx < o.max_step_tokens)
        o.max_step_tokens = o.max_step_logits = ctx;
    int rc = llm_load(ck, &o, &lm, err, errlen);
    gpt2_checkpoint_close(ck);
    if (rc != 0)
        return -1;
    const struct llm_info *info = llm_get_info(lm);
    if (m->set.kv_cache && (size_t)info->kv_blocks * info->kv_block_bytes > m->set.kv_cache)
        log_warn("model %s: kv_cache %llu bytes holds fewer than one full context (%d tokens); using %d blocks",
                 m->name, (unsigned long long)m->set.kv_cache, ctx, info->kv_blocks);
    struct engine_opts eo = {.max_concurrent = (int)m->set.max_concurrent, .max_queue = (int)m->set.max_queue,
                             .max_batch_tokens = info->max_step_tokens, .prefix_cache = m->set.prefix_cache,
                             .mask_cache = (size_t)m->set.mask_cache};
    if (eo.max_concurrent > eo.max_batch_tokens)
        eo.max_concurrent = eo.max_batch_tokens;   /* a context shorter than max_batch_tokens */
    m->max_concurrent = eo.max_concurrent;
    if (engine_start(&m->engine, lm, m->tok, &eo, m->name, err, errlen) != 0) {
        llm_free(lm);
        return -1;
    }
    m->info = engine_info(m->engine);
    m->context = ctx;
    m->max_total = m->set.max_total_tokens > 0 && m->set.max_total_tokens < ctx ? (int)m->set.max_total_tokens : ctx;
    m->max_input = m->set.max_input_tokens > 0 && m->set.max_input_tokens < m->max_total ? (int)m->set.max_input_tokens
                                                                                          : m->max_total - 1;
    if (m->task != TASK_GENERATE) {
        /* a text is only read: it may fill the whole context */
        m->max_input = m->set.max_input_tokens > 0 && m->set.max_input_tokens < m->max_total
                           ? (int)m->set.max_input_tokens : m->max_total;
    }
    /* classification, and any model's embeddings: one request's texts are queued together */
    long room = (long)eo.max_concurrent + eo.max_queue;
    m->max_inputs = (int)(m->set.max_inputs < room ? m->set.max_inputs : room);
    if (m->max_inputs < m->set.max_inputs)
        log_info("model %s: max_inputs %ld is more than max_concurrent + max_queue; a request may have %d texts",
                 m->name, m->set.max_inputs, m->max_inputs);
    m->eos = tokenizer_eos_id(m->tok);
    *bytes = info->weight_bytes + (size_t)info->kv_blocks * info->kv_block_bytes;
    return 0;
}

struct load_job {
    struct registry *r;
    struct lmodel *m;
};

static void *loader_main(void *arg)
{
    struct load_job *job = arg;
    struct registry *r = job->r;
    struct lmodel *m = job->m;
    free(job);
    char err[400] = "";
    int64_t t0 = util_now_ns();
    size_t bytes = 0;
    int rc = load(m, &bytes, err, sizeof err);
    pthread_mutex_lock(&r->mu);
    m->load_ns = util_now_ns() - t0;
    if (rc == 0) {
        m->bytes = bytes;
        m->state = LM_READY;
        const struct llm_info *in = m->info;
        if (in->fallback[0])
            log_notice("model %s: %s", m->name, in->fallback);
        log_notice("model %s loaded from %s in %.1f s: %s on %s, context %d, %d %s KV blocks of %d tokens", m->name,
                   m->dir, (double)m->load_ns / 1e9, in->weight_format, in->device_name, m->context,
                   in->kv_blocks, in->kv_format, in->kv_block_tokens);
    } else {
        m->state = LM_FAILED;
        redact_dir(m->error, sizeof m->error, err, m->dir, m->name);
        log_error("model %s: cannot load %s: %s", m->name, m->dir, err);
    }
    pthread_cond_broadcast(&r->changed);
    pthread_mutex_unlock(&r->mu);
    registry_put(r, m);                         /* the loader's reference */
    return NULL;
}

/* Sum of the sizes of the directory's *.safetensors files: what loading
 * will take, before the KV pool. */
static size_t weights_on_disk(const char *dir)
{
    size_t total = 0;
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t n = strlen(de->d_name);
        if (n < 12 || strcmp(de->d_name + n - 12, ".safetensors") != 0)
            continue;
        char p[PATH_MAX];
        struct stat st;
        if (snprintf(p, sizeof p, "%s/%s", dir, de->d_name) < (int)sizeof p && stat(p, &st) == 0)
            total += (size_t)st.st_size;
    }
    closedir(d);
    return total;
}

/* Unloads idle models, least recently used first, until one more model of
 * `bytes` fits the limits. Called with mu held; sets *dropped when it let go
 * of mu meanwhile (to free a model), so the caller looks again. Returns
 * false when it cannot make room (every model in memory is busy). */
static bool make_room(struct registry *r, const struct config *cfg, size_t bytes, bool *dropped, bool *all_pinned)
{
    *all_pinned = false;
    for (;;) {
        long n = 0;
        size_t used = 0;
        for (struct lmodel *m = r->models; m; m = m->next)
            if (!m->retired) {
                n++;
                used += m->bytes;
            }
        bool over_count = n + 1 > cfg->max_loaded_models;
        bool over_bytes = cfg->models_memory && used + bytes > cfg->models_memory;
        if (!over_count && !over_bytes)
            return true;
        struct lmodel *lru = NULL;
        bool unpinned = false;
        for (struct lmodel *m = r->models; m; m = m->next) {
            if (m->retired || m->pinned)
                continue;                       /* configured or the default: never made room from */
            unpinned = true;
            if (m->refs == 0 && m->state != LM_LOADING && (!lru || m->last_used_ns < lru->last_used_ns))
                lru = m;
        }
        if (!lru) {
            *all_pinned = !unpinned;
            return !over_bytes || n == 0 ? !over_count : false;
        }
        log_notice("model %s unloaded (least recently used; %s)", lru->name,
                   over_count ? "max_loaded_models reached" : "models_memory reached");
        lru->retired = true;                    /* refs == 0: freed below, outside the list */
        for (struct lmodel **pp = &r->models; *pp; pp = &(*pp)->next)
            if (*pp == lru) {
                *pp = lru->next;
                break;
            }
        pthread_mutex_unlock(&r->mu);
        lmodel_free(lru);
        pthread_mutex_lock(&r->mu);
        *dropped = true;
    }
}

/* A new model entry, LOADING, with its loader thread started; in the list
 * with one reference for the caller. Called with mu held. */
static struct lmodel *start_load(struct registry *r, const struct config_model *set, const char *name, const char *dir,
                                 bool configured, size_t bytes, char *err, size_t errlen)
{
    struct lmodel *m = calloc(1, sizeof *m);
    struct load_job *job = malloc(sizeof *job);
    if (!m || !job || !(m->name = strdup(name)) || !(m->dir = strdup(dir)) ||
        settings_copy(&m->set, set, name, dir) != 0) {
        snprintf(err, errlen, "out of memory");
        if (m) {
            free(m->name);
            free(m->dir);
        }
        free(m);
        free(job);
        return NULL;
    }
    m->configured = configured;
    m->state = LM_LOADING;
    m->refs = 2;                                /* the caller's and the loader's */
    m->last_used_ns = m->load_started_ns = util_now_ns();
    m->bytes = bytes;
    m->eos = -1;
    *job = (struct load_job){r, m};
    int rc = pthread_create(&m->loader, NULL, loader_main, job);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start a loader thread: %s", strerror(rc));
        free(job);
        settings_free(&m->set);
        free(m->name);
        free(m->dir);
        free(m);
        return NULL;
    }
    m->loader_joinable = true;
    m->next = r->models;
    r->models = m;
    log_notice("model %s: loading %s", name, dir);
    return m;
}

static struct lmodel *find(struct registry *r, const char *name)
{
    for (struct lmodel *m = r->models; m; m = m->next)
        if (!m->retired && strcmp(m->name, name) == 0)
            return m;
    return NULL;
}

/* models_dir/name when it is a model directory (has config.json). */
static bool implicit_dir(const struct config *cfg, const char *name, char *dir, size_t len)
{
    if (!cfg->models_dir || !config_model_relpath_ok(name))
        return false;
    if (snprintf(dir, len, "%s/%s", cfg->models_dir, name) >= (int)len)
        return false;
    char cj[PATH_MAX + 16];
    struct stat st;
    snprintf(cj, sizeof cj, "%s/config.json", dir);
    return stat(cj, &st) == 0 && S_ISREG(st.st_mode);
}

bool registry_is_local(const struct config *cfg, const char *name)
{
    char dir[PATH_MAX];
    return config_find_model(cfg, name) || implicit_dir(cfg, name, dir, sizeof dir);
}

static struct lmodel *collect_retired(struct registry *r);
static void free_list(struct lmodel *m);

struct lmodel *registry_get(struct registry *r, const struct config *cfg, const char *name, int *status, char *err,
                            size_t errlen)
{
    char dir[PATH_MAX];
    const struct config_model *cm = config_find_model(cfg, name);
    if (!cm && !implicit_dir(cfg, name, dir, sizeof dir)) {
        *status = 404;
        snprintf(err, errlen, "model %s is not served here", name);
        return NULL;
    }
    const struct config_model *set = cm ? cm : &cfg->model_defaults;
    const char *path = cm ? cm->path : dir;
    size_t bytes = 0;
    bool estimated = false;
    pthread_mutex_lock(&r->mu);
    struct lmodel *m;
    for (;;) {
        m = find(r, name);
        if (m && (m->configured != (cm != NULL) ||          /* a [model] now shadows a directory, or the reverse */
                  (m->state == LM_FAILED && m->refs == 0))) { /* or try again: the files may have been fixed */
            m->retired = true;
            struct lmodel *dead = collect_retired(r);
            pthread_mutex_unlock(&r->mu);
            free_list(dead);
            pthread_mutex_lock(&r->mu);
            continue;
        }
        if (m || r->stopping)
            break;
        if (!estimated) {                       /* reads files: not under the lock */
            pthread_mutex_unlock(&r->mu);
            bytes = estimate_bytes(path, set);
            estimated = true;
            pthread_mutex_lock(&r->mu);
            continue;
        }
        bool dropped = false, all_pinned = false;
        if (!registry_pinned(cfg, name) && !make_room(r, cfg, bytes, &dropped, &all_pinned)) {
            pthread_mutex_unlock(&r->mu);
            *status = 503;
            if (all_pinned)
                snprintf(err, errlen,
                         "cannot load model %s: the configured models, which stay loaded, already fill "
                         "max_loaded_models (%ld) or models_memory", name, cfg->max_loaded_models);
            else
                snprintf(err, errlen,
                         "cannot load model %s now: max_loaded_models (%ld) or models_memory is reached and every "
                         "model that may be unloaded is busy; try again", name, cfg->max_loaded_models);
            return NULL;
        }
        if (dropped)
            continue;                           /* another request may have started it meanwhile */
        m = start_load(r, set, name, path, cm != NULL, bytes, err, errlen);
        if (m)
            m->pinned = registry_pinned(cfg, name);
        if (!m) {
            pthread_mutex_unlock(&r->mu);
            *status = 500;
            return NULL;
        }
        m->refs--;                              /* the caller's reference is taken below */
        break;
    }
    if (!m) {
        pthread_mutex_unlock(&r->mu);
        *status = 503;
        snprintf(err, errlen, "the server is shutting down");
        return NULL;
    }
    m->refs++;
    m->last_used_ns = util_now_ns();
    pthread_mutex_unlock(&r->mu);
    return m;
}

/* Unlinks retired models nobody holds; returns them as a list to free
 * outside the lock. Called with mu held. */
static struct lmodel *collect_retired(struct registry *r)
{
    struct lmodel *dead = NULL;
    for (struct lmodel **pp = &r->models; *pp;) {
        struct lmodel *m = *pp;
        if (m->retired && m->refs == 0) {
            *pp = m->next;
            m->next = dead;
            dead = m;
            continue;
        }
        pp = &m->next;
    }
    return dead;
}

static void free_list(struct lmodel *m)
{
    while (m) {
        struct lmodel *next = m->next;
        if (m->state == LM_READY)
            log_notice("model %s unloaded", m->name);
        lmodel_free(m);
        m = next;
    }
}

void registry_put(struct registry *r, struct lmodel *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&r->mu);
    m->refs--;
    m->last_used_ns = util_now_ns();
    struct lmodel *dead = m->refs == 0 ? collect_retired(r) : NULL;
    pthread_mutex_unlock(&r->mu);
    free_list(dead);
}

int registry_wait(struct registry *r, struct lmodel *m, int64_t deadline_ns, int watch_fd)
{
    pthread_mutex_lock(&r->mu);
    while (m->state == LM_LOADING) {
        int64_t now = util_now_ns();
        if (deadline_ns && now >= deadline_ns)
            break;
        int64_t until = now + 200000000;        /* look at the client every 200 ms */
        if (deadline_ns && until > deadline_ns)
            until = deadline_ns;
        struct timespec ts = {.tv_sec = until / 1000000000, .tv_nsec = until % 1000000000};
        pthread_cond_timedwait(&r->changed, &r->mu, &ts);
        if (watch_fd >= 0 && m->state == LM_LOADING) {
            struct pollfd p = {.fd = watch_fd, .events = POLLRDHUP};
            if (poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)))
                break;
        }
    }
    int rc = m->state == LM_LOADING ? -1 : 0;
    pthread_mutex_unlock(&r->mu);
    return rc;
}

bool registry_loading(struct registry *r)
{
    bool any = false;
    pthread_mutex_lock(&r->mu);
    for (struct lmodel *m = r->models; m && !any; m = m->next)
        any = m->state == LM_LOADING;
    pthread_mutex_unlock(&r->mu);
    return any;
}

enum lmodel_state registry_state(struct registry *r, struct lmodel *m)
{
    pthread_mutex_lock(&r->mu);
    enum lmodel_state s = m->state;
    pthread_mutex_unlock(&r->mu);
    return s;
}

/* ------------------------------------------------------------------ lifecycle */

static void preload(struct registry *r, const struct config *cfg)
{
    char err[300];
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < cfg->n_models; i++) {
        const struct config_model *cm = &cfg->models[i];
        if (find(r, cm->name))
            continue;
        struct lmodel *m = start_load(r, cm, cm->name, cm->path, true, 0, err, sizeof err);
        if (!m) {
            log_error("model %s: %s", cm->name, err);
        } else {
            m->pinned = true;
            m->refs--;                          /* no caller holds it */
        }
    }
    pthread_mutex_unlock(&r->mu);
}

int registry_start(struct registry **out, const struct config *cfg, char *err, size_t errlen)
{
    struct registry *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (!(r->constraints = ccache_new((size_t)cfg->constraint_cache))) {
        free(r);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->changed, &ca);
    pthread_condattr_destroy(&ca);
    preload(r, cfg);
    *out = r;
    return 0;
}

void registry_reconfigure(struct registry *r, const struct config *cfg)
{
    pthread_mutex_lock(&r->mu);
    for (struct lmodel *m = r->models; m; m = m->next) {
        if (m->retired)
            continue;
        const struct config_model *cm = config_find_model(cfg, m->name);
        bool keep = m->configured ? cm && settings_same(&m->set, cm) : !cm && registry_is_local(cfg, m->name);
        m->pinned = registry_pinned(cfg, m->name);  /* the default may have changed */
        if (!keep) {
            log_notice("model %s: its configuration changed; it is unloaded once its requests finish", m->name);
            m->retired = true;
        }
    }
    struct lmodel *dead = collect_retired(r);
    pthread_mutex_unlock(&r->mu);
    free_list(dead);
    ccache_set_budget(r->constraints, (size_t)cfg->constraint_cache);
    preload(r, cfg);
}

void registry_stop(struct registry *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->stopping = true;
    struct lmodel *all = r->models;
    r->models = NULL;
    pthread_mutex_unlock(&r->mu);
    free_list(all);                             /* joins the loaders first */
    pthread_cond_destroy(&r->changed);
    pthread_mutex_destroy(&r->mu);
    ccache_free(r->constraints);
    free(r);
}

struct ccache *registry_constraints(struct registry *r)
{
    return r ? r->constraints : NULL;
}

/* ------------------------------------------------------------------ listing */

static const char *state_name(enum lmodel_state s)
{
    return s == LM_LOADING ? "loading" : s == LM_READY ? "ready" : "failed";
}

json_object *registry_status_json(struct registry *r, bool with_paths)
{
    json_object *all = json_object_new_object();
    if (!all)
        return NULL;
    pthread_mutex_lock(&r->mu);
    for (struct lmodel *m = r->models; m; m = m->next) {
        if (m->retired)
            continue;
        json_object *o = json_object_new_object();
        if (!o)
            break;
        json_object_object_add(o, "state", json_object_new_string(state_name(m->state)));
        if (with_paths)
            json_object_object_add(o, "path", json_object_new_string(m->dir));
        json_object_object_add(o, "configured", json_object_new_boolean(m->configured));
        json_object_object_add(o, "pinned", json_object_new_boolean(m->pinned));
        json_object_object_add(o, "in_use", json_object_new_int(m->refs));
        if (m->state == LM_FAILED)
            json_object_object_add(o, "error", json_object_new_string(m->error));
        if (m->state == LM_READY) {
            struct engine_stats st;
            engine_get_stats(m->engine, &st);
            json_object_object_add(o, "backend", json_object_new_string(m->info->backend));
            json_object_object_add(o, "device", json_object_new_string(m->info->device_name));
            json_object_object_add(o, "dtype", json_object_new_string(m->info->weight_format));
            json_object_object_add(o, "kv_dtype", json_object_new_string(m->info->kv_format));
            json_object_object_add(o, "context", json_object_new_int(m->context));
            json_object_object_add(o, "task", json_object_new_string(model_task_name(m->task)));
            if (m->task != TASK_GENERATE)
                json_object_object_add(o, "labels", json_object_new_int(m->n_labels));
            json_object_object_add(o, "load_seconds", json_object_new_double((double)m->load_ns / 1e9));
            json_object_object_add(o, "memory_bytes", json_object_new_uint64(m->bytes));
            json_object_object_add(o, "running", json_object_new_int(st.running));
            json_object_object_add(o, "queued", json_object_new_int(st.queued));
            json_object_object_add(o, "kv_blocks_used", json_object_new_int(st.kv_blocks_used));
            json_object_object_add(o, "kv_blocks_total", json_object_new_int(st.kv_blocks_total));
            json_object_object_add(o, "requests", json_object_new_uint64(st.requests));
            json_object_object_add(o, "cancelled", json_object_new_uint64(st.cancelled));
            json_object_object_add(o, "rejected", json_object_new_uint64(st.rejected));
            json_object_object_add(o, "expired", json_object_new_uint64(st.expired));
            json_object_object_add(o, "preempted", json_object_new_uint64(st.preempted));
            json_object_object_add(o, "steps", json_object_new_uint64(st.steps));
            json_object_object_add(o, "prompt_tokens", json_object_new_uint64(st.prompt_tokens));
            json_object_object_add(o, "generated_tokens", json_object_new_uint64(st.generated_tokens));
            json_object_object_add(o, "prefix_cache", json_object_new_boolean(st.prefix_cache));
            json_object_object_add(o, "kv_blocks_cached", json_object_new_int(st.kv_blocks_cached));
            json_object_object_add(o, "prefix_cache_queries", json_object_new_uint64(st.prefix_cache_queries));
            json_object_object_add(o, "prefix_cache_hits", json_object_new_uint64(st.prefix_cache_hits));
            json_object_object_add(o, "mask_cache_hits", json_object_new_uint64(st.mask_cache_hits));
            json_object_object_add(o, "mask_cache_walks", json_object_new_uint64(st.mask_cache_walks));
            json_object_object_add(o, "mask_cache_bytes", json_object_new_uint64(st.mask_cache_bytes));
        }
        json_object_object_add(all, m->name, o);
    }
    pthread_mutex_unlock(&r->mu);
    return all;
}

int registry_stats(struct registry *r, struct registry_model_stats **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    size_t cap = 0, k = 0;
    struct registry_model_stats *v = NULL;
    int rc = 0;
    pthread_mutex_lock(&r->mu);
    for (struct lmodel *m = r->models; m; m = m->next) {
        if (m->retired)
            continue;
        if (k == cap) {
            size_t nc = cap ? cap * 2 : 8;
            struct registry_model_stats *g = realloc(v, nc * sizeof *g);
            if (!g) {
                rc = -1;
                break;
            }
            v = g;
            cap = nc;
        }
        struct registry_model_stats *s = &v[k];
        memset(s, 0, sizeof *s);
        s->name = strdup(m->name);
        if (!s->name) {
            rc = -1;
            break;
        }
        k++;
        s->state = m->state == LM_LOADING ? REGISTRY_LOADING : m->state == LM_READY ? REGISTRY_READY : REGISTRY_FAILED;
        if (m->state == LM_READY)
            engine_get_stats(m->engine, &s->engine);
    }
    pthread_mutex_unlock(&r->mu);
    if (rc < 0) {
        registry_stats_free(v, k);
        return -1;
    }
    *out = v;
    *n = k;
    return 0;
}

void registry_stats_free(struct registry_model_stats *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i].name);
    free(v);
}

/* Model directories under models_dir: DIR/NAME/config.json and
 * DIR/ORG/NAME/config.json. */
static void scan_dir(const char *root, const char *rel, int depth, int *count,
                     void (*fn)(void *ud, const char *name, int state), void *ud, struct registry *r)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s%s%s", root, *rel ? "/" : "", rel);
    DIR *d = opendir(path);
    if (!d)
        return;
    struct dirent *de;
    while (*count < LIST_MAX && (de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char name[PATH_MAX];
        if (snprintf(name, sizeof name, "%s%s%s", rel, *rel ? "/" : "", de->d_name) >= (int)sizeof name ||
            !config_model_relpath_ok(name))
            continue;
        char cj[PATH_MAX + 32];
        struct stat st;
        snprintf(cj, sizeof cj, "%s/%s/config.json", root, name);
        if (stat(cj, &st) == 0 && S_ISREG(st.st_mode)) {
            pthread_mutex_lock(&r->mu);
            struct lmodel *m = find(r, name);
            int state = m ? (int)m->state : -1;
            pthread_mutex_unlock(&r->mu);
            fn(ud, name, state);
            (*count)++;
        } else if (depth == 0) {
            scan_dir(root, name, 1, count, fn, ud, r);
        }
    }
    closedir(d);
}

void registry_each(struct registry *r, const struct config *cfg, void (*fn)(void *ud, const char *name, int state),
                   void *ud)
{
    for (size_t i = 0; i < cfg->n_models; i++) {
        pthread_mutex_lock(&r->mu);
        struct lmodel *m = find(r, cfg->models[i].name);
        int state = m ? (int)m->state : -1;
        pthread_mutex_unlock(&r->mu);
        fn(ud, cfg->models[i].name, state);
    }
    if (cfg->models_dir) {
        int count = 0;
        scan_dir(cfg->models_dir, "", 0, &count, fn, ud, r);
    }
}
