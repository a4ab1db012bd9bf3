/* json_schema.h -- JSON Schema (a subset) and "any JSON object" compiled to constraint trees and DFAs (constraint.h) for constrained decoding.
 *
 * A schema becomes a regular language over bytes: properties in the order
 * the schema lists them (optional ones may be left out), whitespace between
 * tokens bounded (at most JSON_WS_MAX of space, tab, newline), numbers of
 * at most 16 integer and 15 fraction digits, nesting of values the schema
 * leaves open (no `properties`, no `items`) bounded at JSON_ANY_DEPTH.
 *
 * Supported: type (object, array, string, number, integer, boolean, null,
 * or a list of them), properties, required, additionalProperties (false;
 * true or absent generate no other property), enum, const, items,
 * minItems, maxItems, minLength, maxLength, pattern (the regex subset of
 * constraint.h, matched whole; with minLength/maxLength the two DFAs are
 * intersected, lengths in characters), anyOf, oneOf (when its branches are
 * exclusive by their schemas: different types, disjoint const/enum values,
 * or a required property whose schemas are such, a tag; otherwise refused,
 * since a DFA cannot rule out a text that two branches validate), $ref
 * to #/$defs/... or #/definitions/... (no cycles), and the annotations (title, description, default,
 * examples, $schema, $id, $comment, deprecated, readOnly, writeOnly).
 * Anything else is refused with a message naming the keyword and where it
 * is, never ignored. */
#ifndef LLMCGI_JSON_SCHEMA_H
#define LLMCGI_JSON_SCHEMA_H

#include "constraint.h"

#include <json-c/json.h>
#include <stddef.h>

#define JSON_WS_MAX 3           /* whitespace characters between two tokens */
#define JSON_ANY_DEPTH 4        /* levels of objects and arrays in a value left open */
#define JSON_SCHEMA_MAX_DEPTH 12    /* nesting of schemas */

/* The tree of schema (borrowed) in arena a. Returns 0 with *out, or -1
 * with err ("`format` is not supported (at /properties/when)"). */
int jschema_tree(struct cre_arena *a, json_object *schema, struct cre **out, char *err, size_t errlen);

/* The DFA of a schema (the caller holds one reference), or -1 with err. */
int cdfa_json_schema(json_object *schema, struct cdfa **out, char *err, size_t errlen);

/* The DFA of any JSON object (response_format json_object). */
int cdfa_json_object(struct cdfa **out, char *err, size_t errlen);

#endif
