/* fuzz_tokenizer.c -- fuzzes the BPE tokenizer: encode/decode/detok of any bytes, and its vocab/merges/config parsers.
 *
 * The first byte picks what the rest is:
 *   0-3  text: encoded with GPT-2's tokenizer (with or without special
 *        tokens); decode(encode(x)) must be x with invalid UTF-8 replaced by
 *        U+FFFD, the pre-tokenized pieces must cover that text exactly, and
 *        streaming detok must give decode's output in valid UTF-8 pieces.
 *   4    a vocab.json (with the merges.txt "a b")
 *   5    a merges.txt (with a fixed vocab.json)
 *   6    a tokenizer_config.json (with the fixed pair)
 *   7    vocab.json NUL merges.txt NUL text: load both, then encode the text
 * A loader must either succeed or fail with a message; what loads must
 * encode, decode and detok consistently.
 *
 * GPT-2's tokenizer is found through $LLMCGI_TOKENIZER_DIR,
 * $LLMCGI_SRCDIR/tests/fixtures/gpt2-tokenizer or tests/fixtures and
 * ../tests/fixtures from the working directory; without it a small built-in
 * byte-level vocabulary stands in, so the harness always runs. */
#include "config.h"
#include "fuzz.h"
#include "tokenizer.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct tokenizer *main_tok;     /* loaded once */
static char *fixed_vocab;               /* the built-in vocabulary (JSON) */
static const char fixed_merges[] =      /* \xc4\xa0 is U+0120, GPT-2's stand-in for a space */
    "#version: 0.2\n\xc4\xa0 t\nh e\n\xc4\xa0t he\ni n\n\xc4\xa0 a\ne r\n";

