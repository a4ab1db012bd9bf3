/* tokenizer.c -- GPT-2 byte-level BPE: loading vocab.json + merges.txt and the queries on a loaded tokenizer; encoding is tokenizer_encode.c's, decoding tokenizer_decode.c's. */
#include "config.h"
#include "tokenizer.h"
#include "tokenizer_int.h"

#include <json-c/json.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ the pre-tokenisation pattern
 *
 * GPT-2's pattern as Hugging Face `tokenizers` runs it (Oniguruma):
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * Two things differ between Oniguruma there and PCRE2, and are spelt out:
 * - \s is Unicode's White_Space property (25 code points) for Hugging Face;
 *   PCRE2 also counts U+180E. U+200B, U+2060 and U+FEFF are not spaces.
 * - Hugging Face's tables are Unicode 16.0; PCRE2 10.42 (Debian 12) knows
 *   Unicode 14.0. The letters and digits that Unicode 15.0, 15.1 and 16.0
 *   added are listed after \p{L} and \p{N} (harmless where PCRE2 already
 *   knows them). tests/golden/tokenizer_classes.txt holds Hugging Face's
 *   class of every code point; test_tokenizer checks all of them. */
#define WS "\\t\\n\\x0b\\f\\r \\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}"
#define NEW_L                                                                                       \
    "\\x{1c89}-\\x{1c8a}\\x{a7cb}-\\x{a7cd}\\x{a7da}-\\x{a7dc}\\x{105c0}-\\x{105f3}"                \
    "\\x{10d4a}-\\x{10d65}\\x{10d6f}-\\x{10d85}\\x{10ec2}-\\x{10ec4}\\x{1123f}-\\x{11240}"          \
    "\\x{11380}-\\x{11389}\\x{1138b}\\x{1138e}\\x{11390}-\\x{113b5}\\x{113b7}\\x{113d1}\\x{113d3}"  \
    "\\x{11bc0}-\\x{11be0}\\x{11f02}\\x{11f04}-\\x{11f10}\\x{11f12}-\\x{11f33}\\x{1342f}"           \
    "\\x{13441}-\\x{13446}\\x{13460}-\\x{143fa}\\x{16100}-\\x{1611d}\\x{16d40}-\\x{16d6c}"          \
    "\\x{18cff}\\x{1b132}\\x{1b155}\\x{1df25}-\\x{1df2a}\\x{1e030}-\\x{1e06d}\\x{1e4d0}-\\x{1e4eb}" \
    "\\x{1e5d0}-\\x{1e5ed}\\x{1e5f0}\\x{2b739}\\x{2ebf0}-\\x{2ee5d}\\x{31350}-\\x{323af}"
#define NEW_N                                                                                       \
    "\\x{10d40}-\\x{10d49}\\x{116d0}-\\x{116e3}\\x{11bf0}-\\x{11bf9}\\x{11f50}-\\x{11f59}"          \
    "\\x{16130}-\\x{16139}\\x{16d70}-\\x{16d79}\\x{1ccf0}-\\x{1ccf9}\\x{1d2c0}-\\x{1d2d3}"          \
    "\\x{1e4f0}-\\x{1e4f9}\\x{1e5f1}-\\x{1e5fa}"
#define LETTER "\\p{L}" NEW_L
#define DIGIT "\\p{N}" NEW_N
static const char gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d"
    "| ?[" LETTER "]+"
    "| ?[" DIGIT "]+"
    "| ?[^" WS LETTER DIGIT "]+"
    "|[" WS "]+(?![^" WS "])"
    "|[" WS "]+";

static uint64_t next_serial;        /* tags each loaded tokenizer (struct tokenizer.serial) */

/* ------------------------------------------------------------------ small helpers */

const char *tokenizer_strerror(int rc)
{
    switch (rc) {
    case TOKENIZER_OK: return "success";
    case TOKENIZER_ENOMEM: return "out of memory";
    case TOKENIZER_EIO: return "cannot read file";
    case TOKENIZER_EFORMAT: return "malformed tokenizer file";
    case TOKENIZER_ERANGE: return "token id out of range";
    case TOKENIZER_EREGEX: return "pre-tokenisation regex failed";
    case TOKENIZER_EINVAL: return "invalid argument";
    default: return "unknown tokenizer error";
    }
}

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* Writes s[0..n) quoted into out[outlen] for an error message: bytes outside
 * 0x20..0x7e as \xHH, cut after 40 bytes. */
