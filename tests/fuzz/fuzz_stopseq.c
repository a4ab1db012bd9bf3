/* fuzz_stopseq.c -- fuzzes the streaming stop-sequence matcher: streamed in random pieces (and byte by byte)
 * it must give what one feed of the whole text gives, and what a naive search of the whole text gives.
 *
 * Input: byte 0: the number of stop strings (low 3 bits, taken mod 5); then per stop string a length byte
 * (1 + b % 16) and that many bytes (NUL bytes become 'a'); byte: a seed for the cut points; the rest is the
 * generated text. */
#include "config.h"
#include "fuzz.h"
#include "stopseq.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct run {
    unsigned char *text;
    size_t len;
    bool stopped;
    int which;
    size_t offset;
};

static void take(struct run *r, const struct stopseq_result *res, size_t cap)
{
    if (r->len + res->len > cap || (res->len && !res->text))
        abort();
    memcpy(r->text + r->len, res->text, res->len);
    r->len += res->len;
    if (res->stopped) {
        if (r->stopped)
            abort();                        /* stops once */
        r->stopped = true;
        r->which = res->which;
        r->offset = res->offset;
    }
}

/* mode 0: one feed; 1: byte by byte; 2: pieces from the seed */
static void stream(const char *const *stops, size_t n, const unsigned char *text, size_t len, int mode,
                   unsigned seed, size_t maxlen, struct run *r)
{
    struct stopseq *ss = stopseq_new(stops, NULL, n);
    if (!ss)
        abort();
    r->text = malloc(len + 1);
    if (!r->text)
        abort();
    r->len = 0;
    r->stopped = false;
    r->which = -1;
    r->offset = 0;
    struct stopseq_result res;
    size_t pos = 0;
    while (pos < len) {
        size_t step = len - pos;
        if (mode == 1) {
            step = 1;
        } else if (mode == 2) {
            seed = seed * 1103515245u + 12345u;
            step = 1 + (seed >> 16) % 9;
            step = step > len - pos ? len - pos : step;
        }
        if (stopseq_feed(ss, (const char *)text + pos, step, &res) != STOPSEQ_OK)
            abort();
        take(r, &res, len);
        pos += step;
        /* what is held back could only be the start of a stop string */
        if (!r->stopped && pos - r->len > (maxlen ? maxlen - 1 : 0))
            abort();
    }
    stopseq_finish(ss, &res);
    take(r, &res, len);
    stopseq_free(ss);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t p = 0, n = (data[p++] & 7) % 5, maxlen = 0;
    char stop_buf[4][17];
    const char *stops[4];
    for (size_t i = 0; i < n; i++) {
        if (p >= size)
            return 0;
        size_t l = 1 + data[p++] % 16;
        if (p + l > size)
            return 0;
        for (size_t k = 0; k < l; k++)
            stop_buf[i][k] = data[p + k] ? (char)data[p + k] : 'a';
        stop_buf[i][l] = '\0';
        stops[i] = stop_buf[i];
        maxlen = l > maxlen ? l : maxlen;
        p += l;
    }
    if (p >= size)
        return 0;
    unsigned seed = data[p++];
    const unsigned char *text = data + p;
    size_t len = size - p;

    /* the naive answer: the first end position of any stop string; the longest there */
    long start = -1;
    int which = -1;
    for (size_t e = 1; e <= len && start < 0; e++) {
        size_t best = 0;
        for (size_t i = 0; i < n; i++) {
            size_t l = strlen(stops[i]);
            if (l <= e && l > best && memcmp(text + e - l, stops[i], l) == 0) {
                best = l;
                which = (int)i;
            }
        }
        if (best)
            start = (long)(e - best);
    }
    size_t want = start < 0 ? len : (size_t)start;

    for (int mode = 0; mode < 3; mode++) {
        struct run r;
        stream(stops, n, text, len, mode, seed, maxlen, &r);
        if (r.len != want || memcmp(r.text, text, want) != 0 || r.stopped != (start >= 0) || r.which != which ||
            (start >= 0 && r.offset != (size_t)start))
            abort();
        free(r.text);
    }
    return 0;
}
