/* test_tokenizer.c -- the BPE tokenizer against Hugging Face's golden ids and decodes, streaming detok, load errors. */
#include "config.h"
#include "tokenizer.h"
#include "tap.h"

#include <errno.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char srcdir[2048];
static char gpt2dir[2100];
static char tmpdir[256];

/* ------------------------------------------------------------------ helpers */

static unsigned char *unhex(const char *hex, size_t *len)
{
    size_t n = strlen(hex) / 2;
    unsigned char *out = malloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        out[i] = (unsigned char)v;
    }
    out[n] = '\0';
    *len = n;
    return out;
}

/* Reads a JSON lines file into an array of objects (caller puts each and frees the array). */
static struct json_object **read_jsonl(const char *path, size_t *count)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    struct json_object **rows = NULL;
    size_t n = 0, cap = 0;
    char *line = NULL;
    size_t lcap = 0;
    while (getline(&line, &lcap, f) > 0) {
        if (n == cap) {
            cap = cap ? cap * 2 : 1024;
            rows = realloc(rows, cap * sizeof *rows);
        }
        rows[n++] = json_tokener_parse(line);
    }
    free(line);
    fclose(f);
    *count = n;
    return rows;
}

static void free_rows(struct json_object **rows, size_t n)
{
    for (size_t i = 0; i < n; i++)
        json_object_put(rows[i]);
    free(rows);
}

/* The ids of a JSON array member (NULL member: NULL). Caller frees. */
static int32_t *json_ids(struct json_object *o, const char *key, size_t *n)
{
    struct json_object *a;
    *n = 0;
    if (!json_object_object_get_ex(o, key, &a))
        return NULL;
    *n = json_object_array_length(a);
    int32_t *ids = malloc((*n + 1) * sizeof *ids);
    for (size_t i = 0; i < *n; i++)
        ids[i] = json_object_get_int(json_object_array_get_idx(a, i));
    return ids;
}

static const char *json_str(struct json_object *o, const char *key)
{
    struct json_object *v;
    return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : NULL;
}

static void print_ids(const char *what, const int32_t *ids, size_t n)
{
    printf("#   %s (%zu):", what, n);
    for (size_t i = 0; i < n && i < 40; i++)
        printf(" %d", (int)ids[i]);
    printf("%s\n", n > 40 ? " ..." : "");
}

static void print_hex(const char *what, const unsigned char *s, size_t n)
{
    printf("#   %s (%zu bytes): ", what, n);
    for (size_t i = 0; i < n && i < 60; i++)
        printf("%02x", s[i]);
    printf("%s\n", n > 60 ? "..." : "");
}

static bool same_ids(const int32_t *a, size_t na, const int32_t *b, size_t nb)
{
    return na == nb && (na == 0 || memcmp(a, b, na * sizeof *a) == 0);
}

