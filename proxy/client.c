/* client.c -- one HTTP exchange with an upstream over libcurl, run by the calling responder thread. */
#include "config.h"
#include "client.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* The calling thread's handles, made on first use. */
struct uc_thread {
    CURLM *multi;
    CURL *easy;
};

static pthread_key_t thread_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static void thread_free(void *p)
{
    struct uc_thread *t = p;
    if (!t)
        return;
    if (t->easy)
        curl_easy_cleanup(t->easy);
    if (t->multi)
        curl_multi_cleanup(t->multi);
    free(t);
}

static void make_key(void)
{
    pthread_key_create(&thread_key, thread_free);
}

static struct uc_thread *thread_handles(void)
{
    pthread_once(&key_once, make_key);
    struct uc_thread *t = pthread_getspecific(thread_key);
    if (t)
        return t;
    t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->multi = curl_multi_init();
    t->easy = curl_easy_init();
    if (!t->multi || !t->easy || curl_multi_setopt(t->multi, CURLMOPT_MAXCONNECTS, 64L) != CURLM_OK) {
        thread_free(t);
        return NULL;
    }
    pthread_setspecific(thread_key, t);
    return t;
}

const char *uc_result_text(enum uc_result r)
{
    switch (r) {
    case UC_OK: return "ok";
    case UC_CONNECT: return "could not connect";
    case UC_CONNECT_TIMEOUT: return "did not accept a connection within connect_timeout";
    case UC_FIRST_BYTE_TIMEOUT: return "did not start answering within first_byte_timeout";
    case UC_IDLE_TIMEOUT: return "stalled for longer than stream_idle_timeout";
    case UC_TOTAL_TIMEOUT: return "took longer than total_timeout";
    case UC_DROPPED: return "closed the connection before the answer was complete";
    case UC_ABORTED: return "aborted";
    case UC_ERROR: return "failed";
    }
    return "failed";
}

int uc_result_status(enum uc_result r)
{
    return r == UC_CONNECT_TIMEOUT || r == UC_FIRST_BYTE_TIMEOUT || r == UC_IDLE_TIMEOUT || r == UC_TOTAL_TIMEOUT ? 504
                                                                                                                 : 502;
}

const char *uc_category(enum uc_result r, CURLcode code, long status)
{
    switch (r) {
    case UC_OK:
        return status >= 500 ? "http 5xx" : status >= 400 ? "http 4xx" : NULL;
    case UC_CONNECT:
        return code == CURLE_COULDNT_RESOLVE_HOST || code == CURLE_COULDNT_RESOLVE_PROXY ? "dns" : "connect refused";
    case UC_CONNECT_TIMEOUT: return "connect timeout";
    case UC_FIRST_BYTE_TIMEOUT: return "first byte timeout";
    case UC_IDLE_TIMEOUT: return "stream idle timeout";
    case UC_TOTAL_TIMEOUT: return "total timeout";
    case UC_DROPPED: return "dropped";
    case UC_ABORTED: return "bad answer";
    case UC_ERROR:
        break;
    }
    switch (code) {
    case CURLE_OPERATION_TIMEDOUT:
        return "timeout";
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CLIENTCERT:
    case CURLE_USE_SSL_FAILED:
        return "tls";
    default:
        return "error";
    }
}

enum uc_result uc_result_of_code(CURLcode code)
{
    switch (code) {
    case CURLE_OK:
        return UC_OK;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return UC_CONNECT;
    case CURLE_GOT_NOTHING:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE:
        return UC_DROPPED;
    case CURLE_WRITE_ERROR:
    case CURLE_ABORTED_BY_CALLBACK:
        return UC_ABORTED;
    default:
        return UC_ERROR;
    }
}

