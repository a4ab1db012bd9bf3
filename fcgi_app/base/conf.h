/* conf.c -- the llmcgi.conf INI file: parse with inih, validate every key with file:line, refcounted snapshots.
 *
 * A struct config is immutable once loaded. Requests hold a reference for
 * their whole life, so a SIGHUP reload swaps in a new snapshot without
 * disturbing requests in flight (see server.h). */
#ifndef LLMCGI_CONF_H
#define LLMCGI_CONF_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "llm.h"
#include "log.h"

/* Lines longer than this are rejected (inih reads into a fixed buffer);
 * long values continue on indented lines. */
#define CONFIG_MAX_LINE 196

/* What a local model is for ([model] task). */
enum model_task {
    TASK_AUTO,                  /* from the checkpoint: generate, or classify for a sequence classifier */
    TASK_GENERATE,              /* text generation (an LM head) */
    TASK_CLASSIFY,              /* POST /classify (a GPT2ForSequenceClassification) */
    TASK_MODERATE,              /* /classify, POST /v1/moderations, POST /generate {"input_text"} */
};

struct config_model {
    char *name;                 /* [model NAME] */
    char *path;                 /* model directory, absolute */
    int line;                   /* line of the section header */
    int path_line;              /* line of its path key (0: none) */
    char *device;               /* "auto", "cpu", "cuda", "cuda:N" */
    long threads;               /* CPU threads; 0 = one per core */
    enum llm_dtype dtype;       /* the matrices' format (llm.h says what each keeps) */
    enum llm_kv_dtype kv_dtype; /* the CPU backend's KV cache format (llm.h) */
    enum llm_tuning tuning;     /* the CPU backend's kernels: latency, throughput or auto (llm.h) */
    long max_concurrent;        /* sequences in the running batch */
    long max_queue;             /* sequences waiting to join it */
    long max_input_tokens;      /* 0 = context - 1 */
    long max_total_tokens;      /* 0 = context */
    long max_new_tokens;        /* when a request says none */
    long max_batch_tokens;      /* tokens per engine step */
    uint64_t kv_cache;          /* bytes of KV pool; 0 = automatic */
    bool prefix_cache;          /* keep full KV blocks for later prompts with the same prefix */
    uint64_t mask_cache;        /* bytes of constrained decoding's token masks kept per model; 0 = none */
    char *chat_template;        /* "auto", "plain", "dialogpt" */
    int64_t timeout_ms;         /* per-request deadline */
    enum model_task task;
    long max_inputs;            /* texts in one classification request */
    char *categories;           /* moderate: "CATEGORY=LABEL[,LABEL] ..."; NULL: one per label (classify.h) */
    char *safe_labels;          /* moderate: labels that are no category when categories is not set */
    double flag_threshold;      /* moderate: a category is flagged at this score */
    bool pool_last;             /* /v1/embeddings: pooling = last (the last token's final hidden state), else mean */
    bool normalize;             /* /v1/embeddings: vectors scaled to unit L2 length */
};

enum upstream_type {
    UPSTREAM_TGI,               /* Hugging Face text-generation-inference */
    UPSTREAM_TRANSFORMERS,      /* `transformers serve` (OpenAI chat API, strict about fields) */
    UPSTREAM_OPENAI,            /* any OpenAI-compatible server (vLLM, llama.cpp, OpenAI) */
    UPSTREAM_HTTP,              /* plain HTTP service: requests under path_prefix forwarded as they are */
};

/* One name a client may use, and the name the upstream knows it by. */
struct upstream_model {
    char *name;
    char *target;               /* == name unless configured as name=target */
};

struct config_upstream {
    char *name;                 /* [upstream NAME] */
    int line;
    enum upstream_type type;
    bool type_set;
    char **urls;                /* replicas: "http://host:port[/base]", no trailing slash */
    size_t n_urls;
    struct upstream_model *models;
    size_t n_models;
    bool catch_all;             /* models lists "*" */
    char *path_prefix;          /* http upstreams: "/img"; NULL otherwise */
    int64_t connect_timeout_ms;
    int64_t first_byte_timeout_ms;
    int64_t total_timeout_ms;
    int64_t stream_idle_timeout_ms;
    long max_concurrent;
    int64_t queue_timeout_ms;   /* how long a request waits for a free slot before 503 */
    long retries;
    int64_t retry_backoff_ms;
    char *api_key;              /* sent as Authorization: Bearer; never logged */
    char **headers;             /* "Name: value", sent with every request */
    size_t n_headers;
    long weight;
    char *health_path;          /* NULL until defaulted by type */
    int64_t health_interval_ms;
    int64_t health_timeout_ms;
    long health_fall;
    long health_rise;
    char *launch;               /* managed child command, or NULL */
    int64_t launch_stop_timeout_ms;
    uint64_t max_response;      /* largest non-streamed answer buffered for translation */
};

struct config {
    atomic_int refs;
    char *file;                 /* the file it came from, as given */
    time_t loaded_at;

