/* test_request.c -- the request layer (target, CGI variables, headers, query, body limits, JSON) and the
 * response helpers (error shapes, header safety, SSE framing, disconnects), through real libfcgi. */
#include "config.h"
#include "harness.h"
#include "response.h"
#include "sse.h"
#include "tap.h"

#include <json-c/json.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- handlers used as probes ---- */

/* Reports what the request layer made of the request. */
static int h_describe(struct req *r)
{
    char q[64] = "";
    req_query(r, "q", q, sizeof q);
    const char *ua = req_header(r, "User-Agent");
    json_object *o = json_object_new_object();
    json_object_object_add(o, "path", json_object_new_string(r->path));
    json_object_object_add(o, "query", json_object_new_string(r->query));
    json_object_object_add(o, "q", json_object_new_string(q));
    json_object_object_add(o, "method", json_object_new_string(r->method_name));
    json_object_object_add(o, "id", json_object_new_string(r->id));
    json_object_object_add(o, "ua", ua ? json_object_new_string(ua) : NULL);
    int rc = resp_json(r, 200, o);
    json_object_put(o);
    return rc;
}

/* req_query's answer for "q" into 8 bytes: "rc:value". */
static int h_query(struct req *r)
{
    char q[8] = "junk", out[32];
    int rc = req_query(r, "q", q, sizeof q);
    snprintf(out, sizeof out, "%d:%s", rc, q);
    return resp_send(r, 200, "text/plain", out, strlen(out));
}

static int h_body(struct req *r)
{
    if (req_read_body(r) < 0)
        return 0;
    char n[32];
    snprintf(n, sizeof n, "%zu", r->body_len);
    return resp_send(r, 200, "text/plain", n, strlen(n));
}

static int h_json(struct req *r)
{
    json_object *o = req_json_body(r);
    if (!o)
        return 0;
    int rc = resp_json(r, 200, o);
    json_object_put(o);
    return rc;
}

static int h_openai_error(struct req *r)
{
    return resp_error_openai(r, 429, NULL, "messages", "rate_limit_exceeded", "slow down: %d", 7);
}

static int h_tgi_error(struct req *r)
{
    return resp_error_tgi(r, 422, NULL, "Input validation error: %s", "inputs must not be empty");
}

static int h_injection(struct req *r)
{
    resp_header(r, "X-Good", "fine");
    resp_header(r, "X-Bad", "a\r\nSet-Cookie: evil=1");
    return resp_send(r, 200, "text/plain", "x", 1);
}

static int h_sse(struct req *r)
{
    struct sse s;
    if (sse_begin(&s, r, 100000) < 0)
        return -1;
    if (sse_event(&s, NULL, "one", 3) < 0 || sse_event(&s, "tick", "two\nlines", 9) < 0)
        return -1;
    if (sse_event(&s, "bad\nname", "a\rb\r\nc\r", 7) < 0)     /* CR, CRLF, trailing CR; a bad name */
        return -1;
    json_object *o = json_object_new_object();
    json_object_object_add(o, "k", json_object_new_string("v/w"));
    int rc = sse_json(&s, NULL, o);
    json_object_put(o);
    if (rc < 0)
        return -1;
    s.last_write_ns -= s.keepalive_ns + 1;      /* pretend the stream idled */
    if (sse_keepalive(&s) < 0)
        return -1;
    return sse_keepalive(&s);                   /* not due again: writes nothing */
}

/* Flushes (headers, then events) until one fails; returns which one did
 * (1 = the headers), 0 when none failed. */
static int h_sse_until_gone(struct req *r)
{
    struct sse s;
    if (sse_begin(&s, r, 100000) < 0)
        return 1;
    for (int i = 2; i <= 1000; i++)
        if (sse_event(&s, NULL, "x", 1) < 0)
            return i;
    return 0;
}

/* ---- helpers ---- */

static struct harness H;

static void run(const char *const *params, const char *body, size_t len, int (*fn)(struct req *),
                struct fcgi_answer *a)
{
    if (harness_run(&H, params, body, len, fn, 0, a) < 0) {
        memset(a, 0, sizeof *a);
        a->head = strdup("");
        a->body = strdup("");
    }
}

static const char *field(json_object *o, const char *k)
{
    json_object *v;
    return json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : NULL;
}