static bool valid_utf8(const unsigned char *s, size_t n)
{
    /* independent of the tokenizer's own checker: decode and re-check the ranges */
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            k = 2;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            k = 3;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            k = 4;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (i + k > n)
            return false;
        for (size_t j = 1; j < k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        if ((k == 2 && cp < 0x80) || (k == 3 && cp < 0x800) || (k == 4 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += k;
    }
    return true;
}

/* Pushes ids one at a time through a detok; returns the joined output (caller frees) or NULL when a
 * piece was not valid UTF-8 on its own or a call failed. */
static char *detok_all(const struct tokenizer *t, const int32_t *ids, size_t n, size_t *len)
{
    struct detok d;
    detok_init(&d, t);
    size_t cap = 64, o = 0;
    char *out = malloc(cap);
    bool bad = false;
    for (size_t i = 0; i <= n && !bad; i++) {
        const char *piece;
        size_t k;
        int rc = i < n ? detok_push(&d, ids[i], &piece, &k) : detok_flush(&d, &piece, &k);
        if (rc != 0 || strlen(piece) > k || !valid_utf8((const unsigned char *)piece, k)) {
            bad = true;
            break;
        }
        while (o + k + 1 > cap)
            cap *= 2;
        out = realloc(out, cap);
        memcpy(out + o, piece, k);
        o += k;
    }
    detok_free(&d);
    if (bad) {
        free(out);
        return NULL;
    }
    out[o] = '\0';
    *len = o;
    return out;
}

static void write_file(const char *name, const char *content, size_t len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    fwrite(content, 1, len, f);
    fclose(f);
}

static void remove_file(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    unlink(path);
}

/* ------------------------------------------------------------------ GPT-2: basics */

static void test_basics(const struct tokenizer *t)
{
    is_int(tokenizer_vocab_size(t), 50257, "GPT-2 has 50257 ids");
    is_int(tokenizer_eos_id(t), 50256, "<|endoftext|> is the end of text");
    is_int(tokenizer_special_id(t, "<|endoftext|>"), 50256, "<|endoftext|> is a special token");
    is_int(tokenizer_special_id(t, "<|endoftext|"), -1, "a prefix is not");
    is_int(tokenizer_special_id(t, "hello"), -1, "a word is not");
    ok(tokenizer_is_special(t, 50256) && !tokenizer_is_special(t, 220) && !tokenizer_is_special(t, -1) &&
       !tokenizer_is_special(t, 99999), "is_special: 50256 only");
    size_t len = 0;
    const char *b = tokenizer_token_bytes(t, 220, &len);
    ok(b && len == 1 && b[0] == ' ', "token 220 is a space (byte-level unmapping)");
    b = tokenizer_token_bytes(t, 198, &len);
    ok(b && len == 1 && b[0] == '\n', "token 198 is a newline");
    b = tokenizer_token_bytes(t, 26391, &len);
    ok(b && len == 3 && memcmp(b, "\xe2\x82\xac", 3) == 0, "token 26391 is the bytes of the euro sign");
    b = tokenizer_token_bytes(t, 50256, &len);
    ok(b && len == 13 && memcmp(b, "<|endoftext|>", 13) == 0, "token 50256 is <|endoftext|>");
    ok(!tokenizer_token_bytes(t, -1, &len) && !tokenizer_token_bytes(t, 50257, &len), "ids outside: NULL");

    int32_t *ids;
    size_t n;
    is_int(tokenizer_encode(t, "", 0, true, &ids, &n), 0, "encode an empty string");
    ok(ids && n == 0, "no ids, and an array to free");
    free(ids);
    is_int(tokenizer_encode(t, NULL, 0, true, &ids, &n), 0, "NULL with length 0 is an empty string");
    free(ids);
    is_int(tokenizer_encode(t, NULL, 3, true, &ids, &n), TOKENIZER_EINVAL, "NULL with a length: EINVAL");

    static const int32_t hello[] = {15496, 995};
    tokenizer_encode(t, "Hello world", 11, true, &ids, &n);
    ok(same_ids(ids, n, hello, 2), "Hello world = 15496 995");
    free(ids);

    static const int32_t eot[] = {50256};
    static const int32_t eot_plain[] = {27, 91, 437, 1659, 5239, 91, 29};
    tokenizer_encode(t, "<|endoftext|>", 13, true, &ids, &n);
    ok(same_ids(ids, n, eot, 1), "allow_special: <|endoftext|> is one id");
    free(ids);
    tokenizer_encode(t, "<|endoftext|>", 13, false, &ids, &n);
    ok(same_ids(ids, n, eot_plain, 7), "without: plain text");
    free(ids);
    static const int32_t around[] = {220, 50256, 220};
    tokenizer_encode(t, " <|endoftext|> ", 15, true, &ids, &n);
    ok(same_ids(ids, n, around, 3), "text around a special token is encoded on its own");
    free(ids);

    char *out;
    size_t olen;
    static const int32_t bad[] = {15496, 50257};
    is_int(tokenizer_decode(t, bad, 2, &out, &olen), TOKENIZER_ERANGE, "decode: an id past the end is ERANGE");
    static const int32_t neg[] = {-1};
    is_int(tokenizer_decode(t, neg, 1, &out, &olen), TOKENIZER_ERANGE, "decode: a negative id is ERANGE");
    is_int(tokenizer_decode(t, NULL, 0, &out, &olen), 0, "decode nothing");
    ok(out && olen == 0 && out[0] == '\0', "gives an empty string");
    free(out);
    is_int(tokenizer_decode(t, hello, 2, &out, &olen), 0, "decode Hello world");
    is_str(out, "Hello world", "decodes back");
    free(out);
    ok(strlen(tokenizer_strerror(TOKENIZER_ERANGE)) > 0 && strlen(tokenizer_strerror(12345)) > 0, "strerror");
}

/* ------------------------------------------------------------------ GPT-2: the golden corpus */

struct category {
    char name[32];
    int count, enc_fail, plain_fail, nojit_fail, round_fail, detok_fail;
};

static void test_corpus(const struct tokenizer *t, const struct tokenizer *nojit)
{
    char p1[2300], p2[2300];
    snprintf(p1, sizeof p1, "%s/tests/golden/tokenizer_corpus.jsonl", srcdir);
    snprintf(p2, sizeof p2, "%s/tests/golden/tokenizer_ids.jsonl", srcdir);
    size_t nc = 0, ni = 0;
    struct json_object **corpus = read_jsonl(p1, &nc), **golden = read_jsonl(p2, &ni);
    if (!ok(corpus && golden && nc == ni && nc >= 2000, "golden corpus: %zu strings, %zu id lists", nc, ni)) {
        free_rows(corpus, nc);
        free_rows(golden, ni);
        return;
    }
    struct category cats[64];
    int ncats = 0;
    for (size_t i = 0; i < nc; i++) {
        const char *cat = json_str(corpus[i], "cat");
        struct category *c = NULL;
        for (int k = 0; k < ncats; k++)
            if (strcmp(cats[k].name, cat) == 0)
                c = &cats[k];
        if (!c && ncats < 64) {
            c = &cats[ncats++];
            memset(c, 0, sizeof *c);
            snprintf(c->name, sizeof c->name, "%s", cat);
        }
        c->count++;
        size_t len, nwant, nplain, got_n;
        unsigned char *text = unhex(json_str(corpus[i], "hex"), &len);
        int32_t *want = json_ids(golden[i], "ids", &nwant);
        int32_t *plain = json_ids(golden[i], "plain", &nplain);
        if (!plain) {
            plain = want;
            nplain = nwant;
        }
        int32_t *got = NULL;

        /* encode, allow_special */
        int rc = tokenizer_encode(t, (const char *)text, len, true, &got, &got_n);
        if (rc != 0 || !same_ids(got, got_n, want, nwant)) {
            if (c->enc_fail++ < 5) {
                printf("# string %zu (%s): encode differs from Hugging Face (rc %d)\n", i, cat, rc);
                print_hex("text", text, len);
                print_ids("want", want, nwant);
                print_ids("got ", got, rc == 0 ? got_n : 0);
            }
        }

        /* decode gives back the text (with U+FFFD where the input was invalid) */
        size_t tlen = len;
        const char *thex = json_str(golden[i], "text");
        unsigned char *expect = thex ? unhex(thex, &tlen) : text;
        char *dec = NULL;
        size_t dlen = 0;
        rc = tokenizer_decode(t, want, nwant, &dec, &dlen);
        if (rc != 0 || dlen != tlen || memcmp(dec, expect, tlen) != 0) {
            if (c->round_fail++ < 5) {
                printf("# string %zu (%s): decode(golden ids) is not the text (rc %d)\n", i, cat, rc);
                print_hex("want", expect, tlen);
                print_hex("got ", (unsigned char *)dec, rc == 0 ? dlen : 0);
            }
        }

        /* the same through the streaming detok */
        size_t slen = 0;
        char *streamed = detok_all(t, want, nwant, &slen);
        if (!streamed || rc != 0 || slen != dlen || memcmp(streamed, dec, dlen) != 0) {
            if (c->detok_fail++ < 5) {
                printf("# string %zu (%s): detok one id at a time differs from decode\n", i, cat);
                print_hex("decode", (unsigned char *)dec, rc == 0 ? dlen : 0);
                print_hex("detok ", (unsigned char *)streamed, streamed ? slen : 0);
            }
        }
        free(streamed);
        free(dec);
        if (expect != text)
            free(expect);
        free(got);

        /* without special tokens */
        got = NULL;
        rc = tokenizer_encode(t, (const char *)text, len, false, &got, &got_n);
        if (rc != 0 || !same_ids(got, got_n, plain, nplain)) {
            if (c->plain_fail++ < 5) {
                printf("# string %zu (%s): encode without special tokens differs (rc %d)\n", i, cat, rc);
                print_hex("text", text, len);
                print_ids("want", plain, nplain);
                print_ids("got ", got, rc == 0 ? got_n : 0);
            }
        }
        free(got);

        /* PCRE2's interpreter instead of JIT */
        got = NULL;
        rc = tokenizer_encode(nojit, (const char *)text, len, true, &got, &got_n);
        if (rc != 0 || !same_ids(got, got_n, want, nwant)) {
            if (c->nojit_fail++ < 5) {
                printf("# string %zu (%s): encode without JIT differs (rc %d)\n", i, cat, rc);
                print_ids("want", want, nwant);
                print_ids("got ", got, rc == 0 ? got_n : 0);
            }
        }
        free(got);
        if (plain != want)
            free(plain);
        free(want);
        free(text);
    }
    for (int k = 0; k < ncats; k++) {
        struct category *c = &cats[k];
        ok(c->enc_fail == 0, "%s: %d strings encode as Hugging Face does (%d differ)", c->name, c->count, c->enc_fail);
        ok(c->plain_fail == 0, "%s: without special tokens too (%d differ)", c->name, c->plain_fail);
        ok(c->nojit_fail == 0, "%s: with PCRE2's interpreter too (%d differ)", c->name, c->nojit_fail);
        ok(c->round_fail == 0, "%s: decode gives the text back (%d differ)", c->name, c->round_fail);
        ok(c->detok_fail == 0, "%s: streaming detok equals decode (%d differ)", c->name, c->detok_fail);
    }
    free_rows(corpus, nc);
    free_rows(golden, ni);
}

static void test_golden_decodes(const struct tokenizer *t)
{
    char path[2300];
    snprintf(path, sizeof path, "%s/tests/golden/tokenizer_decode.jsonl", srcdir);
    size_t n = 0;
    struct json_object **rows = read_jsonl(path, &n);
    if (!ok(rows && n > 100, "golden decodes: %zu", n))
        return;
    int fail = 0, dfail = 0;
    for (size_t i = 0; i < n; i++) {
        size_t nids, wlen, glen = 0, slen = 0;
        int32_t *ids = json_ids(rows[i], "ids", &nids);
        unsigned char *want = unhex(json_str(rows[i], "hex"), &wlen);
        char *got = NULL;
        int rc = tokenizer_decode(t, ids, nids, &got, &glen);
        if (rc != 0 || glen != wlen || memcmp(got, want, wlen) != 0) {
            if (fail++ < 5) {
                printf("# decode case %zu differs (rc %d)\n", i, rc);
                print_ids("ids ", ids, nids);
                print_hex("want", want, wlen);
                print_hex("got ", (unsigned char *)got, rc == 0 ? glen : 0);
            }
        }
        char *streamed = detok_all(t, ids, nids, &slen);
        if (!streamed || slen != wlen || memcmp(streamed, want, wlen) != 0) {
            if (dfail++ < 5) {
                printf("# decode case %zu: detok differs\n", i);
                print_ids("ids  ", ids, nids);
                print_hex("want ", want, wlen);
                print_hex("detok", (unsigned char *)streamed, streamed ? slen : 0);
            }
        }
        free(streamed);
        free(got);
        free(want);
        free(ids);
    }
    ok(fail == 0, "%zu decodes equal Hugging Face's (%d differ)", n, fail);
    ok(dfail == 0, "and so does streaming detok of each (%d differ)", dfail);
    free_rows(rows, n);
}

/* ------------------------------------------------------------------ GPT-2: streaming details */

/* GPT-2's token for a single byte (found by encoding is not possible for bytes >= 0x80, so search). */
static int32_t byte_token(const struct tokenizer *t, unsigned char b)
{
    for (int32_t id = 0; id < 256 + 68 && id < tokenizer_vocab_size(t); id++) {
        size_t len;
        const char *s = tokenizer_token_bytes(t, id, &len);
        if (s && len == 1 && (unsigned char)s[0] == b)
            return id;
    }
    return -1;
}

static const char *push(struct detok *d, int32_t id)
{
    const char *s = NULL;
    size_t len;
    if (detok_push(d, id, &s, &len) != 0)
        return "(error)";
    return s;
}

static void test_detok(const struct tokenizer *t)
{
    int32_t e2 = byte_token(t, 0xe2), x82 = byte_token(t, 0x82), xac = byte_token(t, 0xac);
    int32_t x80 = byte_token(t, 0x80), f0 = byte_token(t, 0xf0), x9f = byte_token(t, 0x9f), ff = byte_token(t, 0xff);
    int32_t a = byte_token(t, 'A');
    ok(e2 >= 0 && x82 >= 0 && xac >= 0 && x80 >= 0 && f0 >= 0 && ff >= 0 && a >= 0, "single-byte tokens found");
    struct detok d;
    detok_init(&d, t);
    is_str(push(&d, e2), "", "E2: nothing yet");
    is_str(push(&d, x82), "", "E2 82: nothing yet");
    is_str(push(&d, xac), "\xe2\x82\xac", "E2 82 AC: the euro sign");
    is_str(push(&d, x80), "\xef\xbf\xbd", "a lone continuation byte: U+FFFD at once");
    is_str(push(&d, ff), "\xef\xbf\xbd", "FF: U+FFFD at once");
    is_str(push(&d, e2), "", "E2 again");
    is_str(push(&d, a), "\xef\xbf\xbd" "A", "E2 then A: U+FFFD as soon as A shows E2 cannot complete");
    is_str(push(&d, f0), "", "F0");
    is_str(push(&d, x80), "\xef\xbf\xbd\xef\xbf\xbd", "F0 80: both invalid (F0 needs 90..BF), two U+FFFD");
    is_str(push(&d, f0), "", "F0");
    is_str(push(&d, x9f), "", "F0 9F");
    is_str(push(&d, 50256), "\xef\xbf\xbd<|endoftext|>", "a special token ends the incomplete sequence");
    is_str(push(&d, f0), "", "F0 again");
    const char *s;
    size_t len;
    is_int(detok_push(&d, 50257, &s, &len), TOKENIZER_ERANGE, "an id past the end: ERANGE");
    is_int(detok_push(&d, -5, &s, &len), TOKENIZER_ERANGE, "a negative id: ERANGE");
    is_str(push(&d, x9f), "", "the pending bytes survived the errors");
    detok_flush(&d, &s, &len);
    is_str(s, "\xef\xbf\xbd", "flush: the dangling F0 9F becomes one U+FFFD");
    detok_flush(&d, &s, &len);
    is_str(s, "", "flush again: nothing");
    is_str(push(&d, 15496), "Hello", "usable again after flush");
    detok_free(&d);
}

/* ------------------------------------------------------------------ GPT-2: every code point's class */

static int count_piece(void *ud, const char *piece, size_t len, int32_t id)
{
    (*(int *)ud)++;
    return 0;
}

static int pieces(const struct tokenizer *t, const char *s, size_t n)
{
    int count = 0;
    tokenizer_pretokenize(t, s, n, true, count_piece, &count);
    return count;
}

static size_t put_utf8(char *out, uint32_t cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12);
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | cp >> 18);
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

static char classify(const struct tokenizer *t, uint32_t cp)
{
    char s[8];
    size_t n = 1 + put_utf8(s + 1, cp);
    s[0] = 'a';
    if (pieces(t, s, n) == 1)
        return 'L';
    s[0] = '1';
    if (pieces(t, s, n) == 1)
        return 'N';
    s[0] = '!';
    if (pieces(t, s, n) == 1)
        return 'P';
    return 'S';
}

static void test_classes(const struct tokenizer *t)
{
    char path[2300];
    snprintf(path, sizeof path, "%s/tests/golden/tokenizer_classes.txt", srcdir);
    FILE *f = fopen(path, "r");
    if (!ok(f != NULL, "tokenizer_classes.txt is there"))
        return;
    char line[128];
    unsigned long checked = 0, wrong = 0;
    uint32_t next = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned a, b;
        char k;
        if (line[0] == '#' || sscanf(line, "%x %x %c", &a, &b, &k) != 3)
            continue;
        for (uint32_t cp = a; cp <= b; cp++) {
            char got = classify(t, cp);
            checked++;
            if (got != k && wrong++ < 10)
                printf("# U+%04X: Hugging Face class %c, ours %c\n", (unsigned)cp, k, got);
        }
        if (a != next && !(next == 0xd800 && a == 0xe000))
            wrong++, printf("# classes file skips from %x to %x\n", (unsigned)next, a);
        next = b + 1;
    }
    fclose(f);
    ok(checked == 0x110000 - 0x800 && wrong == 0,
       "all %lu code points are letters, numbers, white space or other as for Hugging Face (%lu differ)", checked, wrong);
}