static void quote(char *out, size_t outlen, const char *s, size_t n)
{
    size_t pos = 0;
    if (outlen < 8) {
        if (outlen)
            out[0] = '\0';
        return;
    }
    out[pos++] = '"';
    for (size_t i = 0; i < n && pos + 8 < outlen; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i == 40) {
            memcpy(out + pos, "...", 3);
            pos += 3;
            break;
        }
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
            out[pos++] = (char)c;
        else
            pos += (size_t)snprintf(out + pos, outlen - pos, "\\x%02x", c);
    }
    out[pos++] = '"';
    out[pos] = '\0';
}

/* The sequence at s[0..n) (n >= 1), by Unicode's "maximal subpart" rule
 * (what Python's and Rust's lossy decoders do): returns its length and sets
 * *st to 0 (a valid character), 1 (invalid: those bytes become one U+FFFD)
 * or 2 (all n bytes are a valid start that the end of input cut short). */
size_t tokenizer_utf8_seq(const unsigned char *s, size_t n, int *st)
{
    unsigned c = s[0];
    size_t need;
    unsigned lo = 0x80, hi = 0xbf;
    if (c < 0x80) {
        *st = 0;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        need = 1;
    } else if (c >= 0xe0 && c <= 0xef) {
        need = 2;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 3;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        *st = 1;
        return 1;
    }
    for (size_t i = 1; i <= need; i++) {
        if (i >= n) {
            *st = 2;
            return n;
        }
        if (s[i] < lo || s[i] > hi) {
            *st = 1;
            return i;
        }
        lo = 0x80;
        hi = 0xbf;
    }
    *st = 0;
    return need + 1;
}

bool tokenizer_utf8_valid(const char *p, size_t n)
{
    const unsigned char *s = (const unsigned char *)p;
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        int st;
        size_t k = tokenizer_utf8_seq(s + i, n - i, &st);
        if (st != 0)
            return false;
        i += k;
    }
    return true;
}

/* Copies in[0..n) to out with each invalid sequence replaced by U+FFFD (an
 * incomplete one at the end too); out holds at least 3n bytes. Returns the
 * length written. */
size_t tokenizer_utf8_lossy(const unsigned char *in, size_t n, char *out)
{
    size_t i = 0, o = 0;
    while (i < n) {
        if (in[i] < 0x80) {
            out[o++] = (char)in[i++];
            continue;
        }
        int st;
        size_t k = tokenizer_utf8_seq(in + i, n - i, &st);
        if (st == 0) {
            memcpy(out + o, in + i, k);
            o += k;
        } else {
            memcpy(out + o, replacement, 3);
            o += 3;
        }
        i += k;
    }
    return o;
}

/* Decodes one UTF-8 character of valid text; returns its length. */
size_t tokenizer_utf8_decode(const unsigned char *s, uint32_t *cp)
{
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    if (s[0] < 0xe0) {
        *cp = (uint32_t)(s[0] & 0x1f) << 6 | (s[1] & 0x3f);
        return 2;
    }
    if (s[0] < 0xf0) {
        *cp = (uint32_t)(s[0] & 0x0f) << 12 | (uint32_t)(s[1] & 0x3f) << 6 | (s[2] & 0x3f);
        return 3;
    }
    *cp = (uint32_t)(s[0] & 0x07) << 18 | (uint32_t)(s[1] & 0x3f) << 12 | (uint32_t)(s[2] & 0x3f) << 6 |
          (s[3] & 0x3f);
    return 4;
}

static size_t utf8_encode(uint32_t cp, char *out)
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
    out[0] = (char)(0xe0 | cp >> 12);
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
}

/* White_Space, the set that Hugging Face's \s and Rust's char::is_whitespace use. */
bool tokenizer_is_white_space(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0d) || c == 0x20 || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f ||
           c == 0x3000;
}

