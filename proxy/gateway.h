/* gateway.c -- the live state of the configured upstreams: replica health (active checks in a background thread, passive failures, circuit breaking), concurrency slots, discovered models, managed children.
 *
 * Configuration lives in the config snapshot (struct config_upstream);
 * what is learnt at run time lives here, in one struct upstream per
 * [upstream NAME], kept across reloads while the name, type and URLs stay
 * the same. Requests take a reference with gateway_get() for as long as
 * they use one. */
#ifndef LLMCGI_GATEWAY_H
#define LLMCGI_GATEWAY_H

#include <curl/curl.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"

struct gateway;
struct upstream;

/* Builds the gateway for `cfg` (taking a reference of its own), starts the
 * health-check thread and the managed children. Returns 0, or -1 with err. */
int gateway_start(struct gateway **out, struct config *cfg, char *err, size_t errlen);

/* Adopts a reloaded config: keeps the state of unchanged upstreams, starts
 * new ones, retires removed ones (their children are stopped). */
void gateway_reconfigure(struct gateway *g, struct config *cfg);

/* Stops the health thread and the children; frees everything. NULL ok. */
void gateway_stop(struct gateway *g);

/* Stops every managed child now (at exit, while requests may still hold
 * upstreams). */
void gateway_stop_children(struct gateway *g);

/* The upstream called `name`, with a reference the caller gives back with
 * upstream_put(); NULL when there is none. */
struct upstream *gateway_get(struct gateway *g, const char *name);
void upstream_put(struct upstream *u);

/* Does upstream `u` (config c) route `model`? Sets *target to the name the
 * upstream knows it by (borrowed from c or from u's discovered list,
 * valid while the caller holds both). */
bool upstream_routes_model(struct upstream *u, const struct config_upstream *c, const char *model, char **target,
                           char *buf, size_t buflen);

/* Is any replica of u up? */
bool upstream_available(struct upstream *u);

/* A replica to send to: the next one, round-robin, that is up and not in
 * `tried` (bit i = replica i). -1 when none. */
int upstream_pick(struct upstream *u, uint64_t tried);

/* The replica's base URL (valid while the reference is held). */
const char *upstream_replica_url(struct upstream *u, int replica);

/* What a request learnt of a replica: ok (which clears its last error), or
 * a failure that counts towards taking it out of rotation. `category` is
 * one of uc_category()'s: /health and /status show it, never more. */
void upstream_report(struct upstream *u, const struct config_upstream *c, int replica, bool ok, const char *category);

/* The same from a finished exchange: a failure is a transport failure or a
 * 5xx; its category is shown, its detail (libcurl's words, with the
 * replica's address) goes to the error log only. */
struct uc_response;
void upstream_report_result(struct upstream *u, const struct config_upstream *c, int replica,
                            const struct uc_response *res);

/* Takes one of c->max_concurrent slots, waiting at most c->queue_timeout.
 * Returns 0, or -1 when none came free. */
int upstream_acquire(struct upstream *u, const struct config_upstream *c);
void upstream_release(struct upstream *u);

/* A request is in flight on replica `replica` of u from enter to leave
 * (each enter has its leave). While one is, and for health_interval after
 * the last one ends, the replica is not probed, nor asked for its model
 * list, if it is up: its requests' outcomes are its health then. */
void upstream_replica_enter(struct upstream *u, int replica);
void upstream_replica_leave(struct upstream *u, int replica);

/* TGI's own model id (from /info) into buf; false when not known yet. */
bool upstream_tgi_model_id(struct upstream *u, char *buf, size_t len);

/* A new JSON object describing u for /health and /status: type, available,
 * in flight, replicas with up/down, in flight, last error, latency. Caller owns it. */
json_object *upstream_status_json(struct upstream *u);

/* An upstream's gauges as the metrics see them (typed, not read from
 * upstream_status_json's keys). */
#define UPSTREAM_MAX_REPLICAS 64        /* conf.c allows 1 to 64 urls */
struct upstream_gauges {
    int64_t in_flight;                  /* requests holding a slot now */
    size_t n_replicas;
    bool up[UPSTREAM_MAX_REPLICAS];     /* replica i in rotation */
};
void upstream_get_gauges(struct upstream *u, struct upstream_gauges *g);

/* A new array of the model ids u reported (from /v1/models or /info); caller owns it. */
json_object *upstream_discovered_models(struct upstream *u);

/* Appends `line` to *h. On failure frees the whole list, sets *h NULL and
 * returns false. */
bool gateway_slist_add(struct curl_slist **h, const char *line);

/* Adds what every request to upstream c carries -- Authorization: Bearer
 * api_key and the configured `header =` lines -- to the headers h (which
 * it takes over). The configuration's headers replace every line of h with
 * the same name (gateway_header_name_eq), the client's and llmcgi's own alike, so
 * that an upstream never gets two values of a header the operator set.
 * Returns the new list, or NULL (h freed) when out of memory. */
struct curl_slist *upstream_credentials(const struct config_upstream *c, struct curl_slist *h);

/* Are a[0..alen) and b[0..blen) the same header name? Case-insensitive, and
 * - and _ count as the same byte: CGI turns both into HTTP_X_Y. */
bool gateway_header_name_eq(const char *a, size_t alen, const char *b, size_t blen);

/* The longest model id taken from an upstream. */
#define GATEWAY_MODEL_ID_MAX 256

/* Is id[0..len) a model id llmcgi takes from an upstream: 1 to
 * GATEWAY_MODEL_ID_MAX bytes of printable ASCII without spaces, quotes
 * (" ' `), backslashes or < >? Such ids are safe in logs, headers, JSON
 * and the config's lists, and are what model hubs and servers use
 * ("org/name-1.5B", "llama3:8b", "/models/x"). */
bool gateway_model_id_ok(const char *id, size_t len);

/* Parses the answer of an upstream's /v1/models (OpenAI list) or /info
 * (TGI: model_id), strictly (json_check_upstream), into a new
 * NULL-terminated array of names (caller frees with gateway_free_names);
 * NULL when it is neither. Ids that fail gateway_model_id_ok are left out
 * and counted in *dropped. Pure: fuzzed. */
char **gateway_parse_model_list(const char *body, size_t len, bool tgi_info, size_t *dropped);
void gateway_free_names(char **names);

#endif
