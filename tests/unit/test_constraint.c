/* test_constraint.c -- constrained decoding: the regex subset and its refusals, JSON Schema and JSON edge cases as DFAs, distances to acceptance, and the vocabulary trie's masks against a token-by-token reference on GPT-2's tokenizer. */
#include "config.h"
#include "constraint.h"
#include "constraint_cache.h"
#include "generation.h"
#include "json_schema.h"
#include "tap.h"
#include "tokenizer.h"
#include "vocab_trie.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <unistd.h>

/* s with control bytes shown as \xHH, for one-line test names (static buffer). */
static const char *shown(const char *s)
{
    static char buf[4][200];
    static int k;
    char *b = buf[k++ & 3];
    size_t n = 0;
    for (; *s && n + 5 < sizeof buf[0]; s++)
        n += (unsigned char)*s < 0x20 ? (size_t)snprintf(b + n, 5, "\\x%02x", (unsigned char)*s) : (b[n] = *s, 1);
    b[n] = '\0';
    return b;
}

static bool re_match(const char *re, const char *s)
{
    struct cdfa *d = NULL;
    char err[300];
    if (cdfa_regex(re, strlen(re), &d, err, sizeof err) != 0) {
        tap_diag("%s: %s", re, err);
        return false;
    }
    bool m = cdfa_matches(d, s, strlen(s));
    cdfa_put(d);
    return m;
}

