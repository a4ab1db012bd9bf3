/* json_strict.c -- strict JSON parsing (RFC 8259) for request bodies and upstream answers: the checks json-c leaves out, and the bound on the tree's memory. */
#include "config.h"
#include "json_strict.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 1-based line and column (in bytes) of offset `off` in buf. */
static void locate(const char *buf, size_t off, int *line, int *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off; i++) {
        if (buf[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

/* JSON's four whitespace bytes (not NUL, which strchr() would also find). */
static bool json_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* The value of the four hex digits at p (before end), or -1. */
static int hex4(const char *p, const char *end)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int d = p + i < end ? util_hexval(p[i]) : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* json-c 0.16 (Debian 12; fixed in 0.19 by its commit 7974657) decodes an
 * escaped surrogate pair to its code point cp and then asks whether cp is
 * itself a surrogate with (cp & 0xFC00), blind to the bits above 0xFFFF: the
 * 32768 code points U+xD800-U+xDFFF of each supplementary plane x (the pairs
 * \uD836-\uD837, \uD876-\uD877, ..., \uDBF6-\uDBF7 with any low half:
 * Sutton SignWriting, CJK Extension F, ...) come out as U+FFFD, or join the
 * next escape. Raw UTF-8 has no such trouble, so json_parse_strict hands
 * json-c a copy of the text with those pairs (only those: 12 bytes each)
 * written as their 4 UTF-8 bytes. */
static bool jsonc_misdecodes(uint32_t cp)
{
    return cp >= 0x10000 && (cp & 0xF800) == 0xD800;
}

/* Where a scan of JSON text for such pairs stands: at byte i, in a string or not. */
struct pair_scan {
    size_t i;
    bool in_str;
};

/* Moves s to just after the next escaped pair in a string of buf[0..len)
 * that json-c mis-decodes; returns false at the end of the text, else true
 * with the pair's offset (its first backslash) in *at and its code point in *cp.
 * Any text: an escape that is not a well-formed pair is skipped, for
 * json_parse_strict and scan_text to refuse. */
static bool next_misdecoded_pair(const char *buf, size_t len, struct pair_scan *s, size_t *at, uint32_t *cp)
{
    const char *end = buf + len;
    while (s->i < len) {
        char c = buf[s->i];
        if (!s->in_str) {
            s->in_str = c == '"';
            s->i++;
        } else if (c == '"') {
            s->in_str = false;
            s->i++;
        } else if (c != '\\' || s->i + 1 >= len) {
            s->i++;
        } else if (buf[s->i + 1] != 'u') {
            s->i += 2;                          /* \\ and \" alike: the escaped byte cannot end the string */
        } else {
            const char *p = buf + s->i;
            int hi = hex4(p + 2, end), lo = -1;
            if (hi >= 0xd800 && hi <= 0xdbff && p + 8 <= end && p[6] == '\\' && p[7] == 'u')
                lo = hex4(p + 8, end);
            if (lo < 0xdc00 || lo > 0xdfff) {
                s->i += 2;
                continue;
            }
            uint32_t v = 0x10000 + (((uint32_t)hi & 0x3ff) << 10) + ((uint32_t)lo & 0x3ff);
            s->i += 12;
            if (jsonc_misdecodes(v)) {
                *at = (size_t)(p - buf);
                *cp = v;
                return true;
            }
        }
    }
    return false;
}

/* The text json-c is given for buf[0..len): a new copy (caller frees) with
 * the mis-decoded pairs as UTF-8, or NULL when it has none (*fixed is then
 * buf), with *flen its length; -1 when out of memory. */
static int fix_pairs(const char *buf, size_t len, char **fixed, size_t *flen)
{
    struct pair_scan s = {0, false};
    size_t at, from = 0, n = 0;
    uint32_t cp;
    char *out = NULL;
    *fixed = NULL;
    *flen = len;
    while (next_misdecoded_pair(buf, len, &s, &at, &cp)) {
        if (!out && !(out = malloc(len)))
            return -1;
        memcpy(out + n, buf + from, at - from);
        n += at - from;
        out[n++] = (char)(0xf0 | (cp >> 18));
        out[n++] = (char)(0x80 | ((cp >> 12) & 0x3f));
        out[n++] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[n++] = (char)(0x80 | (cp & 0x3f));
        from = s.i;
    }
    if (!out)
        return 0;
    memcpy(out + n, buf + from, len - from);
    *fixed = out;
    *flen = n + len - from;
    return 0;
}

/* The offset in buf of offset `off` in its fixed copy (each pair before it
 * took 8 bytes fewer there), so that an error is located in what was sent. */
static size_t unfix_offset(const char *buf, size_t len, size_t off)
{
    struct pair_scan s = {0, false};
    size_t at, shrunk = 0;
    uint32_t cp;
    while (next_misdecoded_pair(buf, len, &s, &at, &cp) && at - shrunk < off) {
        if (off < at - shrunk + 4)
            return at;                          /* within the pair's 4 bytes: the pair */
        shrunk += 8;
    }
    return off + shrunk;
}

json_object *json_parse_strict(const char *buf, size_t len, char *err, size_t errlen)
{
    int line, col;
    err[0] = '\0';
    size_t start = 0;
    while (start < len && json_space(buf[start]))
        start++;
    if (start == len) {
        snprintf(err, errlen, "the body is empty (expected a JSON value)");
        return NULL;
    }
    if (len > (size_t)INT32_MAX) {
        snprintf(err, errlen, "the body is too large to parse");
        return NULL;
    }
    json_tokener *tok = json_tokener_new_ex(JSON_MAX_DEPTH);
    if (!tok) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    char *fixed;
    size_t flen;
    if (fix_pairs(buf, len, &fixed, &flen) < 0) {
        json_tokener_free(tok);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    json_object *obj = json_tokener_parse_ex(tok, fixed ? fixed : buf, (int)flen);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (fixed) {
        free(fixed);
        end = end < flen ? unfix_offset(buf, len, end) : len;
    }
    if (jerr == json_tokener_continue) {
        locate(buf, len, &line, &col);
        snprintf(err, errlen, "invalid JSON at line %d, column %d: the input ends in the middle of a value", line, col);
        return NULL;
    }
    if (jerr != json_tokener_success) {
        /* parse_end is the offending byte's offset */
        locate(buf, end, &line, &col);
        snprintf(err, errlen, "invalid JSON at line %d, column %d: %s", line, col, json_tokener_error_desc(jerr));
        json_object_put(obj);
        return NULL;
    }
    for (size_t i = end; i < len; i++) {
        if (!json_space(buf[i])) {
            locate(buf, i, &line, &col);
            snprintf(err, errlen, "invalid JSON at line %d, column %d: unexpected data after the JSON value", line, col);
            json_object_put(obj);
            return NULL;
        }
    }
    return obj;
}

/* Counts the name separators (':' outside strings): one per object member
 * in valid JSON. Refuses single quotes outside strings, unpaired surrogate
 * escapes inside them, and \u0000 in an object's key (json-c keeps keys as
 * C strings: "model\u0000x" would read as "model"). */
static int scan_text(const char *buf, size_t len, size_t *colons, char *err, size_t errlen)
{
    const char *p = buf, *end = buf + len;
    bool in_str = false, nul = false;       /* nul: the last string held \u0000 */
    *colons = 0;
    for (; p < end; p++) {
        if (!in_str) {
            if (*p == '"') {
                in_str = true;
                nul = false;
            } else if (*p == ':') {
                (*colons)++;
                if (nul) {
                    snprintf(err, errlen, "invalid JSON: an object's key may not contain \\u0000");
                    return -1;
                }
            }
            else if (*p == '\'') {
                snprintf(err, errlen, "invalid JSON: strings and keys take double quotes, not single ones");
                return -1;
            }
            continue;
        }
        if ((unsigned char)*p >= 0x80) {
            size_t n = util_utf8_seq((const unsigned char *)p, (const unsigned char *)end);
            if (!n) {
                snprintf(err, errlen, "invalid JSON: the body is not well-formed UTF-8 at byte %zu", (size_t)(p - buf));
                return -1;
            }
            p += n - 1;
        } else if (*p == '"') {
            in_str = false;
        } else if (*p == '\\' && p + 1 < end) {
            p++;
            if (*p != 'u')
                continue;
            int u = hex4(p + 1, end);
            p += 4;
            nul |= u == 0;
            if (u >= 0xdc00 && u <= 0xdfff) {
                snprintf(err, errlen, "invalid JSON: \\u%04x is half of a surrogate pair without its first half", u);
                return -1;
            }
            if (u >= 0xd800 && u <= 0xdbff) {
                int lo = p + 2 < end && p[1] == '\\' && p[2] == 'u' ? hex4(p + 3, end) : -1;
                if (lo < 0xdc00 || lo > 0xdfff) {
                    snprintf(err, errlen, "invalid JSON: \\u%04x is half of a surrogate pair without its second half", u);
                    return -1;
                }
                p += 6;
            }
        }
    }
    return 0;
}

/* Is `key` one of the NULL-terminated text_keys (NULL: none)? */
static bool is_text_key(const char *key, const char *const *text_keys)
{
    for (size_t i = 0; key && text_keys && text_keys[i]; i++)
        if (strcmp(key, text_keys[i]) == 0)
            return true;
    return false;
}

/* Checks the values of the tree and adds up its object members. `key` is
 * the member name o came under (an array's elements come under the
 * array's); strings under text_keys may hold \u0000; `upstream` relaxes
 * the checks for upstream answers (json_check_upstream). */
static int walk_values(json_object *o, const char *key, const char *const *text_keys, bool upstream, size_t *members,
                       char *err, size_t errlen)
{
    switch (json_object_get_type(o)) {
    case json_type_object: {
        *members += (size_t)json_object_object_length(o);
        json_object_object_foreach(o, k, v) {
            if (walk_values(v, k, text_keys, upstream, members, err, errlen) < 0)
                return -1;
        }
        return 0;
    }
    case json_type_array:
        for (size_t i = 0; i < json_object_array_length(o); i++)
            if (walk_values(json_object_array_get_idx(o, i), key, text_keys, upstream, members, err, errlen) < 0)
                return -1;
        return 0;
    case json_type_double:
        if (!isfinite(json_object_get_double(o))) {
            snprintf(err, errlen, "invalid JSON: numbers must be finite (NaN, Infinity and numbers beyond "
                     "1.8e308 are not accepted)%s%.64s%s", key ? ", at `" : "", key ? key : "", key ? "`" : "");
            return -1;
        }
        return 0;
    case json_type_int:
        /* json-c saturates what it cannot hold: INT64_MIN and UINT64_MAX may stand for anything beyond */
        if (json_object_get_int64(o) == INT64_MIN ||
            json_object_get_uint64(o) > (upstream ? UINT64_MAX - 1 : (uint64_t)INT64_MAX)) {
            snprintf(err, errlen, "invalid JSON: an integer is out of range (%s)%s%.64s%s",
                     upstream ? "outside -9223372036854775807 to 18446744073709551614" : "beyond +/-9223372036854775807",
                     key ? ", at `" : "", key ? key : "", key ? "`" : "");
            return -1;
        }
        return 0;
    case json_type_string:
        if (!upstream && !is_text_key(key, text_keys) &&
            memchr(json_object_get_string(o), '\0', (size_t)json_object_get_string_len(o))) {
            snprintf(err, errlen, "%s%.64s%s may not contain \\u0000: it names something (only texts such as "
                     "a prompt, a message's content or a stop sequence may)", key ? "`" : "a top-level string",
                     key ? key : "", key ? "`" : "");
            return -1;
        }
        return 0;
    default:
        return 0;
    }
}

static int json_check(const char *buf, size_t len, json_object *obj, const char *const *text_keys, bool upstream,
                      char *err, size_t errlen)
{
    size_t colons = 0, members = 0;
    if (scan_text(buf, len, &colons, err, errlen) < 0 ||
        walk_values(obj, NULL, text_keys, upstream, &members, err, errlen) < 0)
        return -1;
    if (colons != members) {
        snprintf(err, errlen, "invalid JSON: an object has the same key twice");
        return -1;
    }
    return 0;
}

int json_check_request(const char *buf, size_t len, json_object *obj, const char *const *text_keys, char *err,
                       size_t errlen)
{
    return json_check(buf, len, obj, text_keys, false, err, errlen);
}

int json_check_upstream(const char *buf, size_t len, json_object *obj, char *err, size_t errlen)
{
    return json_check(buf, len, obj, NULL, true, err, errlen);
}

void json_tree_estimate(const char *buf, size_t len, struct json_tree_cost *c)
{
    size_t objects = 0, arrays = 0, values = 1;     /* 1: the top-level value */
    long depth = 0;
    bool in_str = false;
    c->too_deep = false;
    for (size_t i = 0; i < len; i++) {
        char ch = buf[i];
        if (in_str) {
            if (ch == '\\')
                i++;                                /* the escaped byte cannot end the string */
            else if (ch == '"')
                in_str = false;
            continue;
        }
        switch (ch) {
        case '"': in_str = true; break;
        case '}': case ']': depth--; break;
        case '{': objects++; break;
        case '[': {                             /* and its first element, if any */
            size_t j = i + 1;
            while (j < len && json_space(buf[j]))
                j++;
            arrays++;
            values += j < len && buf[j] != ']';
            break;
        }
        case ',': case ':': values++; break;
        default: break;
        }
        if ((ch == '{' || ch == '[') && ++depth > JSON_MAX_DEPTH) {
            c->too_deep = true;                 /* the parser stops here, before any large tree */
            break;
        }
    }
    c->objects = objects;
    c->arrays = arrays;
    c->values = values;
    /* saturating, for 32-bit size_t */
    size_t b = len;
    size_t parts[3][2] = {{objects, JSON_TREE_OBJECT}, {arrays, JSON_TREE_ARRAY}, {values, JSON_TREE_VALUE}};
    for (size_t k = 0; k < 3; k++)
        b = parts[k][0] > (SIZE_MAX - b) / parts[k][1] ? SIZE_MAX : b + parts[k][0] * parts[k][1];
    c->bytes = b;
}

bool json_tree_fits(const struct json_tree_cost *c, size_t len)
{
    if (c->too_deep)
        return true;                            /* json_parse_strict refuses it, saying why */
    if (len > (SIZE_MAX - JSON_TREE_SLACK) / JSON_TREE_FACTOR)
        return false;
    return c->bytes <= len * JSON_TREE_FACTOR + JSON_TREE_SLACK;
}

json_object *json_parse_upstream(const char *buf, size_t len, char *err, size_t errlen)
{
    struct json_tree_cost cost;
    json_tree_estimate(buf, len, &cost);
    if (!json_tree_fits(&cost, len)) {
        snprintf(err, errlen, "%zu bytes of JSON holding too many values: parsed, it would take about %zu MB",
                 len, cost.bytes >> 20);
        return NULL;
    }
    json_object *obj = json_parse_strict(buf, len, err, errlen);
    if (obj && json_check_upstream(buf, len, obj, err, errlen) < 0) {
        json_object_put(obj);
        return NULL;
    }
    return obj;
}

int json_parse_embedded(const char *buf, size_t len, json_object **out, char *err, size_t errlen)
{
    *out = NULL;
    if (errlen)
        err[0] = '\0';
    struct json_tree_cost cost;
    json_tree_estimate(buf, len, &cost);
    if (!json_tree_fits(&cost, len))
        return JSON_EMBEDDED_TOO_LARGE;
    json_object *o = json_parse_strict(buf, len, err, errlen);
    if (o && json_check_request(buf, len, o, NULL, err, errlen) < 0) {
        json_object_put(o);
        o = NULL;
    }
    if (!o)
        return JSON_EMBEDDED_INVALID;
    *out = o;
    return 0;
}
