/* test_client.c -- the upstream client's verdicts: which limit ran out (uc_clock_due), the public category of a
 * failure (uc_category, never an address), the status a client gets, and real exchanges with a loopback server
 * that keeps a connection alive with keep-alive bytes only. */
#include "config.h"
#include "client.h"
#include "tap.h"
#include "util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MS 1000000LL

static void test_clocks(void)
{
    /* the request went out at once (a body in memory): first_byte_timeout counts from the start */
    struct uc_clocks c = {.start_ns = 1000 * MS, .sent_ns = 1000 * MS, .first_byte_ms = 100, .idle_ms = 50,
                          .total_ms = 1000};
    int64_t when = 0;
    is_int(uc_clock_due(&c, 1099 * MS, &when), UC_OK, "before first_byte_timeout: nothing ran out");
    is_int(when, 1100 * MS, "the next deadline is first_byte_timeout's");
    is_int(uc_clock_due(&c, 1100 * MS, NULL), UC_FIRST_BYTE_TIMEOUT, "no headers within first_byte_timeout");

    /* a body still coming from the client: only total_timeout runs */
    c.sent_ns = 0;
    is_int(uc_clock_due(&c, 1500 * MS, &when), UC_OK, "first_byte_timeout waits for the whole request to be sent");
    is_int(when, 2000 * MS, "meanwhile only total_timeout bounds it");
    is_int(uc_clock_due(&c, 2000 * MS, NULL), UC_TOTAL_TIMEOUT, "a request sent for too long: total_timeout");
    c.sent_ns = 1800 * MS;
    is_int(uc_clock_due(&c, 1850 * MS, &when), UC_OK, "first_byte_timeout counts from the end of the body");
    is_int(when, 1900 * MS, "... 100 ms after it");

    /* headers came: the idle clock runs from the last progress */
    c = (struct uc_clocks){.start_ns = 0, .sent_ns = 0, .headers_ns = 10 * MS, .progress_ns = 10 * MS,
                           .first_byte_ms = 100, .idle_ms = 50, .total_ms = 1000};
    is_int(uc_clock_due(&c, 59 * MS, NULL), UC_OK, "an answer quiet for less than stream_idle_timeout");
    is_int(uc_clock_due(&c, 60 * MS, NULL), UC_IDLE_TIMEOUT, "quiet for stream_idle_timeout after the headers");
    c.progress_ns = 980 * MS;
    is_int(uc_clock_due(&c, 1000 * MS, &when), UC_TOTAL_TIMEOUT,
           "an answer that keeps making progress runs into total_timeout, and says so");
    is_int(when, 1000 * MS, "total_timeout's deadline comes before the idle one");
    c.progress_ns = 950 * MS;
    is_int(uc_clock_due(&c, 1000 * MS, NULL), UC_IDLE_TIMEOUT, "a tie goes to the narrower limit");
    c.progress_ns = 0;
    is_int(uc_clock_due(&c, 60 * MS, NULL), UC_IDLE_TIMEOUT, "progress before the headers does not count");
}