/* ------------------------------------------------------------------ GPT-2: threads, long input */

struct job {
    const struct tokenizer *t;
    const char *text;
    size_t len;
    const int32_t *want[2];     /* [allow_special] */
    size_t nwant[2];
    int fails;
};

static void *encode_loop(void *arg)
{
    struct job *j = arg;
    for (int r = 0; r < 50; r++) {
        int32_t *ids;
        size_t n;
        if (tokenizer_encode(j->t, j->text, j->len, r & 1, &ids, &n) != 0 ||
            !same_ids(ids, n, j->want[r & 1], j->nwant[r & 1]))
            j->fails++;
        free(ids);
    }
    return NULL;
}

static void test_threads(const struct tokenizer *t)
{
    const char *text = "Threads share one tokenizer: 'tis immutable, isn't it? 😀 中文 <|endoftext|> 12345\n\n  x";
    int32_t *want[2];
    size_t nwant[2];
    tokenizer_encode(t, text, strlen(text), false, &want[0], &nwant[0]);
    tokenizer_encode(t, text, strlen(text), true, &want[1], &nwant[1]);
    pthread_t th[4];
    struct job jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (struct job){t, text, strlen(text), {want[0], want[1]}, {nwant[0], nwant[1]}, 0};
        pthread_create(&th[i], NULL, encode_loop, &jobs[i]);
    }
    int fails = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        fails += jobs[i].fails;
    }
    ok(fails == 0 && nwant[1] < nwant[0], "4 threads encoding at once agree (%d differ)", fails);
    free(want[0]);
    free(want[1]);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Not a benchmark: a guard against quadratic behaviour, with a limit
 * hundreds of times what linear work takes even under sanitizers. */