static void check_target(void)
{
    char p[64];
    const char *q;
    ok(req_split_target("/a/b?x=1", "", p, sizeof p, &q) == 0 && !strcmp(p, "/a/b") && !strcmp(q, "x=1"),
       "target: path and query split");
    ok(req_split_target("/a#frag", "", p, sizeof p, &q) == 0 && !strcmp(p, "/a") && !q, "target: fragment dropped");
    ok(req_split_target("http://host:8080/v1/x?y", "", p, sizeof p, &q) == 0 && !strcmp(p, "/v1/x"),
       "target: absolute-form accepted");
    ok(req_split_target("http://host", "", p, sizeof p, &q) == 0 && !strcmp(p, "/"), "target: bare authority is /");
    is_int(req_split_target("*", "", p, sizeof p, &q), 400, "target: asterisk-form refused");
    is_int(req_split_target("/a\x01", "", p, sizeof p, &q), 400, "target: control characters refused");
    is_int(req_split_target("/0123456789012345678901234567890123456789012345678901234567890123", "", p, sizeof p, &q),
           414, "target: too long");
    ok(req_split_target("/llm/v1/models", "/llm", p, sizeof p, &q) == 0 && !strcmp(p, "/v1/models"), "prefix removed");
    ok(req_split_target("/llm", "/llm", p, sizeof p, &q) == 0 && !strcmp(p, "/"), "the prefix alone is /");
    ok(req_path_dialect("/v1/models") == DIALECT_OPENAI && req_path_dialect("/v1") == DIALECT_OPENAI &&
       req_path_dialect("/v1?x") == DIALECT_OPENAI, "dialect: /v1 and under it are OpenAI's");
    ok(req_path_dialect("/v1x") == DIALECT_TGI && req_path_dialect("/generate") == DIALECT_TGI &&
       req_path_dialect("/") == DIALECT_TGI && req_path_dialect("-") == DIALECT_TGI, "dialect: TGI's elsewhere");
    ok(req_split_target("/llm?a=b", "/llm", p, sizeof p, &q) == 0 && !strcmp(p, "/") && !strcmp(q, "a=b"),
       "the prefix with a query");
    is_int(req_split_target("/llmx/a", "/llm", p, sizeof p, &q), 404, "a longer first segment is outside the prefix");
    is_int(req_split_target("/v1/models/a%00b", "", p, sizeof p, &q), 400, "target: %%00 in the path is malformed (400)");
    is_int(req_split_target("/in%00fo?x", "", p, sizeof p, &q), 400, "  also where no route has a parameter");
    is_int(req_split_target("/a%zz", "", p, sizeof p, &q), 400, "target: a bad %%-escape is malformed");
    is_int(req_split_target("/a%4?b=1", "", p, sizeof p, &q), 400, "target: a cut %%-escape is malformed");
    ok(req_split_target("/v1/models/a%2Fb%41%0a?m=%00", "", p, sizeof p, &q) == 0 && !strcmp(p, "/v1/models/a%2Fb%41%0a"),
       "target: well-formed escapes pass, still encoded (the query is req_query's)");
}

/* json_check_request on one body: 0 or -1 and the message. */
static int check_body(const char *body, char *err, size_t errlen)
{
    char perr[200];
    json_object *o = json_parse_strict(body, strlen(body), perr, sizeof perr);
    if (!o) {
        snprintf(err, errlen, "parse: %s", perr);
        return -2;
    }
    static const char *const texts[] = {"prompt", "stop", NULL};
    int rc = json_check_request(body, strlen(body), o, texts, err, errlen);
    json_object_put(o);
    return rc;
}

