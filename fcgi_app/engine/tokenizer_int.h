/* tokenizer_int.h -- what tokenizer.c (loading), tokenizer_encode.c and tokenizer_decode.c share: the loaded tokenizer's layout, the merge table's look-up, the UTF-8 helpers. Not for other modules: they use tokenizer.h. */
#ifndef LLMCGI_TOKENIZER_INT_H
#define LLMCGI_TOKENIZER_INT_H

#include "tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------ types */

#define ENDOFTEXT "<|endoftext|>"
#define NO_ID (-1)

struct added {                  /* a token matched literally in text before the regex runs */
    char *text;                 /* owned: its content as written (UTF-8) */
    size_t len;
    int32_t id;
    bool special;               /* only matched with allow_special */
    bool lstrip, rstrip;        /* it absorbs the white space on its left / right */
    bool normalized;            /* matched in a second pass, in what the others left */
};

struct merge_slot {
    uint64_t key;               /* left id << 32 | right id; EMPTY_KEY when free */
    uint32_t rank;
    int32_t new_id;
};
#define EMPTY_KEY UINT64_MAX

struct tokenizer {
    int32_t n_ids;              /* one more than the largest id */
    size_t *off;                /* owned: token i's bytes are bytes[off[i]..off[i+1]) */
    char *bytes;                /* owned */
    unsigned char *present;     /* owned: 1 where id i exists */
    int32_t byte_id[256];       /* the token of each single byte, NO_ID if the vocabulary lacks it */
    struct merge_slot *merges;  /* owned: open addressing, (mask + 1) slots */
    uint64_t mask;
    struct added *added;        /* owned */
    size_t n_added;
    int32_t eos;
    pcre2_code *re;             /* owned; shared read-only by all threads */
    bool jit;                   /* JIT compiled: a JIT stack overflow falls back to the interpreter */
    uint64_t serial;            /* unique per load: tags this tokenizer's entries in the word caches */
    size_t max_cover;           /* the most input bytes one token stands for; 0: no bound */
};

static const char replacement[3] = {(char)0xef, (char)0xbf, (char)0xbd};   /* U+FFFD */

/* The sequence at s[0..n) (n >= 1), by Unicode's "maximal subpart" rule
 * (what Python's and Rust's lossy decoders do): returns its length and sets
 * *st to 0 (a valid character), 1 (invalid: those bytes become one U+FFFD)
 * or 2 (all n bytes are a valid start that the end of input cut short). */
size_t tokenizer_utf8_seq(const unsigned char *s, size_t n, int *st);

bool tokenizer_utf8_valid(const char *p, size_t n);

/* Copies in[0..n) to out with each invalid sequence replaced by U+FFFD (an
 * incomplete one at the end too); out holds at least 3n bytes. Returns the
 * length written. */
size_t tokenizer_utf8_lossy(const unsigned char *in, size_t n, char *out);

/* Decodes one UTF-8 character of valid text; returns its length. */
size_t tokenizer_utf8_decode(const unsigned char *s, uint32_t *cp);

/* White_Space, the set that Hugging Face's \s and Rust's char::is_whitespace use. */
bool tokenizer_is_white_space(uint32_t c);

/* ------------------------------------------------------------------ merge table */

static inline uint64_t pair_key(int32_t a, int32_t b)
{
    return (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
}

static inline uint64_t pair_hash(uint64_t key)
{
    key ^= key >> 29;
    key *= 0xbf58476d1ce4e5b9ull;
    key ^= key >> 32;
    return key;
}

static inline const struct merge_slot *merge_find(const struct tokenizer *t, int32_t a, int32_t b)
{
    uint64_t key = pair_key(a, b);
    for (uint64_t i = pair_hash(key) & t->mask;; i = (i + 1) & t->mask) {
        const struct merge_slot *s = &t->merges[i];
        if (s->key == key)
            return s;
        if (s->key == EMPTY_KEY)
            return NULL;
    }
}

#endif
