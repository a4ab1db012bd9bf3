/* sse_parse.c -- an incremental parser for the server-sent event streams that upstreams send. */
#include "sse_parse.h"

#include <stdlib.h>
#include <string.h>

void sse_parser_init(struct sse_parser *p, size_t max, sse_event_fn fn, void *ud)
{
    memset(p, 0, sizeof *p);
    p->max = max;
    p->on_event = fn;
    p->ud = ud;
}

void sse_parser_free(struct sse_parser *p)
{
    free(p->line);
    free(p->data);
    p->line = p->data = NULL;
    p->line_len = p->line_cap = p->data_len = p->data_cap = 0;
}

/* Grows *buf to hold `need` bytes; 0 or an error code. */
static int reserve(char **buf, size_t *cap, size_t need, size_t max)
{
    if (need > max + 1)
        return SSE_PARSE_TOO_LARGE;
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 256;
    while (n < need)
        n *= 2;
    if (n > max + 1)
        n = max + 1;
    char *grown = realloc(*buf, n);
    if (!grown)
        return SSE_PARSE_NOMEM;
    *buf = grown;
    *cap = n;
    return 0;
}

static int dispatch(struct sse_parser *p)
{
    int rc = 0;
    if (p->have_data) {
        if (p->data_len && p->data[p->data_len - 1] == '\n')
            p->data_len--;                  /* the '\n' after the last data line */
        p->data[p->data_len] = '\0';
        p->events++;
        rc = p->on_event(p->ud, p->event, p->data, p->data_len);
    }
    p->have_data = false;
    p->data_len = 0;
    p->event[0] = '\0';
    return rc;
}

/* One complete line (without its end). */
static int process_line(struct sse_parser *p, const char *line, size_t len)
{
    if (len == 0)
        return dispatch(p);
    if (line[0] == ':')
        return 0;                           /* comment */
    const char *colon = memchr(line, ':', len);
    size_t nlen = colon ? (size_t)(colon - line) : len;
    const char *value = colon ? colon + 1 : line + len;
    size_t vlen = len - (size_t)(value - line);
    if (vlen && value[0] == ' ')
        value++, vlen--;
    if (nlen == 4 && memcmp(line, "data", 4) == 0) {
        int rc = reserve(&p->data, &p->data_cap, p->data_len + vlen + 2, p->max);
        if (rc)
            return rc;
        memcpy(p->data + p->data_len, value, vlen);
        p->data_len += vlen;
        p->data[p->data_len++] = '\n';
        p->have_data = true;
    } else if (nlen == 5 && memcmp(line, "event", 5) == 0) {
        size_t n = vlen < sizeof p->event - 1 ? vlen : sizeof p->event - 1;
        memcpy(p->event, value, n);
        p->event[n] = '\0';
    }
    return 0;                               /* id, retry and unknown fields are ignored */
}

int sse_parser_feed(struct sse_parser *p, const char *buf, size_t len)
{
    static const char bom[] = "\xEF\xBB\xBF";
    size_t i = 0;
    while (!p->started && i < len) {        /* a UTF-8 BOM may open the stream, split across feeds */
        if (buf[i] == bom[p->bom_len]) {
            i++;
            p->started = ++p->bom_len == 3;
            continue;
        }
        p->started = true;
        if (p->bom_len) {                   /* not a BOM after all: its bytes start the first line */
            int rc = reserve(&p->line, &p->line_cap, p->bom_len + 1, p->max);
            if (rc)
                return rc;
            memcpy(p->line, bom, p->bom_len);
            p->line_len = p->bom_len;
        }
    }
    while (i < len) {
        if (p->after_cr) {
            p->after_cr = false;
            if (buf[i] == '\n') {
                i++;
                continue;
            }
        }
        const char *start = buf + i;
        size_t rest = len - i, n = 0;
        while (n < rest && start[n] != '\n' && start[n] != '\r')
            n++;
        if (n == rest) {                    /* no line end yet: keep the piece */
            int rc = reserve(&p->line, &p->line_cap, p->line_len + n + 1, p->max);
            if (rc)
                return rc;
            memcpy(p->line + p->line_len, start, n);
            p->line_len += n;
            return 0;
        }
        p->after_cr = start[n] == '\r';
        int rc;
        if (p->line_len) {
            if ((rc = reserve(&p->line, &p->line_cap, p->line_len + n + 1, p->max)) != 0)
                return rc;
            memcpy(p->line + p->line_len, start, n);
            size_t total = p->line_len + n;
            p->line_len = 0;
            rc = process_line(p, p->line, total);
        } else {
            if (n > p->max)
                return SSE_PARSE_TOO_LARGE;
            rc = process_line(p, start, n);
        }
        if (rc)
            return rc;
        i += n + 1;
    }
    return 0;
}

int sse_parser_finish(struct sse_parser *p)
{
    if (p->line_len) {
        size_t n = p->line_len;
        p->line_len = 0;
        int rc = process_line(p, p->line, n);
        if (rc)
            return rc;
    }
    return dispatch(p);
}