static void check_request_json(void)
{
    char err[200];
    static const struct { const char *body, *why; } good[] = {
        {"{\"a\": 1, \"b\": {\"a\": 2}, \"c\": [{\"a\": 3}, {\"a\": 4}]}", "the same key in different objects"},
        {"{\"a\": \"x: y, \\\"b\\\": z\"}", "':' and escaped quotes inside a string"},
        {"{\"a\": \"\\ud83d\\ude00 \xf0\x9f\x98\x80 \xc3\xa9\"}", "a surrogate pair, 4- and 2-byte UTF-8"},
        {"{\"a\": -9223372036854775807, \"b\": 9223372036854775807, \"c\": 1.5e-400}", "int64 limits, underflow"},
        {"{\"\": 0}", "an empty key"},
        {"{\"prompt\": \"a\\u0000b\", \"stop\": [\"\\u0000\", \"x\"]}", "\\u0000 in texts (strings and lists)"},
        {"{\"n\": {\"prompt\": \"\\u0000\"}}", "\\u0000 in a nested text"},
    };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        is_int(check_body(good[i].body, err, sizeof err), 0, "request JSON accepted: %s", good[i].why);
    static const struct { const char *body, *msg; } bad[] = {
        {"{\"a\": 1, \"a\": 2}", "same key twice"},
        {"{\"x\": [{\"b\": 1, \"c\": 2, \"b\": 3}]}", "same key twice"},
        {"{\"a\": NaN}", "finite"},
        {"{\"a\": -Infinity}", "finite"},
        {"{\"a\": 1e400}", "finite"},
        {"{\"a\": 99999999999999999999}", "out of range"},
        {"{\"a\": -9223372036854775809}", "out of range"},
        {"{\"a\": \"x\\u0000y\"}", "`a` may not contain \\u0000"},
        {"{\"model\": [\"x\\u0000\"]}", "`model` may not contain \\u0000"},
        {"{\"prompt\": {\"model\": \"\\u0000\"}}", "`model` may not contain"},
        {"{\"a\\u0000b\": 1}", "key may not contain"},
        {"{\"prompt\\u0000\": \"\\u0000\"}", "key may not contain"},
        {"{\"a\": \"\\ud800\"}", "second half"},
        {"{\"a\": \"\\udc00x\"}", "first half"},
        {"{\"a\": \"\\ud800\\u0041\"}", "second half"},
        {"{\"a\": \"\xc0\xaf\"}", "UTF-8"},
        {"{\"a\": \"\xed\xa0\x80\"}", "UTF-8"},
        {"{\"a\": \"\xf4\x90\x80\x80\"}", "UTF-8"},
        {"{\"a\": \"\xe0\x80\xaf\"}", "UTF-8"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = '\0';
        int rc = check_body(bad[i].body, err, sizeof err);
        ok(rc != 0 && (rc == -2 || strstr(err, bad[i].msg)), "request JSON refused (%s): %s", bad[i].msg, err);
    }
}

/* What upstreams answer: the same checks, but u64 integers (TGI's seeds) and \u0000 pass. */
static void check_upstream_json(void)
{
    static const struct { const char *body; int rc; const char *msg, *why; } cases[] = {
        {"{\"seed\": 18446744073709551614}", 0, NULL, "2^64-2: a TGI seed"},
        {"{\"seed\": 13418395476843003924, \"n\": -9223372036854775807}", 0, NULL, "u64 and int64 limits"},
        {"{\"text\": \"x\\u0000y\"}", 0, NULL, "\\u0000 in generated text"},
        {"{\"te\\u0000xt\": \"x\"}", -1, "key may not", "\\u0000 in a key"},
        {"{\"details\": {\"generated_tokens\": 18446744073709551615}}", -1, "`generated_tokens`",
         "2^64-1: where json-c saturates, named"},
        {"{\"tokens\": [{\"id\": 99999999999999999999999}]}", -1, "out of range", "beyond 2^64 (json-c saturates)"},
        {"{\"a\": -9223372036854775809}", -1, "out of range", "below int64"},
        {"{\"a\": 1, \"a\": 2}", -1, "same key twice", "a key twice"},
        {"{\"logprob\": -1e400}", -1, "finite", "-inf"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char err[200] = "", perr[200];
        json_object *o = json_parse_strict(cases[i].body, strlen(cases[i].body), perr, sizeof perr);
        int rc = o ? json_check_upstream(cases[i].body, strlen(cases[i].body), o, err, sizeof err) : -2;
        ok(rc == cases[i].rc && (!cases[i].msg || strstr(err, cases[i].msg)), "upstream JSON %s: %s (%s)",
           cases[i].rc ? "refused" : "accepted", cases[i].why, err);
        json_object_put(o);
    }
    char err[200];
    json_object *o = json_parse_strict("{\"a\": 18446744073709551614}", 27, err, sizeof err);
    ok(o && json_check_request("{\"a\": 18446744073709551614}", 27, o, NULL, err, sizeof err) == -1,
       "a client's request still stops at int64");
    json_object_put(o);
}

static void check_json_parser(void)
{
    char err[200];
    json_object *o = json_parse_strict("{\"a\": [1, 2]}", 13, err, sizeof err);
    ok(o && json_object_is_type(o, json_type_object), "strict parser: a valid object");
    json_object_put(o);
    o = json_parse_strict("{\"a\": 1,}", 9, err, sizeof err);
    ok(!o, "strict parser: trailing comma refused");
    has_str(err, "invalid JSON at line 1, column", "  with the location");
    o = json_parse_strict("{\n  \"a\": 1\n  \"b\": 2\n}", 21, err, sizeof err);
    has_str(err, "line 3, column", "strict parser: error on the third line located there");
    json_object_put(o);
    o = json_parse_strict("{\"a\":1} x", 9, err, sizeof err);
    ok(!o, "strict parser: data after the value refused");
    has_str(err, "line 1, column 9", "  located at the junk");
    o = json_parse_strict("{\"a\":", 5, err, sizeof err);
    ok(!o, "strict parser: truncated input refused");
    has_str(err, "ends in the middle of a value", "  and says so");
    o = json_parse_strict("  \n ", 4, err, sizeof err);
    ok(!o, "strict parser: blank input refused");
    has_str(err, "empty", "  as empty");
    o = json_parse_strict("{\"a\":\"\xff\xfe\"}", 9, err, sizeof err);
    ok(!o, "strict parser: invalid UTF-8 refused");
    o = json_parse_strict("{\"a\": 'b'}", 10, err, sizeof err);
    ok(!o, "strict parser: single-quoted strings refused");
    o = json_parse_strict("{\"a\":1}  \r\n", 11, err, sizeof err);
    ok(o != NULL, "strict parser: whitespace after the value is fine");
    json_object_put(o);
    char deep[300];
    memset(deep, '[', 100);
    memset(deep + 100, ']', 100);
    o = json_parse_strict(deep, 200, err, sizeof err);
    ok(!o, "strict parser: nesting deeper than 64 refused");
    o = json_parse_strict("{\"a\":\"x\\u0000y\"}", 16, err, sizeof err);
    ok(o != NULL, "strict parser: escaped NUL inside a string is valid JSON");
    json_object_put(o);
    o = json_parse_strict("{\"a\":1}\0{", 9, err, sizeof err);
    ok(!o, "strict parser: a raw NUL after the value is junk");
    o = json_parse_strict("null\0\0\t", 7, err, sizeof err);
    ok(!o && err[0], "strict parser: NUL bytes after a value are junk, not whitespace (found by fuzzing)");
}

/* cp's UTF-8 (cp >= 0x10000) in out[4]. */
static void utf8_4(uint32_t cp, char *out)
{
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
}

/* Does `s` parse (as a request: json_parse_strict) to the string of UTF-8 `want` (wlen bytes)? */
static bool parses_to(const char *s, const char *want, size_t wlen)
{
    char err[200];
    json_object *o = json_parse_strict(s, strlen(s), err, sizeof err);
    bool same = o && json_object_is_type(o, json_type_string) && (size_t)json_object_get_string_len(o) == wlen &&
                memcmp(json_object_get_string(o), want, wlen) == 0;
    json_object_put(o);
    return same;
}

/* Escaped surrogate pairs: json-c 0.16 makes U+xD800-U+xDFFF of every supplementary plane U+FFFD. */
static void check_surrogate_pairs(void)
{
    /* every code point of each plane, as an array of escaped pairs */
    size_t cap = 65536 * 15 + 2;
    char *body = malloc(cap), err[200], want[4];
    for (uint32_t plane = 1; plane <= 16; plane++) {
        size_t n = 0, bad = 0;
        body[n++] = '[';
        for (uint32_t cp = plane << 16; cp < (plane + 1) << 16; cp++) {
            uint32_t v = cp - 0x10000;
            n += (size_t)snprintf(body + n, cap - n, "%s\"\\u%04x\\u%04x\"", cp == plane << 16 ? "" : ",",
                                  0xd800 + (v >> 10), 0xdc00 + (v & 0x3ff));
        }
        body[n++] = ']';
        json_object *o = json_parse_strict(body, n, err, sizeof err);
        for (uint32_t k = 0; o && k < 65536; k++) {
            json_object *e = json_object_array_get_idx(o, k);
            utf8_4((plane << 16) + k, want);
            bad += json_object_get_string_len(e) != 4 || memcmp(json_object_get_string(e), want, 4) != 0;
        }
        ok(o && json_object_array_length(o) == 65536 && bad == 0 && json_check_upstream(body, n, o, err, sizeof err) == 0,
           "plane %u: all 65536 escaped surrogate pairs decode to their UTF-8 (%zu wrong)", plane, bad);
        json_object_put(o);
    }
    free(body);
    /* each plane's boundaries and those of the range json-c 0.16 got wrong, one by one */
    static const uint16_t low16[] = {0x0000, 0x0001, 0xd7ff, 0xd800, 0xdbff, 0xdc00, 0xdfff, 0xe000, 0xfffe, 0xffff};
    size_t bad = 0, tried = 0;
    for (uint32_t plane = 1; plane <= 16; plane++)
        for (size_t k = 0; k < sizeof low16 / sizeof *low16; k++) {
            uint32_t cp = (plane << 16) | low16[k], v = cp - 0x10000;
            char s[40];
            snprintf(s, sizeof s, "\"\\u%04X\\u%04x\"", 0xd800 + (v >> 10), 0xdc00 + (v & 0x3ff));
            utf8_4(cp, want);
            tried++;
            if (!parses_to(s, want, 4)) {
                bad++;
                tap_diag("U+%05X (%s) decoded wrongly", cp, s);
            }
        }
    ok(bad == 0, "plane boundaries: all %zu decode to their UTF-8", tried);
    ok(parses_to("\"\\udb76\\udfeb\"", "\xf3\xad\xaf\xab", 4), "\\udb76\\udfeb is U+EDBEB, not U+FFFD");
    ok(parses_to("\"\\ud899\\udc7d\"", "\xf0\xb6\x91\xbd", 4), "\\ud899\\udc7d is U+3647D");
    ok(parses_to("\"a\\ud836\\udc00\\ud836\\udc00b\"", "a\xf0\x9d\xa0\x80\xf0\x9d\xa0\x80" "b", 10),
       "two such pairs in a row, with text around them (U+1D800: Sutton SignWriting)");
    ok(parses_to("\"\\\\ud836\\udc00\"", "\\ud836\xef\xbf\xbd", 9),
       "an escaped backslash before `ud836` is no escape: left to json-c (whose lone \\udc00 is U+FFFD)");
    ok(parses_to("\"\\ud836\\udc00\\u00e9\\ud83d\\ude00\"", "\xf0\x9d\xa0\x80\xc3\xa9\xf0\x9f\x98\x80", 10),
       "followed by other escapes");
    json_object *o = json_parse_strict("{\"\\ud877\\udfff\": \"\\ud8b6\\udc00\"}", 32, err, sizeof err);
    json_object *v = o ? json_object_object_get(o, "\xf0\xad\xbf\xbf") : NULL;
    ok(v && strcmp(json_object_get_string(v), "\xf0\xbd\xa0\x80") == 0, "in an object's key (U+2DFFF) and value (U+3D800)");
    json_object_put(o);
    o = json_parse_upstream("{\"text\": \"\\udbf7\\udfff\"}", 24, err, sizeof err);
    ok(o && strcmp(json_object_get_string(json_object_object_get(o, "text")), "\xf4\x8d\xbf\xbf") == 0,
       "in an upstream answer (U+10DFFF)");
    json_object_put(o);
    /* errors are located in the text as sent, as after pairs json-c decodes well (U+1F600) */
    static const char *const broken[][2] = {
        {"[\"\\ud836\\udc00\", \"\\ud836\\udc00\" x]", "[\"\\ud83d\\ude00\", \"\\ud83d\\ude00\" x]"},
        {"[\"\\ud836\\udc00\", \"\\ud836\\udc00\"] x", "[\"\\ud83d\\ude00\", \"\\ud83d\\ude00\"] x"},
        {"[\"\\ud836\\udc00\\ud836\\udc00\", \"\\q\"]", "[\"\\ud83d\\ude00\\ud83d\\ude00\", \"\\q\"]"},
    };
    for (size_t i = 0; i < sizeof broken / sizeof *broken; i++) {
        char err2[200];
        o = json_parse_strict(broken[i][0], strlen(broken[i][0]), err, sizeof err);
        json_object *o2 = json_parse_strict(broken[i][1], strlen(broken[i][1]), err2, sizeof err2);
        ok(!o && !o2 && strcmp(err, err2) == 0 && strstr(err, "column"), "still strict after such pairs: %s", err);
    }
}

/* The tree estimate against what json-c really allocates (mallinfo2), and the bound. */
static size_t heap_used(void)
{
    struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
}

static char *repeat_body(const char *pre, const char *unit, size_t n, const char *post, size_t *len)
{
    size_t ul = strlen(unit), pl = strlen(pre), ql = strlen(post);
    char *b = malloc(pl + (ul + 1) * n + ql + 1);
    size_t p = 0;
    memcpy(b, pre, pl);
    p = pl;
    for (size_t i = 0; i < n; i++) {
        if (i)
            b[p++] = ',';
        memcpy(b + p, unit, ul);
        p += ul;
    }
    memcpy(b + p, post, ql);
    p += ql;
    b[p] = '\0';
    *len = p;
    return b;
}

static void check_tree_estimate(void)
{
    struct json_tree_cost c;
    json_tree_estimate("{\"a\": [1, 2, {\"b\": \"x,:{[\\\"\"}]}", 31, &c);
    ok(c.objects == 2 && c.arrays == 1 && c.values == 6,
       "estimate counts '{' '[' ',' ':' outside strings only, escaped quotes kept inside (%zu %zu %zu)",
       c.objects, c.arrays, c.values);
    static const struct { const char *unit, *what; bool fits; } shapes[] = {
        {"{}", "empty objects", false},
        {"[]", "empty arrays", false},
        {"{\"role\":\"user\",\"content\":\"message 000001\"}", "100,000 short chat messages", false},
        {"{\"role\":\"user\",\"content\":\"a message of a hundred bytes or so, as a chat client would send, "
         "with some words in it......\"}", "100,000 chat messages of 100 bytes", true},
        {"12345", "token ids", true},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        size_t len;
        char *b = repeat_body("{\"messages\":[", shapes[i].unit, 100000, "]}", &len);
        json_tree_estimate(b, len, &c);
        size_t before = heap_used();
        json_object *o = json_tokener_parse(b);
        size_t real = heap_used() - before;
#ifdef __SANITIZE_ADDRESS__
        real = c.bytes - len;           /* ASan's allocator does not answer mallinfo2 */
#endif
        ok(o && c.bytes >= real + len && c.bytes <= (real + len) * 2,
           "estimate of %s: %zu MB for a %zu MB tree of a %zu kB body", shapes[i].what, c.bytes >> 20,
           real >> 20, len >> 10);
        ok(json_tree_fits(&c, len) == shapes[i].fits, "  %s the bound", shapes[i].fits ? "within" : "beyond");
        json_object_put(o);
        free(b);
    }
    json_tree_estimate("{\"a\":[{},{},{}]}", 16, &c);
    ok(json_tree_fits(&c, 16), "a small body always fits (the slack)");
    size_t n = 40000;
    char *deep = malloc(2 * n);
    memset(deep, '[', n);
    memset(deep + n, ']', n);
    json_tree_estimate(deep, 2 * n, &c);
    ok(c.too_deep && json_tree_fits(&c, 2 * n),
       "nesting past JSON_MAX_DEPTH is left to the parser, which refuses it before any large tree");
    free(deep);

    /* upstream answers take the same bound, then the strict parse and the upstream checks */
    char err[200];
    size_t items = 2000000, blen = 0;
    char *big = malloc(items * 3 + 3);
    big[blen++] = '[';
    for (size_t i = 0; i < items; i++, blen += 3)
        memcpy(big + blen, i + 1 < items ? "{}," : "{} ", 3);
    big[blen++] = ']';
    json_object *o = json_parse_upstream(big, blen, err, sizeof err);
    ok(!o && strstr(err, "too many values"), "an upstream answer of 2M empty objects is refused unparsed (%s)", err);
    json_object_put(o);
    free(big);
    o = json_parse_upstream("{\"seed\": 18446744073709551614}", 30, err, sizeof err);
    ok(o != NULL, "an upstream's u64 seed parses (%s)", o ? "" : err);
    json_object_put(o);
    o = json_parse_upstream("{\"n\": 1, \"n\": 2}", 16, err, sizeof err);
    ok(!o && err[0], "an upstream answer with a key twice is refused (%s)", err);
    json_object_put(o);
    o = json_parse_upstream("null ", 5, err, sizeof err);
    ok(!o && !err[0], "null is NULL with no message (%s)", err);
}

/* A JSON text inside a request's string (a schema sent as text): the bodies' bound and checks. */
static void check_embedded_json(void)
{
    char err[200];
    json_object *o = NULL;
    ok(json_parse_embedded("{\"type\": \"string\"}", 18, &o, err, sizeof err) == 0 && o &&
       json_object_is_type(o, json_type_object), "a schema as text parses");
    json_object_put(o);
    ok(json_parse_embedded("{\"a\": 1, \"a\": 2}", 16, &o, err, sizeof err) == JSON_EMBEDDED_INVALID && !o &&
       err[0], "a key twice is refused as a body's is (%s)", err);
    ok(json_parse_embedded("{\"a\": \"x\\u0000\"}", 16, &o, err, sizeof err) == JSON_EMBEDDED_INVALID && !o,
       "a NUL escape is refused: no member of it is a text (%s)", err);
    ok(json_parse_embedded("null ", 5, &o, err, sizeof err) == JSON_EMBEDDED_INVALID && !o && !err[0],
       "null is invalid with no message (%s)", err);
    size_t items = 2000000, n = 0;
    char *big = malloc(items * 3 + 3);
    big[n++] = '[';
    for (size_t i = 0; i < items; i++, n += 3)
        memcpy(big + n, i + 1 < items ? "{}," : "{} ", 3);
    big[n++] = ']';
    ok(json_parse_embedded(big, n, &o, err, sizeof err) == JSON_EMBEDDED_TOO_LARGE && !o,
       "2M empty objects are refused unparsed");
    free(big);
}

int main(void)
{
    check_target();
    check_tree_estimate();
    check_json_parser();
    check_request_json();
    check_upstream_json();
    check_surrogate_pairs();
    check_embedded_json();
    if (harness_init(&H, "[server]\naccess_log = off\nmax_body = 1k\n") < 0)
        return 1;
    struct fcgi_answer a;
    json_object *j;
    char hv[256];

    /* nginx-style variables */
    const char *nginx[] = {"REQUEST_METHOD=GET", "REQUEST_URI=/v1/x%20y?q=a%20b+c&z", "QUERY_STRING=q=a%20b+c&z",
                           "DOCUMENT_URI=/v1/x y", "SCRIPT_NAME=/v1/x y", "HTTP_USER_AGENT=test/1",
                           "HTTP_X_REQUEST_ID=abc-123.X_y:z", NULL};
    run(nginx, NULL, 0, h_describe, &a);
    j = json_tokener_parse(a.body);
    is_str(field(j, "path"), "/v1/x%20y", "nginx: path from REQUEST_URI, still encoded");
    is_str(field(j, "query"), "q=a%20b+c&z", "nginx: QUERY_STRING");
    is_str(field(j, "q"), "a b c", "query parameter decoded (%%20 and +)");
    is_str(field(j, "ua"), "test/1", "header lookup via HTTP_ variables");
    is_str(field(j, "id"), "abc-123.X_y:z", "a well-formed X-Request-Id is kept");
    is_str(fcgi_answer_header(&a, "X-Request-Id", hv, sizeof hv), "abc-123.X_y:z", "  and echoed");
    json_object_put(j);
    fcgi_answer_free(&a);

    /* req_query tells absent from malformed: a caller must not read a bad value as none */
    static const struct { const char *qs, *want, *why; } queries[] = {
        {"QUERY_STRING=a=1", "0:", "absent"},
        {"QUERY_STRING=q=", "1:", "present and empty"},
        {"QUERY_STRING=q", "1:", "present without '='"},
        {"QUERY_STRING=x=1&q=a%2Bb+c", "1:a+b c", "decoded"},
        {"QUERY_STRING=q=1234567", "1:1234567", "as long as fits"},
        {"QUERY_STRING=q=12345678", "-1:", "too long: malformed, not absent"},
        {"QUERY_STRING=q=%41%42%43%44%45%46%47", "1:ABCDEFG", "long escaped, short decoded: fits"},
        {"QUERY_STRING=q=a%00b", "-1:", "%00: malformed"},
        {"QUERY_STRING=q=a%zzb", "-1:", "a bad escape: malformed"},
        {"QUERY_STRING=q=a%4", "-1:", "a cut escape: malformed"},
    };
    for (size_t i = 0; i < sizeof queries / sizeof *queries; i++) {
        const char *env[] = {"REQUEST_METHOD=GET", "REQUEST_URI=/q", queries[i].qs, NULL};
        run(env, NULL, 0, h_query, &a);
        is_str(a.body, queries[i].want, "req_query: %s (%s)", queries[i].why, queries[i].qs);
        fcgi_answer_free(&a);
    }

    /* Apache mod_proxy_fcgi style: REQUEST_URI plus its own SCRIPT_* values */
    const char *apache[] = {"REQUEST_METHOD=POST", "REQUEST_URI=/v1/models?a=1", "QUERY_STRING=a=1",
                            "SCRIPT_NAME=/v1/models", "SCRIPT_FILENAME=proxy:fcgi://llmcgi/v1/models",
                            "HTTP_X_REQUEST_ID=bad id with spaces", NULL};
    run(apache, NULL, 0, h_describe, &a);
    j = json_tokener_parse(a.body);
    is_str(field(j, "path"), "/v1/models", "apache: path from REQUEST_URI");
    is_str(field(j, "method"), "POST", "apache: method");
    ok(field(j, "id") && strlen(field(j, "id")) == 32, "a malformed X-Request-Id is replaced by a generated one");
    json_object_put(j);
    fcgi_answer_free(&a);

    /* plain CGI style: no REQUEST_URI */
    const char *cgi[] = {"REQUEST_METHOD=GET", "SCRIPT_NAME=/app", "PATH_INFO=/health", NULL};
    run(cgi, NULL, 0, h_describe, &a);
    j = json_tokener_parse(a.body);
    is_str(field(j, "path"), "/app/health", "CGI: SCRIPT_NAME + PATH_INFO");
    json_object_put(j);
    fcgi_answer_free(&a);
    const char *docuri[] = {"REQUEST_METHOD=GET", "DOCUMENT_URI=/only/doc", NULL};
    run(docuri, NULL, 0, h_describe, &a);
    j = json_tokener_parse(a.body);
    is_str(field(j, "path"), "/only/doc", "nginx without REQUEST_URI: DOCUMENT_URI");
    is_str(field(j, "query"), "", "no query");
    json_object_put(j);
    fcgi_answer_free(&a);

    /* bodies */
    const char *post100[] = {"REQUEST_METHOD=POST", "REQUEST_URI=/b", "CONTENT_LENGTH=100", NULL};
    char body[4096];
    memset(body, 'x', sizeof body);
    run(post100, body, 100, h_body, &a);
    ok(a.status == 200 && strcmp(a.body, "100") == 0, "a 100-byte body is read whole");
    fcgi_answer_free(&a);
    const char *nolen[] = {"REQUEST_METHOD=POST", "REQUEST_URI=/b", NULL};
    run(nolen, body, 700, h_body, &a);
    ok(a.status == 200 && strcmp(a.body, "700") == 0, "without Content-Length the body is read to its end");
    fcgi_answer_free(&a);
    const char *big[] = {"REQUEST_METHOD=POST", "REQUEST_URI=/b", "CONTENT_LENGTH=2048", NULL};
    run(big, body, 2048, h_body, &a);
    j = json_tokener_parse(a.body);
    is_int(a.status, 413, "a body over max_body: 413");
    has_str(field(j, "error"), "request body of 2048 bytes exceeds the limit of 1024 bytes (max_body)", "  saying the numbers");
    json_object_put(j);
    fcgi_answer_free(&a);
    run(nolen, body, 2048, h_body, &a);
    is_int(a.status, 413, "an unsized body over max_body: 413");
    fcgi_answer_free(&a);
    const char *short_cl[] = {"REQUEST_METHOD=POST", "REQUEST_URI=/b", "CONTENT_LENGTH=500", NULL};
    run(short_cl, body, 100, h_body, &a);
    j = json_tokener_parse(a.body);
    is_int(a.status, 400, "a body shorter than Content-Length: 400");
    has_str(field(j, "error"), "ended after 100 of 500 bytes", "  saying how short");
    json_object_put(j);
    fcgi_answer_free(&a);
    const char *bad_cl[] = {"REQUEST_METHOD=POST", "REQUEST_URI=/b", "CONTENT_LENGTH=12abc", NULL};
    run(bad_cl, body, 5, h_body, &a);
    is_int(a.status, 400, "a non-numeric Content-Length: 400");
    fcgi_answer_free(&a);

    /* JSON bodies */
    const char *json_ok[] = {"REQUEST_METHOD=POST", "REQUEST_URI=/j", "CONTENT_TYPE=application/json; charset=UTF-8", NULL};
    run(json_ok, "{\"x\": [1, \"\\u00e9\"]}", 20, h_json, &a);
    j = json_tokener_parse(a.body);
    ok(a.status == 200 && json_object_object_get_ex(j, "x", NULL), "a JSON object body is parsed");
    json_object_put(j);
    fcgi_answer_free(&a);
    const char *json_plus[] = {"REQUEST_METHOD=POST", "REQUEST_URI=/j", "CONTENT_TYPE=application/merge-patch+json", NULL};
    run(json_plus, "{}", 2, h_json, &a);
    is_int(a.status, 200, "application/*+json is JSON");
    fcgi_answer_free(&a);
    const char *no_ct[] = {"REQUEST_METHOD=POST", "REQUEST_URI=/j", NULL};
    run(no_ct, "{}", 2, h_json, &a);
    j = json_tokener_parse(a.body);
    is_int(a.status, 415, "no Content-Type: 415");
    has_str(field(j, "error"), "Content-Type: application/json (got none)", "  telling which header to send");
    json_object_put(j);
    fcgi_answer_free(&a);
    const char *form[] = {"REQUEST_METHOD=POST", "REQUEST_URI=/j", "CONTENT_TYPE=application/x-www-form-urlencoded", NULL};
    run(form, "{}", 2, h_json, &a);
    is_int(a.status, 415, "a form Content-Type: 415");
    fcgi_answer_free(&a);
    const char *latin[] = {"REQUEST_METHOD=POST", "REQUEST_URI=/j", "CONTENT_TYPE=application/json; charset=latin1", NULL};
    run(latin, "{}", 2, h_json, &a);
    is_int(a.status, 415, "JSON in another charset: 415");
    fcgi_answer_free(&a);
    run(json_ok, "{\"x\": }", 7, h_json, &a);
    j = json_tokener_parse(a.body);
    is_int(a.status, 400, "malformed JSON: 400");
    has_str(field(j, "error"), "invalid JSON at line 1, column 7", "  with line and column");
    json_object_put(j);
    fcgi_answer_free(&a);
    run(json_ok, "[1,2]", 5, h_json, &a);
    j = json_tokener_parse(a.body);
    is_int(a.status, 400, "a JSON array where an object is needed: 400");
    has_str(field(j, "error"), "must be a JSON object, got array", "  saying what came");
    json_object_put(j);
    fcgi_answer_free(&a);
    run(json_ok, "", 0, h_json, &a);
    is_int(a.status, 400, "an empty JSON body: 400");
    fcgi_answer_free(&a);
    run(json_ok, "null", 4, h_json, &a);
    is_int(a.status, 400, "a JSON null body: 400");
    fcgi_answer_free(&a);

    /* error shapes and header safety */
    const char *get[] = {"REQUEST_METHOD=GET", "REQUEST_URI=/e", NULL};
    run(get, NULL, 0, h_openai_error, &a);
    j = json_tokener_parse(a.body);
    json_object *e = json_object_object_get(j, "error");
    is_int(a.status, 429, "OpenAI error status");
    is_str(field(e, "message"), "slow down: 7", "OpenAI error message");
    is_str(field(e, "type"), "rate_limit_error", "OpenAI error default type for 429");
    is_str(field(e, "param"), "messages", "OpenAI error param");
    is_str(field(e, "code"), "rate_limit_exceeded", "OpenAI error code");
    has_str(a.head, "Status: 429 Too Many Requests", "status line with its reason phrase");
    json_object_put(j);
    fcgi_answer_free(&a);
    run(get, NULL, 0, h_tgi_error, &a);
    j = json_tokener_parse(a.body);
    is_int(a.status, 422, "TGI error status");
    is_str(field(j, "error"), "Input validation error: inputs must not be empty", "TGI error message");
    is_str(field(j, "error_type"), "validation", "TGI error_type for 422");
    json_object_put(j);
    fcgi_answer_free(&a);
    run(get, NULL, 0, h_injection, &a);
    is_str(fcgi_answer_header(&a, "X-Good", hv, sizeof hv), "fine", "a plain header is sent");
    ok(!strstr(a.head, "X-Bad") && !strstr(a.head, "Set-Cookie"), "a header value with CR/LF is refused");
    fcgi_answer_free(&a);

    /* SSE */
    run(get, NULL, 0, h_sse, &a);
    is_str(fcgi_answer_header(&a, "Content-Type", hv, sizeof hv), "text/event-stream; charset=utf-8", "SSE content type");
    is_str(fcgi_answer_header(&a, "X-Accel-Buffering", hv, sizeof hv), "no", "SSE asks nginx not to buffer");
    is_str(fcgi_answer_header(&a, "Cache-Control", hv, sizeof hv), "no-cache", "SSE is not cached");
    ok(!fcgi_answer_header(&a, "Content-Length", hv, sizeof hv), "SSE has no Content-Length");
    is_str(a.body, "data: one\n\nevent: tick\ndata: two\ndata: lines\n\n"
                   "data: a\ndata: b\ndata: c\ndata: \n\n"
                   "data: {\"k\":\"v/w\"}\n\n: keep-alive\n\n",
           "SSE framing: events, lines split at LF, CR and CRLF, an event name with a line break dropped, "
           "JSON, one keep-alive when due");
    ok(harness_last_rc == 0, "the stream reported no disconnect");
    fcgi_answer_free(&a);
    harness_run(&H, get, NULL, 0, h_sse_until_gone, 1, &a);
    ok(harness_last_rc >= 1 && harness_last_rc <= 2 && harness_last_gone,
       "a client that hung up is reported at the first flush (flush %d)", harness_last_rc);
    fcgi_answer_free(&a);

    harness_free(&H);
    return tap_done();
}
