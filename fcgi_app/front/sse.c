/* sse.c -- server-sent events over a FastCGI response: one flush per event, keep-alive comments, disconnect detection. */
#include "config.h"
#include "sse.h"
#include "log.h"
#include "response.h"
#include "util.h"

#include <string.h>

int sse_begin(struct sse *s, struct req *r, int64_t keepalive_ms)
{
    s->r = r;
    s->keepalive_ns = keepalive_ms * 1000000;
    s->last_write_ns = util_now_ns();
    resp_header(r, "Cache-Control", "no-cache");
    resp_header(r, "X-Accel-Buffering", "no");
    if (resp_start(r, 200, "text/event-stream; charset=utf-8", -1) < 0)
        return -1;
    return resp_flush(r);
}

static int finish(struct sse *s)
{
    s->last_write_ns = util_now_ns();
    return resp_flush(s->r);
}

int sse_event(struct sse *s, const char *event, const char *data, size_t len)
{
    struct req *r = s->r;
    if (event && strpbrk(event, "\r\n")) {
        log_error("request %s: event name with a line break refused", r->id);
        event = NULL;
    }
    if (event) {
        if (resp_write(r, "event: ", 7) < 0 || resp_write(r, event, strlen(event)) < 0 || resp_write(r, "\n", 1) < 0)
            return -1;
    }
    /* Each line of the payload becomes its own "data:" line. SSE ends lines
     * at CR, LF or CRLF, so all three split here; none reaches the client
     * raw, where it could end the event early or forge a field. */
    size_t i = 0;
    for (;;) {
        size_t end = i;
        while (end < len && data[end] != '\n' && data[end] != '\r')
            end++;
        if (resp_write(r, "data: ", 6) < 0 || resp_write(r, data + i, end - i) < 0 || resp_write(r, "\n", 1) < 0)
            return -1;
        if (end == len)
            break;
        i = end + 1 + (data[end] == '\r' && end + 1 < len && data[end + 1] == '\n');
    }
    if (resp_write(r, "\n", 1) < 0)
        return -1;
    return finish(s);
}

int sse_json(struct sse *s, const char *event, json_object *obj)
{
    size_t len;
    const char *str = json_object_to_json_string_length(obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
    if (!str)
        return -1;
    return sse_event(s, event, str, len);
}

int sse_comment(struct sse *s, const char *text)
{
    struct req *r = s->r;
    if (resp_write(r, ": ", 2) < 0 || resp_write(r, text, strlen(text)) < 0 || resp_write(r, "\n\n", 2) < 0)
        return -1;
    return finish(s);
}

int sse_keepalive(struct sse *s)
{
    if (util_now_ns() - s->last_write_ns < s->keepalive_ns)
        return s->r->client_gone ? -1 : 0;
    return sse_comment(s, "keep-alive");
}

struct timespec sse_next_keepalive(const struct sse *s)
{
    int64_t due = s->last_write_ns + s->keepalive_ns;
    struct timespec ts = {.tv_sec = due / 1000000000, .tv_nsec = due % 1000000000};
    return ts;
}