static void test_regex(void)
{
    static const struct {
        const char *re, *s;
        bool want;
    } cases[] = {
        {"abc", "abc", true}, {"abc", "ab", false}, {"abc", "abcd", false},
        {"a|b|cd", "cd", true}, {"a|b|cd", "c", false},
        {"(ab)+", "ababab", true}, {"(ab)+", "", false}, {"(ab)*", "", true},
        {"a?b", "b", true}, {"a?b", "aab", false},
        {"a{2,3}", "aa", true}, {"a{2,3}", "aaaa", false}, {"a{2}", "aa", true}, {"a{2,}", "aaaaaaa", true},
        {"a{,2}", "", true}, {"a{,2}", "aaa", false}, {"x{", "x{", true},
        {"[a-c]+", "abcabc", true}, {"[a-c]+", "abd", false}, {"[^a-c]", "d", true}, {"[^a-c]", "b", false},
        {"[^a]", "\xc3\xa9", true}, {"[^a]", "\xc3", false}, {"[]a]", "]", true}, {"[a-]", "-", true},
        {"\\d{3}-\\d{4}", "555-1234", true}, {"\\d", "x", false}, {"\\w+", "a_1Z", true}, {"\\s", "\t", true},
        {"\\D", "a", true}, {"\\D", "5", false}, {"[\\d.]+", "3.14", true},
        {".", "\n", false}, {".", "\xe2\x82\xac", true}, {".", "\xed\xa0\x80", false}, {".", "\xc0\xaf", false},
        {"..", "\xe2\x82\xac", false},
        {"\\.\\*\\(\\)", ".*()", true}, {"\\x41\\u00e9", "A\xc3\xa9", true}, {"\\n", "\n", true},
        {"^ab$", "ab", true}, {"(?:ab|cd)e", "cde", true}, {"(?P<year>\\d{4})", "2024", true},
        {"(?<y>a)", "a", true}, {"a+?b", "aab", true},
        {"\xc3\xa9+", "\xc3\xa9\xc3\xa9", true}, {"[\xc3\xa9x]", "\xc3\xa9", true},
        {"", "", true}, {"()", "", true}, {"a|", "", true},
        {"(a|b)*c(d|e){0,2}", "ababcde", true}, {"(a|b)*c(d|e){0,2}", "abcdee", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        ok(re_match(cases[i].re, cases[i].s) == cases[i].want, "/%s/ %s \"%s\"", shown(cases[i].re),
           cases[i].want ? "matches" : "does not match", shown(cases[i].s));

    static const struct {
        const char *re, *says;
    } bad[] = {
        {"\\bword", "\\b"}, {"a(?=b)", "lookaround"}, {"(a)\\1", "backreferences"}, {"(?i)a", "inline flags"},
        {"a**", "multiple repeat"}, {"*a", "nothing to repeat"}, {"[\xc3\xa9-\xc3\xbc]", "non-ASCII"},
        {"a^b", "`^`"}, {"a$b", "`$`"}, {"(ab", "`)`"}, {"ab)", "unbalanced"}, {"[ab", "unterminated"},
        {"a{5,2}", "min > max"}, {"a{1001}", "over 1000"}, {"\\q", "\\q"}, {"[^\xc3\xa9]", "negated"},
        {"\\p{L}", "\\p"}, {"a(?<!b)", "lookaround"}, {"\\", "backslash"}, {"\\x4", "hex"},
        {"[b-a]", "range"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct cdfa *d = NULL;
        char err[300] = "";
        int rc = cdfa_regex(bad[i].re, strlen(bad[i].re), &d, err, sizeof err);
        ok(rc != 0 && !d && strstr(err, bad[i].says), "/%s/ refused naming %s: %s", bad[i].re, bad[i].says, err);
    }

    struct cdfa *d = NULL;
    char err[300];
    ok(cdfa_regex("abc|de", 6, &d, err, sizeof err) == 0, "abc|de compiles");
    is_int(cdfa_dist(d, cdfa_start(d)), 2, "the shortest completion from the start is 2 bytes (de)");
    is_int(cdfa_dist(d, cdfa_walk(d, cdfa_start(d), "a", 1)), 2, "after a: bc");
    is_int(cdfa_step(d, cdfa_start(d), 'x'), -1, "x leads nowhere");
    is_int(cdfa_max_dist(d), 2, "the largest distance to acceptance is 2");
    cdfa_put(d);
    ok(cdfa_regex("[^\\x00-\\x7f]{0}b", 16, &d, err, sizeof err) == 0 && cdfa_matches(d, "b", 1), "x{0} is empty");
    cdfa_put(d);
    const char *choices[] = {"yes", "no", "maybe so"};
    ok(cdfa_choice(choices, 3, &d, err, sizeof err) == 0, "a choice compiles");
    ok(cdfa_matches(d, "maybe so", 8) && cdfa_matches(d, "no", 2) && !cdfa_matches(d, "maybe", 5), "choices match whole");
    cdfa_put(d);
    ok(cdfa_regex("(a{1000}){1000}", 15, &d, err, sizeof err) != 0 && strstr(err, "too complex"),
       "a million-state regex is refused as too complex: %s", err);
}

/* ------------------------------------------------------------------ JSON */

static struct cdfa *schema_dfa(const char *schema, char *err, size_t errlen)
{
    json_object *s = json_tokener_parse(schema);
    struct cdfa *d = NULL;
    if (!s) {
        snprintf(err, errlen, "bad test JSON");
        return NULL;
    }
    if (cdfa_json_schema(s, &d, err, errlen) != 0)
        d = NULL;
    json_object_put(s);
    return d;
}

static void test_json(void)
{
    static const struct {
        const char *schema, *text;
        bool want;
    } cases[] = {
        {"{\"type\":\"string\"}", "\"a\\\"b\\\\c\\n\"", true},
        {"{\"type\":\"string\"}", "\"\xe2\x82\xac \xf0\x9f\x98\x80\"", true},
        {"{\"type\":\"string\"}", "\"a\nb\"", false},
        {"{\"type\":\"string\"}", "\"\\u0001\"", true},
        {"{\"type\":\"string\",\"maxLength\":2}", "\"\\n\xc3\xa9\"", true},
        {"{\"type\":\"string\",\"maxLength\":2}", "\"abc\"", false},
        {"{\"type\":\"string\",\"minLength\":2}", "\"a\"", false},
        {"{\"type\":\"string\",\"pattern\":\"^[a-z]+\\\\d$\"}", "\"ab1\"", true},
        {"{\"type\":\"string\",\"pattern\":\"a\\\"b\"}", "\"a\\\"b\"", true},
        {"{\"type\":\"string\",\"pattern\":\"a\\\"b\"}", "\"a\"b\"", false},
        {"{\"type\":\"number\"}", "-1.5e+10", true}, {"{\"type\":\"number\"}", "0.25E3", true},
        {"{\"type\":\"number\"}", "01", false}, {"{\"type\":\"number\"}", "1.", false},
        {"{\"type\":\"number\"}", "-0", true}, {"{\"type\":\"integer\"}", "1.0", false},
        {"{\"type\":\"integer\"}", "-42", true},
        {"{\"type\":[\"integer\",\"null\"]}", "null", true},
        {"{\"type\":\"boolean\"}", "true", true}, {"{\"type\":\"boolean\"}", "True", false},
        {"{\"type\":\"array\"}", "[]", true}, {"{\"type\":\"array\"}", "[ ]", true},
        {"{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":2,\"maxItems\":3}", "[1, 2,3]", true},
        {"{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":2,\"maxItems\":3}", "[1]", false},
        {"{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":2,\"maxItems\":3}", "[1,2,3,4]", false},
        {"{\"type\":\"array\",\"items\":{\"type\":\"integer\"}}", "[1,]", false},
        {"{\"type\":\"object\"}", "{}", true},
        {"{\"type\":\"object\"}", "{\"a\":{\"b\":[1,{\"c\":null}]}}", true},
        {"{\"type\":\"object\"}", "{\"a\":{\"b\":[[[1]]]}}", false},    /* deeper than JSON_ANY_DEPTH */
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"string\"}},"
         "\"required\":[\"b\"]}", "{\"a\": 1, \"b\": \"x\"}", true},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"string\"}},"
         "\"required\":[\"b\"]}", "{\"b\":\"x\"}", true},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"string\"}},"
         "\"required\":[\"b\"]}", "{\"a\":1}", false},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"string\"}},"
         "\"required\":[\"b\"]}", "{\"b\":\"x\",\"a\":1}", false},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"integer\"}}}", "{}", true},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"integer\"}}}", "{\"b\":2}", true},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"integer\"}}}", "{,\"b\":2}", false},
        {"{\"type\":\"object\",\"additionalProperties\":false}", "{}", true},
        {"{\"type\":\"object\",\"additionalProperties\":false}", "{\"a\":1}", false},
        {"{\"enum\":[\"red\",1,null,{\"a\":[true]}]}", "{\"a\":[true]}", true},
        {"{\"enum\":[\"red\",1,null]}", "\"blue\"", false},
        {"{\"const\":\"a/b\"}", "\"a/b\"", true},
        {"{\"anyOf\":[{\"type\":\"integer\"},{\"type\":\"string\",\"maxLength\":1}]}", "\"z\"", true},
        {"{\"oneOf\":[{\"type\":\"integer\"},{\"type\":\"null\"}]}", "null", true},
        /* oneOf with exclusive branches: types, const/enum values, a required tag (also through $ref) */
        {"{\"oneOf\":[{\"type\":[\"integer\",\"boolean\"]},{\"type\":\"string\"},{\"const\":null}]}", "true", true},
        {"{\"oneOf\":[{\"enum\":[\"a\",\"b\"]},{\"enum\":[\"c\",2]}]}", "2", true},
        {"{\"$defs\":{\"A\":{\"type\":\"object\",\"properties\":{\"kind\":{\"const\":\"a\"},\"x\":{\"type\":\"integer\"}},"
         "\"required\":[\"kind\"]}},\"oneOf\":[{\"$ref\":\"#/$defs/A\"},{\"type\":\"object\",\"properties\":{\"kind\":"
         "{\"enum\":[\"b\",\"c\"]},\"x\":{\"type\":\"string\"}},\"required\":[\"kind\",\"x\"]}]}",
         "{\"kind\":\"b\",\"x\":\"s\"}", true},
        {"{\"oneOf\":[{\"anyOf\":[{\"type\":\"null\"},{\"type\":\"integer\"}]},{\"type\":\"string\"}]}", "\"s\"", true},
        {"{\"$defs\":{\"P\":{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"number\"}},\"required\":[\"x\"]}},"
         "\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/P\"}}", "[{\"x\":1},{\"x\":2.5}]", true},
        {"{\"type\":\"array\",\"items\":{\"type\":\"array\",\"items\":{\"type\":\"array\",\"items\":{\"type\":\"array\","
         "\"items\":{\"type\":\"array\",\"items\":{\"type\":\"integer\"}}}}}}", "[[[[[1]]]]]", true},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"}},\"title\":\"T\",\"description\":\"d\"}",
         "{\"a\":\"\"}", true},
        {"true", "[1,\"x\"]", true},
        /* pattern with minLength/maxLength: the intersection, lengths in characters, escapes counted as one */
        {"{\"type\":\"string\",\"pattern\":\"[a-z]+\",\"minLength\":2,\"maxLength\":4}", "\"ab\"", true},
        {"{\"type\":\"string\",\"pattern\":\"[a-z]+\",\"minLength\":2,\"maxLength\":4}", "\"abcd\"", true},
        {"{\"type\":\"string\",\"pattern\":\"[a-z]+\",\"minLength\":2,\"maxLength\":4}", "\"a\"", false},
        {"{\"type\":\"string\",\"pattern\":\"[a-z]+\",\"minLength\":2,\"maxLength\":4}", "\"abcde\"", false},
        {"{\"type\":\"string\",\"pattern\":\"[a-z]+\",\"minLength\":2,\"maxLength\":4}", "\"ab1\"", false},
        {"{\"type\":\"string\",\"pattern\":\"[\\\"a\\n]*\",\"minLength\":3}", "\"\\\"a\\n\"", true},
        {"{\"type\":\"string\",\"pattern\":\"[\\\"a\\n]*\",\"minLength\":3}", "\"\\\"a\"", false},
        {"{\"type\":\"string\",\"pattern\":\".+\",\"maxLength\":2}", "\"\xc3\xa9\xe2\x82\xac\"", true},
        {"{\"type\":\"string\",\"pattern\":\".+\",\"maxLength\":2}", "\"abc\"", false},
        {"{\"type\":\"string\",\"pattern\":\"\\\\d{3,}\",\"maxLength\":4}", "\"1234\"", true},
        {"{\"type\":\"string\",\"pattern\":\"\\\\d{3,}\",\"maxLength\":4}", "\"12\"", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char err[300] = "";
        struct cdfa *d = schema_dfa(cases[i].schema, err, sizeof err);
        ok(d && cdfa_matches(d, cases[i].text, strlen(cases[i].text)) == cases[i].want, "%s %s %s %s",
           cases[i].schema, cases[i].want ? "takes" : "refuses", shown(cases[i].text), err);
        cdfa_put(d);
    }
    static const struct {
        const char *schema, *says;
    } bad[] = {
        {"{\"type\":\"string\",\"format\":\"date\"}", "`format` is not supported"},
        {"{\"type\":\"integer\",\"minimum\":0}", "`minimum` is not supported"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"number\",\"multipleOf\":2}}}",
         "`multipleOf` is not supported (at /properties/a)"},
        {"{\"allOf\":[{}]}", "`allOf`"}, {"{\"not\":{}}", "`not`"}, {"{\"type\":\"date\"}", "not a JSON Schema type"},
        {"{\"$defs\":{\"N\":{\"type\":\"object\",\"properties\":{\"n\":{\"$ref\":\"#/$defs/N\"}}}},\"$ref\":\"#/$defs/N\"}",
         "recursive"},
        {"{\"$ref\":\"#/$defs/missing\"}", "names no definition"}, {"{\"$ref\":\"http://x/y\"}", "not supported"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{}},\"required\":[\"b\"]}", "\"b\""},
        {"{\"type\":\"object\",\"additionalProperties\":{\"type\":\"string\"}}", "`additionalProperties`"},
        {"{\"type\":\"string\",\"pattern\":\"(?=a)\"}", "lookaround"}, {"false", "allows nothing"},
        {"{\"type\":\"array\",\"minItems\":3,\"maxItems\":1}", "`minItems` is over"},
        {"{\"type\":\"array\",\"uniqueItems\":true}", "`uniqueItems`"},
        {"{\"type\":\"string\",\"maxLength\":5000}", "over 1000"},
        {"{\"type\":\"string\",\"pattern\":\"[a-z]{5}\",\"maxLength\":3}", "no string both matches it and has 0 to 3"},
        /* oneOf whose branches may validate one value: refused, naming them */
        {"{\"oneOf\":[{\"type\":\"integer\"},{\"type\":\"number\"}]}", "`oneOf` branches 0 and 1 may both match"},
        {"{\"oneOf\":[{\"type\":\"null\"},{\"type\":\"string\"},{\"type\":\"string\",\"maxLength\":3}]}",
         "branches 1 and 2"},
        {"{\"oneOf\":[{\"enum\":[1,\"a\"]},{\"enum\":[1.0]}]}", "branches 0 and 1"},
        {"{\"oneOf\":[{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}},\"required\":[\"a\"]},"
         "{\"type\":\"object\",\"properties\":{\"b\":{\"type\":\"integer\"}},\"required\":[\"b\"]}]}", "may both match"},
        {"{\"oneOf\":[{\"type\":\"object\",\"properties\":{\"t\":{\"const\":\"x\"}},\"required\":[\"t\"]},"
         "{\"type\":\"object\",\"properties\":{\"t\":{\"const\":\"y\"}}}]}", "may both match"},
        {"{\"oneOf\":[{\"properties\":{\"a\":{}}},{\"type\":\"string\"}]}", "may both match"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char err[300] = "";
        struct cdfa *d = schema_dfa(bad[i].schema, err, sizeof err);
        ok(!d && strstr(err, bad[i].says), "%s refused: %s", bad[i].schema, err);
        cdfa_put(d);
    }
    struct cdfa *d = NULL;
    char err[300];
    int rc = cdfa_json_object(&d, err, sizeof err);
    ok(rc == 0, "any JSON object compiles (%d states)", d ? cdfa_states(d) : 0);
    const char *nested = "{\"a\": [1, {\"b\": \"c\"}], \"d\": -0.5e-3}";
    ok(d && cdfa_matches(d, nested, strlen(nested)), "an object with nesting");
    ok(d && !cdfa_matches(d, "[1]", 3), "an array is not an object");
    ok(d && !cdfa_matches(d, "{    }", 6), "whitespace is bounded (3)");
    ok(d && cdfa_matches(d, "{   }", 5), "3 spaces are fine");
    ok(d && cdfa_dist(d, cdfa_walk(d, 0, "{\"a\":[[", 7)) == 3, "from {\"a\":[[ the shortest completion is ]]} (3 bytes)");
    cdfa_put(d);
}

