/* test_sse_parse.c -- the incremental SSE parser: WHATWG framing, chunk boundaries, limits, finish(). */
#include "config.h"
#include "sse_parse.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>

/* Events seen, written as "name|data\n" each (name "" when unnamed). */
struct seen {
    char log[8192];
    size_t len;
    int count;
    int stop_at;        /* return 7 on this event (1-based), 0 = never */
};

static int on_event(void *ud, const char *event, const char *data, size_t len)
{
    struct seen *s = ud;
    s->count++;
    if (strlen(data) != len)        /* data must be NUL-terminated at len, no NUL inside in these tests */
        return 99;
    int n = snprintf(s->log + s->len, sizeof s->log - s->len, "%s|%s\n", event, data);
    if (n > 0 && (size_t)n < sizeof s->log - s->len)
        s->len += (size_t)n;
    return s->stop_at && s->count == s->stop_at ? 7 : 0;
}

/* Parses `in` fed in pieces of `step` bytes (0 = whole), then finish(). */
static int parse(const char *in, size_t len, size_t step, size_t max, struct seen *s, bool finish)
{
    struct sse_parser p;
    memset(s->log, 0, sizeof s->log);
    s->len = 0;
    s->count = 0;
    sse_parser_init(&p, max, on_event, s);
    int rc = 0;
    if (!step)
        step = len ? len : 1;
    for (size_t i = 0; i < len && rc == 0; i += step)
        rc = sse_parser_feed(&p, in + i, len - i < step ? len - i : step);
    if (rc == 0 && finish)
        rc = sse_parser_finish(&p);
    sse_parser_free(&p);
    return rc;
}

/* Whole, byte by byte and in 2, 3 and 7 byte pieces all give `want`. */
static void check(const char *in, const char *want, const char *what)
{
    static const size_t steps[] = {0, 1, 2, 3, 7};
    struct seen s;
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        int rc = parse(in, strlen(in), steps[i], 4096, &s, false);
        if (steps[i] == 0) {
            is_int(rc, 0, "%s: parses", what);
            is_str(s.log, want, "%s: events", what);
        } else if (rc != 0 || strcmp(s.log, want) != 0) {
            ok(0, "%s: pieces of %zu bytes give the same events", what, steps[i]);
            printf("#   got rc %d \"%s\"\n", rc, s.log);
            return;
        }
    }
    ok(1, "%s: pieces of 1, 2, 3 and 7 bytes give the same events", what);
}

