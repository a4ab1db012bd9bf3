/* tokenizer_decode.c -- GPT-2 byte-level BPE decoding and streaming detokenisation (whole UTF-8 characters only). */
#include "config.h"
#include "tokenizer.h"
#include "tokenizer_int.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ decoding */

int tokenizer_decode(const struct tokenizer *t, const int32_t *ids, size_t n, char **out, size_t *len)
{
    if (!t || (!ids && n) || !out)
        return TOKENIZER_EINVAL;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_ids || !t->present[ids[i]])
            return TOKENIZER_ERANGE;
        total += t->off[ids[i] + 1] - t->off[ids[i]];
    }
    unsigned char *raw = malloc(total + 1);
    char *text = total <= (SIZE_MAX - 1) / 3 ? malloc(3 * total + 1) : NULL;
    if (!raw || !text) {
        free(raw);
        free(text);
        return TOKENIZER_ENOMEM;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        size_t k = t->off[ids[i] + 1] - t->off[ids[i]];
        memcpy(raw + o, t->bytes + t->off[ids[i]], k);
        o += k;
    }
    size_t m = tokenizer_utf8_lossy(raw, total, text);
    free(raw);
    text[m] = '\0';
    *out = text;
    if (len)
        *len = m;
    return 0;
}

void detok_init(struct detok *d, const struct tokenizer *t)
{
    memset(d, 0, sizeof *d);
    d->t = t;
}

void detok_free(struct detok *d)
{
    free(d->buf);
    d->buf = NULL;
    d->cap = 0;
    d->npend = 0;
}

static int detok_reserve(struct detok *d, size_t need)
{
    if (need <= d->cap)
        return 0;
    size_t cap = d->cap ? d->cap : 64;
    while (cap < need)
        cap *= 2;
    char *g = realloc(d->buf, cap);
    if (!g)
        return TOKENIZER_ENOMEM;
    d->buf = g;
    d->cap = cap;
    return 0;
}

int detok_push(struct detok *d, int32_t id, const char **text, size_t *len)
{
    size_t k;
    const char *b = tokenizer_token_bytes(d->t, id, &k);
    if (!b)
        return TOKENIZER_ERANGE;
    /* Output: at most 3 bytes per input byte, pending ones included. */
    if (detok_reserve(d, 3 * (k + d->npend) + 1) < 0)
        return TOKENIZER_ENOMEM;
    size_t o = 0, i = 0;
    const unsigned char *s = (const unsigned char *)b;
    /* Complete the pending sequence first, byte by byte. */
    while (d->npend && i < k) {
        d->pend[d->npend++] = s[i];
        int st;
        size_t m = tokenizer_utf8_seq(d->pend, d->npend, &st);
        if (st == 2) {
            i++;
        } else if (st == 0) {
            memcpy(d->buf + o, d->pend, m);
            o += m;
            i++;
            d->npend = 0;
        } else {
            /* The bytes before s[i] were a valid start that s[i] breaks:
             * they become U+FFFD and s[i] starts afresh. */
            memcpy(d->buf + o, replacement, 3);
            o += 3;
            d->npend = 0;
        }
    }
    /* The rest of the token. */
    while (i < k) {
        if (s[i] < 0x80) {
            d->buf[o++] = (char)s[i++];
            continue;
        }
        int st;
        size_t m = tokenizer_utf8_seq(s + i, k - i, &st);
        if (st == 0) {
            memcpy(d->buf + o, s + i, m);
            o += m;
        } else if (st == 1) {
            memcpy(d->buf + o, replacement, 3);
            o += 3;
        } else {
            memcpy(d->pend, s + i, m);
            d->npend = m;
        }
        i += m;
    }
    d->buf[o] = '\0';
    *text = d->buf;
    *len = o;
    return 0;
}

int detok_flush(struct detok *d, const char **text, size_t *len)
{
    if (detok_reserve(d, 4) < 0)
        return TOKENIZER_ENOMEM;
    size_t o = 0;
    if (d->npend) {
        memcpy(d->buf, replacement, 3);
        o = 3;
    }
    d->npend = 0;
    d->buf[o] = '\0';
    *text = d->buf;
    *len = o;
    return 0;
}
