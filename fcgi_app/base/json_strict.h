/* json_strict.c -- strict JSON parsing (RFC 8259) for request bodies and upstream answers: the checks json-c leaves out, and the bound on the tree's memory. */
#ifndef LLMCGI_JSON_STRICT_H
#define LLMCGI_JSON_STRICT_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>

/* Parses buf[0..len) as exactly one JSON value (RFC 8259: strict, UTF-8
 * checked, depth <= 64, nothing but whitespace after it). Returns a new
 * object (caller owns), or NULL with "at line L, column C: ..." in err.
 * (json-c 0.16 still lets a single-quoted object key through.) Escaped
 * surrogate pairs json-c 0.16 decodes as U+FFFD (those of U+xD800-U+xDFFF
 * in each supplementary plane) are decoded right: json-c is given a copy
 * with them as raw UTF-8, and errors are located in buf as sent.
 * "null" parses to NULL too; *err is then "". Pure: fuzzed directly. */
json_object *json_parse_strict(const char *buf, size_t len, char *err, size_t errlen);

/* What a client's request body must be beyond json_parse_strict's RFC
 * 8259 (obj parsed from buf[0..len)): json-c accepts these, and each would
 * make llmcgi act on something other than what the client wrote, or read a
 * request differently from an upstream it is passed to. Refused: an object
 * with the same key twice (json-c keeps the last, others the first); NaN,
 * Infinity and numbers beyond a double (1e400 parses as inf); integers
 * beyond int64 (json-c saturates them); \u0000 in a key (json-c's keys are
 * C strings) and in any string that does not come under a member named in
 * text_keys (NULL-terminated; NULL: none), directly or in an array: those
 * are texts (a prompt, a stop sequence), carried with their length, where
 * every other string names something (a model, a role, a key) and is read
 * as a C string; an unpaired \ud800-\udfff escape (json-c makes it U+FFFD);
 * UTF-8 that is overlong, a surrogate or above U+10FFFF (json-c lets those
 * through); a single-quoted string. obj is only read (the caller keeps it).
 * Returns 0, or -1 with "invalid JSON: ..." in err.
 * Pure: unit-tested and fuzzed. */
int json_check_request(const char *buf, size_t len, json_object *obj, const char *const *text_keys, char *err,
                       size_t errlen);

/* json_check_request for what an upstream answers (a body or one stream
 * event), so that llmcgi never relays or reads a value json-c changed:
 * the same checks, but integers may reach 2^64-2 (TGI's seeds are u64;
 * 2^64-1 is where json-c saturates) and strings may hold \u0000 (text a
 * model generated), but not in keys. Pure: unit-tested and fuzzed. */
int json_check_upstream(const char *buf, size_t len, json_object *obj, char *err, size_t errlen);

/* What json-c's tree of a JSON text costs in memory (measured with
 * json-c 0.16 on x86-64: an object ~790 bytes, however small, as its hash
 * table starts with 16 slots; an array ~150; a number ~72, a string ~88
 * plus its text; an object member ~130 with its key), rounded up. A body of
 * 100,000 chat messages, 4 MB, makes a 100 MB tree: 25 times its size. */
#define JSON_TREE_OBJECT 800
#define JSON_TREE_ARRAY 160
#define JSON_TREE_VALUE 96
/* The tree of a request body may take at most JSON_TREE_FACTOR times the
 * body's size plus JSON_TREE_SLACK; beyond that the body is refused (413)
 * before it is parsed, so that one request's working memory stays a small
 * multiple of its body (bounded by max_body) whatever its shape. */
#define JSON_TREE_FACTOR 16
#define JSON_TREE_SLACK (4u << 20)

/* How deep json_parse_strict lets JSON nest. */
#define JSON_MAX_DEPTH 64

struct json_tree_cost {
    size_t objects, arrays, values;  /* '{', '[', and the values and members after ',', ':' and '[' */
    size_t bytes;                    /* the estimate: len + each of those at its cost above */
    bool too_deep;                   /* nests deeper than JSON_MAX_DEPTH: the parser refuses it early;
                                      * the counts stop there */
};

/* Estimates, from the text alone (no parse, no allocation), what json-c's
 * tree of buf[0..len) would take: counts the '{', '[', ',' and ':' outside
 * strings. An overestimate for valid JSON (empty containers, keys counted
 * as values); any bytes for invalid JSON, which the parser refuses anyway.
 * Pure: unit-tested. */
void json_tree_estimate(const char *buf, size_t len, struct json_tree_cost *c);

/* Does a tree of that cost fit the bound for a body of len bytes? (Yes
 * when too deep: the parser refuses it with its own message.) */
bool json_tree_fits(const struct json_tree_cost *c, size_t len);

/* Parses what an upstream answered (a body, one stream event, a model
 * list): refused unparsed when its tree would pass the request bodies'
 * bound (an upstream may send max_response bytes, 64 MB by default, which
 * as 4-byte "{}," items would be a 13 GB tree), then json_parse_strict and
 * json_check_upstream. Returns a new object (caller owns), or NULL with the
 * reason in err ("" for a plain `null`). */
json_object *json_parse_upstream(const char *buf, size_t len, char *err, size_t errlen);

/* A JSON text held in a string value of a request (a schema sent as
 * text: vLLM's guided_json, TGI's grammar.value), which is outside input
 * as the body is: refused unparsed when its tree would pass the bodies'
 * bound (JSON_EMBEDDED_TOO_LARGE), else json_parse_strict and
 * json_check_request (no text keys), failing with the reason in err
 * ("" for a plain `null`: JSON_EMBEDDED_INVALID). Returns 0 with *out
 * (the caller puts it). */
enum { JSON_EMBEDDED_TOO_LARGE = -1, JSON_EMBEDDED_INVALID = -2 };
int json_parse_embedded(const char *buf, size_t len, json_object **out, char *err, size_t errlen);

#endif
