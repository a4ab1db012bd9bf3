/* test_fcgi_head.c -- what comes before a responder's request on a FastCGI connection: FCGI_GET_VALUES answered, other roles refused, stray records dropped, a responder's request left unread, a broken or stalled connection closed. */
#include "config.h"
#include "fcgi_head.h"
#include "tap.h"
#include "util.h"

#include <fastcgi.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int sv[2];                   /* sv[0]: llmcgi's end, sv[1]: the web server's */

static size_t rec(unsigned char *out, unsigned type, unsigned id, const void *content, size_t len)
{
    size_t pad = (8 - len % 8) % 8;
    unsigned char h[8] = {1, (unsigned char)type, (unsigned char)(id >> 8), (unsigned char)id,
                          (unsigned char)(len >> 8), (unsigned char)len, (unsigned char)pad, 0};
    memcpy(out, h, 8);
    memcpy(out + 8, content, len);
    memset(out + 8 + len, 0, pad);
    return 8 + len + pad;
}

static size_t begin(unsigned char *out, unsigned id, unsigned role, unsigned flags)
{
    unsigned char b[8] = {(unsigned char)(role >> 8), (unsigned char)role, (unsigned char)flags};
    return rec(out, FCGI_BEGIN_REQUEST, id, b, sizeof b);
}

static void client_sends(const void *p, size_t n)
{
    if (write(sv[1], p, n) != (ssize_t)n)
        tap_diag("short write");
}

/* What llmcgi wrote back, after it returned (nothing blocks). */
static size_t client_reads(unsigned char *buf, size_t cap)
{
    ssize_t n = recv(sv[1], buf, cap, MSG_DONTWAIT);
    return n > 0 ? (size_t)n : 0;
}

static enum head_result run(void)
{
    return fcgi_head(sv[0], 4, util_now_ns() + 5000000000LL, 200);
}

static void fresh(void)
{
    close(sv[0]);
    close(sv[1]);
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
}

int main(void)
{
    unsigned char in[512], out[512];
    size_t n;
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);

    /* FCGI_GET_VALUES: the known names, in the order asked, the unknown one left out */
    static const unsigned char q[] = "\x0d\x00" "FCGI_MAX_REQS" "\x05\x00" "OTHER" "\x0f\x00" "FCGI_MPXS_CONNS";
    n = rec(in, FCGI_GET_VALUES, 0, q, sizeof q - 1);
    client_sends(in, n);
    is_int(run(), HEAD_PARK, "GET_VALUES answered, then nothing more: park");
    static const unsigned char want[] = "\x0d\x01" "FCGI_MAX_REQS" "4" "\x0f\x01" "FCGI_MPXS_CONNS" "0";
    n = client_reads(out, sizeof out);
    ok(n == 8 + 40 && out[1] == FCGI_GET_VALUES_RESULT && out[2] == 0 && out[3] == 0 && out[5] == 34 &&
       memcmp(out + 8, want, 34) == 0, "  FCGI_GET_VALUES_RESULT: FCGI_MAX_REQS=4, FCGI_MPXS_CONNS=0");

    /* another management record: FCGI_UNKNOWN_TYPE naming it */
    n = rec(in, 42, 0, "x", 1);
    client_sends(in, n);
    is_int(run(), HEAD_PARK, "an unknown management record: answered");
    n = client_reads(out, sizeof out);
    ok(n == 16 && out[1] == FCGI_UNKNOWN_TYPE && out[8] == 42, "  with FCGI_UNKNOWN_TYPE of its type");

    /* a stray record, then a responder's request: the request stays for libfcgi */
    n = rec(in, FCGI_STDIN, 7, "abc", 3);
    n += begin(in + n, 1, FCGI_RESPONDER, 0);
    client_sends(in, n);
    is_int(run(), HEAD_RESPONDER, "a stray record is dropped, a responder's request is next");
    ok(recv(sv[0], out, 16, MSG_DONTWAIT) == 16 && out[1] == FCGI_BEGIN_REQUEST && out[9] == FCGI_RESPONDER,
       "  its FCGI_BEGIN_REQUEST is left unread");
    ok(client_reads(out, sizeof out) == 0, "  and nothing was written");

    /* AUTHORIZER and FILTER: FCGI_UNKNOWN_ROLE; closed without FCGI_KEEP_CONN, kept with it */
    n = begin(in, 3, FCGI_AUTHORIZER, 0);
    n += rec(in + n, FCGI_PARAMS, 3, "", 0);
    client_sends(in, n);
    is_int(run(), HEAD_CLOSE, "an AUTHORIZER request without FCGI_KEEP_CONN: refused, then close");
    n = client_reads(out, sizeof out);
    ok(n == 16 && out[1] == FCGI_END_REQUEST && out[3] == 3 && out[12] == FCGI_UNKNOWN_ROLE,
       "  FCGI_END_REQUEST with FCGI_UNKNOWN_ROLE");
    fresh();
    n = begin(in, 5, FCGI_FILTER, FCGI_KEEP_CONN);
    n += rec(in + n, FCGI_PARAMS, 5, "", 0);
    n += rec(in + n, FCGI_STDIN, 5, "", 0);
    n += rec(in + n, FCGI_DATA, 5, "", 0);
    n += begin(in + n, 6, FCGI_RESPONDER, FCGI_KEEP_CONN);
    client_sends(in, n);
    is_int(run(), HEAD_RESPONDER, "a FILTER request with FCGI_KEEP_CONN: refused, its records dropped, the next served");
    n = client_reads(out, sizeof out);
    ok(n == 16 && out[3] == 5 && out[12] == FCGI_UNKNOWN_ROLE, "  FCGI_UNKNOWN_ROLE for it");

    /* broken or stalled: close */
    fresh();
    client_sends("\x01\x01\x00", 3);
    is_int(run(), HEAD_CLOSE, "a header cut short, then silence: closed after read_timeout");
    fresh();
    n = begin(in, 1, FCGI_RESPONDER, 0);
    in[0] = 2;
    client_sends(in, n);
    is_int(run(), HEAD_CLOSE, "another protocol version: closed");
    fresh();
    n = begin(in, 0, FCGI_RESPONDER, 0);
    client_sends(in, n);
    is_int(run(), HEAD_CLOSE, "FCGI_BEGIN_REQUEST for request id 0: closed");
    fresh();
    n = rec(in, FCGI_GET_VALUES, 0, "\x0d\x05" "FCGI", 6);
    client_sends(in, n);
    is_int(run(), HEAD_CLOSE, "a FCGI_GET_VALUES whose lengths overrun it: closed");
    fresh();
    close(sv[1]);
    sv[1] = -1;
    is_int(run(), HEAD_CLOSE, "the web server closed: closed");
    close(sv[0]);
    return tap_done();
}