/* ------------------------------------------------------------------ GPT-2's byte <-> character map
 *
 * Every byte gets a printable character: '!'..'~', U+00A1..U+00AC and
 * U+00AE..U+00FF stand for themselves; the 68 others (controls, space,
 * U+007F..U+00A0, U+00AD) become U+0100, U+0101, ... in byte order. */
#define MAP_CHARS 324           /* every mapped character is below U+0144 */

static uint32_t byte_char(unsigned b)
{
    if ((b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae))
        return b;
    unsigned n = 0;             /* how many unprintable bytes come before b */
    for (unsigned x = 0; x < b; x++)
        if (!((x >= 0x21 && x <= 0x7e) || (x >= 0xa1 && x <= 0xac) || (x >= 0xae)))
            n++;
    return 256 + n;
}

static void char_bytes(int16_t map[MAP_CHARS])
{
    for (int c = 0; c < MAP_CHARS; c++)
        map[c] = -1;
    for (unsigned b = 0; b < 256; b++)
        map[byte_char(b)] = (int16_t)b;
}

/* The bytes a vocabulary string stands for, into out (room for len bytes):
 * each character mapped back to its byte, or, as Hugging Face's ByteLevel
 * decoder does, the string's own UTF-8 when any character is not in the map.
 * s must be valid UTF-8. Returns the length written. */
static size_t unmap_token(const int16_t map[MAP_CHARS], const char *s, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        i += tokenizer_utf8_decode((const unsigned char *)s + i, &cp);
        if (cp >= MAP_CHARS || map[cp] < 0) {
            memcpy(out, s, len);
            return len;
        }
        out[o++] = (char)map[cp];
    }
    return o;
}

/* ------------------------------------------------------------------ merge table */

/* Sets the pair's rank and result; a pair named again takes its later rank,
 * as Hugging Face's map does. */
static void merge_put(struct tokenizer *t, int32_t a, int32_t b, uint32_t rank, int32_t new_id)
{
    uint64_t key = pair_key(a, b);
    for (uint64_t i = pair_hash(key) & t->mask;; i = (i + 1) & t->mask) {
        struct merge_slot *s = &t->merges[i];
        if (s->key == key || s->key == EMPTY_KEY) {
            s->key = key;
            s->rank = rank;
            s->new_id = new_id;
            return;
        }
    }
}

/* ------------------------------------------------------------------ loading */

/* Reads a whole file. On success *buf (owned by the caller, NUL-terminated)
 * and *len; on error a message and TOKENIZER_EIO (missing_ok: ENOENT returns
 * 1 and no message). */
static int read_file(const char *path, char **buf, size_t *len, bool missing_ok, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (missing_ok && errno == ENOENT)
            return 1;
        return fail(err, errlen, TOKENIZER_EIO, "%s: cannot open: %s", path, strerror(errno));
    }
    struct stat st;
    const char *why = NULL;
    if (fstat(fd, &st) < 0)
        why = strerror(errno);
    else if (S_ISDIR(st.st_mode))
        why = strerror(EISDIR);
    else if (!S_ISREG(st.st_mode))
        why = "not a regular file";
    if (why) {
        close(fd);
        return fail(err, errlen, TOKENIZER_EIO, "%s: cannot read: %s", path, why);
    }
    size_t size = (size_t)st.st_size, got = 0;
    char *b = malloc(size + 1);
    if (!b) {
        close(fd);
        return fail(err, errlen, TOKENIZER_ENOMEM, "%s: out of memory", path);
    }
    while (got < size) {
        ssize_t r = read(fd, b + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = r < 0 ? errno : EIO;
            free(b);
            close(fd);
            return fail(err, errlen, TOKENIZER_EIO, "%s: cannot read: %s", path, strerror(e));
        }
        got += (size_t)r;
    }
    close(fd);
    b[size] = '\0';
    *buf = b;
    *len = size;
    return 0;
}

/* Parses a JSON document that must be an object. On success *out (owned by
 * the caller: json_object_put). */