/* ------------------------------------------------------------------ masks */

/* One constrained sequence on random logits (temperature 1, seed): its text, finish and token count. */
static bool run_seq(const struct tokenizer *tok, const struct vtrie *t, struct cdfa *d, bool ignore_eos, int max_new,
                    uint64_t seed, char *text, size_t cap, size_t *n, enum finish *fin, int *generated)
{
    char err[300];
    struct gen_params gp = {.sampling = sampler_params_default(), .max_new_tokens = max_new, .ignore_eos = ignore_eos,
                            .constraint = d};
    gp.sampling.do_sample = true;
    gp.sampling.seed = seed;
    struct gen_seq g;
    int32_t prompt[1] = {50256};
    if (gen_seq_init(&g, tok, prompt, 1, 50257, 1024, &gp, err, sizeof err) != 0) {
        tap_diag("gen_seq_init: %s", err);
        return false;
    }
    g.trie = t;
    static float logits[50257];
    uint64_t rs = 0x9e3779b97f4a7c15ull ^ seed;
    struct gen_event ev = {0};
    *n = 0;
    bool good = true;
    while (ev.finish == FIN_NONE) {
        for (int i = 0; i < 50257; i++) {
            rs ^= rs << 13, rs ^= rs >> 7, rs ^= rs << 17;
            logits[i] = (float)(rs % 1000) / 100.0f;
        }
        if (gen_seq_next(&g, logits, &ev, err, sizeof err) != 0) {
            tap_diag("gen_seq_next: %s", err);
            good = false;
            break;
        }
        if (*n + ev.len < cap)
            memcpy(text + *n, ev.text, ev.len), *n += ev.len;
    }
    *fin = ev.finish;
    *generated = gen_seq_generated(&g);
    gen_seq_free(&g);
    return good;
}