static void test_long(const struct tokenizer *t)
{
    size_t n = 1 << 20;
    char *s = malloc(n);
    uint32_t x = 12345;
    const char *kinds[] = {"letters", "spaces", "digits", "punctuation", "one letter", "newlines then a word"};
    for (int kind = 0; kind < 6; kind++) {
        for (size_t i = 0; i < n; i++) {
            x = x * 1103515245 + 12345;
            s[i] = kind == 0 ? (char)('a' + (x >> 16) % 26) : kind == 1 ? ' ' : kind == 2 ? (char)('0' + (x >> 16) % 10)
                 : kind == 3 ? "!#$%&()*+,-./:;<=>?@"[(x >> 16) % 20] : kind == 4 ? 'a' : '\n';
        }
        if (kind == 5)
            memcpy(s + n - 4, "word", 4);
        double t0 = now_s();
        int32_t *ids = NULL;
        size_t nids = 0;
        int rc = tokenizer_encode(t, s, n, true, &ids, &nids);
        double dt = now_s() - t0;
        char *back = NULL;
        size_t blen = 0;
        if (rc == 0)
            rc = tokenizer_decode(t, ids, nids, &back, &blen);
        ok(rc == 0 && blen == n && memcmp(back, s, n) == 0 && dt < 30,
           "a 1 MiB run of %s without a break: %zu ids, round trip, %.2f s", kinds[kind], nids, dt);
        free(ids);
        free(back);
    }
    free(s);
}

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