static int parse_json_object(const char *buf, size_t len, const char *name, struct json_object **out,
                             char *err, size_t errlen)
{
    if (len > INT_MAX)
        return fail(err, errlen, TOKENIZER_EFORMAT, "%s: too large for a JSON file", name);
    struct json_tokener *tok = json_tokener_new();
    if (!tok)
        return fail(err, errlen, TOKENIZER_ENOMEM, "%s: out of memory", name);
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    struct json_object *obj = json_tokener_parse_ex(tok, buf, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (obj && jerr == json_tokener_success) {
        while (end < len && buf[end] && strchr(" \t\r\n", buf[end]))
            end++;
        if (end < len)
            jerr = json_tokener_error_parse_unexpected;     /* something after the document */
    }
    if (!obj || jerr != json_tokener_success) {
        json_object_put(obj);
        if (end > len)
            end = len;
        size_t line = 1, col = 1;
        for (size_t i = 0; i < end; i++) {
            if (buf[i] == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
        const char *why = jerr == json_tokener_continue ? "unexpected end of file" : json_tokener_error_desc(jerr);
        return fail(err, errlen, TOKENIZER_EFORMAT, "%s:%zu:%zu: invalid JSON: %s", name, line, col, why);
    }
    if (!json_object_is_type(obj, json_type_object)) {
        json_object_put(obj);
        return fail(err, errlen, TOKENIZER_EFORMAT, "%s: not a JSON object", name);
    }
    *out = obj;
    return 0;
}

/* The id of a vocabulary string (already checked), or NO_ID. */
static int32_t vocab_get(struct json_object *vocab, const char *s)
{
    struct json_object *v;
    if (!json_object_object_get_ex(vocab, s, &v))
        return NO_ID;
    return (int32_t)json_object_get_int64(v);
}

/* The highest id a vocabulary of n entries may use: gaps are allowed, but
 * not so many that a small file could make a huge table. */
static int64_t id_limit(size_t n)
{
    int64_t lim = (int64_t)n * 2 + 65536;
    return lim > INT32_MAX - 1 ? INT32_MAX - 1 : lim;
}

/* Appends an added token like `tmpl` (its text copied); a later one with
 * the same content replaces the earlier. */
static int add_token(struct tokenizer *t, const struct added *tmpl)
{
    for (size_t i = 0; i < t->n_added; i++) {
        struct added *a = &t->added[i];
        if (a->len == tmpl->len && memcmp(a->text, tmpl->text, tmpl->len) == 0) {
            char *keep = a->text;
            *a = *tmpl;
            a->text = keep;
            return 0;
        }
    }
    struct added *grown = realloc(t->added, (t->n_added + 1) * sizeof *grown);
    if (!grown)
        return TOKENIZER_ENOMEM;
    t->added = grown;
    char *copy = malloc(tmpl->len + 1);
    if (!copy)
        return TOKENIZER_ENOMEM;
    memcpy(copy, tmpl->text, tmpl->len);
    copy[tmpl->len] = '\0';
    t->added[t->n_added] = *tmpl;
    t->added[t->n_added++].text = copy;
    return 0;
}

/* A boolean member, `dflt` when absent or not a boolean. */
static bool json_flag(struct json_object *o, const char *key, bool dflt)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_boolean))
        return dflt;
    return json_object_get_boolean(v);
}

/* Reads "added_tokens_decoder" of tokenizer_config.json into t->added;
 * *max_id grows to the largest id seen. */