/* ignore_eos under a constraint: the text stops where its language ends, never padded past it with
 * end-of-text tokens, and never stops early while a token can still go on. */
static void test_ignore_eos(const struct tokenizer *tok, const struct vtrie *t)
{
    static const struct {
        const char *re;
        const char *want;           /* the one text a full run can give, or NULL: any of the language */
    } cases[] = {{"(yes|no)", NULL}, {"a{1,3}", "aaa"}, {"x(ab){0,2}", "xabab"}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        struct cdfa *d = NULL;
        char err[300];
        if (cdfa_regex(cases[c].re, strlen(cases[c].re), &d, err, sizeof err) != 0) {
            ok(0, "%s compiles: %s", cases[c].re, err);
            continue;
        }
        int good = 0;
        for (uint64_t seed = 1; seed <= 10; seed++) {
            char text[512];
            size_t n = 0;
            enum finish fin = FIN_NONE;
            int gen = 0;
            bool ran = run_seq(tok, t, d, true, 40, seed, text, sizeof text, &n, &fin, &gen);
            bool right = ran && fin == FIN_EOS && gen < 40 && cdfa_matches(d, text, n) &&
                         (!cases[c].want || (n == strlen(cases[c].want) && memcmp(text, cases[c].want, n) == 0));
            if (!right)
                tap_diag("%s seed %llu: finish %d after %d tokens: \"%.*s\"", cases[c].re, (unsigned long long)seed,
                         (int)fin, gen, (int)(n < 80 ? n : 80), text);
            good += right;
        }
        ok(good == 10, "ignore_eos with /%s/: every run ends where the language does (%d of 10)%s%s", cases[c].re, good,
           cases[c].want ? ", at " : "", cases[c].want ? cases[c].want : "");
        cdfa_put(d);
    }
}

