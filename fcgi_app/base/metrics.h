/* metrics.c -- the process's Prometheus metrics: lock-free counters and histograms over bounded label sets, and their text exposition (format 0.0.4); front/exposition.c adds the live gauges for GET /metrics.
 *
 * Process-wide state, like the logs: every responder thread, engine thread
 * and the gateway record into it without locks (relaxed atomics on fixed
 * tables; nothing is allocated per request). Label values are bounded:
 * routes come from the route table (or an http upstream's configured
 * path_prefix), models and upstreams are interned only once the request
 * has been matched to one that is configured or loadable, never from raw
 * client input. Each label table holds at most METRICS_MAX_* names; past
 * that, samples fall back to the "" (no label value) slot and
 * llmcgi_metrics_label_overflow_total counts them. */
#ifndef LLMCGI_METRICS_H
#define LLMCGI_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define METRICS_MAX_ROUTES 64
#define METRICS_MAX_MODELS 256
#define METRICS_MAX_UPSTREAMS 64
#define METRICS_MAX_SCOPES 16

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"


/* Resets every counter and remembers the start time (call once in main
 * before threads start; the unit tests call it between cases). */
void metrics_init(void);

/* Label ids of known names: interned on first sight (one allocation per
 * name for the life of the process), looked up without locks after.
 * 0 is the empty value ("no model"), also returned when the table is full
 * or name is NULL/empty. `name` is borrowed. */
int metrics_model_id(const char *name);
int metrics_upstream_id(const char *name);

/* The interned name of a model id ("" for 0 or an unknown id); valid for
 * the life of the process. */
const char *metrics_model_name(int id);

/* One answered request: route pattern (NULL: none matched), HTTP status
 * (499 when the client went away), model label id, wall time. */
void metrics_request(const char *route, int status, int model_id, int64_t duration_ns);

/* Local generation: time to first token (from the request's start), the
 * gap between two tokens of one sequence, token counts, and the number of
 * sequences one engine step carried. */
void metrics_ttft(int model_id, int64_t ns);
void metrics_itl(int model_id, int64_t ns);
void metrics_tokens(int model_id, long prompt, long generated);
void metrics_batch(int model_id, int sequences);
/* Local classification: texts classified, and how many of them moderation flagged. */
void metrics_classified(int model_id, long texts, long flagged);
/* Local embeddings: inputs embedded (POST /v1/embeddings). */
void metrics_embedded(int model_id, long inputs);

/* Upstreams: one attempt to a replica (ok: an answer came back, whatever
 * its status; not ok: connect/timeout/5xx-class failure), and a retry
 * (an attempt after the first for one client request). */
void metrics_upstream_attempt(int upstream_id, bool ok, int64_t ns);
void metrics_upstream_retry(int upstream_id);

/* A request refused by a rate limit. `scope` names which limit ("key",
 * "address", "tokens", ...): a short constant from the caller's code,
 * never client input (at most METRICS_MAX_SCOPES distinct values). */
void metrics_rate_limited(const char *scope);

/* Appends the exposition of the counters above to out (front's
 * exposition.c adds the live gauges after them for GET /metrics). */
void metrics_render_counters(struct strbuf *out);

/* ---- exposition primitives (exported for the unit tests) ---- */

/* Escapes a label value (\ -> \\, " -> \", newline -> \n) into out
 * (always NUL-terminated; truncated at a character boundary when full).
 * Returns the length written. */
size_t metrics_escape_label(char *out, size_t len, const char *value);

/* Builds `k1="v1",k2="v2"` from a NULL-terminated list of key, value
 * pairs, escaping the values. */
void metrics_labels(char *out, size_t len, const char *const *kv);

/* "# HELP name help\n# TYPE name type\n" (help escaped: \ and newline). */
void metrics_family(struct strbuf *b, const char *name, const char *type, const char *help);

/* "name{labels} value\n" (no braces when labels is NULL or ""). */
void metrics_sample(struct strbuf *b, const char *name, const char *labels, double value);
void metrics_sample_u64(struct strbuf *b, const char *name, const char *labels, uint64_t value);

/* The samples of one histogram: name_bucket{labels,le="..."} cumulative
 * over counts[0..nb] (counts[i]: observations in bucket i alone, counts[nb]
 * the ones above the last bound), the +Inf bucket, name_sum and name_count
 * (equal to the +Inf bucket). */
void metrics_histogram(struct strbuf *b, const char *name, const char *labels, const double *bounds, size_t nb,
                       const uint64_t *counts, double sum);

#endif
