/* fcgi_head.c -- what a FastCGI connection sends before a responder's request: management records and other roles, answered here because libfcgi gets them wrong.
 *
 * Runs on a connection's responder thread before FCGX_Accept_r. The first
 * record header (and a FCGI_BEGIN_REQUEST's body) is only peeked at, so
 * that a responder's request stays in the socket for libfcgi to read;
 * everything else is read here. */
#include "config.h"
#include "fcgi_head.h"
#include "util.h"

#include <errno.h>
#include <fastcgi.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define NAP_MAX_MS 50

/* One connection's limits: everything by deadline_ns, and no silence
 * longer than silence_ns (read_timeout), as libfcgi's reads have. */
struct head_io {
    int fd;
    int64_t deadline_ns, silence_ns;
};

/* Waits until io->fd is readable; false on silence, at the deadline or on error. */
static bool wait_readable(const struct head_io *io)
{
    for (;;) {
        int64_t left = io->deadline_ns - util_now_ns();
        if (left <= 0)
            return false;
        if (left > io->silence_ns)
            left = io->silence_ns;
        struct pollfd pfd = {.fd = io->fd, .events = POLLIN};
        int n = poll(&pfd, 1, (int)((left + 999999) / 1000000));
        if (n > 0)
            return true;
        if (n == 0 || errno != EINTR)
            return false;
    }
}

/* Copies the next `want` bytes of the input into buf without reading them.
 * False when the connection closed or failed, on silence or at the deadline. */
static bool peek_exact(const struct head_io *io, unsigned char *buf, size_t want)
{
    int nap_ms = 1;
    ssize_t seen = 0;
    int64_t progress_ns = util_now_ns();
    for (;;) {
        ssize_t n = recv(io->fd, buf, want, MSG_PEEK | MSG_DONTWAIT);
        if (n == (ssize_t)want)
            return true;
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            return false;
        if (n < 0) {
            if (!wait_readable(io))
                return false;
            continue;
        }
        /* a part is there: poll() would say readable at once, so nap
         * (web servers send a record header whole; this is a slow client) */
        int64_t now = util_now_ns();
        if (n > seen)
            seen = n, progress_ns = now;
        if (now >= io->deadline_ns || now - progress_ns >= io->silence_ns)
            return false;
        poll(NULL, 0, nap_ms);
        nap_ms = nap_ms * 2 > NAP_MAX_MS ? NAP_MAX_MS : nap_ms * 2;
    }
}

/* Reads exactly len bytes into buf, or drops them when buf is NULL. */
static bool read_exact(const struct head_io *io, unsigned char *buf, size_t len)
{
    unsigned char sink[4096];
    while (len > 0) {
        size_t ask = buf || len < sizeof sink ? len : sizeof sink;
        ssize_t n = recv(io->fd, buf ? buf : sink, ask, MSG_DONTWAIT);
        if (n > 0) {
            len -= (size_t)n;
            if (buf)
                buf += n;
        } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            return false;
        } else if (errno != EINTR && !wait_readable(io)) {
            return false;
        }
    }
    return true;
}

/* Reads and drops what has already arrived (at most 1 MiB): closing a
 * socket with unread input resets it, and the peer could lose our answer. */
static void drop_arrived(int fd)
{
    unsigned char sink[4096];
    for (int i = 0; i < 256 && recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0; i++)
        ;
}

/* Sends one record; never waits (a peer that does not read is closed). */
static bool send_record(int fd, unsigned type, unsigned id, const unsigned char *content, size_t len)
{
    unsigned char rec[FCGI_HEADER_LEN + 256 + 7];
    size_t pad = (8 - len % 8) % 8;
    if (len > 256)
        return false;
    unsigned char h[FCGI_HEADER_LEN] = {FCGI_VERSION_1, (unsigned char)type, (unsigned char)(id >> 8),
                                        (unsigned char)id, (unsigned char)(len >> 8), (unsigned char)len,
                                        (unsigned char)pad, 0};
    memcpy(rec, h, sizeof h);
    memcpy(rec + sizeof h, content, len);
    memset(rec + sizeof h + len, 0, pad);
    size_t total = sizeof h + len + pad;
    return send(fd, rec, total, MSG_DONTWAIT | MSG_NOSIGNAL) == (ssize_t)total;
}

/* FastCGI's name-value length: one byte below 128, else four with the top bit set. */
static bool nv_length(const unsigned char **p, const unsigned char *end, size_t *out)
{
    if (*p >= end)
        return false;
    if (!(**p & 0x80)) {
        *out = *(*p)++;
        return true;
    }
    if (end - *p < 4)
        return false;
    *out = ((size_t)((*p)[0] & 0x7f) << 24) | ((size_t)(*p)[1] << 16) | ((size_t)(*p)[2] << 8) | (*p)[3];
    *p += 4;
    return true;
}