static void test_masks(const char *srcdir)
{
    char dir[2200];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/gpt2-tokenizer", srcdir);
    struct tokenizer *tok = NULL;
    char err[300] = "";
    if (tokenizer_load_dir(dir, &tok, err, sizeof err) != 0) {
        ok(0, "GPT-2's tokenizer loads from %s: %s", dir, err);
        return;
    }
    struct vtrie *t = vtrie_new(tok);
    ok(t && vtrie_vocab(t) == 50257, "the trie covers GPT-2's 50257 tokens (%zu nodes)", t ? vtrie_nodes(t) : 0);
    const char *res[] = {"\\{\"name\": \"[a-z ]{1,20}\", \"age\": [0-9]{1,3}\\}", "(yes|no|maybe)", "[^x]*x"};
    struct cdfa *js = NULL;
    cdfa_json_object(&js, err, sizeof err);
    for (size_t r = 0; r < 4 && t; r++) {
        struct cdfa *d = NULL;
        if (r < 3 ? cdfa_regex(res[r], strlen(res[r]), &d, err, sizeof err) != 0 : !(d = cdfa_ref(js))) {
            ok(0, "%s compiles: %s", r < 3 ? res[r] : "json", err);
            continue;
        }
        /* every state reached along a few texts: the trie's mask against testing every token */
        const char *walks[] = {"{\"name\": \"bo", "may", "abc", "{\"a\": [1, {\"b\""};
        int bad = 0, states = 0;
        for (int budget = -1; budget <= 2; budget += 3) {
            int s = cdfa_start(d);
            const char *w = walks[r];
            for (size_t i = 0; s >= 0; i++) {
                const uint64_t *m = vtrie_mask(t, d, s, budget);
                states++;
                for (int32_t id = 0; id < 50257; id++) {
                    size_t len = 0;
                    const char *b = tokenizer_token_bytes(tok, id, &len);
                    int to = tokenizer_is_special(tok, id) ? -1 : cdfa_walk(d, s, b, len);
                    bool want = to >= 0 && (budget < 0 || cdfa_dist(d, to) <= budget);
                    bad += want != (bool)(m[id >> 6] >> (id & 63) & 1);
                }
                if (!w[i])
                    break;
                s = cdfa_step(d, s, (uint8_t)w[i]);
            }
        }
        ok(bad == 0 && states > 0, "%s: the trie's masks in %d states equal a test of every token (%d differ)",
           r < 3 ? res[r] : "any JSON object", states, bad);
        cdfa_put(d);
    }
    /* the cached mask is the same pointer the second time */
    if (t && js) {
        const uint64_t *a = vtrie_mask(t, js, 0, -1), *b = vtrie_mask(t, js, 0, -1);
        ok(a == b, "a state's mask is cached");
        float logits[50257];
        for (int i = 0; i < 50257; i++)
            logits[i] = 1.0f;
        vtrie_apply(a, logits, 50257);
        int kept = 0, brace = -1;
        for (int i = 0; i < 50257; i++) {
            size_t len;
            const char *bb = tokenizer_token_bytes(tok, i, &len);
            kept += logits[i] == 1.0f;
            if (len == 1 && bb[0] == '{')
                brace = i;
        }
        ok(brace >= 0 && logits[brace] == 1.0f && kept < 200, "at the start of an object only tokens that open one stay (%d)",
           kept);
    }
    /* masks are kept per DFA, not per state number: a+ and b+ share state numbers, not masks;
     * a budget of two masks puts the older DFA's out, and what comes back is still right */
    if (t) {
        struct cdfa *da = NULL, *db = NULL;
        cdfa_regex("a+", 2, &da, err, sizeof err);
        cdfa_regex("b+", 2, &db, err, sizeof err);
        size_t words = vtrie_mask_words(t);
        uint64_t *ma = calloc(words, sizeof *ma), *mb = calloc(words, sizeof *mb);
        int32_t tok_a = -1, tok_b = -1;
        for (int32_t i = 0; i < 50257; i++) {
            size_t len;
            const char *bb = tokenizer_token_bytes(tok, i, &len);
            if (len == 1 && bb[0] == 'a')
                tok_a = i;
            if (len == 1 && bb[0] == 'b')
                tok_b = i;
        }
        bool right = da && db && ma && mb && tok_a >= 0 && tok_b >= 0;
        if (right) {
            memcpy(ma, vtrie_mask(t, da, 0, -1), words * sizeof *ma);
            memcpy(mb, vtrie_mask(t, db, 0, -1), words * sizeof *mb);
            right = (ma[tok_a >> 6] >> (tok_a & 63) & 1) && !(ma[tok_b >> 6] >> (tok_b & 63) & 1) &&
                    (mb[tok_b >> 6] >> (tok_b & 63) & 1) && !(mb[tok_a >> 6] >> (tok_a & 63) & 1);
        }
        ok(right && cdfa_id(da) != cdfa_id(db), "the masks of two DFAs' state 0 are each their own (a+ allows \"a\", "
           "b+ \"b\")");
        vtrie_set_mask_budget(t, 2 * words * sizeof(uint64_t));
        bool within = true, same = right;
        for (int round = 0; right && round < 3; round++) {
            const struct cdfa *ds[] = {da, db, js};
            for (int k = 0; k < 3; k++) {
                const uint64_t *m = vtrie_mask(t, ds[k], 0, -1);
                within &= vtrie_mask_bytes(t) <= 2 * words * sizeof(uint64_t);
                if (k < 2)
                    same &= memcmp(m, k == 0 ? ma : mb, words * sizeof *m) == 0;
            }
        }
        ok(right && within && same, "under a budget of two masks the cache stays within it and gives the same masks");
        struct vtrie_stats v0, v1, v2;
        (void)vtrie_mask(t, da, 0, -1);     /* kept now, whatever the loop above put out */
        vtrie_get_stats(t, &v0);
        (void)vtrie_mask(t, da, 0, -1);
        vtrie_get_stats(t, &v1);
        vtrie_set_mask_budget(t, 0);
        (void)vtrie_mask(t, da, 0, -1);
        vtrie_get_stats(t, &v2);
        ok(v1.hits == v0.hits + 1 && v1.walks == v0.walks && v1.bytes > 0 && v2.walks == v1.walks + 1 &&
               v2.hits == v1.hits && v2.bytes == 0,
           "the mask cache's counters: a kept mask is a hit, a budget of 0 keeps nothing and walks each time");
        vtrie_set_mask_budget(t, VTRIE_MASK_BYTES);
        free(ma), free(mb);
        cdfa_put(da), cdfa_put(db);
    }
    /* whole sequences: random logits, sampled at temperature 1; the text is always in the language,
     * and within a tight max_new_tokens the JSON is still finished */
    const char *langs[] = {"(yes|no|maybe later)", "[a-z]{2,5}-\\d{2,4}", NULL};
    for (int l = 0; t && l < 3; l++) {
        struct cdfa *d = NULL;
        if (langs[l])
            cdfa_regex(langs[l], strlen(langs[l]), &d, err, sizeof err);
        else
            d = cdfa_ref(js);
        int good = 0, runs = 0;
        uint64_t rs = 0x2545f4914f6cdd1dull + (uint64_t)l;
        for (int seed = 0; d && seed < 20; seed++) {
            struct gen_params gp = {.sampling = sampler_params_default(), .max_new_tokens = langs[l] ? 40 : 12};
            gp.sampling.do_sample = true;
            gp.sampling.seed = (uint64_t)seed;
            gp.constraint = d;
            struct gen_seq g;
            int32_t prompt[1] = {50256};
            if (gen_seq_init(&g, tok, prompt, 1, 50257, 1024, &gp, err, sizeof err) != 0) {
                tap_diag("gen_seq_init: %s", err);
                break;
            }
            g.trie = t;
            char text[2048];
            size_t n = 0;
            struct gen_event ev = {0};
            bool failed = false;
            static float logits[50257];
            while (ev.finish == FIN_NONE) {
                for (int i = 0; i < 50257; i++) {
                    rs ^= rs << 13, rs ^= rs >> 7, rs ^= rs << 17;
                    logits[i] = (float)(rs % 1000) / 100.0f;
                }
                if (gen_seq_next(&g, logits, &ev, err, sizeof err) != 0) {
                    tap_diag("gen_seq_next: %s", err);
                    failed = true;
                    break;
                }
                if (n + ev.len < sizeof text)
                    memcpy(text + n, ev.text, ev.len), n += ev.len;
            }
            runs++;
            good += !failed && cdfa_matches(d, text, n);
            if (!cdfa_matches(d, text, n))
                tap_diag("%s: %.*s", langs[l] ? langs[l] : "json", (int)n, text);
            gen_seq_free(&g);
        }
        ok(runs == 20 && good == runs, "%s: %d of %d sampled sequences are in the language",
           langs[l] ? langs[l] : "any JSON object in 12 tokens", good, runs);
        cdfa_put(d);
    }
    if (t)
        test_ignore_eos(tok, t);
    cdfa_put(js);
    vtrie_free(t);
    tokenizer_free(tok);
}