    /* [server] */
    char *listen;               /* "unix:/path" or "host:port"; NULL: must be inherited */
    int listen_line;            /* its line (0: not set) */
    struct cidr *web_server_addrs;  /* FastCGI over TCP is accepted only from these; owned */
    size_t n_web_server_addrs;
    bool web_server_addrs_any;  /* web_server_addrs = any: from every address, said on purpose */
    long listen_backlog;
    unsigned socket_mode;
    long threads;
    uint64_t max_body;
    int64_t shutdown_timeout_ms;
    int64_t read_timeout_ms;
    int64_t body_timeout_ms;    /* the whole request body must arrive within this; 0 = no limit */
    int64_t head_timeout_ms;    /* a request's FastCGI head (BEGIN_REQUEST, PARAMS) must arrive within this */
    int64_t sse_keepalive_ms;
    char *path_prefix;          /* "" or "/prefix" (no trailing slash) */
    char *error_log;            /* path or "stderr" */
    char *access_log;           /* path, "stderr" or "off" */
    bool access_log_json;       /* access_log_format = json: one JSON object per line */
    enum log_level log_level;
    bool test_endpoints;

    char *default_model;        /* for requests that name no model (TGI's API); NULL = none */
    char *models_dir;           /* implicit loading: model NAME is models_dir/NAME; NULL = off */
    long max_loaded_models;     /* local models in memory at once */
    uint64_t models_memory;     /* their weights + KV pools, bytes; 0 = no budget */
    uint64_t constraint_cache;  /* bytes of compiled constraints (DFAs) kept across requests; 0 = none */
    struct config_model model_defaults;     /* settings of models loaded from models_dir */
    char *moderation_model;     /* /v1/moderations and /generate {"input_text"} naming no model; NULL: the
                                 * first [model] with task = moderate */
    char *classify_model;       /* /classify naming no model; NULL: the first classify or moderate [model] */

    struct config_model *models;
    size_t n_models;
    struct config_upstream *upstreams;
    size_t n_upstreams;

    /* [auth] (auth.c) */
    char *keys_file;            /* NULL: no API keys, every request is let in */
    struct auth_keys *keys;     /* read from keys_file with the config (so SIGHUP reloads it); owned */
    bool protect_health;        /* GET /health needs a key too */
    bool protect_metrics;       /* GET /metrics needs a key */

    /* [limits] (ratelimit.c); 0 = no limit */
    long requests_per_minute;   /* per key (per address when there are no keys) */
    long tokens_per_minute;
    long address_requests_per_minute;   /* per address on top of a key's limits */
    long address_tokens_per_minute;
    long auth_failures_per_minute;  /* wrong API keys an address may send (then 429 until it refills) */
    long max_clients;           /* buckets tracked at once (the least recently seen are forgotten) */
    struct cidr *trusted_proxies;       /* X-Forwarded-For is believed from these; owned */
    size_t n_trusted_proxies;

    /* [cors] (cors.c) */
    char **cors_origins;        /* exact origins ("https://a.example"); owned */
    size_t n_cors_origins;
    bool cors_any;              /* allow_origins has "*" */
    bool cors_credentials;      /* Access-Control-Allow-Credentials: true */
    int64_t cors_max_age_ms;
};

struct auth_keys;
struct cidr;

struct config_errors {
    char **msg;                 /* "file:line: message", owned */
    size_t n;
};

/* Sets the check of an http upstream's path_prefix against the server's own
 * routes (main passes router_path_in_use before the first config_load, so
 * the config stays below the router). NULL, the default, checks nothing. */
void config_set_path_in_use(bool (*in_use)(const char *prefix));

/* Reads and validates `file`. On success returns 0 with *out a new snapshot
 * holding one reference that the caller owns. On failure returns -1, sets
 * *out = NULL and appends every problem found to errs (caller frees it with
 * config_errors_free, also on success, where it stays empty). */
int config_load(const char *file, struct config **out, struct config_errors *errs);

/* Takes another reference; returns c. */
struct config *config_ref(struct config *c);

/* Drops a reference; frees the snapshot with the last one. NULL is a no-op. */
void config_unref(struct config *c);

void config_errors_free(struct config_errors *e);

/* Appends to `warns` one "file:line: message" for each model whose path is
 * not (yet) a readable directory, and for a models_dir that is not: not an
 * error (the path may appear later, and the model then loads on demand), but
 * worth telling at start, at reload and by --check. */
void config_check_paths(const struct config *c, struct config_errors *warns);

/* Appends "file:line: message" (just "file: message" when line is 0) to e. */
void config_add_error(struct config_errors *e, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* "tgi", "transformers-serve", "openai", "http". */
const char *upstream_type_name(enum upstream_type t);

/* The upstream called `name`, or NULL. */
const struct config_upstream *config_find_upstream(const struct config *c, const char *name);

/* The model called `name`, or NULL. */
const struct config_model *config_find_model(const struct config *c, const char *name);

/* The model for requests that name none: default_model, or else the one
 * model the config names when it names exactly one (TGI serves one model
 * and its clients send no name): one distinct name over the [model]
 * sections and the upstreams' models lists, with no models_dir, no
 * "models = *" and no model upstream without a list (each of those serves
 * names the config does not know). NULL when there is none (several, or
 * none). The name is the config's (valid while c is). */
const char *config_default_model(const struct config *c);

/* "auto", "generate", "classify", "moderate": a static string. */
const char *model_task_name(enum model_task t);

/* The model a classification route uses when the request names none:
 * moderation (true: moderation_model) or /classify (classify_model), else
 * the first [model] whose task fits; NULL when there is none. The name is
 * the config's (valid while c is). */
const char *config_classifier_default(const struct config *c, bool moderation);

/* Is `name` a safe relative path below models_dir ("gpt2", "org/model"):
 * segments of letters, digits, ".", "_", "-", none starting with "." (so no "." or ".."),
 * no empty segment, at most 128 bytes? */
bool config_model_relpath_ok(const char *name);

#endif