int main(void)
{
    struct seen s;

    check("data: hello\n\n", "|hello\n", "LF line ends");
    check("data: hello\r\n\r\n", "|hello\n", "CRLF line ends");
    check("data: hello\r\r", "|hello\n", "CR line ends");
    check("data: a\r\n\r\ndata: b\r\r\ndata: c\n\n", "|a\n|b\n|c\n", "mixed line ends");
    check("data:x\n\n", "|x\n", "data: without a space (TGI)");
    check("data:  two\n\n", "| two\n", "only one space after the colon is dropped");
    check("data\n\n", "|\n", "a field without colon: empty data");
    check("data:\n\n", "|\n", "empty data still dispatches an event");
    check("data: a\ndata: b\ndata:c\n\n", "|a\nb\nc\n", "multi-line data joined with \\n");
    check("data: a\ndata:\n\n", "|a\n\n", "a trailing empty data line keeps its \\n");
    check(": comment\n:\ndata: x\n: another\n\n", "|x\n", "comments ignored");
    check(": keepalive\n\n", "", "a comment alone dispatches nothing");
    check("event: token\ndata: {}\n\ndata: plain\n\n", "token|{}\n|plain\n", "event names, reset after each event");
    check("event: only\n\ndata: x\n\n", "|x\n", "an event name without data dispatches nothing and is reset");
    check("id: 5\nretry: 100\nfoo: bar\ndata: x\n\n", "|x\n", "id, retry and unknown fields ignored");
    check("\xEF\xBB\xBF" "data: bom\n\n", "|bom\n", "a leading UTF-8 BOM is skipped");
    check("data: \xEF\xBB\xBFx\n\n", "|\xEF\xBB\xBFx\n", "a BOM inside the stream is data");
    check("\n\n\ndata: x\n\n\n\n", "|x\n", "extra blank lines dispatch nothing");
    check("data: [DONE]\n\n", "|[DONE]\n", "[DONE] is an ordinary event to the parser");
    check("data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n", "|{\"a\":1}\n|{\"b\":2}\n|[DONE]\n",
          "an OpenAI stream");
    check("data:{\"token\":{\"id\":1}}\n\ndata:{\"token\":{\"id\":2},\"generated_text\":\"x\"}\n\n",
          "|{\"token\":{\"id\":1}}\n|{\"token\":{\"id\":2},\"generated_text\":\"x\"}\n", "a TGI stream");
    check("event: error\ndata: {\"error\":\"boom\"}\n\n", "error|{\"error\":\"boom\"}\n", "an error event");

    /* A BOM only counts at the very start. */
    parse("data: a\n\n\xEF\xBB\xBF" "data: b\n\n", 21, 0, 4096, &s, false);
    is_str(s.log, "|a\n", "a BOM after the start makes the field name unknown");

    /* CR at the end of one chunk, LF at the start of the next: one line end. */
    {
        struct sse_parser p;
        memset(&s, 0, sizeof s);
        sse_parser_init(&p, 4096, on_event, &s);
        int rc = sse_parser_feed(&p, "data: a\r", 8);
        rc |= sse_parser_feed(&p, "\ndata: b\r", 9);
        rc |= sse_parser_feed(&p, "\n\r", 2);
        rc |= sse_parser_feed(&p, "\n", 1);
        is_int(rc, 0, "CR/LF split across chunks parses");
        is_str(s.log, "|a\nb\n", "CR then LF in the next chunk is one line end, not an empty line");
        is_int(s.count, 1, "one event");
        sse_parser_free(&p);
    }
    {
        struct sse_parser p;
        memset(&s, 0, sizeof s);
        sse_parser_init(&p, 4096, on_event, &s);
        int rc = sse_parser_feed(&p, "data: a\r", 8);
        rc |= sse_parser_feed(&p, "\r", 1);
        is_int(s.count, 1, "CR then CR in the next chunk: a blank line, the event dispatches");
        rc |= sse_parser_feed(&p, "\n", 1);     /* the LF of the second CR's CRLF */
        is_int(rc, 0, "no error");
        is_int(s.count, 1, "and the LF after it adds no line");
        sse_parser_free(&p);
    }
    /* Events split across chunks at every position. */
    {
        const char *in = "event: e\ndata: one\ndata: two\r\n\r\ndata: three\r\r";
        size_t len = strlen(in);
        bool all = true;
        for (size_t cut = 0; cut <= len; cut++) {
            struct sse_parser p;
            memset(&s, 0, sizeof s);
            sse_parser_init(&p, 4096, on_event, &s);
            int rc = sse_parser_feed(&p, in, cut);
            rc |= sse_parser_feed(&p, in + cut, len - cut);
            sse_parser_free(&p);
            if (rc || strcmp(s.log, "e|one\ntwo\n|three\n") != 0) {
                all = false;
                tap_diag("cut at %zu: rc %d, \"%s\"", cut, rc, s.log);
            }
        }
        ok(all, "a stream split in two at any position gives the same events");
    }
    /* Raw multi-byte UTF-8 in the data and CRLF line ends, cut at every pair
     * of positions (three pieces): every sequence and every CR/LF pair split
     * somewhere, as libcurl's write callback may hand them over. */
    {
        const char *in = "data: {\"text\":\"\xE3\x82\xAC\"}\r\n\r\n"
                         "data:{\"t\":\"\xF0\x9F\x98\x80x\xC3\xA9\"}\r\n\r\ndata: [DONE]\r\n\r\n";
        const char *want = "|{\"text\":\"\xE3\x82\xAC\"}\n|{\"t\":\"\xF0\x9F\x98\x80x\xC3\xA9\"}\n|[DONE]\n";
        size_t len = strlen(in);
        bool all = true;
        for (size_t a = 0; a <= len && all; a++)
            for (size_t b = a; b <= len && all; b++) {
                struct sse_parser p;
                memset(&s, 0, sizeof s);
                sse_parser_init(&p, 4096, on_event, &s);
                int rc = sse_parser_feed(&p, in, a);
                rc |= sse_parser_feed(&p, in + a, b - a);
                rc |= sse_parser_feed(&p, in + b, len - b);
                rc |= sse_parser_finish(&p);
                sse_parser_free(&p);
                if (rc || strcmp(s.log, want) != 0) {
                    all = false;
                    tap_diag("cuts at %zu and %zu: rc %d, \"%s\"", a, b, rc, s.log);
                }
            }
        ok(all, "multi-byte UTF-8 and CRLF cut into three pieces at every pair of positions give the same events");
    }
    /* The BOM itself split. */
    {
        struct sse_parser p;
        memset(&s, 0, sizeof s);
        sse_parser_init(&p, 4096, on_event, &s);
        int rc = sse_parser_feed(&p, "\xEF", 1);
        rc |= sse_parser_feed(&p, "\xBB\xBF" "data", 6);
        rc |= sse_parser_feed(&p, ": x\n\n", 5);
        sse_parser_free(&p);
        ok(rc == 0 && strcmp(s.log, "|x\n") == 0, "a BOM split across chunks is still skipped");
    }
    /* A lone 0xEF that is not a BOM stays data. */
    check("\xEF" "data: x\n\n", "", "a partial BOM at the start is not skipped");

    /* finish(): an event whose closing blank line never came. */
    ok(parse("data: tail\n", 11, 0, 4096, &s, true) == 0 && strcmp(s.log, "|tail\n") == 0,
       "finish dispatches a trailing event without a blank line");
    ok(parse("data: tail", 10, 0, 4096, &s, true) == 0 && strcmp(s.log, "|tail\n") == 0,
       "finish dispatches a last line without a line end");
    ok(parse("data: tail", 10, 1, 4096, &s, false) == 0 && s.count == 0,
       "without finish the unterminated event is not dispatched");
    ok(parse("data: a\n\n", 9, 0, 4096, &s, true) == 0 && s.count == 1, "finish after a complete event adds none");
    ok(parse(": c\n", 4, 0, 4096, &s, true) == 0 && s.count == 0, "finish with only a comment dispatches none");
    ok(parse("event: x\n", 9, 0, 4096, &s, true) == 0 && s.count == 0, "finish with only an event name dispatches none");

    /* The limit. */
    {
        char big[300];
        memset(big, 'x', sizeof big);
        memcpy(big, "data: ", 6);
        big[sizeof big - 2] = '\n';
        big[sizeof big - 1] = '\n';
        is_int(parse(big, sizeof big, 0, 64, &s, false), SSE_PARSE_TOO_LARGE, "a line over the limit (whole)");
        is_int(parse(big, sizeof big, 1, 64, &s, false), SSE_PARSE_TOO_LARGE, "a line over the limit (byte by byte)");
        is_int(parse(big, 200, 0, 64, &s, false), SSE_PARSE_TOO_LARGE, "an unterminated line over the limit");
        is_int(s.count, 0, "nothing dispatched");
        is_int(parse(big, sizeof big, 0, 298, &s, false), 0, "a line of exactly the limit is fine");
        is_int(s.count, 1, "and dispatches");

        /* Many short data lines that together exceed the limit. */
        char many[1024];
        size_t n = 0;
        for (int i = 0; i < 40; i++)
            n += (size_t)snprintf(many + n, sizeof many - n, "data: 0123456789\n");
        many[n++] = '\n';
        is_int(parse(many, n, 0, 128, &s, false), SSE_PARSE_TOO_LARGE, "an event over the limit");
        is_int(parse(many, n, 3, 128, &s, false), SSE_PARSE_TOO_LARGE, "an event over the limit, in pieces");
        is_int(parse(many, n, 0, 4096, &s, false), 0, "the same event under a larger limit");

        /* No allocation larger than the limit (+ NUL) however much is fed. */
        struct sse_parser p;
        sse_parser_init(&p, 100, on_event, &s);
        int rc = 0;
        for (int i = 0; i < 1000 && rc == 0; i++)
            rc = sse_parser_feed(&p, "xxxxxxxxxx", 10);
        is_int(rc, SSE_PARSE_TOO_LARGE, "an endless line is refused");
        ok(p.line_cap <= 101, "the line buffer stays within the limit (%zu)", p.line_cap);
        sse_parser_free(&p);
        ok(p.line == NULL && p.data == NULL, "free releases the buffers");

        sse_parser_init(&p, (size_t)1 << 20, on_event, &s);
        rc = sse_parser_feed(&p, "data: short\n\n", 13);
        ok(rc == 0 && p.line_cap <= 256 && p.data_cap <= 256, "a large limit allocates only what is needed");
        sse_parser_free(&p);
    }

    /* Callback's value propagated, parsing stops there. */
    {
        const char *in = "data: 1\n\ndata: 2\n\ndata: 3\n\n";
        s.stop_at = 2;
        int rc = parse(in, strlen(in), 0, 4096, &s, false);
        is_int(rc, 7, "the callback's non-zero value is returned by feed");
        is_int(s.count, 2, "no event after the one that stopped");
        rc = parse("data: 1\n\ndata: 2", 16, 0, 4096, &s, true);
        is_int(rc, 7, "and by finish");
        s.stop_at = 0;
    }
    /* Event names: long ones truncated, never overflow. */
    {
        char in[256];
        snprintf(in, sizeof in, "event: %0100d\ndata: x\n\n", 0);
        ok(parse(in, strlen(in), 0, 4096, &s, false) == 0 && s.count == 1 && strlen(s.log) == 63 + 3,
           "a long event name is cut to 63 bytes");
    }
    /* Re-initialise after free. */
    {
        struct sse_parser p;
        sse_parser_init(&p, 64, on_event, &s);
        sse_parser_feed(&p, "data: x", 7);
        sse_parser_free(&p);
        memset(&s, 0, sizeof s);
        sse_parser_init(&p, 64, on_event, &s);
        int rc = sse_parser_feed(&p, "data: y\n\n", 9);
        sse_parser_free(&p);
        ok(rc == 0 && strcmp(s.log, "|y\n") == 0, "a freed parser starts afresh");
    }
    /* An empty feed changes nothing, and does not consume the BOM check. */
    {
        struct sse_parser p;
        memset(&s, 0, sizeof s);
        sse_parser_init(&p, 64, on_event, &s);
        int rc = sse_parser_feed(&p, "", 0);
        rc |= sse_parser_feed(&p, "\xEF\xBB\xBF" "data: z\n\n", 12);
        sse_parser_free(&p);
        ok(rc == 0 && strcmp(s.log, "|z\n") == 0, "an empty feed first, then a BOM");
    }
    return tap_done();
}