/* FCGI_GET_VALUES_RESULT for the query q[0..len): the names asked for that
 * are known, in the order asked, each once. */
static bool answer_get_values(int fd, const unsigned char *q, size_t len, int max_reqs)
{
    static const char *const names[] = {FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS};
    char reqs[16];
    snprintf(reqs, sizeof reqs, "%d", max_reqs);
    const char *values[] = {reqs, reqs, "0"};
    bool done[3] = {false, false, false};
    unsigned char out[256];
    size_t o = 0;
    const unsigned char *p = q, *end = q + len;
    while (p < end) {
        size_t nl, vl;
        if (!nv_length(&p, end, &nl) || !nv_length(&p, end, &vl) || nl > (size_t)(end - p) ||
            vl > (size_t)(end - p) - nl)
            return false;                       /* a malformed query: a protocol error */
        for (size_t i = 0; i < 3; i++) {
            size_t kl = strlen(names[i]), val = strlen(values[i]);
            if (done[i] || nl != kl || memcmp(p, names[i], kl) != 0)
                continue;
            out[o++] = (unsigned char)kl;
            out[o++] = (unsigned char)val;
            memcpy(out + o, names[i], kl);
            memcpy(out + o + kl, values[i], val);
            o += kl + val;
            done[i] = true;
        }
        p += nl + vl;
    }
    return send_record(fd, FCGI_GET_VALUES_RESULT, 0, out, o);
}

/* Reads and answers one record of request id 0 (header h, peeked). */
static bool management_record(const struct head_io *io, const unsigned char *h, size_t clen, size_t plen,
                              int max_reqs)
{
    if (h[1] != FCGI_GET_VALUES) {
        unsigned char body[8] = {h[1]};
        return read_exact(io, NULL, FCGI_HEADER_LEN + clen + plen) &&
               send_record(io->fd, FCGI_UNKNOWN_TYPE, 0, body, sizeof body);
    }
    unsigned char *q = malloc(clen + 1);
    bool ok = q && read_exact(io, NULL, FCGI_HEADER_LEN) && read_exact(io, q, clen) && read_exact(io, NULL, plen) &&
              answer_get_values(io->fd, q, clen, max_reqs);
    free(q);
    return ok;
}

/* fcgi_head without the clean-up of a connection to be closed. */
static enum head_result head(const struct head_io *io, int max_reqs)
{
    for (;;) {
        unsigned char h[FCGI_HEADER_LEN + 8];
        if (util_now_ns() >= io->deadline_ns || !peek_exact(io, h, FCGI_HEADER_LEN) || h[0] != FCGI_VERSION_1)
            return HEAD_CLOSE;
        unsigned id = (unsigned)h[2] << 8 | h[3];
        size_t clen = (size_t)h[4] << 8 | h[5], plen = h[6];
        if (h[1] == FCGI_BEGIN_REQUEST) {
            if (id == 0 || clen != 8 || !peek_exact(io, h, sizeof h))
                return HEAD_CLOSE;
            if (((unsigned)h[8] << 8 | h[9]) == FCGI_RESPONDER)
                return HEAD_RESPONDER;
            unsigned char end[8] = {0, 0, 0, 0, FCGI_UNKNOWN_ROLE};
            if (!read_exact(io, NULL, sizeof h + plen) || !send_record(io->fd, FCGI_END_REQUEST, id, end, sizeof end) ||
                !(h[10] & FCGI_KEEP_CONN))
                return HEAD_CLOSE;              /* without FCGI_KEEP_CONN the web server expects a close */
        } else if (id == 0) {
            if (!management_record(io, h, clen, plen, max_reqs))
                return HEAD_CLOSE;
        } else if (!read_exact(io, NULL, FCGI_HEADER_LEN + clen + plen)) {
            return HEAD_CLOSE;                  /* (a record of no open request is dropped) */
        }
        struct pollfd pfd = {.fd = io->fd, .events = POLLIN};
        if (poll(&pfd, 1, 0) <= 0)
            return HEAD_PARK;
    }
}

enum head_result fcgi_head(int fd, int max_reqs, int64_t deadline_ns, int64_t silence_ms)
{
    struct head_io io = {.fd = fd, .deadline_ns = deadline_ns, .silence_ns = silence_ms * 1000000};
    enum head_result r = head(&io, max_reqs);
    if (r == HEAD_CLOSE)
        drop_arrived(fd);
    return r;
}