/* vtrie_apply against the rule it implements, on masks of every kind of word (all ones, all
 * zeros, mixed, a byte pattern per word) and lengths that end inside a word. */
static void test_apply(void)
{
    uint64_t mask[20];
    float l[20 * 64];
    uint64_t r = 0x853c49e6748fea9bull;
    int bad = 0;
    for (int round = 0; round < 50; round++) {
        for (int w = 0; w < 20; w++) {
            r ^= r << 13, r ^= r >> 7, r ^= r << 17;
            mask[w] = w % 4 == 0 ? ~0ull : w % 4 == 1 ? 0 : w % 4 == 2 ? r : r & 0x00ff00ff00ff00ffull;
        }
        int32_t n = 20 * 64 - round * 7;
        for (int i = 0; i < 20 * 64; i++)
            l[i] = (float)i;
        vtrie_apply(mask, l, n);
        for (int i = 0; i < 20 * 64; i++) {
            bool keep = i >= n || (mask[i >> 6] >> (i & 63) & 1);
            bad += keep ? l[i] != (float)i : l[i] != -INFINITY;
        }
    }
    ok(bad == 0, "vtrie_apply sets exactly the tokens out of the mask to -inf, below n only (%d wrong)", bad);
}

struct cache_worker {
    struct ccache *c;
    struct cdfa *d[4];
    int hits, lookups;
};