/* GPT-2's printable stand-in for byte b. */
static unsigned byte_char(unsigned b)
{
    if ((b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae)
        return b;
    unsigned n = 0;
    for (unsigned x = 0; x < b; x++)
        if (!((x >= 0x21 && x <= 0x7e) || (x >= 0xa1 && x <= 0xac) || x >= 0xae))
            n++;
    return 256 + n;
}

/* A vocabulary of the 256 byte characters, a few merges' results and <|endoftext|>. */
static char *make_vocab(void)
{
    size_t cap = 16384, n = 0;
    char *v = malloc(cap);
    n += (size_t)snprintf(v + n, cap - n, "{");
    for (unsigned b = 0; b < 256; b++)
        n += (size_t)snprintf(v + n, cap - n, "\"\\u%04x\": %u, ", byte_char(b), b);
    const char *more[] = {"\\u0120t", "he", "\\u0120the", "in", "\\u0120a", "er"};
    for (unsigned i = 0; i < 6; i++)
        n += (size_t)snprintf(v + n, cap - n, "\"%s\": %u, ", more[i], 256 + i);
    snprintf(v + n, cap - n, "\"<|endoftext|>\": 262}");
    return v;
}

static struct tokenizer *load_dir(const char *dir)
{
    struct tokenizer *t = NULL;
    char err[512];
    if (dir && tokenizer_load_dir(dir, &t, err, sizeof err) == 0)
        return t;
    return NULL;
}

static void init(void)
{
    fixed_vocab = make_vocab();
    const char *env = getenv("LLMCGI_TOKENIZER_DIR");
    main_tok = load_dir(env);
    const char *src = getenv("LLMCGI_SRCDIR");
    if (!main_tok && src) {
        char p[4096];
        snprintf(p, sizeof p, "%s/tests/fixtures/gpt2-tokenizer", src);
        main_tok = load_dir(p);
    }
    if (!main_tok)
        main_tok = load_dir("tests/fixtures/gpt2-tokenizer");
    if (!main_tok)
        main_tok = load_dir("../tests/fixtures/gpt2-tokenizer");
    if (!main_tok) {
        char err[512];
        if (tokenizer_load_mem(fixed_vocab, strlen(fixed_vocab), "built-in vocab", fixed_merges,
                               sizeof fixed_merges - 1, "built-in merges", NULL, 0, NULL, 0, &main_tok, err,
                               sizeof err) != 0)
            abort();
    }
}

/* Python's bytes.decode("utf-8", "replace"), written independently of the
 * tokenizer's own: the longest prefix of a well-formed sequence becomes one
 * U+FFFD. out holds 3n bytes. */
static size_t lossy(const unsigned char *s, size_t n, unsigned char *out)
{
    size_t i = 0, o = 0;
    while (i < n) {
        unsigned c = s[i];
        unsigned len = c < 0x80                  ? 1
                       : c >= 0xc2 && c <= 0xdf ? 2
                       : c >= 0xe0 && c <= 0xef ? 3
                       : c >= 0xf0 && c <= 0xf4 ? 4
                                                : 0;
        size_t ok = 0;
        if (len) {
            ok = 1;
            while (ok < len && i + ok < n) {
                unsigned b = s[i + ok];
                unsigned lo = 0x80, hi = 0xbf;
                if (ok == 1) {
                    if (c == 0xe0) lo = 0xa0;
                    if (c == 0xed) hi = 0x9f;
                    if (c == 0xf0) lo = 0x90;
                    if (c == 0xf4) hi = 0x8f;
                }
                if (b < lo || b > hi)
                    break;
                ok++;
            }
        }
        if (len && ok == len) {
            memcpy(out + o, s + i, len);
            o += len;
            i += len;
        } else {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i += ok ? ok : 1;
        }
    }
    return o;
}

struct cover {
    const unsigned char *want;
    size_t wlen, pos;
    bool bad;
};

static int on_piece(void *ud, const char *piece, size_t len, int32_t id)
{
    struct cover *c = ud;
    if (len == 0 || c->pos + len > c->wlen || memcmp(c->want + c->pos, piece, len) != 0)
        c->bad = true;
    c->pos += len;
    return 0;
}

static bool valid_piece(const char *s, size_t n)
{
    unsigned char *tmp = malloc(3 * n + 1);
    bool same = lossy((const unsigned char *)s, n, tmp) == n && memcmp(tmp, s, n) == 0;
    free(tmp);
    return same;
}

/* Decode and detok agree; when `text` is given, decode gives it back. */
static void check_ids(const struct tokenizer *t, const int32_t *ids, size_t n, const unsigned char *text, size_t tlen)
{
    char *dec = NULL;
    size_t dlen = 0;
    if (tokenizer_decode(t, ids, n, &dec, &dlen) != 0)
        abort();                        /* ids from encode are always in range */
    if (strlen(dec) > dlen || !valid_piece(dec, dlen))
        abort();
    if (text && (dlen != tlen || memcmp(dec, text, tlen) != 0))
        abort();
    struct detok d;
    detok_init(&d, t);
    size_t pos = 0;
    for (size_t i = 0; i <= n; i++) {
        const char *piece;
        size_t k;
        if ((i < n ? detok_push(&d, ids[i], &piece, &k) : detok_flush(&d, &piece, &k)) != 0)
            abort();
        if (!valid_piece(piece, k) || pos + k > dlen || memcmp(dec + pos, piece, k) != 0)
            abort();
        pos += k;
    }
    if (pos != dlen)
        abort();
    detok_free(&d);
    free(dec);
}

static void encode_check(const struct tokenizer *t, const uint8_t *data, size_t size, bool allow_special, bool exact)
{
    int32_t *ids = NULL;
    size_t n = 0;
    if (tokenizer_encode(t, (const char *)data, size, allow_special, &ids, &n) != 0 || !ids)
        abort();
    for (size_t i = 0; i < n; i++)
        if (!tokenizer_token_bytes(t, ids[i], NULL))
            abort();
    unsigned char *want = malloc(3 * size + 1);
    size_t wlen = lossy(data, size, want);
    check_ids(t, ids, n, exact ? want : NULL, wlen);
    struct cover c = {want, wlen, 0, false};
    if (tokenizer_pretokenize(t, (const char *)data, size, allow_special, on_piece, &c) != 0 || c.bad ||
        c.pos != wlen)
        abort();
    free(want);
    free(ids);
}

/* A loader's outcome: a tokenizer, or an error with a message. */
static struct tokenizer *try_load(const char *v, size_t vl, const char *m, size_t ml, const char *c, size_t cl)
{
    struct tokenizer *t = NULL;
    char err[512] = "";
    int rc = tokenizer_load_mem(v, vl, "vocab.json", m, ml, "merges.txt", c, cl, "tokenizer_config.json", 0, &t,
                                err, sizeof err);
    if (rc == 0 && !t)
        abort();
    if (rc != 0 && (t || !err[0] || (!strstr(err, ".json") && !strstr(err, ".txt") && rc != TOKENIZER_ENOMEM)))
        abort();
    return t;
}

static void use_loaded(struct tokenizer *t, const uint8_t *text, size_t len)
{
    static const char sample[] = "the cat<|endoftext|> in here \xe2\x82\xac\xff ";
    encode_check(t, (const uint8_t *)sample, sizeof sample - 1, true, false);
    encode_check(t, text, len, len & 1, false);
    /* every id decodes or is a hole */
    int n = tokenizer_vocab_size(t);
    for (int32_t id = n > 600 ? n - 600 : 0; id < n; id++) {
        size_t k;
        const char *b = tokenizer_token_bytes(t, id, &k);
        char *out = NULL;
        size_t olen;
        int rc = tokenizer_decode(t, &id, 1, &out, &olen);
        if ((b != NULL) != (rc == 0))
            abort();
        free(out);
    }
    tokenizer_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!main_tok)
        init();
    if (size < 1)
        return 0;
    unsigned mode = data[0] % 8;
    data++;
    size--;
    struct tokenizer *t;
    switch (mode) {
    case 0: case 1: case 2: case 3:
        encode_check(main_tok, data, size, mode & 1, true);
        break;
    case 4:
        t = try_load((const char *)data, size, "#version: 0.2\na b\n", 17, NULL, 0);
        if (t)
            use_loaded(t, data, size);
        break;
    case 5:
        t = try_load(fixed_vocab, strlen(fixed_vocab), (const char *)data, size, NULL, 0);
        if (t)
            use_loaded(t, data, size);
        break;
    case 6:
        t = try_load(fixed_vocab, strlen(fixed_vocab), fixed_merges, sizeof fixed_merges - 1, (const char *)data, size);
        if (t)
            use_loaded(t, data, size);
        break;
    default: {
        const uint8_t *z1 = memchr(data, 0, size);
        const uint8_t *z2 = z1 ? memchr(z1 + 1, 0, size - (size_t)(z1 + 1 - data)) : NULL;
        if (!z2)
            break;
        t = try_load((const char *)data, (size_t)(z1 - data), (const char *)z1 + 1, (size_t)(z2 - z1 - 1), NULL, 0);
        if (t)
            use_loaded(t, z2 + 1, size - (size_t)(z2 + 1 - data));
        break;
    }
    }
    return 0;
}