#ifndef UNDER_ASAN
/* Peak resident memory in kB (VmHWM), after resetting it to the current
 * resident size when reset; -1 when /proc cannot tell. */
static long peak_kb(bool reset)
{
    if (reset) {
        FILE *c = fopen("/proc/self/clear_refs", "w");
        if (!c || fputs("5", c) < 0 || fclose(c) != 0)
            return -1;
    }
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmHWM:", 6) == 0)
            kb = atol(line + 6);
    if (f)
        fclose(f);
    return kb;
}
#endif

/* What encoding one long word (the worst case: every byte a symbol to
 * merge) holds at its peak, against its size: under 20 times. */
static void test_memory(const struct tokenizer *t)
{
#ifdef UNDER_ASAN
    (void)t;
    printf("ok %d # SKIP the peak of an encoding under AddressSanitizer (its allocator keeps freed memory)\n",
           ++tap_count);
#else
    size_t n = 1 << 20;
    char *s = malloc(n);
    memset(s, 'x', n);
    int32_t *ids = NULL;
    size_t nids = 0;
    long before = peak_kb(true);
    int rc = tokenizer_encode(t, s, n, true, &ids, &nids);
    long after = peak_kb(false);
    if (before < 0 || after < 0)
        printf("ok %d # SKIP no VmHWM to reset in /proc/self\n", ++tap_count);
    else
        ok(rc == 0 && (after - before) * 1024.0 < 20.0 * (double)n,
           "encoding a 1 MiB word peaks at %.1f times its size (under 20)", (after - before) * 1024.0 / (double)n);
    free(ids);
    free(s);
#endif
    size_t longest = 0;
    for (int32_t id = 0; id < tokenizer_vocab_size(t); id++) {
        size_t len = 0;
        if (tokenizer_token_bytes(t, id, &len) && len > longest)
            longest = len;
    }
    ok(tokenizer_max_cover(t) == longest && longest > 1,
       "a GPT-2 token stands for at most %zu input bytes, its longest token", tokenizer_max_cover(t));
}

/* ------------------------------------------------------------------ a custom vocabulary */

static void check_cases(struct tokenizer *t, struct json_object *cases, const char *ids_key, const char *plain_key,
                        const char *what)
{
    size_t n = json_object_array_length(cases);
    int fail = 0;
    for (size_t i = 0; i < n; i++) {
        struct json_object *c = json_object_array_get_idx(cases, i);
        size_t len, nw, np, ng;
        unsigned char *text = unhex(json_str(c, "hex"), &len);
        int32_t *want = json_ids(c, ids_key, &nw), *plain = json_ids(c, plain_key, &np), *got = NULL;
        int rc = tokenizer_encode(t, (const char *)text, len, true, &got, &ng);
        if (rc != 0 || !same_ids(got, ng, want, nw)) {
            if (fail++ < 5) {
                printf("# %s case %zu differs\n", what, i);
                print_hex("text", text, len);
                print_ids("want", want, nw);
                print_ids("got ", got, rc == 0 ? ng : 0);
            }
        }
        free(got);
        rc = tokenizer_encode(t, (const char *)text, len, false, &got, &ng);
        if (rc != 0 || !same_ids(got, ng, plain, np)) {
            if (fail++ < 5) {
                printf("# %s case %zu differs without special tokens\n", what, i);
                print_hex("text", text, len);
                print_ids("want", plain, np);
                print_ids("got ", got, rc == 0 ? ng : 0);
            }
        }
        free(got);
        free(want);
        free(plain);
        free(text);
    }
    ok(fail == 0, "%s: %zu strings encode as Hugging Face does, with and without special tokens (%d differ)", what, n,
       fail);
}