static void *cache_worker(void *arg)
{
    struct cache_worker *w = arg;
    static const char *const keys[] = {"k0", "k1", "k2", "k3"};
    for (int i = 0; i < 2000; i++) {
        int k = i % 4;
        struct cdfa *d = ccache_get(w->c, CC_REGEX, keys[k], 2);
        w->lookups++;
        if (d) {
            w->hits += d == w->d[k];            /* never another key's DFA */
            cdfa_put(d);
        } else {
            w->hits++;
            ccache_add(w->c, CC_REGEX, keys[k], 2, w->d[k]);
        }
    }
    return NULL;
}

static void test_cache(void)
{
    char err[300];
    struct cdfa *a = NULL, *b = NULL, *c = NULL;
    cdfa_regex("[a-z]{1,8}", 10, &a, err, sizeof err);
    cdfa_regex("[0-9]{1,8}", 10, &b, err, sizeof err);
    cdfa_regex("[A-Z]{1,8}", 10, &c, err, sizeof err);
    if (!a || !b || !c) {
        ok(0, "three regexes compile: %s", err);
        return;
    }
    size_t one = cdfa_bytes(a) + 100;           /* a DFA and its entry (under 100 bytes); b and c are the same size */
    struct ccache *cc = ccache_new(2 * one + one / 2);
    ok(cc && ccache_get(cc, CC_REGEX, "x", 1) == NULL, "an empty cache misses");
    ccache_add(cc, CC_REGEX, "a", 1, a);
    struct cdfa *got = ccache_get(cc, CC_REGEX, "a", 1);
    ok(got == a, "a kept DFA comes back under its key (a reference of the caller's)");
    cdfa_put(got);
    ok(ccache_get(cc, CC_SCHEMA, "a", 1) == NULL && ccache_get(cc, CC_REGEX, "ab", 2) == NULL,
       "another kind or another text is another key");
    ccache_add(cc, CC_REGEX, "b", 1, b);
    cdfa_put(ccache_get(cc, CC_REGEX, "a", 1));  /* a used last: b is the least recently used */
    ccache_add(cc, CC_REGEX, "c", 1, c);
    struct cdfa *ga = ccache_get(cc, CC_REGEX, "a", 1), *gb = ccache_get(cc, CC_REGEX, "b", 1),
                *gc = ccache_get(cc, CC_REGEX, "c", 1);
    struct ccache_stats st;
    ccache_get_stats(cc, &st);
    ok(ga == a && gb == NULL && gc == c && st.entries == 2 && st.evictions == 1 && st.bytes <= 2 * one + one / 2,
       "over the budget the least recently used DFA goes (%zu entries, %zu bytes, %llu evicted)", st.entries, st.bytes,
       (unsigned long long)st.evictions);
    cdfa_put(ga), cdfa_put(gc);
    ccache_add(cc, CC_REGEX, "a", 1, b);
    got = ccache_get(cc, CC_REGEX, "a", 1);
    ok(got == a, "a key compiled twice at once keeps the first DFA");
    cdfa_put(got);
    ccache_set_budget(cc, one + one / 2);
    ccache_get_stats(cc, &st);
    struct cdfa *left = ccache_get(cc, CC_REGEX, "a", 1);
    ok(st.entries == 1 && st.bytes <= one + one / 2 && left == a,
       "a smaller budget (a reload) puts out the least recently used until the cache fits");
    cdfa_put(left);
    ccache_set_budget(cc, 0);
    ccache_add(cc, CC_REGEX, "d", 1, c);
    ccache_get_stats(cc, &st);
    ok(st.entries == 0 && st.bytes == 0 && ccache_get(cc, CC_REGEX, "d", 1) == NULL,
       "a budget of 0 empties the cache and keeps nothing after");
    ccache_set_budget(cc, 2 * one + one / 2);
    struct ccache *tiny = ccache_new(one / 2);
    ok(ccache_add(tiny, CC_REGEX, "a", 1, a) == 0 && ccache_get(tiny, CC_REGEX, "a", 1) == NULL,
       "a DFA bigger than the whole budget is not kept");
    ccache_free(tiny);
    ccache_free(cc);

    /* responders on four threads looking up and adding the same keys */
    struct ccache *shared = ccache_new(64u << 20);
    struct cache_worker w[4];
    pthread_t th[4];
    struct cdfa *ds[4] = {a, b, c, a};
    int started = 0;
    for (int i = 0; i < 4; i++) {
        w[i] = (struct cache_worker){.c = shared};
        memcpy(w[i].d, ds, sizeof ds);
        started += pthread_create(&th[i], NULL, cache_worker, &w[i]) == 0;
    }
    int hits = 0, lookups = 0;
    for (int i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
        hits += w[i].hits, lookups += w[i].lookups;
    }
    ccache_get_stats(shared, &st);
    ok(started == 4 && hits == lookups && st.hits + st.misses == (uint64_t)lookups && st.entries == 4,
       "four threads at once: every lookup gets its own key's DFA (%llu hits, %llu misses, %zu entries)",
       (unsigned long long)st.hits, (unsigned long long)st.misses, st.entries);
    ccache_free(shared);
    cdfa_put(a), cdfa_put(b), cdfa_put(c);
}

int main(void)
{
    const char *src = getenv("LLMCGI_SRCDIR");
    test_regex();
    test_json();
    test_masks(src ? src : ".");
    test_cache();
    test_apply();
    return tap_done();
}
