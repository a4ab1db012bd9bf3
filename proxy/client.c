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
    case UC_CONNECT_TIMEOUT: return "timed out connecting";
    case UC_FIRST_BYTE_TIMEOUT: return "timed out waiting for an answer";
    case UC_IDLE_TIMEOUT: return "stalled mid-answer";
    case UC_TOTAL_TIMEOUT: return "took longer than total_timeout";
    case UC_DROPPED: return "closed the connection before the answer was complete";
    case UC_ABORTED: return "aborted";
    case UC_ERROR: return "failed";
    }
    return "failed";
}

/* What a transfer needs in its callbacks. */
struct xfer {
    const struct uc_request *q;
    struct uc_response *res;
    bool in_final;          /* reading the headers of a final (not 1xx) answer */
    bool aborted;           /* a callback said stop */
    int64_t last_data_ns;
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
            x->last_data_ns = x->res->first_byte_ns;
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
    x->last_data_ns = util_now_ns();
    if (x->q->on_body && x->q->on_body(x->q->ud, data, len) != 0) {
        x->aborted = true;
        return 0;                               /* CURLE_WRITE_ERROR */
    }
    return len;
}

static size_t on_read(char *buf, size_t size, size_t n, void *ud)
{
    struct xfer *x = ud;
    return x->q->read_body(buf, size * n, x->q->ud);
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
    OPT(CURLOPT_TIMEOUT_MS, (long)q->total_timeout_ms);
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

static enum uc_result classify(CURL *e, CURLcode c)
{
    switch (c) {
    case CURLE_OK:
        return UC_OK;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
        return UC_CONNECT;
    case CURLE_OPERATION_TIMEDOUT: {
        curl_off_t connected = 0;
        curl_easy_getinfo(e, CURLINFO_CONNECT_TIME_T, &connected);
        return connected ? UC_TOTAL_TIMEOUT : UC_CONNECT_TIMEOUT;
    }
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

static int64_t min_pos(int64_t a, int64_t b)
{
    return a < b ? a : b;
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
        int64_t now = util_now_ns(), deadline = next_tick;
        if (!res->got_headers)
            deadline = min_pos(deadline, start + q->first_byte_timeout_ms * 1000000);
        else
            deadline = min_pos(deadline, x.last_data_ns + q->idle_timeout_ms * 1000000);
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
        if (!res->got_headers && now - start >= q->first_byte_timeout_ms * 1000000) {
            own = UC_FIRST_BYTE_TIMEOUT;
        } else if (res->got_headers && now - x.last_data_ns >= q->idle_timeout_ms * 1000000) {
            own = UC_IDLE_TIMEOUT;
        } else if (now >= next_tick) {
            next_tick = now + q->tick_ms * 1000000;
            if (q->on_tick && q->on_tick(q->ud) != 0)
                own = UC_ABORTED;
        }
    }
    curl_multi_remove_handle(t->multi, e);
    if (own != UC_OK) {
        res->result = own;
        if (!res->error[0] || own == UC_FIRST_BYTE_TIMEOUT || own == UC_IDLE_TIMEOUT)
            snprintf(res->error, sizeof res->error, "%s", uc_result_text(own));
    } else if (!finished) {
        res->result = UC_ERROR;
        snprintf(res->error, sizeof res->error, "the transfer ended without a result");
    } else {
        res->result = x.aborted ? UC_ABORTED : classify(e, done);
        if (res->result != UC_OK && !res->error[0])
            snprintf(res->error, sizeof res->error, "%s", curl_easy_strerror(done));
    }
    return 0;
}
