/* structured.c -- structured output on local models: the request's constraint fields read and compiled (engine/constraint.c, engine/json_schema.c), and the tool-call answer shapes. */
#include "structured.h"
#include "json_obj.h"
#include "json_schema.h"
#include "json_strict.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

struct reading {
    int *status;
    const char **param;
    char *err;
    size_t errlen;
    int status_bad;             /* 400 (OpenAI) or 422 (TGI) */
    struct ccache *cache;       /* compiled constraints kept across requests (NULL: none) */
};

static int bad(struct reading *rd, const char *param, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int bad(struct reading *rd, const char *param, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rd->err, rd->errlen, fmt, ap);
    va_end(ap);
    *rd->status = rd->status_bad;
    *rd->param = param;
    return -1;
}

/* A schema sent as a JSON text inside a string (TGI's grammar.value,
 * vLLM's guided_json): parsed as strictly as a request body, under the
 * same bound on its tree, since it is outside input too. Returns the
 * schema (the caller puts it), or -1 after answering the error. */
static int schema_text(struct reading *rd, json_object *v, const char *param, const char *what, json_object **out)
{
    char err[200];
    int rc = json_parse_embedded(json_object_get_string(v), (size_t)json_object_get_string_len(v), out, err,
                                 sizeof err);
    if (rc == JSON_EMBEDDED_TOO_LARGE)
        return bad(rd, param, "%s is too large a JSON text for its length", what);
    if (rc < 0)
        return bad(rd, param, "%s is not a JSON schema%s%s", what, err[0] ? ": " : "", err);
    return 0;
}

/* st->dfa from the cache under (kind, key), true; false when not there. */
static bool cached(struct reading *rd, struct structured *st, enum ccache_kind kind, const char *key, size_t len)
{
    st->dfa = ccache_get(rd->cache, kind, key, len);
    return st->dfa != NULL;
}

/* Keeps st->dfa for the next request with the same constraint (out of memory: just not kept). */
static void keep(struct reading *rd, struct structured *st, enum ccache_kind kind, const char *key, size_t len)
{
    (void)ccache_add(rd->cache, kind, key, len, st->dfa);
}

/* Compiles a schema into st->dfa (or takes it from the cache: its key is
 * the schema's compact JSON, properties in their order, which the DFA
 * follows); what is wrong in it named under `what`. */
static int from_schema(struct reading *rd, struct structured *st, json_object *schema, const char *param,
                       const char *what)
{
    char err[400];
    size_t len = 0;
    const char *key = json_object_to_json_string_length(schema, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE,
                                                        &len);
    if (key && cached(rd, st, CC_SCHEMA, key, len))
        return 0;
    if (cdfa_json_schema(schema, &st->dfa, err, sizeof err) != 0)
        return bad(rd, param, "%s: %s", what, err);
    if (key)
        keep(rd, st, CC_SCHEMA, key, len);
    return 0;
}

/* Any JSON object (response_format json_object, a schema-less tool). */
static int from_json_object(struct reading *rd, struct structured *st, const char *param, const char *what)
{
    char err[400];
    if (cached(rd, st, CC_JSON_OBJECT, "", 0))
        return 0;
    if (cdfa_json_object(&st->dfa, err, sizeof err) != 0)
        return bad(rd, param, "%s%s", what, err);
    keep(rd, st, CC_JSON_OBJECT, "", 0);
    return 0;
}

static int from_regex(struct reading *rd, struct structured *st, json_object *re, const char *param)
{
    char err[400];
    if (!json_object_is_type(re, json_type_string))
        return bad(rd, param, "`%s` must be a string (a regular expression)", param);
    const char *key = json_object_get_string(re);
    size_t len = (size_t)json_object_get_string_len(re);
    if (cached(rd, st, CC_REGEX, key, len))
        return 0;
    if (cdfa_regex(key, len, &st->dfa, err, sizeof err) != 0)
        return bad(rd, param, "`%s`: %s", param, err);
    keep(rd, st, CC_REGEX, key, len);
    return 0;
}