enum uc_result uc_clock_due(const struct uc_clocks *c, int64_t now_ns, int64_t *deadline_ns)
{
    enum uc_result which = UC_TOTAL_TIMEOUT;
    int64_t when = c->start_ns + c->total_ms * 1000000;
    if (!c->headers_ns) {
        /* while the request body is still being read, its sender (the client) is the slow one */
        if (c->sent_ns && c->sent_ns + c->first_byte_ms * 1000000 <= when) {
            which = UC_FIRST_BYTE_TIMEOUT;
            when = c->sent_ns + c->first_byte_ms * 1000000;
        }
    } else {
        int64_t last = c->progress_ns > c->headers_ns ? c->progress_ns : c->headers_ns;
        if (last + c->idle_ms * 1000000 <= when) {
            which = UC_IDLE_TIMEOUT;
            when = last + c->idle_ms * 1000000;
        }
    }
    if (deadline_ns)
        *deadline_ns = when;
    return now_ns >= when ? which : UC_OK;
}

/* What a transfer needs in its callbacks. */
struct xfer {
    const struct uc_request *q;
    struct uc_response *res;
    bool in_final;          /* reading the headers of a final (not 1xx) answer */
    bool aborted;           /* a callback said stop */
    struct uc_clocks clk;
    uint64_t body_sent;     /* bytes of a read_body body handed to libcurl */
};

static size_t on_header_line(char *data, size_t size, size_t n, void *ud)
{
    struct xfer *x = ud;
    size_t len = size * n, l = len;
    while (l && (data[l - 1] == '\n' || data[l - 1] == '\r'))
        l--;
    if (l >= 5 && memcmp(data, "HTTP/", 5) == 0) {     /* a status line: 1xx, or the final one */
        const char *sp = memchr(data, ' ', l);
        long status = sp ? strtol(sp + 1, NULL, 10) : 0;
        x->in_final = status >= 200;
        x->res->status = status;
        return len;
    }
    if (l == 0) {
        if (x->in_final && !x->res->got_headers) {
            x->res->got_headers = true;
            x->res->first_byte_ns = util_now_ns();
            x->clk.headers_ns = x->clk.progress_ns = x->res->first_byte_ns;
            if (!x->clk.sent_ns)
                x->clk.sent_ns = x->res->first_byte_ns;   /* answered before the body was all read */
        }
        return len;
    }
    if (!x->in_final || !x->q->on_header)
        return len;
    const char *colon = memchr(data, ':', l);
    if (!colon)
        return len;
    const char *v = colon + 1, *end = data + l;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    if (x->q->on_header(x->q->ud, data, (size_t)(colon - data), v, (size_t)(end - v)) != 0) {
        x->aborted = true;
        return 0;
    }
    return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
    struct xfer *x = ud;
    size_t len = size * n;
    x->res->bytes += len;
    int rc = x->q->on_body ? x->q->on_body(x->q->ud, data, len) : 0;
    if (rc != 0 && rc != UC_NO_PROGRESS) {
        x->aborted = true;
        return 0;                               /* CURLE_WRITE_ERROR */
    }
    if (rc == 0)
        x->clk.progress_ns = util_now_ns();
    return len;
}

static size_t on_read(char *buf, size_t size, size_t n, void *ud)
{
    struct xfer *x = ud;
    size_t got = x->q->read_body(buf, size * n, x->q->ud);
    if (got != CURL_READFUNC_ABORT && got != CURL_READFUNC_PAUSE) {
        x->body_sent += got;
        if (!x->clk.sent_ns && (got == 0 || (x->q->body_size >= 0 && x->body_sent >= (uint64_t)x->q->body_size)))
            x->clk.sent_ns = util_now_ns();     /* the first_byte_timeout clock starts now */
    }
    return got;
}

/* Did the peer on fd hang up? (Readable with nothing to read, or an error.)
 * Data waiting means the web server sent something (it should not while a
 * request is open); *stop_watching is then set so we do not spin on it. */
static bool peer_gone(int fd, bool *stop_watching)
{
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0)
        return true;
    if (n < 0)
        return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
    *stop_watching = true;
    return false;
}