static void test_categories(void)
{
    static const char *const allowed[] = {"connect refused", "dns", "tls", "connect timeout", "first byte timeout",
                                          "stream idle timeout", "total timeout", "timeout", "dropped",
                                          "bad answer", "http 4xx", "http 5xx", "error"};
    is_str(uc_category(UC_CONNECT, CURLE_COULDNT_CONNECT, 0), "connect refused", "refused");
    is_str(uc_category(UC_CONNECT, CURLE_COULDNT_RESOLVE_HOST, 0), "dns", "unknown host");
    is_str(uc_category(UC_CONNECT_TIMEOUT, CURLE_OPERATION_TIMEDOUT, 0), "connect timeout", "connect_timeout");
    is_str(uc_category(UC_FIRST_BYTE_TIMEOUT, CURLE_OK, 0), "first byte timeout", "first_byte_timeout");
    is_str(uc_category(UC_IDLE_TIMEOUT, CURLE_OK, 200), "stream idle timeout", "stream_idle_timeout");
    is_str(uc_category(UC_TOTAL_TIMEOUT, CURLE_OPERATION_TIMEDOUT, 200), "total timeout", "total_timeout");
    is_str(uc_category(UC_DROPPED, CURLE_PARTIAL_FILE, 200), "dropped", "a cut answer");
    is_str(uc_category(UC_ABORTED, CURLE_WRITE_ERROR, 200), "bad answer", "an answer we refused");
    is_str(uc_category(UC_ERROR, CURLE_SSL_CONNECT_ERROR, 0), "tls", "a TLS handshake failure");
    is_str(uc_category(UC_ERROR, CURLE_PEER_FAILED_VERIFICATION, 0), "tls", "a certificate refused");
    is_str(uc_category(uc_result_of_code(CURLE_OPERATION_TIMEDOUT), CURLE_OPERATION_TIMEDOUT, 0), "timeout",
           "a probe's timeout (one limit for all) is just a timeout");
    is_str(uc_category(UC_ERROR, CURLE_UNSUPPORTED_PROTOCOL, 0), "error", "anything else");
    is_str(uc_category(UC_OK, CURLE_OK, 503), "http 5xx", "an answer 503");
    is_str(uc_category(UC_OK, CURLE_OK, 404), "http 4xx", "an answer 404");
    ok(uc_category(UC_OK, CURLE_OK, 200) == NULL, "a success has no category");
    /* every result and every libcurl code lands in the fixed set */
    bool all_known = true;
    for (int r = UC_OK; r <= UC_ERROR; r++)
        for (int code = 0; code < CURL_LAST; code++)
            for (long st = 0; st <= 600; st += 100) {
                const char *cat = uc_category((enum uc_result)r, (CURLcode)code, st);
                bool known = cat == NULL;
                for (size_t i = 0; cat && i < sizeof allowed / sizeof *allowed; i++)
                    known |= strcmp(cat, allowed[i]) == 0;
                if (!known && all_known)
                    tap_diag("result %d code %d status %ld: %s", r, code, st, cat);
                all_known &= known;
            }
    ok(all_known, "every outcome's category is one of the fixed set");
    is_int(uc_result_of_code(CURLE_COULDNT_CONNECT), UC_CONNECT, "CURLE_COULDNT_CONNECT: could not connect");
    is_int(uc_result_of_code(CURLE_RECV_ERROR), UC_DROPPED, "CURLE_RECV_ERROR: dropped");
    is_int(uc_result_of_code(CURLE_OPERATION_TIMEDOUT), UC_ERROR, "libcurl's timeout alone names no limit");
}

static void test_texts_and_statuses(void)
{
    has_str(uc_result_text(UC_CONNECT_TIMEOUT), "connect_timeout", "the connect limit is named");
    has_str(uc_result_text(UC_FIRST_BYTE_TIMEOUT), "first_byte_timeout", "the first-byte limit is named");
    has_str(uc_result_text(UC_IDLE_TIMEOUT), "stream_idle_timeout", "the idle limit is named");
    has_str(uc_result_text(UC_TOTAL_TIMEOUT), "total_timeout", "the total limit is named");
    const enum uc_result timeouts[] = {UC_CONNECT_TIMEOUT, UC_FIRST_BYTE_TIMEOUT, UC_IDLE_TIMEOUT, UC_TOTAL_TIMEOUT};
    for (size_t i = 0; i < 4; i++)
        is_int(uc_result_status(timeouts[i]), 504, "%s: 504", uc_result_text(timeouts[i]));
    is_int(uc_result_status(UC_CONNECT), 502, "could not connect: 502");
    is_int(uc_result_status(UC_DROPPED), 502, "dropped: 502");
}

/* ------------------------------------------------------------------ a real exchange */

/* A loopback HTTP/1.1 server, one connection at a time: GET /ok gets a
 * whole small answer (the connection stays open for the next request);
 * anything else 200 and a chunked body of one keep-alive comment every
 * 20 ms until the client goes away. */
struct server {
    int fd;
    int port;
    pthread_t thread;
    int accepted;
};