static int load_config(struct tokenizer *t, struct json_object *cfg, const char *name, size_t n_vocab,
                       int64_t *max_id, char *err, size_t errlen)
{
    struct json_object *dec;
    if (!json_object_object_get_ex(cfg, "added_tokens_decoder", &dec) || json_object_is_type(dec, json_type_null))
        return 0;
    if (!json_object_is_type(dec, json_type_object))
        return fail(err, errlen, TOKENIZER_EFORMAT, "%s: \"added_tokens_decoder\" is not an object", name);
    char q[200];
    json_object_object_foreach(dec, key, val) {
        quote(q, sizeof q, key, strlen(key));
        char *end;
        errno = 0;
        long long id = strtoll(key, &end, 10);
        if (!*key || *end || key[0] == '-' || key[0] == '+' || key[0] == ' ' || errno)
            return fail(err, errlen, TOKENIZER_EFORMAT, "%s: added_tokens_decoder entry %s: the key is not an id",
                        name, q);
        if (id > id_limit(n_vocab))
            return fail(err, errlen, TOKENIZER_EFORMAT, "%s: added_tokens_decoder entry %s: id out of range (0..%lld)",
                        name, q, (long long)id_limit(n_vocab));
        struct json_object *content;
        if (!json_object_is_type(val, json_type_object) || !json_object_object_get_ex(val, "content", &content) ||
            !json_object_is_type(content, json_type_string))
            return fail(err, errlen, TOKENIZER_EFORMAT, "%s: added_tokens_decoder entry %s: no \"content\" string",
                        name, q);
        const char *text = json_object_get_string(content);
        size_t len = (size_t)json_object_get_string_len(content);
        if (len == 0)
            return fail(err, errlen, TOKENIZER_EFORMAT, "%s: added_tokens_decoder entry %s: empty content", name, q);
        if (!tokenizer_utf8_valid(text, len))
            return fail(err, errlen, TOKENIZER_EFORMAT, "%s: added_tokens_decoder entry %s: content is not valid UTF-8",
                        name, q);
        bool special = json_flag(val, "special", false);
        struct added a = {(char *)text, len, (int32_t)id, special, json_flag(val, "lstrip", false),
                          json_flag(val, "rstrip", false), json_flag(val, "normalized", !special)};
        if (add_token(t, &a) < 0)
            return fail(err, errlen, TOKENIZER_ENOMEM, "%s: out of memory", name);
        if (id > *max_id)
            *max_id = id;
    }
    return 0;
}

/* Reads merges.txt into t's merge table. */
static int load_merges(struct tokenizer *t, struct json_object *vocab, const char *buf, size_t len,
                       const char *name, char *err, size_t errlen)
{
    /* Size the table for the number of lines. */
    size_t lines = 1;
    for (const char *p = buf; (p = memchr(p, '\n', (size_t)(buf + len - p))) != NULL; p++)
        lines++;
    uint64_t cap = 16;
    while (cap < 2 * (uint64_t)lines)
        cap *= 2;
    t->merges = malloc(cap * sizeof *t->merges);
    if (!t->merges)
        return fail(err, errlen, TOKENIZER_ENOMEM, "%s: out of memory", name);
    for (uint64_t i = 0; i < cap; i++)
        t->merges[i].key = EMPTY_KEY;
    t->mask = cap - 1;

    char *scratch = NULL;       /* "left\0right\0leftright\0" of one line */
    size_t scratch_cap = 0;
    uint32_t rank = 0;
    size_t lineno = 0;
    int rc = 0;
    char q[200];
    for (size_t pos = 0; pos < len;) {
        const char *line = buf + pos;
        const char *nl = memchr(line, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - line) : len - pos;
        pos += n + (nl ? 1 : 0);
        lineno++;
        if (n && line[n - 1] == '\r')
            n--;                /* CRLF ends a line too */
        if (n >= 8 && memcmp(line, "#version", 8) == 0)
            continue;
        const char *sp = memchr(line, ' ', n);
        if (!sp || memchr(sp + 1, ' ', (size_t)(line + n - sp - 1))) {
            quote(q, sizeof q, line, n);
            rc = fail(err, errlen, TOKENIZER_EFORMAT, "%s:%zu: malformed merge %s: expected two symbols and one space",
                      name, lineno, q);
            break;
        }
        size_t la = (size_t)(sp - line), lb = n - la - 1;
        if (2 * n + 3 > scratch_cap) {
            size_t c = 2 * n + 64;
            char *g = realloc(scratch, c);
            if (!g) {
                rc = fail(err, errlen, TOKENIZER_ENOMEM, "%s: out of memory", name);
                break;
            }
            scratch = g;
            scratch_cap = c;
        }
        char *a = scratch, *b = scratch + la + 1, *ab = b + lb + 1;
        memcpy(a, line, la);
        a[la] = '\0';
        memcpy(b, sp + 1, lb);
        b[lb] = '\0';
        memcpy(ab, a, la);
        memcpy(ab + la, b, lb);
        ab[la + lb] = '\0';
        bool has_nul = memchr(line, '\0', n) != NULL;     /* vocabulary strings never hold NUL here */
        int32_t ia = has_nul ? NO_ID : vocab_get(vocab, a);
        int32_t ib = has_nul ? NO_ID : vocab_get(vocab, b);
        int32_t iab = has_nul ? NO_ID : vocab_get(vocab, ab);
        const char *missing = ia == NO_ID ? a : ib == NO_ID ? b : iab == NO_ID ? ab : NULL;
        if (missing) {
            quote(q, sizeof q, missing, strlen(missing));
            rc = fail(err, errlen, TOKENIZER_EFORMAT, "%s:%zu: merge names %s, which is not in the vocabulary",
                      name, lineno, q);
            break;
        }
        merge_put(t, ia, ib, rank++, iab);
    }
    free(scratch);
    return rc;
}