static int from_choice(struct reading *rd, struct structured *st, json_object *list)
{
    const char *choices[256];
    size_t n = json_object_is_type(list, json_type_array) ? json_object_array_length(list) : 0;
    if (n == 0 || n > 256)
        return bad(rd, "guided_choice", "`guided_choice` must be a list of 1 to 256 strings");
    for (size_t i = 0; i < n; i++) {
        json_object *c = json_object_array_get_idx(list, i);
        if (!json_object_is_type(c, json_type_string) || json_object_get_string_len(c) == 0)
            return bad(rd, "guided_choice", "`guided_choice[%zu]` must be a non-empty string", i);
        choices[i] = json_object_get_string(c);
    }
    size_t len = 0;                             /* the key: the list as compact JSON */
    const char *key = json_object_to_json_string_length(list, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE,
                                                        &len);
    if (key && cached(rd, st, CC_CHOICE, key, len))
        return 0;
    char err[400];
    if (cdfa_choice(choices, n, &st->dfa, err, sizeof err) != 0)
        return bad(rd, "guided_choice", "`guided_choice`: %s", err);
    if (key)
        keep(rd, st, CC_CHOICE, key, len);
    return 0;
}

static int from_response_format(struct reading *rd, struct structured *st, json_object *rf)
{
    json_object *t = json_field(rf, "type");
    const char *type = t && json_object_is_type(t, json_type_string) ? json_object_get_string(t) : "";
    if (strcmp(type, "text") == 0)
        return 0;
    if (strcmp(type, "json_object") == 0)
        return from_json_object(rd, st, "response_format", "`response_format`: ");
    if (strcmp(type, "json_schema") == 0) {
        json_object *js = json_field(rf, "json_schema"), *schema = js ? json_field(js, "schema") : NULL;
        if (!js || !json_object_is_type(js, json_type_object))
            return bad(rd, "response_format", "`response_format.json_schema` must be an object with a `schema`");
        if (!schema)                            /* no schema: any JSON object */
            return from_json_object(rd, st, "response_format", "`response_format`: ");
        return from_schema(rd, st, schema, "response_format", "`response_format.json_schema.schema`");
    }
    return bad(rd, "response_format",
               "`response_format` type must be \"text\", \"json_object\" or \"json_schema\" (got \"%.40s\")", type);
}

/* The function entry of tools[i] ({"type":"function","function":{"name",...}}), or NULL after bad(). */
static json_object *tool_function(struct reading *rd, json_object *tools, size_t i, const char **name)
{
    json_object *t = json_object_array_get_idx(tools, i), *type = json_field(t, "type"), *fn = json_field(t, "function");
    json_object *nm = fn ? json_field(fn, "name") : NULL;
    if (!json_object_is_type(t, json_type_object) || !type || !json_object_is_type(type, json_type_string) ||
        strcmp(json_object_get_string(type), "function") != 0 || !fn || !json_object_is_type(fn, json_type_object) ||
        !nm || !json_object_is_type(nm, json_type_string)) {
        bad(rd, "tools", "`tools[%zu]` must be {\"type\": \"function\", \"function\": {\"name\": ..., \"parameters\": ...}}",
            i);
        return NULL;
    }
    *name = json_object_get_string(nm);
    return fn;
}

