/* sse_parse.c -- an incremental parser for the server-sent event streams that upstreams send.
 *
 * Feed it bytes as they arrive, in pieces of any size; it calls back once per
 * complete event with the event name and the data lines joined by '\n'
 * (the WHATWG rules: CRLF, LF or CR end a line, one space after the colon
 * is dropped, comments and id/retry fields are ignored). Upstreams write
 * "data:" with or without the space (TGI omits it). Pure and bounded: a
 * line or event longer than the limit is an error, never a large allocation. */
#ifndef LLMCGI_SSE_PARSE_H
#define LLMCGI_SSE_PARSE_H

#include <stdbool.h>
#include <stddef.h>

/* Called per event: `event` is "" when the stream gave no name; data is
 * NUL-terminated (len excludes the NUL) and valid during the call only.
 * Return 0 to go on, non-zero to stop (sse_parser_feed returns it). */
typedef int (*sse_event_fn)(void *ud, const char *event, const char *data, size_t len);

struct sse_parser {
    sse_event_fn on_event;
    void *ud;
    size_t max;             /* the longest line and the largest event */
    char *line;             /* owned: the line being read */
    size_t line_len, line_cap;
    char *data;             /* owned: data lines of the event being read */
    size_t data_len, data_cap;
    bool have_data;
    bool after_cr;          /* the last byte was CR: a following LF is part of that line end */
    bool started;           /* past a possible UTF-8 BOM */
    unsigned char bom_len;  /* bytes of a BOM seen so far (it may arrive split) */
    char event[64];
    unsigned events;        /* events dispatched so far */
};

enum { SSE_PARSE_TOO_LARGE = -2, SSE_PARSE_NOMEM = -3 };

void sse_parser_init(struct sse_parser *p, size_t max, sse_event_fn fn, void *ud);

/* Parses buf[0..len). Returns 0, the callback's non-zero value, or
 * SSE_PARSE_TOO_LARGE / SSE_PARSE_NOMEM. */
int sse_parser_feed(struct sse_parser *p, const char *buf, size_t len);

/* At the end of the stream: dispatches an event whose closing blank line
 * never came (some servers end on "data: x\n"). Returns like feed. */
int sse_parser_finish(struct sse_parser *p);

/* Frees the buffers; the parser can be initialised again. */
void sse_parser_free(struct sse_parser *p);

#endif