static int load_vocab(struct tokenizer *t, struct json_object *vocab, const char *vname, struct json_object *cfg,
                      const char *cname, char *err, size_t errlen)
{
    size_t n = (size_t)json_object_object_length(vocab);
    int64_t limit = id_limit(n), max_id = -1;
    char q[200];

    /* Ids first: integers, in range. */
    json_object_object_foreach(vocab, key, val) {
        size_t klen = strlen(key);
        int64_t id = json_object_is_type(val, json_type_int) ? json_object_get_int64(val) : -1;
        if (id < 0 || id > limit || !tokenizer_utf8_valid(key, klen)) {
            quote(q, sizeof q, key, klen);
            if (!json_object_is_type(val, json_type_int))
                return fail(err, errlen, TOKENIZER_EFORMAT, "%s: entry %s: the id is not an integer", vname, q);
            if (id < 0 || id > limit)
                return fail(err, errlen, TOKENIZER_EFORMAT, "%s: entry %s: id %lld out of range (0..%lld)", vname,
                            q, (long long)json_object_get_int64(val), (long long)limit);
            return fail(err, errlen, TOKENIZER_EFORMAT, "%s: entry %s: not valid UTF-8", vname, q);
        }
        if (id > max_id)
            max_id = id;
    }
    if (cfg) {
        int rc = load_config(t, cfg, cname, n, &max_id, err, errlen);
        if (rc < 0)
            return rc;
    }
    if (max_id < 0)
        return fail(err, errlen, TOKENIZER_EFORMAT, "%s: the vocabulary is empty", vname);

    /* Each id's string, and duplicates. */
    t->n_ids = (int32_t)(max_id + 1);
    const char **str = calloc((size_t)t->n_ids, sizeof *str);
    size_t *slen = calloc((size_t)t->n_ids, sizeof *slen);
    t->present = calloc((size_t)t->n_ids, 1);
    t->off = calloc((size_t)t->n_ids + 1, sizeof *t->off);
    if (!str || !slen || !t->present || !t->off) {
        free(str);
        free(slen);
        return fail(err, errlen, TOKENIZER_ENOMEM, "%s: out of memory", vname);
    }
    int rc = 0;
    json_object_object_foreach(vocab, k2, v2) {
        int32_t id = (int32_t)json_object_get_int64(v2);
        if (str[id]) {
            char q2[200];
            quote(q, sizeof q, str[id], strlen(str[id]));
            quote(q2, sizeof q2, k2, strlen(k2));
            rc = fail(err, errlen, TOKENIZER_EFORMAT, "%s: entries %s and %s have the same id %d", vname, q, q2,
                      (int)id);
            goto out;
        }
        str[id] = k2;
        slen[id] = strlen(k2);
    }
    /* Added tokens decode as their content (Hugging Face looks them up first). */
    for (size_t i = 0; i < t->n_added; i++) {
        str[t->added[i].id] = t->added[i].text;
        slen[t->added[i].id] = t->added[i].len;
    }

    /* The bytes of every token. */
    size_t total = 0;
    for (int32_t i = 0; i < t->n_ids; i++)
        total += slen[i];
    t->bytes = malloc(total + 1);
    if (!t->bytes) {
        rc = fail(err, errlen, TOKENIZER_ENOMEM, "%s: out of memory", vname);
        goto out;
    }
    int16_t map[MAP_CHARS];
    char_bytes(map);
    size_t o = 0;
    for (int32_t i = 0; i < t->n_ids; i++) {
        t->off[i] = o;
        if (str[i]) {
            t->present[i] = 1;
            o += unmap_token(map, str[i], slen[i], t->bytes + o);
        }
    }
    t->off[t->n_ids] = o;

    /* The token of each byte. */
    for (unsigned b = 0; b < 256; b++) {
        char s[4];
        s[utf8_encode(byte_char(b), s)] = '\0';
        t->byte_id[b] = vocab_get(vocab, s);
    }
out:
    free(str);
    free(slen);
    return rc;
}