/* tools with tool_choice "required" or a named function (see enum structured_tool). */
static int from_tools(struct reading *rd, struct structured *st, json_object *tools, json_object *choice)
{
    size_t n = json_object_array_length(tools);
    const char *name = NULL;
    if (json_object_is_type(choice, json_type_object)) {
        json_object *fn = json_field(choice, "function"), *nm = fn ? json_field(fn, "name") : NULL;
        if (!nm || !json_object_is_type(nm, json_type_string))
            return bad(rd, "tool_choice", "`tool_choice` must be \"none\", \"auto\", \"required\" or "
                       "{\"type\": \"function\", \"function\": {\"name\": ...}}");
        for (size_t i = 0; i < n; i++) {
            const char *ni;
            json_object *f = tool_function(rd, tools, i, &ni);
            if (!f)
                return -1;
            if (strcmp(ni, json_object_get_string(nm)) != 0)
                continue;
            snprintf(st->name, sizeof st->name, "%s", ni);
            st->tool = ST_TOOL_NAMED;
            json_object *params = json_field(f, "parameters");
            if (!params)
                return from_json_object(rd, st, "tools", "");
            char what[300];
            snprintf(what, sizeof what, "the parameters of tool \"%.100s\"", ni);
            return from_schema(rd, st, params, "tools", what);
        }
        return bad(rd, "tool_choice", "`tool_choice` names the function \"%.100s\", which `tools` does not list",
                   json_object_get_string(nm));
    }
    /* required: {"name": one of them, "arguments": its parameters}, $defs of all the tools merged */
    json_object *any = json_object_new_array(), *defs = json_object_new_object(),
                *wrap = json_object_new_object();
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        json_object *f = tool_function(rd, tools, i, &name);
        if (!f) {
            rc = -1;
            break;
        }
        json_object *params = json_field(f, "parameters"), *d;
        if (params && json_object_is_type(params, json_type_object) &&
            (json_object_object_get_ex(params, "$defs", &d) || json_object_object_get_ex(params, "definitions", &d)) &&
            json_object_is_type(d, json_type_object)) {
            json_object_object_foreach(d, k, v)
                if (!json_object_object_get_ex(defs, k, NULL))
                    json_object_object_add(defs, k, json_object_get(v));
        }
        json_object *one = json_object_new_object(), *props = json_object_new_object(),
                    *cn = json_object_new_object(), *req = json_object_new_array();
        json_object_object_add(cn, "const", json_object_new_string(name));
        json_object_object_add(props, "name", cn);
        if (params)
            json_object_object_add(props, "arguments", json_object_get(params));
        else
            json_object_object_add(props, "arguments", json_tokener_parse("{\"type\":\"object\"}"));
        json_object_array_add(req, json_object_new_string("name"));
        json_object_array_add(req, json_object_new_string("arguments"));
        json_object_object_add(one, "type", json_object_new_string("object"));
        json_object_object_add(one, "properties", props);
        json_object_object_add(one, "required", req);
        json_object_object_add(one, "additionalProperties", json_object_new_boolean(0));
        json_object_array_add(any, one);
    }
    if (rc == 0) {
        json_object_object_add(wrap, "anyOf", json_object_get(any));
        if (json_object_object_length(defs) > 0)
            json_object_object_add(wrap, "$defs", json_object_get(defs));
        rc = from_schema(rd, st, wrap, "tools", "`tools` (their parameters)");
        st->tool = ST_TOOL_REQUIRED;
    }
    json_object_put(any);
    json_object_put(defs);
    json_object_put(wrap);
    return rc;
}