static void test_custom(void)
{
    char path[2300];
    snprintf(path, sizeof path, "%s/tests/golden/tokenizer_custom.json", srcdir);
    struct json_object *g = json_object_from_file(path);
    if (!ok(g != NULL, "tokenizer_custom.json is there"))
        return;
    struct json_object *vocab, *config, *cases, *decodes;
    json_object_object_get_ex(g, "vocab", &vocab);
    json_object_object_get_ex(g, "config", &config);
    json_object_object_get_ex(g, "cases", &cases);
    json_object_object_get_ex(g, "decode", &decodes);
    const char *v = json_object_to_json_string_ext(vocab, JSON_C_TO_STRING_PLAIN);
    write_file("vocab.json", v, strlen(v));
    const char *m = json_str(g, "merges");
    write_file("merges.txt", m, strlen(m));

    char vp[512], mp[512];
    snprintf(vp, sizeof vp, "%s/vocab.json", tmpdir);
    snprintf(mp, sizeof mp, "%s/merges.txt", tmpdir);
    struct tokenizer *t = NULL;
    char err[512] = "";
    int rc = tokenizer_load(vp, mp, &t, err, sizeof err);
    if (!ok(rc == 0, "load a small custom vocabulary: %s", err)) {
        json_object_put(g);
        return;
    }
    struct json_object *eot;
    json_object_object_get_ex(vocab, "<|endoftext|>", &eot);
    is_int(tokenizer_eos_id(t), json_object_get_int(eot), "its <|endoftext|> is the end of text");
    is_int(tokenizer_vocab_size(t), json_object_object_length(vocab), "its size");
    check_cases(t, cases, "ids", "plain", "custom vocabulary");
    struct json_object *tw;
    json_object_object_get_ex(vocab, "two words", &tw);
    size_t len;
    const char *b = tokenizer_token_bytes(t, json_object_get_int(tw), &len);
    ok(b && len == 9 && memcmp(b, "two words", 9) == 0, "a token that is not byte-level text stands for itself");
    tokenizer_free(t);

    const char *c = json_object_to_json_string_ext(config, JSON_C_TO_STRING_PLAIN);
    write_file("tokenizer_config.json", c, strlen(c));
    t = NULL;
    rc = tokenizer_load_dir(tmpdir, &t, err, sizeof err);
    if (ok(rc == 0, "load the directory with its tokenizer_config.json: %s", err)) {
        check_cases(t, cases, "config_ids", "config_plain", "custom vocabulary + added tokens");
        is_int((long)tokenizer_max_cover(t), 0, "an added token that absorbs white space: no bytes-per-token bound");
        struct json_object *dec;
        json_object_object_get_ex(config, "added_tokens_decoder", &dec);
        int spec_ok = 0, total = 0;
        json_object_object_foreach(dec, key, val) {
            struct json_object *content, *special;
            json_object_object_get_ex(val, "content", &content);
            json_object_object_get_ex(val, "special", &special);
            int32_t want = json_object_get_boolean(special) ? atoi(key) : -1;
            total++;
            spec_ok += tokenizer_special_id(t, json_object_get_string(content)) == want &&
                       tokenizer_is_special(t, atoi(key)) == (want >= 0);
        }
        ok(spec_ok == total, "special_id knows the special ones, not the others (%d of %d)", spec_ok, total);
        size_t n = json_object_array_length(decodes);
        int fail = 0;
        for (size_t i = 0; i < n; i++) {
            struct json_object *d = json_object_array_get_idx(decodes, i);
            size_t nids, wlen, glen;
            int32_t *ids = json_ids(d, "ids", &nids);
            unsigned char *want = unhex(json_str(d, "hex"), &wlen);
            char *got = NULL;
            rc = tokenizer_decode(t, ids, nids, &got, &glen);
            if (rc != 0 || glen != wlen || memcmp(got, want, wlen) != 0) {
                if (fail++ < 5) {
                    printf("# custom decode %zu differs\n", i);
                    print_ids("ids ", ids, nids);
                    print_hex("want", want, wlen);
                    print_hex("got ", (unsigned char *)got, rc == 0 ? glen : 0);
                }
            }
            free(got);
            free(want);
            free(ids);
        }
        ok(fail == 0, "custom vocabulary: %zu decodes equal Hugging Face's (%d differ)", n, fail);
        tokenizer_free(t);
    }
    remove_file("tokenizer_config.json");
    remove_file("vocab.json");
    remove_file("merges.txt");
    json_object_put(g);
}

/* ------------------------------------------------------------------ load errors */

struct bad {
    const char *what;
    const char *vocab, *merges, *config;   /* config NULL: no tokenizer_config.json */
    int rc;
    const char *file;                      /* the file the message must name */
    const char *text;                      /* and a piece of the message */
};

static const char *V = "{\"a\": 0, \"b\": 1, \"ab\": 2, \"<|endoftext|>\": 3}";