static int set_options(CURL *e, const struct uc_request *q, struct xfer *x)
{
    CURLcode c = CURLE_OK;
#define OPT(o, v) do { if (c == CURLE_OK) c = curl_easy_setopt(e, o, v); } while (0)
    OPT(CURLOPT_NOSIGNAL, 1L);
    OPT(CURLOPT_URL, q->url);
    OPT(CURLOPT_PROTOCOLS_STR, "http,https");
    OPT(CURLOPT_FOLLOWLOCATION, 0L);
    OPT(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    OPT(CURLOPT_HTTPHEADER, (struct curl_slist *)q->headers);
    OPT(CURLOPT_HEADERFUNCTION, on_header_line);
    OPT(CURLOPT_HEADERDATA, x);
    OPT(CURLOPT_WRITEFUNCTION, on_body);
    OPT(CURLOPT_WRITEDATA, x);
    OPT(CURLOPT_CONNECTTIMEOUT_MS, (long)q->connect_timeout_ms);
    /* total_timeout is ours (uc_clock_due), so that its expiry is told apart
     * from connect_timeout's; libcurl's is a backstop for when a callback
     * held the loop past it (uc_perform tells the two apart by the clock) */
    OPT(CURLOPT_TIMEOUT_MS, (long)(q->total_timeout_ms + 1000));
    OPT(CURLOPT_TCP_KEEPALIVE, 1L);
    OPT(CURLOPT_TCP_NODELAY, 1L);
    OPT(CURLOPT_ERRORBUFFER, x->res->error);
    OPT(CURLOPT_USERAGENT, "llmcgi/" PACKAGE_VERSION);
    bool has_body = q->body || q->read_body;
    if (strcmp(q->method, "GET") == 0 && !has_body) {
        OPT(CURLOPT_HTTPGET, 1L);
    } else if (strcmp(q->method, "HEAD") == 0) {
        OPT(CURLOPT_NOBODY, 1L);
    } else {
        if (has_body) {
            OPT(CURLOPT_POST, 1L);
            if (q->body) {
                OPT(CURLOPT_POSTFIELDS, q->body);
                OPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->body_len);
            } else {
                OPT(CURLOPT_READFUNCTION, on_read);
                OPT(CURLOPT_READDATA, x);
                OPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->body_size);
            }
        }
        if (strcmp(q->method, "POST") != 0)
            OPT(CURLOPT_CUSTOMREQUEST, q->method);
    }
#undef OPT
    if (c != CURLE_OK) {
        snprintf(x->res->error, sizeof x->res->error, "libcurl: %s", curl_easy_strerror(c));
        return -1;
    }
    return 0;
}

/* libcurl's result; its timeout is connect_timeout's, or the backstop of
 * total_timeout when that has passed. */
static enum uc_result classify(CURLcode c, const struct uc_clocks *clk, int64_t now_ns)
{
    if (c != CURLE_OPERATION_TIMEDOUT)
        return uc_result_of_code(c);
    return now_ns - clk->start_ns >= clk->total_ms * 1000000 ? UC_TOTAL_TIMEOUT : UC_CONNECT_TIMEOUT;
}