static int compile_pattern(struct tokenizer *t, unsigned flags, char *err, size_t errlen)
{
    int ec;
    PCRE2_SIZE eo;
    t->re = pcre2_compile((PCRE2_SPTR)gpt2_pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
    if (!t->re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return fail(err, errlen, TOKENIZER_EREGEX,
                    "tokenizer.c: the pre-tokenisation pattern does not compile at %zu: %s", (size_t)eo,
                    (const char *)msg);
    }
    t->jit = !(flags & TOKENIZER_NO_JIT) && pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE) == 0;
    return 0;
}

/* The most input bytes one token can stand for: its bytes, or an added
 * token's text. 0 (no bound) when input bytes can vanish: an added token
 * that absorbs the white space beside it, or a byte with no token (dropped). */
static size_t max_cover(const struct tokenizer *t)
{
    size_t most = 1;
    for (unsigned b = 0; b < 256; b++)
        if (t->byte_id[b] == NO_ID)
            return 0;
    for (size_t i = 0; i < t->n_added; i++) {
        if (t->added[i].lstrip || t->added[i].rstrip)
            return 0;
        most = t->added[i].len > most ? t->added[i].len : most;
    }
    for (int32_t i = 0; i < t->n_ids; i++)
        most = t->off[i + 1] - t->off[i] > most ? t->off[i + 1] - t->off[i] : most;
    return most;
}