static void test_load_errors(void)
{
    static const struct bad cases[] = {
        {"invalid JSON", "{\"a\": 0,\n \"b\" 1}", "", NULL, TOKENIZER_EFORMAT, "vocab.json", ":2:"},
        {"truncated JSON", "{\"a\": 0, \"b\": ", "", NULL, TOKENIZER_EFORMAT, "vocab.json", "end of file"},
        {"trailing garbage", "{\"a\": 0} x", "", NULL, TOKENIZER_EFORMAT, "vocab.json", "invalid JSON"},
        {"not an object", "[1, 2]", "", NULL, TOKENIZER_EFORMAT, "vocab.json", "not a JSON object"},
        {"empty vocabulary", "{}", "", NULL, TOKENIZER_EFORMAT, "vocab.json", "empty"},
        {"fractional id", "{\"a\": 0, \"b\": 1.5}", "", NULL, TOKENIZER_EFORMAT, "vocab.json", "\"b\": the id is not an integer"},
        {"string id", "{\"a\": \"0\"}", "", NULL, TOKENIZER_EFORMAT, "vocab.json", "not an integer"},
        {"boolean id", "{\"a\": true}", "", NULL, TOKENIZER_EFORMAT, "vocab.json", "not an integer"},
        {"negative id", "{\"a\": 0, \"b\": -1}", "", NULL, TOKENIZER_EFORMAT, "vocab.json", "id -1 out of range"},
        {"huge id", "{\"a\": 0, \"b\": 4000000000}", "", NULL, TOKENIZER_EFORMAT, "vocab.json", "out of range"},
        {"far id", "{\"a\": 0, \"b\": 1000000}", "", NULL, TOKENIZER_EFORMAT, "vocab.json", "out of range"},
        {"duplicate ids", "{\"a\": 0, \"b\": 1, \"c\": 1}", "", NULL, TOKENIZER_EFORMAT, "vocab.json", "same id 1"},
        {"invalid UTF-8 in JSON", "{\"a\xff\": 0}", "", NULL, TOKENIZER_EFORMAT, "vocab.json", "invalid JSON"},
        {"a merge of three symbols", NULL, "#version: 0.2\na b\na b c\n", NULL, TOKENIZER_EFORMAT, "merges.txt", ":3: malformed"},
        {"a merge of one symbol", NULL, "a\n", NULL, TOKENIZER_EFORMAT, "merges.txt", ":1: malformed"},
        {"an empty line", NULL, "a b\n\na b\n", NULL, TOKENIZER_EFORMAT, "merges.txt", ":2: malformed"},
        {"two spaces", NULL, "a  b\n", NULL, TOKENIZER_EFORMAT, "merges.txt", ":1: malformed"},
        {"unknown left symbol", NULL, "a b\nx b\n", NULL, TOKENIZER_EFORMAT, "merges.txt", ":2: merge names \"x\""},
        {"unknown right symbol", NULL, "a y\n", NULL, TOKENIZER_EFORMAT, "merges.txt", "\"y\", which is not in the vocabulary"},
        {"unknown result", NULL, "b a\n", NULL, TOKENIZER_EFORMAT, "merges.txt", "\"ba\""},
        {"config: invalid JSON", NULL, "a b\n", "{\"added_tokens_decoder\": {", TOKENIZER_EFORMAT, "tokenizer_config.json", "invalid JSON"},
        {"config: not an object", NULL, "a b\n", "{\"added_tokens_decoder\": []}", TOKENIZER_EFORMAT, "tokenizer_config.json", "not an object"},
        {"config: id not a number", NULL, "a b\n", "{\"added_tokens_decoder\": {\"x\": {\"content\": \"<x>\"}}}", TOKENIZER_EFORMAT, "tokenizer_config.json", "\"x\": the key is not an id"},
        {"config: negative id", NULL, "a b\n", "{\"added_tokens_decoder\": {\"-4\": {\"content\": \"<x>\"}}}", TOKENIZER_EFORMAT, "tokenizer_config.json", "not an id"},
        {"config: id out of range", NULL, "a b\n", "{\"added_tokens_decoder\": {\"99999999\": {\"content\": \"<x>\"}}}", TOKENIZER_EFORMAT, "tokenizer_config.json", "out of range"},
        {"config: no content", NULL, "a b\n", "{\"added_tokens_decoder\": {\"4\": {\"special\": true}}}", TOKENIZER_EFORMAT, "tokenizer_config.json", "no \"content\""},
        {"config: empty content", NULL, "a b\n", "{\"added_tokens_decoder\": {\"4\": {\"content\": \"\"}}}", TOKENIZER_EFORMAT, "tokenizer_config.json", "empty content"},
    };
    char err[512];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct bad *c = &cases[i];
        const char *v = c->vocab ? c->vocab : V;
        const char *m = c->merges ? c->merges : "#version: 0.2\na b\n";
        write_file("vocab.json", v, strlen(v));
        write_file("merges.txt", m, strlen(m));
        if (c->config)
            write_file("tokenizer_config.json", c->config, strlen(c->config));
        struct tokenizer *t = NULL;
        err[0] = '\0';
        int rc = tokenizer_load_dir(tmpdir, &t, err, sizeof err);
        ok(rc == c->rc && t == NULL && strstr(err, c->file) && strstr(err, c->text), "%s: %s", c->what, err);
        tokenizer_free(t);
        if (c->config)
            remove_file("tokenizer_config.json");
    }

    /* These load. */
    struct tokenizer *t = NULL;
    const char *good[][2] = {
        {"no #version line", "a b\n"},
        {"CRLF line ends", "#version: 0.2\r\na b\r\n"},
        {"no final newline", "a b"},
        {"no merges at all", ""},
        {"a pair named twice", "a b\na b\n"},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        write_file("vocab.json", V, strlen(V));
        write_file("merges.txt", good[i][1], strlen(good[i][1]));
        int rc = tokenizer_load_dir(tmpdir, &t, err, sizeof err);
        int32_t *ids = NULL;
        size_t n = 0;
        if (rc == 0)
            tokenizer_encode(t, "ab", 2, true, &ids, &n);
        bool merged = strlen(good[i][1]) > 0;
        ok(rc == 0 && n == (merged ? 1u : 2u) && ids[0] == (merged ? 2 : 0), "%s: loads and merges", good[i][0]);
        free(ids);
        tokenizer_free(t);
        t = NULL;
    }
    /* A vocabulary with gaps: the missing ids are not tokens. */
    const char *gaps = "{\"a\": 0, \"b\": 5, \"ab\": 9}";
    write_file("vocab.json", gaps, strlen(gaps));
    write_file("merges.txt", "a b\n", 4);
    if (ok(tokenizer_load_dir(tmpdir, &t, err, sizeof err) == 0, "a vocabulary with gaps loads")) {
        static const int32_t hole[] = {3};
        char *out;
        size_t len;
        is_int(tokenizer_vocab_size(t), 10, "its size is the largest id + 1");
        is_int(tokenizer_decode(t, hole, 1, &out, &len), TOKENIZER_ERANGE, "decoding a missing id is ERANGE");
        ok(tokenizer_token_bytes(t, 3, &len) == NULL, "a missing id has no bytes");
        is_int(tokenizer_eos_id(t), -1, "no <|endoftext|>: no end of text");
        tokenizer_free(t);
        t = NULL;
    }

    /* Missing files. */
    char vp[512], mp[512];
    snprintf(vp, sizeof vp, "%s/nonexistent.json", tmpdir);
    snprintf(mp, sizeof mp, "%s/merges.txt", tmpdir);
    int rc = tokenizer_load(vp, mp, &t, err, sizeof err);
    ok(rc == TOKENIZER_EIO && t == NULL && strstr(err, "nonexistent.json") && strstr(err, "No such file"),
       "missing vocab.json: %s", err);
    snprintf(vp, sizeof vp, "%s/vocab.json", tmpdir);
    snprintf(mp, sizeof mp, "%s/nonexistent.txt", tmpdir);
    rc = tokenizer_load(vp, mp, &t, err, sizeof err);
    ok(rc == TOKENIZER_EIO && strstr(err, "nonexistent.txt"), "missing merges.txt: %s", err);
    rc = tokenizer_load(tmpdir, vp, &t, err, sizeof err);
    ok(rc == TOKENIZER_EIO && strstr(err, tmpdir) && strstr(err, "directory"), "a directory as vocab.json: %s", err);
    char dp[512];
    snprintf(dp, sizeof dp, "%s/no-such-model", tmpdir);
    rc = tokenizer_load_dir(dp, &t, err, sizeof err);
    ok(rc == TOKENIZER_EIO && strstr(err, "no-such-model/vocab.json"), "a missing model directory: %s", err);
    remove_file("merges.txt");
    rc = tokenizer_load_dir(tmpdir, &t, err, sizeof err);
    ok(rc == TOKENIZER_EIO && strstr(err, "merges.txt"), "a model directory without merges.txt: %s", err);
    rc = tokenizer_load_mem("{\"a\":0}", 7, NULL, "", 0, NULL, NULL, 0, NULL, 0, &t, err, sizeof err);
    ok(rc == 0, "load_mem with default names");
    tokenizer_free(t);
    rc = tokenizer_load_mem("{\"a\":", 5, "mem-vocab", "", 0, NULL, NULL, 0, NULL, 0, &t, err, sizeof err);
    ok(rc == TOKENIZER_EFORMAT && strstr(err, "mem-vocab:1:"), "load_mem names the buffer: %s", err);
    remove_file("vocab.json");
}