int uc_perform(const struct uc_request *q, struct uc_response *res)
{
    memset(res, 0, sizeof *res);
    struct uc_thread *t = thread_handles();
    if (!t) {
        res->result = UC_ERROR;
        snprintf(res->error, sizeof res->error, "cannot set up libcurl (out of memory)");
        return -1;
    }
    CURL *e = t->easy;
    curl_easy_reset(e);
    struct xfer x = {.q = q, .res = res};
    if (set_options(e, q, &x) < 0 || curl_multi_add_handle(t->multi, e) != CURLM_OK) {
        res->result = UC_ERROR;
        if (!res->error[0])
            snprintf(res->error, sizeof res->error, "cannot start the transfer");
        return -1;
    }
    int64_t start = util_now_ns(), next_tick = q->tick_ms ? start + q->tick_ms * 1000000 : INT64_MAX;
    x.clk = (struct uc_clocks){.start_ns = start, .sent_ns = q->read_body ? 0 : start,
                               .first_byte_ms = q->first_byte_timeout_ms, .idle_ms = q->idle_timeout_ms,
                               .total_ms = q->total_timeout_ms};
    int watch = q->watch_fd;
    enum uc_result own = UC_OK;             /* a reason of ours to stop, UC_OK while none */
    int running = 1;
    CURLcode done = CURLE_OK;
    bool finished = false;

    while (own == UC_OK) {
        CURLMcode mc = curl_multi_perform(t->multi, &running);
        if (mc != CURLM_OK) {
            snprintf(res->error, sizeof res->error, "libcurl: %s", curl_multi_strerror(mc));
            own = UC_ERROR;
            break;
        }
        int left;
        CURLMsg *m;
        while ((m = curl_multi_info_read(t->multi, &left)))
            if (m->msg == CURLMSG_DONE && m->easy_handle == e) {
                done = m->data.result;
                finished = true;
            }
        if (finished || !running)
            break;
        if (x.aborted) {
            own = UC_ABORTED;
            break;
        }
        int64_t now = util_now_ns(), deadline;
        uc_clock_due(&x.clk, now, &deadline);
        if (next_tick < deadline)
            deadline = next_tick;
        int64_t wait_ms = deadline > now ? (deadline - now + 999999) / 1000000 : 0;
        if (wait_ms > 1000)
            wait_ms = 1000;
        struct curl_waitfd wfd = {.fd = watch, .events = CURL_WAIT_POLLIN};
        mc = curl_multi_poll(t->multi, watch >= 0 ? &wfd : NULL, watch >= 0 ? 1 : 0, (int)wait_ms, NULL);
        if (mc != CURLM_OK) {
            snprintf(res->error, sizeof res->error, "libcurl: %s", curl_multi_strerror(mc));
            own = UC_ERROR;
            break;
        }
        if (watch >= 0 && wfd.revents) {
            bool stop_watching = false;
            if (peer_gone(watch, &stop_watching)) {
                res->client_gone = true;
                own = UC_ABORTED;
                snprintf(res->error, sizeof res->error, "the client went away");
                break;
            }
            if (stop_watching)
                watch = -1;
        }
        now = util_now_ns();
        if ((own = uc_clock_due(&x.clk, now, NULL)) != UC_OK) {
            break;
        } else if (now >= next_tick) {
            next_tick = now + q->tick_ms * 1000000;
            if (q->on_tick && q->on_tick(q->ud) != 0)
                own = UC_ABORTED;
        }
    }
    curl_multi_remove_handle(t->multi, e);
    int64_t end = util_now_ns();
    res->code = done;
    if (own != UC_OK) {
        res->result = own;
    } else if (!finished) {
        res->result = UC_ERROR;
        snprintf(res->error, sizeof res->error, "the transfer ended without a result");
    } else {
        res->result = x.aborted ? UC_ABORTED : classify(done, &x.clk, end);
        if (res->result != UC_OK && !res->error[0])
            snprintf(res->error, sizeof res->error, "%s", curl_easy_strerror(done));
    }
    if (res->result == UC_CONNECT_TIMEOUT || res->result == UC_FIRST_BYTE_TIMEOUT || res->result == UC_IDLE_TIMEOUT ||
        res->result == UC_TOTAL_TIMEOUT) {
        /* the limit that ran out, whatever libcurl's own words were */
        char curl_said[sizeof res->error];
        snprintf(curl_said, sizeof curl_said, "%s", res->error);
        snprintf(res->error, sizeof res->error, "%s after %lld ms, %llu bytes received%s%.*s",
                 uc_result_text(res->result), (long long)((end - start) / 1000000),
                 (unsigned long long)res->bytes, curl_said[0] ? "; libcurl: " : "", CURL_ERROR_SIZE, curl_said);
    }
    return 0;
}
