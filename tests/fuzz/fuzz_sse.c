/* fuzz_sse.c -- fuzzes the incremental SSE parser: the first byte picks a split point and a limit;
 * parsing whole, split in two and byte by byte must give the same events and the same result. */
#include "config.h"
#include "fuzz.h"
#include "sse_parse.h"

#include <stdlib.h>
#include <string.h>

struct trace {
    unsigned char *buf;     /* events as name NUL data NUL ... */
    size_t len, cap;
    size_t max;
    int count;
};

static void put(struct trace *t, const void *p, size_t n)
{
    if (t->len + n > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        while (cap < t->len + n)
            cap *= 2;
        t->buf = realloc(t->buf, cap);
        if (!t->buf)
            abort();
        t->cap = cap;
    }
    memcpy(t->buf + t->len, p, n);
    t->len += n;
}

static int on_event(void *ud, const char *event, const char *data, size_t len)
{
    struct trace *t = ud;
    if (data[len] != '\0' || strlen(event) > 63 || len > t->max)
        abort();                        /* NUL-terminated; name and data within their bounds */
    put(t, event, strlen(event) + 1);
    put(t, data, len + 1);
    t->count++;
    return t->count >= 1000 ? 5 : 0;    /* also exercises a callback stopping the parse */
}

/* Parses data in pieces: cut1 and cut2 split it in three, or step > 0 feeds step bytes at a time. */
static int run(const uint8_t *data, size_t size, size_t max, size_t cut1, size_t cut2, size_t step, struct trace *t)
{
    struct sse_parser p;
    sse_parser_init(&p, max, on_event, t);
    t->max = max;
    int rc = 0;
    if (step) {
        for (size_t i = 0; i < size && rc == 0; i += step)
            rc = sse_parser_feed(&p, (const char *)data + i, size - i < step ? size - i : step);
    } else {
        rc = sse_parser_feed(&p, (const char *)data, cut1);
        if (rc == 0)
            rc = sse_parser_feed(&p, (const char *)data + cut1, cut2 - cut1);
        if (rc == 0)
            rc = sse_parser_feed(&p, (const char *)data + cut2, size - cut2);
    }
    if (rc == 0)
        rc = sse_parser_finish(&p);
    if (p.line_cap > max + 1 || p.data_cap > max + 1)
        abort();                        /* bounded: never more than the limit */
    sse_parser_free(&p);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t max = 8 + data[0] % 120;     /* small, so that the limit is hit often */
    size_t cut = data[1] % (size - 1);
    data += 2;
    size -= 2;
    if (cut > size)
        cut = size;

    struct trace whole = {0}, split = {0}, bytes = {0}, three = {0};
    int r1 = run(data, size, max, size, size, 0, &whole);
    int r2 = run(data, size, max, cut, cut, 0, &split);
    int r3 = run(data, size, max, 0, 0, 1, &bytes);
    int r4 = run(data, size, max, cut / 2, cut, 0, &three);
    if (r1 != 0 && r1 != 5 && r1 != SSE_PARSE_TOO_LARGE)
        abort();
    /* The same events in the same order, and the same outcome. A line over
     * the limit may be noticed at a different point, so after TOO_LARGE only
     * the events before it are compared. */
    struct trace *others[] = {&split, &bytes, &three};
    int rcs[] = {r2, r3, r4};
    for (int i = 0; i < 3; i++) {
        if (rcs[i] != r1)
            abort();
        if (r1 == SSE_PARSE_TOO_LARGE) {
            size_t n = whole.len < others[i]->len ? whole.len : others[i]->len;
            if (n && memcmp(whole.buf, others[i]->buf, n) != 0)
                abort();
        } else if (others[i]->len != whole.len || others[i]->count != whole.count ||
                   (whole.len && memcmp(whole.buf, others[i]->buf, whole.len) != 0)) {
            abort();
        }
    }
    free(whole.buf);
    free(split.buf);
    free(bytes.buf);
    free(three.buf);
    return 0;
}