/* ------------------------------------------------------------------ main */

int main(void)
{
    const char *src = getenv("LLMCGI_SRCDIR");
    snprintf(srcdir, sizeof srcdir, "%s", src ? src : ".");
    /* The committed copy (tests/fixtures), so a fresh clone runs every case. */
    snprintf(gpt2dir, sizeof gpt2dir, "%s/tests/fixtures/gpt2-tokenizer", srcdir);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_tokenizer.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        printf("Bail out! mkdtemp: %s\n", strerror(errno));
        return 1;
    }

    test_load_errors();
    test_custom();

    char vp[2200];
    snprintf(vp, sizeof vp, "%s/vocab.json", gpt2dir);
    if (access(vp, R_OK) != 0) {
        printf("ok %d # SKIP the GPT-2 tests: no tokenizer in %s\n", ++tap_count, gpt2dir);
    } else {
        struct tokenizer *t = NULL, *nojit = NULL;
        char err[512] = "";
        int rc = tokenizer_load_dir(gpt2dir, &t, err, sizeof err);
        ok(rc == 0, "load GPT-2's tokenizer: %s", err);
        char mp[2200];
        snprintf(mp, sizeof mp, "%s/merges.txt", gpt2dir);
        char *vbuf = NULL, *mbuf = NULL;
        size_t vl = 0, ml = 0;
        FILE *f = fopen(vp, "rb");
        if (f) {
            vbuf = malloc(2 << 20);
            vl = fread(vbuf, 1, 2 << 20, f);
            fclose(f);
        }
        f = fopen(mp, "rb");
        if (f) {
            mbuf = malloc(1 << 20);
            ml = fread(mbuf, 1, 1 << 20, f);
            fclose(f);
        }
        rc = tokenizer_load_mem(vbuf, vl, vp, mbuf, ml, mp, NULL, 0, NULL, TOKENIZER_NO_JIT, &nojit, err, sizeof err);
        ok(rc == 0, "and again from memory, without JIT: %s", err);
        free(vbuf);
        free(mbuf);
        if (t && nojit) {
            test_basics(t);
            test_corpus(t, nojit);
            test_golden_decodes(t);
            test_detok(t);
            test_threads(t);
            test_long(t);
            test_long(nojit);
            test_memory(t);
            test_classes(t);
        }
        tokenizer_free(t);
        tokenizer_free(nojit);
    }
    rmdir(tmpdir);
    return tap_done();
}