int structured_read(json_object *body, enum client_kind kind, struct ccache *cache, struct structured *st, int *status,
                    const char **param, char *err, size_t errlen)
{
    memset(st, 0, sizeof *st);
    struct reading rd = {status, param, err, errlen, kind == CK_TGI ? 422 : 400, cache};
    *param = NULL;
    if (kind == CK_TGI) {
        json_object *g = json_field(json_field(body, "parameters"), "grammar");
        if (!g)
            return 0;
        json_object *t = json_field(g, "type"), *v = json_field(g, "value");
        const char *type = t && json_object_is_type(t, json_type_string) ? json_object_get_string(t) : "";
        if (!v)
            return bad(&rd, NULL, "`grammar` must be {\"type\": \"json\" or \"regex\", \"value\": ...}");
        if (strcmp(type, "json") == 0 || strcmp(type, "json_object") == 0) {
            if (json_object_is_type(v, json_type_string)) {     /* a schema sent as text */
                json_object *parsed = NULL;
                if (schema_text(&rd, v, NULL, "`grammar.value`", &parsed) < 0)
                    return -1;
                int rc = from_schema(&rd, st, parsed, NULL, "`grammar.value`");
                json_object_put(parsed);
                return rc;
            }
            return from_schema(&rd, st, v, NULL, "`grammar.value`");
        }
        if (strcmp(type, "regex") == 0) {
            int rc = from_regex(&rd, st, v, "grammar.value");
            *param = NULL;
            return rc;
        }
        return bad(&rd, NULL, "`grammar` type must be \"json\" or \"regex\" (got \"%.40s\")", type);
    }
    if (kind != CK_CHAT && kind != CK_COMPLETION)
        return 0;
    static const char *const keys[] = {"response_format", "guided_choice", "guided_regex", "guided_json", "tools"};
    const char *given = NULL;
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        json_object *v = json_field(body, keys[i]);
        if (!v)
            continue;
        if (i == 0) {                           /* {"type": "text"} asks for nothing */
            json_object *t = json_field(v, "type");
            if (json_object_is_type(v, json_type_object) && t && json_object_is_type(t, json_type_string) &&
                strcmp(json_object_get_string(t), "text") == 0)
                continue;
        }
        if (i == 4) {                           /* tools only count when a tool must be called */
            json_object *c = json_field(body, "tool_choice");
            if (!json_object_is_type(v, json_type_array))
                return bad(&rd, "tools", "`tools` must be an array");
            if (json_object_array_length(v) == 0 ||
                (c && json_object_is_type(c, json_type_string) && strcmp(json_object_get_string(c), "none") == 0))
                continue;
        }
        if (given)
            return bad(&rd, keys[i], "`%s` and `%s` cannot be used together: one constraint per request", given, keys[i]);
        given = keys[i];
    }
    json_object *tc = json_field(body, "tool_choice");
    if (tc && !json_object_is_type(tc, json_type_string) && !json_object_is_type(tc, json_type_object))
        return bad(&rd, "tool_choice", "`tool_choice` must be a string or an object");
    if (!given) {
        if (tc && !(json_object_is_type(tc, json_type_string) && strcmp(json_object_get_string(tc), "none") == 0))
            return bad(&rd, "tool_choice", "`tool_choice` other than \"none\" is not supported without `tools` to call");
        return 0;
    }
    json_object *v = json_field(body, given);
    if (strcmp(given, "response_format") == 0) {
        if (!json_object_is_type(v, json_type_object))
            return bad(&rd, "response_format", "`response_format` must be an object");
        return from_response_format(&rd, st, v);
    }
    if (strcmp(given, "guided_choice") == 0)
        return from_choice(&rd, st, v);
    if (strcmp(given, "guided_regex") == 0)
        return from_regex(&rd, st, v, "guided_regex");
    if (strcmp(given, "guided_json") == 0) {
        if (json_object_is_type(v, json_type_string)) {
            json_object *parsed = NULL;
            if (schema_text(&rd, v, "guided_json", "`guided_json`", &parsed) < 0)
                return -1;
            int rc = from_schema(&rd, st, parsed, "guided_json", "`guided_json`");
            json_object_put(parsed);
            return rc;
        }
        return from_schema(&rd, st, v, "guided_json", "`guided_json`");
    }
    /* tools */
    if (kind != CK_CHAT)
        return bad(&rd, "tools", "`tools` are for chat completions");
    if (!tc || (json_object_is_type(tc, json_type_string) && strcmp(json_object_get_string(tc), "auto") == 0))
        return bad(&rd, "tool_choice",
                   "`tool_choice` \"auto\" (the default with `tools`) is not supported by local GPT-2 models: they "
                   "have no tool-call template to decide with; send \"required\" or a named function");
    if (json_object_is_type(tc, json_type_string) && strcmp(json_object_get_string(tc), "required") != 0)
        return bad(&rd, "tool_choice", "`tool_choice` must be \"none\", \"auto\", \"required\" or a named function");
    return from_tools(&rd, st, v, tc);
}

void structured_free(struct structured *st)
{
    cdfa_put(st->dfa);
    memset(st, 0, sizeof *st);
}

json_object *structured_tool_calls(const struct structured *st, const char *text, size_t len, bool for_delta)
{
    json_tokener *tk = json_tokener_new();
    json_object *v = tk ? json_tokener_parse_ex(tk, text, (int)len) : NULL;
    bool whole = v && json_tokener_get_error(tk) == json_tokener_success;
    json_tokener_free(tk);
    const char *name = st->name;
    json_object *args = v;
    if (whole && st->tool == ST_TOOL_REQUIRED) {
        json_object *nm = json_field(v, "name");
        args = json_field(v, "arguments");
        name = nm && json_object_is_type(nm, json_type_string) ? json_object_get_string(nm) : NULL;
    }
    if (!whole || !name || !args) {
        json_object_put(v);
        return NULL;
    }
    char id[32] = "call_";
    util_random_hex(id + 5, 12);
    json_object *call = json_object_new_object(), *fn = json_object_new_object(), *list = json_object_new_array();
    if (for_delta)
        json_object_object_add(call, "index", json_object_new_int(0));
    json_object_object_add(call, "id", json_object_new_string(id));
    json_object_object_add(call, "type", json_object_new_string("function"));
    json_object_object_add(fn, "name", json_object_new_string(name));
    if (st->tool == ST_TOOL_NAMED)              /* the arguments as the model wrote them */
        json_object_object_add(fn, "arguments", json_object_new_string_len(text, (int)len));
    else
        json_object_object_add(fn, "arguments", json_object_new_string(json_object_to_json_string_ext(
                                                    args, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)));
    json_object_object_add(call, "function", fn);
    json_object_array_add(list, call);
    json_object_put(v);
    return list;
}
