/* json_schema.c -- JSON Schema (a subset) and "any JSON object" compiled to constraint trees: each schema keyword becomes concatenations, alternations and repeats of JSON's own tokens. */
#include "json_schema.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define MAX_PROPERTIES 64

struct jsc {
    struct cre_arena *a;
    json_object *root;
    char *err;
    size_t errlen;
    bool failed;
    char path[256];             /* JSON pointer of the schema being read */
    const char *refs[JSON_SCHEMA_MAX_DEPTH + 1];    /* the $refs being followed */
    int n_refs;
};

static struct cre *fail(struct jsc *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static struct cre *fail(struct jsc *c, const char *fmt, ...)
{
    if (c->failed)
        return NULL;
    c->failed = true;
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(c->err, c->errlen, "%s (at %s)", msg, c->path[0] ? c->path : "the schema's root");
    return NULL;
}

/* ------------------------------------------------------------------ JSON's tokens */

static struct cre *ws(struct jsc *c)
{
    uint8_t set[32] = {0};
    set[' ' >> 3] |= 1u << (' ' & 7);
    set['\n' >> 3] |= 1u << ('\n' & 7);
    set['\t' >> 3] |= 1u << ('\t' & 7);
    return cre_rep(c->a, cre_set(c->a, set, false), 0, JSON_WS_MAX);
}

/* WS x WS ... : the pieces joined */
static struct cre *seq(struct jsc *c, int n, ...)
{
    va_list ap;
    va_start(ap, n);
    struct cre *r = NULL;
    for (int i = 0; i < n; i++) {
        struct cre *x = va_arg(ap, struct cre *);
        r = r ? cre_cat(c->a, r, x) : x;
    }
    va_end(ap);
    return r;
}

static struct cre *lit(struct jsc *c, const char *s)
{
    return cre_str(c->a, s);
}

/* One character of a string's content, written as JSON writes it. */
static struct cre *str_char(struct jsc *c)
{
    uint8_t all[32];
    memset(all, 0, sizeof all);
    memset(all, 0xff, 16);
    return cre_json_escaped(c->a, cre_set(c->a, all, true));
}

static struct cre *string_of(struct jsc *c, int min, int max)
{
    return seq(c, 3, lit(c, "\""), cre_rep(c->a, str_char(c), min, max), lit(c, "\""));
}

static struct cre *integer(struct jsc *c)
{
    struct cre *digits = cre_alt(c->a, lit(c, "0"),
                                 cre_cat(c->a, cre_range(c->a, '1', '9'), cre_rep(c->a, cre_range(c->a, '0', '9'), 0, 15)));
    return cre_cat(c->a, cre_rep(c->a, lit(c, "-"), 0, 1), digits);
}

static struct cre *number(struct jsc *c)
{
    uint8_t e[32] = {0}, pm[32] = {0};
    e['e' >> 3] |= 1u << ('e' & 7), e['E' >> 3] |= 1u << ('E' & 7);
    pm['+' >> 3] |= 1u << ('+' & 7), pm['-' >> 3] |= 1u << ('-' & 7);
    struct cre *frac = cre_rep(c->a, cre_cat(c->a, lit(c, "."), cre_rep(c->a, cre_range(c->a, '0', '9'), 1, 15)), 0, 1);
    struct cre *exp = cre_rep(c->a, seq(c, 3, cre_set(c->a, e, false), cre_rep(c->a, cre_set(c->a, pm, false), 0, 1),
                                        cre_rep(c->a, cre_range(c->a, '0', '9'), 1, 2)), 0, 1);
    return seq(c, 3, integer(c), frac, exp);
}

/* open WS items WS close, items: min..max of x with commas; whitespace
 * bounded also when there are none (open WS (items WS)? close). */
static struct cre *list_of(struct jsc *c, const char *open, struct cre *x, int min, int max, const char *close)
{
    struct cre *body = cre_empty(c->a);
    if (max != 0) {
        struct cre *sep = seq(c, 3, ws(c), lit(c, ","), ws(c));
        body = cre_cat(c->a, cre_list(c->a, x, sep, min > 0 ? min : 1, max), ws(c));
        if (min == 0)
            body = cre_rep(c->a, body, 0, 1);
    }
    return seq(c, 4, lit(c, open), ws(c), body, lit(c, close));
}

static struct cre *any_value(struct jsc *c, int depth);

/* An object (depth >= 1: it and what it holds nest at most depth deep). */
static struct cre *any_object(struct jsc *c, int depth)
{
    struct cre *member = seq(c, 5, string_of(c, 0, CRE_REP_INF), ws(c), lit(c, ":"), ws(c), any_value(c, depth - 1));
    return list_of(c, "{", member, 0, CRE_REP_INF, "}");
}

static struct cre *any_array(struct jsc *c, int depth)
{
    return list_of(c, "[", any_value(c, depth - 1), 0, CRE_REP_INF, "]");
}

/* Any JSON value with objects and arrays nested at most depth deep. */
static struct cre *any_value(struct jsc *c, int depth)
{
    struct cre *r = cre_alt(c->a, cre_alt(c->a, string_of(c, 0, CRE_REP_INF), number(c)),
                            cre_alt(c->a, cre_alt(c->a, lit(c, "true"), lit(c, "false")), lit(c, "null")));
    if (depth > 0)
        r = cre_alt(c->a, r, cre_alt(c->a, any_object(c, depth), any_array(c, depth)));
    return r;
}

/* A JSON value written as json-c writes it (compact). */
static struct cre *literal_json(struct jsc *c, json_object *v)
{
    const char *s = json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    return s ? lit(c, s) : fail(c, "out of memory");
}

/* ------------------------------------------------------------------ schemas */

static struct cre *schema(struct jsc *c, json_object *s, int depth);

static bool annotation(const char *k)
{
    static const char *const names[] = {"title", "description", "default", "examples", "$schema", "$id",
                                        "$comment", "deprecated", "readOnly", "writeOnly", "$defs", "definitions"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (strcmp(k, names[i]) == 0)
            return true;
    return false;
}

/* Runs f on the child schema s at path suffix "/seg", restoring the path after. */
static struct cre *child(struct jsc *c, json_object *s, int depth, const char *seg1, const char *seg2)
{
    size_t at = strlen(c->path);
    snprintf(c->path + at, sizeof c->path - at, "/%s%s%s", seg1, seg2 ? "/" : "", seg2 ? seg2 : "");
    struct cre *r = schema(c, s, depth);
    if (!c->failed)
        c->path[at] = '\0';
    return r;
}

/* A non-negative integer keyword, or def when absent; -2 after failing. */
static int count_kw(struct jsc *c, json_object *s, const char *k, int def)
{
    json_object *v;
    if (!json_object_object_get_ex(s, k, &v))
        return def;
    if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0) {
        fail(c, "`%s` must be a non-negative integer", k);
        return -2;
    }
    if (json_object_get_int64(v) > CRE_REP_MAX) {
        fail(c, "`%s` over %d is not supported", k, CRE_REP_MAX);
        return -2;
    }
    return (int)json_object_get_int64(v);
}

static struct cre *object_schema(struct jsc *c, json_object *s, int depth)
{
    json_object *props = NULL, *req = NULL, *addl = NULL;
    json_object_object_get_ex(s, "properties", &props);
    json_object_object_get_ex(s, "required", &req);
    json_object_object_get_ex(s, "additionalProperties", &addl);
    if (addl && !json_object_is_type(addl, json_type_boolean) &&
        !(json_object_is_type(addl, json_type_object) && json_object_object_length(addl) == 0))
        return fail(c, "`additionalProperties` other than true or false is not supported");
    if (props && !json_object_is_type(props, json_type_object))
        return fail(c, "`properties` must be an object");
    if (req && !json_object_is_type(req, json_type_array))
        return fail(c, "`required` must be an array of property names");
    bool closed = addl && json_object_is_type(addl, json_type_boolean) && !json_object_get_boolean(addl);
    size_t n = props ? (size_t)json_object_object_length(props) : 0;
    if (n == 0 && !closed) {
        if (req && json_object_array_length(req) > 0)
            return fail(c, "`required` names properties that `properties` does not list");
        return any_object(c, JSON_ANY_DEPTH);
    }
    if (n > MAX_PROPERTIES)
        return fail(c, "more than %d properties are not supported", MAX_PROPERTIES);
    struct cre *member[MAX_PROPERTIES];
    bool required[MAX_PROPERTIES] = {0};
    const char *names[MAX_PROPERTIES];
    size_t i = 0;
    if (props) {
        json_object_object_foreach(props, key, val) {
            json_object *k = json_object_new_string(key);
            struct cre *name = k ? literal_json(c, k) : fail(c, "out of memory");
            json_object_put(k);
            struct cre *v = child(c, val, depth + 1, "properties", key);
            if (c->failed)
                return NULL;
            names[i] = key;
            member[i++] = seq(c, 5, name, ws(c), lit(c, ":"), ws(c), v);
        }
    }
    for (size_t r = 0; req && r < json_object_array_length(req); r++) {
        json_object *v = json_object_array_get_idx(req, r);
        if (!json_object_is_type(v, json_type_string))
            return fail(c, "`required` must be an array of property names");
        size_t k = 0;
        while (k < n && strcmp(names[k], json_object_get_string(v)) != 0)
            k++;
        if (k == n)
            return fail(c, "`required` names \"%.100s\", which `properties` does not list", json_object_get_string(v));
        required[k] = true;
    }
    /* the members in the schema's order; the first one written is k, each later one
     * present (required) or maybe (optional), a comma before each */
    size_t first_req = 0;
    while (first_req < n && !required[first_req])
        first_req++;
    struct cre *body = NULL;
    for (size_t k = 0; k < n && k <= first_req; k++) {
        struct cre *alt = member[k];
        for (size_t j = k + 1; j < n; j++) {
            struct cre *m = seq(c, 4, ws(c), lit(c, ","), ws(c), member[j]);
            alt = cre_cat(c->a, alt, required[j] ? m : cre_rep(c->a, m, 0, 1));
        }
        body = body ? cre_alt(c->a, body, alt) : alt;
    }
    body = body ? cre_cat(c->a, body, ws(c)) : cre_empty(c->a);
    if (first_req == n)                         /* nothing required: {} too */
        body = cre_rep(c->a, body, 0, 1);
    return seq(c, 4, lit(c, "{"), ws(c), body, lit(c, "}"));
}

static struct cre *array_schema(struct jsc *c, json_object *s, int depth)
{
    json_object *items = NULL;
    json_object_object_get_ex(s, "items", &items);
    int min = count_kw(c, s, "minItems", 0), max = count_kw(c, s, "maxItems", CRE_REP_INF);
    if (min == -2 || max == -2)
        return NULL;
    if (max != CRE_REP_INF && max < min)
        return fail(c, "`minItems` is over `maxItems`");
    struct cre *x = items ? child(c, items, depth + 1, "items", NULL) : any_value(c, JSON_ANY_DEPTH);
    if (c->failed)
        return NULL;
    return list_of(c, "[", x, min, max, "]");
}

static struct cre *string_schema(struct jsc *c, json_object *s)
{
    json_object *pat = NULL;
    int min = count_kw(c, s, "minLength", 0), max = count_kw(c, s, "maxLength", CRE_REP_INF);
    if (min == -2 || max == -2)
        return NULL;
    if (max != CRE_REP_INF && max < min)
        return fail(c, "`minLength` is over `maxLength`");
    if (!json_object_object_get_ex(s, "pattern", &pat))
        return string_of(c, min, max);
    if (!json_object_is_type(pat, json_type_string))
        return fail(c, "`pattern` must be a string");
    struct cre *x = NULL;
    char err[200];
    if (cre_parse(c->a, json_object_get_string(pat), (size_t)json_object_get_string_len(pat), &x, err, sizeof err) != 0)
        return fail(c, "`pattern`: %s", err);
    if (json_object_object_get_ex(s, "minLength", NULL) || json_object_object_get_ex(s, "maxLength", NULL)) {
        /* both: the pattern's DFA intersected with that of min..max characters */
        uint8_t all[32] = {0};
        memset(all, 0xff, 16);
        struct cdfa *pd = NULL, *ld = NULL, *both = NULL;
        struct cre *len = cre_rep(c->a, cre_set(c->a, all, true), min, max);
        int rc = len ? cdfa_build(x, &pd, err, sizeof err) : -1;
        if (rc == 0)
            rc = cdfa_build(len, &ld, err, sizeof err);
        if (rc == 0 && cdfa_intersect(pd, ld, &both, err, sizeof err) != 0) {
            rc = -1;
            if (strstr(err, "matches no text"))
                snprintf(err, sizeof err, "no string both matches it and has %d to %d characters", min, max);
        }
        x = rc == 0 ? cre_dfa(c->a, both) : NULL;
        cdfa_put(pd), cdfa_put(ld), cdfa_put(both);
        if (rc != 0)
            return fail(c, "`pattern` with `minLength`/`maxLength`: %s", len ? err : "out of memory");
        if (!x)
            return fail(c, "out of memory");
    }
    return seq(c, 3, lit(c, "\""), cre_json_escaped(c->a, x), lit(c, "\""));
}

static struct cre *typed(struct jsc *c, json_object *s, const char *type, int depth)
{
    if (strcmp(type, "object") == 0)
        return object_schema(c, s, depth);
    if (strcmp(type, "array") == 0)
        return array_schema(c, s, depth);
    if (strcmp(type, "string") == 0)
        return string_schema(c, s);
    if (strcmp(type, "integer") == 0)
        return integer(c);
    if (strcmp(type, "number") == 0)
        return number(c);
    if (strcmp(type, "boolean") == 0)
        return cre_alt(c->a, lit(c, "true"), lit(c, "false"));
    if (strcmp(type, "null") == 0)
        return lit(c, "null");
    return fail(c, "`type` \"%.40s\" is not a JSON Schema type", type);
}

/* Follows "#/$defs/NAME" (or #/definitions/NAME). */
static struct cre *ref_schema(struct jsc *c, json_object *ref, int depth)
{
    if (!json_object_is_type(ref, json_type_string))
        return fail(c, "`$ref` must be a string");
    const char *r = json_object_get_string(ref), *name = NULL, *box = NULL;
    if (strncmp(r, "#/$defs/", 8) == 0)
        box = "$defs", name = r + 8;
    else if (strncmp(r, "#/definitions/", 14) == 0)
        box = "definitions", name = r + 14;
    else
        return fail(c, "`$ref` \"%.100s\" is not supported (only #/$defs/NAME and #/definitions/NAME)", r);
    json_object *defs = NULL, *target = NULL;
    if (!json_object_object_get_ex(c->root, box, &defs) || !json_object_is_type(defs, json_type_object) ||
        !json_object_object_get_ex(defs, name, &target))
        return fail(c, "`$ref` \"%.100s\" names no definition", r);
    for (int i = 0; i < c->n_refs; i++)
        if (strcmp(c->refs[i], r) == 0)
            return fail(c, "`$ref` \"%.100s\" refers to itself: recursive schemas are not supported", r);
    if (c->n_refs >= JSON_SCHEMA_MAX_DEPTH)
        return fail(c, "`$ref` chains deeper than %d are not supported", JSON_SCHEMA_MAX_DEPTH);
    c->refs[c->n_refs++] = r;
    char saved[sizeof c->path];
    memcpy(saved, c->path, sizeof saved);
    snprintf(c->path, sizeof c->path, "/%s/%s", box, name);
    struct cre *x = schema(c, target, depth);
    if (!c->failed)
        memcpy(c->path, saved, sizeof saved);
    c->n_refs--;
    return x;
}

/* ------------------------------------------------------------------ oneOf */

/* oneOf asks that exactly one branch validates. A DFA cannot tell which
 * branch a text came from, and its languages are narrower than what the
 * branches validate (properties in order, open objects, ...), so overlap
 * of the DFAs proves nothing either way. oneOf is taken when its branches
 * are exclusive by their schemas alone, on rules that are sound: no JSON
 * value validates two branches of different types, two finite const/enum
 * sets with no value in common, or two objects with a property both
 * require whose schemas are exclusive (a tagged union). Anything else is
 * refused. */

enum { T_NULL = 1, T_BOOL = 2, T_NUM = 4, T_STR = 8, T_ARR = 16, T_OBJ = 32, T_ANY = 63 };

/* s with its $ref followed (NULL: a bad reference: schema() reports it). */
static json_object *resolved(struct jsc *c, json_object *s)
{
    for (int hops = 0; hops <= JSON_SCHEMA_MAX_DEPTH; hops++) {
        json_object *ref, *defs, *target;
        if (!json_object_is_type(s, json_type_object) || !json_object_object_get_ex(s, "$ref", &ref))
            return s;
        const char *r = json_object_get_string(ref);
        const char *box = strncmp(r, "#/$defs/", 8) == 0 ? "$defs" : strncmp(r, "#/definitions/", 14) == 0 ? "definitions" : NULL;
        if (!box || !json_object_object_get_ex(c->root, box, &defs) ||
            !json_object_object_get_ex(defs, r + strlen(box) + 3, &target))
            return NULL;
        s = target;
    }
    return NULL;
}

static int value_type(json_object *v)
{
    switch (json_object_get_type(v)) {
    case json_type_null: return T_NULL;
    case json_type_boolean: return T_BOOL;
    case json_type_int:
    case json_type_double: return T_NUM;
    case json_type_string: return T_STR;
    case json_type_array: return T_ARR;
    default: return T_OBJ;
    }
}

/* How many values s allows when they are a finite list (const, enum; JSON
 * null is json-c's NULL), or -1; finite_at gives value i. */
static int finite_count(json_object *s)
{
    json_object *v;
    if (json_object_object_get_ex(s, "const", NULL))
        return 1;
    if (json_object_object_get_ex(s, "enum", &v) && json_object_is_type(v, json_type_array))
        return (int)json_object_array_length(v);
    return -1;
}

static json_object *finite_at(json_object *s, int i)
{
    json_object *v = NULL;
    if (json_object_object_get_ex(s, "const", &v))
        return v;
    json_object_object_get_ex(s, "enum", &v);
    return json_object_array_get_idx(v, (size_t)i);
}

/* The JSON types of the values s may validate (a superset). */
static int types_of(struct jsc *c, json_object *s, int depth)
{
    if (!(s = resolved(c, s)) || depth > JSON_SCHEMA_MAX_DEPTH)
        return T_ANY;
    if (json_object_is_type(s, json_type_boolean))
        return json_object_get_boolean(s) ? T_ANY : 0;
    if (!json_object_is_type(s, json_type_object))
        return T_ANY;
    json_object *v;
    int nv = finite_count(s);
    if (nv >= 0) {
        int t = 0;
        for (int i = 0; i < nv; i++)
            t |= value_type(finite_at(s, i));
        return t;
    }
    static const char *const combos[] = {"anyOf", "oneOf"};
    for (int k = 0; k < 2; k++)
        if (json_object_object_get_ex(s, combos[k], &v) && json_object_is_type(v, json_type_array)) {
            int t = 0;
            for (size_t i = 0; i < json_object_array_length(v); i++)
                t |= types_of(c, json_object_array_get_idx(v, i), depth + 1);
            return t;
        }
    if (!json_object_object_get_ex(s, "type", &v))
        return T_ANY;                           /* properties alone validate non-objects too */
    static const struct {
        const char *name;
        int bit;
    } names[] = {{"null", T_NULL}, {"boolean", T_BOOL}, {"integer", T_NUM}, {"number", T_NUM},
                 {"string", T_STR}, {"array", T_ARR}, {"object", T_OBJ}};
    int t = 0;
    size_t n = json_object_is_type(v, json_type_array) ? json_object_array_length(v) : 1;
    for (size_t i = 0; i < n; i++) {
        json_object *one_type = json_object_is_type(v, json_type_array) ? json_object_array_get_idx(v, i) : v;
        const char *name = json_object_get_string(one_type);
        for (size_t k = 0; name && k < sizeof names / sizeof *names; k++)
            if (strcmp(name, names[k].name) == 0)
                t |= names[k].bit;
    }
    return t;
}

/* Whether JSON values x and y may be equal (arrays and objects: assumed so). */
static bool may_equal(json_object *x, json_object *y)
{
    int t = value_type(x);
    if (t != value_type(y))
        return false;
    if (t == T_NUM)
        return json_object_get_double(x) == json_object_get_double(y);
    if (t == T_STR)
        return json_object_get_string_len(x) == json_object_get_string_len(y) &&
               memcmp(json_object_get_string(x), json_object_get_string(y), (size_t)json_object_get_string_len(x)) == 0;
    if (t == T_BOOL)
        return json_object_get_boolean(x) == json_object_get_boolean(y);
    return true;
}

static bool exclusive(struct jsc *c, json_object *a, json_object *b, int depth);

/* Whether a (anyOf/oneOf, every branch) is exclusive with b. */
static bool branches_exclusive(struct jsc *c, json_object *a, json_object *b, int depth)
{
    static const char *const combos[] = {"anyOf", "oneOf"};
    json_object *v;
    for (int k = 0; k < 2; k++)
        if (json_object_object_get_ex(a, combos[k], &v) && json_object_is_type(v, json_type_array)) {
            for (size_t i = 0; i < json_object_array_length(v); i++)
                if (!exclusive(c, json_object_array_get_idx(v, i), b, depth + 1))
                    return false;
            return true;
        }
    return false;
}

/* Whether no JSON value can validate both a and b (false when unsure). */
static bool exclusive(struct jsc *c, json_object *a, json_object *b, int depth)
{
    if (depth > JSON_SCHEMA_MAX_DEPTH || !(a = resolved(c, a)) || !(b = resolved(c, b)))
        return false;
    int ta = types_of(c, a, depth), tb = types_of(c, b, depth);
    if ((ta & tb) == 0)
        return true;
    if (!json_object_is_type(a, json_type_object) || !json_object_is_type(b, json_type_object))
        return false;
    int na = finite_count(a), nb = finite_count(b);
    if (na >= 0 && nb >= 0) {
        bool overlap = false;
        for (int i = 0; i < na && !overlap; i++)
            for (int j = 0; j < nb && !overlap; j++)
                overlap = may_equal(finite_at(a, i), finite_at(b, j));
        if (!overlap)
            return true;
    }
    if (branches_exclusive(c, a, b, depth) || branches_exclusive(c, b, a, depth))
        return true;
    json_object *ra, *rb, *pa, *pb;
    if ((ta & tb) != T_OBJ || !json_object_object_get_ex(a, "required", &ra) ||
        !json_object_object_get_ex(b, "required", &rb) || !json_object_object_get_ex(a, "properties", &pa) ||
        !json_object_object_get_ex(b, "properties", &pb) || !json_object_is_type(ra, json_type_array) ||
        !json_object_is_type(rb, json_type_array))
        return false;
    for (size_t i = 0; i < json_object_array_length(ra); i++) {     /* a tag both require */
        const char *name = json_object_get_string(json_object_array_get_idx(ra, i));
        json_object *sa, *sb;
        bool in_b = false;
        for (size_t j = 0; name && j < json_object_array_length(rb) && !in_b; j++) {
            const char *other = json_object_get_string(json_object_array_get_idx(rb, j));
            in_b = other && strcmp(name, other) == 0;
        }
        if (in_b && json_object_object_get_ex(pa, name, &sa) && json_object_object_get_ex(pb, name, &sb) &&
            exclusive(c, sa, sb, depth + 1))
            return true;
    }
    return false;
}

static struct cre *schema(struct jsc *c, json_object *s, int depth)
{
    if (c->failed)
        return NULL;
    if (depth > JSON_SCHEMA_MAX_DEPTH)
        return fail(c, "schemas nested deeper than %d are not supported", JSON_SCHEMA_MAX_DEPTH);
    if (json_object_is_type(s, json_type_boolean)) {
        if (!json_object_get_boolean(s))
            return fail(c, "the schema `false` allows nothing");
        return any_value(c, JSON_ANY_DEPTH);
    }
    if (!json_object_is_type(s, json_type_object))
        return fail(c, "a schema must be an object");
    static const char *const known[] = {"type", "properties", "required", "additionalProperties", "enum", "const",
                                        "items", "minItems", "maxItems", "minLength", "maxLength", "pattern",
                                        "anyOf", "oneOf", "$ref"};
    int n_keywords = 0;
    json_object_object_foreach(s, key, val) {
        (void)val;
        if (annotation(key))
            continue;
        size_t i = 0;
        while (i < sizeof known / sizeof *known && strcmp(key, known[i]) != 0)
            i++;
        if (i == sizeof known / sizeof *known)
            return fail(c, "`%.60s` is not supported", key);
        n_keywords++;
    }
    json_object *v;
    if (json_object_object_get_ex(s, "$ref", &v)) {
        if (n_keywords > 1)
            return fail(c, "`$ref` beside other keywords is not supported");
        return ref_schema(c, v, depth);
    }
    if (json_object_object_get_ex(s, "const", &v))
        return literal_json(c, v);
    if (json_object_object_get_ex(s, "enum", &v)) {
        if (!json_object_is_type(v, json_type_array) || json_object_array_length(v) == 0)
            return fail(c, "`enum` must be a non-empty array");
        struct cre *r = NULL;
        for (size_t i = 0; i < json_object_array_length(v); i++) {
            struct cre *x = literal_json(c, json_object_array_get_idx(v, i));
            r = r ? cre_alt(c->a, r, x) : x;
        }
        return r;
    }
    static const char *const combos[] = {"anyOf", "oneOf"};
    for (size_t k = 0; k < 2; k++) {
        if (!json_object_object_get_ex(s, combos[k], &v))
            continue;
        if (n_keywords > 1)
            return fail(c, "`%s` beside other keywords is not supported", combos[k]);
        if (!json_object_is_type(v, json_type_array) || json_object_array_length(v) == 0)
            return fail(c, "`%s` must be a non-empty array of schemas", combos[k]);
        struct cre *r = NULL;
        for (size_t i = 0; i < json_object_array_length(v) && !c->failed; i++) {
            char idx[24];
            snprintf(idx, sizeof idx, "%zu", i);
            struct cre *x = child(c, json_object_array_get_idx(v, i), depth + 1, combos[k], idx);
            r = r ? cre_alt(c->a, r, x) : x;
        }
        for (size_t i = 0; k == 1 && !c->failed && i < json_object_array_length(v); i++)
            for (size_t j = i + 1; j < json_object_array_length(v); j++)
                if (!exclusive(c, json_object_array_get_idx(v, i), json_object_array_get_idx(v, j), depth))
                    return fail(c, "`oneOf` branches %zu and %zu may both match one value, which oneOf forbids and "
                                   "constrained decoding cannot rule out; make them exclusive (different types, "
                                   "different const/enum values, or a required property with such values in each, "
                                   "a tag) or use `anyOf`", i, j);
        return r;
    }
    json_object *type = NULL;
    json_object_object_get_ex(s, "type", &type);
    if (!type) {
        if (json_object_object_get_ex(s, "properties", NULL) || json_object_object_get_ex(s, "required", NULL) ||
            json_object_object_get_ex(s, "additionalProperties", NULL))
            return object_schema(c, s, depth);
        if (json_object_object_get_ex(s, "items", NULL))
            return array_schema(c, s, depth);
        return any_value(c, JSON_ANY_DEPTH);
    }
    if (json_object_is_type(type, json_type_string))
        return typed(c, s, json_object_get_string(type), depth);
    if (!json_object_is_type(type, json_type_array) || json_object_array_length(type) == 0)
        return fail(c, "`type` must be a string or a non-empty array of strings");
    struct cre *r = NULL;
    for (size_t i = 0; i < json_object_array_length(type) && !c->failed; i++) {
        json_object *t = json_object_array_get_idx(type, i);
        if (!json_object_is_type(t, json_type_string))
            return fail(c, "`type` must be a string or a non-empty array of strings");
        struct cre *x = typed(c, s, json_object_get_string(t), depth);
        r = r ? cre_alt(c->a, r, x) : x;
    }
    return r;
}

int jschema_tree(struct cre_arena *a, json_object *s, struct cre **out, char *err, size_t errlen)
{
    struct jsc c = {.a = a, .root = s, .err = err, .errlen = errlen};
    struct cre *x = schema(&c, s, 0);
    if (!x && !c.failed)
        snprintf(err, errlen, "out of memory");
    *out = x;
    return x ? 0 : -1;
}

int cdfa_json_schema(json_object *s, struct cdfa **out, char *err, size_t errlen)
{
    struct cre_arena *a = cre_arena_new();
    struct cre *x = NULL;
    *out = NULL;
    int rc = !a ? (snprintf(err, errlen, "out of memory"), -1) : jschema_tree(a, s, &x, err, errlen);
    if (rc == 0)
        rc = cdfa_build(x, out, err, errlen);
    cre_arena_free(a);
    return rc;
}

int cdfa_json_object(struct cdfa **out, char *err, size_t errlen)
{
    struct cre_arena *a = cre_arena_new();
    struct jsc c = {.a = a, .err = err, .errlen = errlen};
    *out = NULL;
    struct cre *x = a ? any_object(&c, JSON_ANY_DEPTH) : NULL;
    int rc = x ? cdfa_build(x, out, err, errlen) : (snprintf(err, errlen, "out of memory"), -1);
    cre_arena_free(a);
    return rc;
}