static void *serve(void *ud)
{
    struct server *s = ud;
    for (;;) {
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
            return NULL;
        __atomic_add_fetch(&s->accepted, 1, __ATOMIC_SEQ_CST);
        char buf[4096];
        for (;;) {                      /* one request after another on this connection */
            size_t got = 0;
            bool head = false;
            while (!head) {
                ssize_t n = recv(c, buf + got, sizeof buf - 1 - got, 0);
                if (n <= 0)
                    goto next;
                got += (size_t)n;
                buf[got] = '\0';
                head = strstr(buf, "\r\n\r\n") != NULL;
            }
            if (strncmp(buf, "GET /ok ", 8) == 0) {
                static const char whole[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                if (send(c, whole, sizeof whole - 1, MSG_NOSIGNAL) < 0)
                    goto next;
                continue;
            }
            static const char hdr[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                      "Transfer-Encoding: chunked\r\n\r\n";
            if (send(c, hdr, sizeof hdr - 1, MSG_NOSIGNAL) < 0)
                goto next;
            /* comments until the client gives up on this request and sends the next or hangs up */
            for (;;) {
                if (send(c, "3\r\n:\n\n\r\n", 8, MSG_NOSIGNAL) < 0)
                    goto next;
                usleep(20000);
                char peek;
                ssize_t n = recv(c, &peek, 1, MSG_PEEK | MSG_DONTWAIT);
                if (n == 0)
                    goto next;
                if (n > 0)
                    goto next;      /* libcurl closes a connection it abandoned mid-answer */
            }
        }
    next:
        close(c);
    }
}

static int server_start(struct server *s)
{
    memset(s, 0, sizeof *s);
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (s->fd < 0 || bind(s->fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(s->fd, 8) < 0 ||
        getsockname(s->fd, (struct sockaddr *)&a, &len) < 0)
        return -1;
    s->port = ntohs(a.sin_port);
    return pthread_create(&s->thread, NULL, serve, s) == 0 ? 0 : -1;
}

static void server_stop(struct server *s)
{
    shutdown(s->fd, SHUT_RDWR);
    close(s->fd);
    pthread_join(s->thread, NULL);
}

static int count_progress(void *ud, const char *data, size_t len)
{
    (void)data;
    (void)len;
    (void)ud;
    return 0;
}

static int no_progress(void *ud, const char *data, size_t len)
{
    (void)data;
    (void)len;
    (void)ud;
    return UC_NO_PROGRESS;
}

static void test_exchanges(void)
{
    struct server s;
    if (server_start(&s) < 0) {
        ok(0, "a loopback server");
        return;
    }
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/generate_stream", s.port);
    struct uc_request q = {.method = "GET", .url = url, .connect_timeout_ms = 5000, .first_byte_timeout_ms = 5000,
                           .idle_timeout_ms = 300, .total_timeout_ms = 60000, .watch_fd = -1,
                           .on_body = no_progress};
    struct uc_response res;
    /* keep-alive bytes that are no progress: the idle limit, however long the stream goes on */
    ok(uc_perform(&q, &res) == 0, "an exchange");
    is_int(res.result, UC_IDLE_TIMEOUT, "only keep-alives: stream_idle_timeout ran out (%s)", res.error);
    ok(res.bytes > 0 && res.got_headers, "the keep-alives did arrive");
    has_str(res.error, "stream_idle_timeout", "the detail names the limit");

    /* counted as progress they keep the idle clock reset: total_timeout, said as such, also on a reused
     * connection (libcurl's connect time is 0 for one; that used to read as "timed out connecting") */
    q.on_body = count_progress;
    q.idle_timeout_ms = 30000;
    q.total_timeout_ms = 400;
    ok(uc_perform(&q, &res) == 0, "a fresh connection");
    is_int(res.result, UC_TOTAL_TIMEOUT, "a fresh connection: total_timeout (%s)", res.error);
    char ok_url[64];
    snprintf(ok_url, sizeof ok_url, "http://127.0.0.1:%d/ok", s.port);
    for (int i = 0; i < 2; i++) {
        int before = __atomic_load_n(&s.accepted, __ATOMIC_SEQ_CST);
        q.url = ok_url;
        ok(uc_perform(&q, &res) == 0 && res.result == UC_OK && res.status == 200, "a whole answer leaves the "
           "connection open");
        q.url = url;
        ok(uc_perform(&q, &res) == 0, "the next exchange");
        is_int(__atomic_load_n(&s.accepted, __ATOMIC_SEQ_CST), before + 1, "... reused that connection");
        is_int(res.result, UC_TOTAL_TIMEOUT, "a reused connection: total_timeout, not a connect timeout (%s)",
               res.error);
        is_str(uc_category(res.result, res.code, res.status), "total timeout", "its category");
    }

    /* nothing listening: refused, with the address only in the detail */
    int closed = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (closed >= 0 && bind(closed, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(closed, (struct sockaddr *)&a, &len) == 0) {
        snprintf(url, sizeof url, "http://127.0.0.1:%d/", ntohs(a.sin_port));
        ok(uc_perform(&q, &res) == 0, "an exchange with a closed port");
        is_int(res.result, UC_CONNECT, "refused");
        is_str(uc_category(res.result, res.code, res.status), "connect refused", "its category");
        tap_diag("detail for the log: %s", res.error);
    }
    if (closed >= 0)
        close(closed);
    server_stop(&s);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    test_clocks();
    test_categories();
    test_texts_and_statuses();
    test_exchanges();
    curl_global_cleanup();
    return tap_done();
}