int tokenizer_load_mem(const char *vocab_json, size_t vocab_len, const char *vocab_name, const char *merges_txt,
                       size_t merges_len, const char *merges_name, const char *config_json, size_t config_len,
                       const char *config_name, unsigned flags, struct tokenizer **out, char *err, size_t errlen)
{
    if (!out || !vocab_json || !merges_txt)
        return fail(err, errlen, TOKENIZER_EINVAL, "tokenizer_load_mem: missing argument");
    *out = NULL;
    if (!vocab_name)
        vocab_name = "vocab.json";
    if (!merges_name)
        merges_name = "merges.txt";
    if (!config_name)
        config_name = "tokenizer_config.json";
    struct tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return fail(err, errlen, TOKENIZER_ENOMEM, "tokenizer: out of memory");
    t->eos = NO_ID;
    t->serial = __atomic_add_fetch(&next_serial, 1, __ATOMIC_RELAXED);
    struct json_object *vocab = NULL, *cfg = NULL;
    int rc = parse_json_object(vocab_json, vocab_len, vocab_name, &vocab, err, errlen);
    if (rc == 0 && config_json)
        rc = parse_json_object(config_json, config_len, config_name, &cfg, err, errlen);
    if (rc == 0)
        rc = load_vocab(t, vocab, vocab_name, cfg, config_name, err, errlen);
    if (rc == 0)
        rc = load_merges(t, vocab, merges_txt, merges_len, merges_name, err, errlen);
    if (rc == 0) {
        /* <|endoftext|> is special when the vocabulary has it (unless the config said otherwise). */
        int32_t id = vocab_get(vocab, ENDOFTEXT);
        bool listed = false;
        for (size_t i = 0; i < t->n_added; i++)
            listed |= strcmp(t->added[i].text, ENDOFTEXT) == 0;
        struct added eot = {(char *)ENDOFTEXT, strlen(ENDOFTEXT), id, true, false, false, false};
        if (id != NO_ID && !listed && add_token(t, &eot) < 0)
            rc = fail(err, errlen, TOKENIZER_ENOMEM, "tokenizer: out of memory");
        t->eos = tokenizer_special_id(t, ENDOFTEXT);
    }
    if (rc == 0)
        rc = compile_pattern(t, flags, err, errlen);
    if (rc == 0)
        t->max_cover = max_cover(t);
    json_object_put(vocab);
    json_object_put(cfg);
    if (rc < 0) {
        tokenizer_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

int tokenizer_load(const char *vocab_json, const char *merges_txt, struct tokenizer **out, char *err, size_t errlen)
{
    if (!vocab_json || !merges_txt || !out)
        return fail(err, errlen, TOKENIZER_EINVAL, "tokenizer_load: missing argument");
    char *v = NULL, *m = NULL;
    size_t vl = 0, ml = 0;
    int rc = read_file(vocab_json, &v, &vl, false, err, errlen);
    if (rc == 0)
        rc = read_file(merges_txt, &m, &ml, false, err, errlen);
    if (rc == 0)
        rc = tokenizer_load_mem(v, vl, vocab_json, m, ml, merges_txt, NULL, 0, NULL, 0, out, err, errlen);
    free(v);
    free(m);
    return rc;
}

int tokenizer_load_dir(const char *model_dir, struct tokenizer **out, char *err, size_t errlen)
{
    if (!model_dir || !out)
        return fail(err, errlen, TOKENIZER_EINVAL, "tokenizer_load_dir: missing argument");
    size_t dl = strlen(model_dir);
    char *vp = malloc(dl + 32), *mp = malloc(dl + 32), *cp = malloc(dl + 32);
    char *v = NULL, *m = NULL, *c = NULL;
    size_t vl = 0, ml = 0, cl = 0;
    int rc = 0;
    if (!vp || !mp || !cp) {
        rc = fail(err, errlen, TOKENIZER_ENOMEM, "tokenizer: out of memory");
        goto out;
    }
    const char *sep = dl && model_dir[dl - 1] == '/' ? "" : "/";
    sprintf(vp, "%s%svocab.json", model_dir, sep);
    sprintf(mp, "%s%smerges.txt", model_dir, sep);
    sprintf(cp, "%s%stokenizer_config.json", model_dir, sep);
    rc = read_file(vp, &v, &vl, false, err, errlen);
    if (rc == 0)
        rc = read_file(mp, &m, &ml, false, err, errlen);
    if (rc == 0)
        rc = read_file(cp, &c, &cl, true, err, errlen);
    if (rc == 1)
        rc = 0;                 /* no tokenizer_config.json */
    if (rc == 0)
        rc = tokenizer_load_mem(v, vl, vp, m, ml, mp, c, cl, cp, 0, out, err, errlen);
out:
    free(v);
    free(m);
    free(c);
    free(vp);
    free(mp);
    free(cp);
    return rc;
}

void tokenizer_free(struct tokenizer *t)
{
    if (!t)
        return;
    free(t->off);
    free(t->bytes);
    free(t->present);
    free(t->merges);
    for (size_t i = 0; i < t->n_added; i++)
        free(t->added[i].text);
    free(t->added);
    pcre2_code_free(t->re);
    free(t);
}

/* ------------------------------------------------------------------ queries */

size_t tokenizer_max_cover(const struct tokenizer *t)
{
    return t ? t->max_cover : 0;
}

int tokenizer_vocab_size(const struct tokenizer *t)
{
    return t ? t->n_ids : 0;
}

const char *tokenizer_token_bytes(const struct tokenizer *t, int32_t id, size_t *len)
{
    if (!t || id < 0 || id >= t->n_ids || !t->present[id])
        return NULL;
    if (len)
        *len = t->off[id + 1] - t->off[id];
    return t->bytes + t->off[id];
}

int32_t tokenizer_special_id(const struct tokenizer *t, const char *text)
{
    if (!t || !text)
        return NO_ID;
    size_t len = strlen(text);
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].special && t->added[i].len == len && memcmp(t->added[i].text, text, len) == 0)
            return t->added[i].id;
    return NO_ID;
}

int32_t tokenizer_eos_id(const struct tokenizer *t)
{
    return t ? t->eos : NO_ID;
}

bool tokenizer_is_special(const struct tokenizer *t, int32_t id)
{
    if (!t || id < 0)
        return false;
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].special && t->added[i].id == id)
            return true;
    return false;
}
