/* pool.c -- the responder threads: they accept FastCGI connections and answer requests until told to stop.
 *
 * All threads wait in one shared epoll set holding
 *   - the listening socket (one-shot: one thread takes each connection, then re-arms it),
 *   - idle kept connections (one-shot; nginx `fastcgi_keep_conn on` with an
 *     upstream keepalive pool), and
 *   - the pool's eventfd, which pool_stop() makes readable for every thread.
 * libfcgi on its own blocks one thread per kept connection, idle or not; here
 * an idle connection is parked in the epoll set and costs no thread, so
 * nginx can keep as many as it likes and skip a connect/accept/close per
 * request. Threads accept and hand connections to libfcgi themselves
 * (FCGX_Request.ipcFd), so libfcgi never blocks in accept() and a stop never
 * needs shutdown() on a socket that systemd or spawn-fcgi share with us.
 *
 * A connection belongs to one thread from the moment it takes it until it
 * parks or closes it; only that thread writes to its FastCGI streams.
 *
 * What comes before a request (management records, other roles) is
 * answered by fcgi_head.c; a request's head (FCGI_BEGIN_REQUEST and
 * FCGI_PARAMS) must then arrive within head_timeout, which the head
 * watchdog thread enforces while libfcgi reads it. */
#include "config.h"
#include "pool.h"
#include "auth.h"
#include "cidr.h"
#include "conf.h"
#include "fcgi_head.h"
#include "log.h"
#include "memtrim.h"
#include "metrics.h"
#include "request.h"
#include "response.h"
#include "router.h"
#include "server.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcgiapp.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/* How much of an unread request body is read and dropped to keep a
 * connection reusable; a larger rest closes the connection instead. */
#define KEEP_DRAIN_LIMIT (1 << 20)
#define FD_TRACK_MAX (1 << 20)

enum fd_state { FD_UNTRACKED = 0, FD_PARKED = 1 };

struct worker {
    struct pool *pool;
    pthread_t thread;
    bool started;
    int index;
    /* guarded by pool.wd_lock */
    int head_fd;                    /* a dup of the connection whose head libfcgi is reading; -1: none */
    int64_t head_deadline_ns;       /* when the watchdog shuts it down */
};

struct pool {
    struct server *srv;
    int listen_fd;
    int epfd;                       /* shared by all threads */
    int wake_fd;                    /* eventfd: readable once pool_stop() ran */
    atomic_bool stopping;
    atomic_uchar *fd_state;         /* FD_PARKED for kept connections waiting in epfd */
    atomic_int parked;              /* how many connections wait in epfd now */
    bool tcp;                       /* the listening socket is TCP (not unix) */
    size_t fd_cap;
    atomic_llong last_accept_error_ns;  /* rate limit for accept() error messages */
    atomic_llong last_refusal_ns;       /* and for connections refused by web_server_addrs */
    atomic_ullong refused;              /* connections refused by web_server_addrs */
    pthread_mutex_t lock;
    int running;                    /* threads not yet exited; guarded by lock */
    /* the head watchdog */
    pthread_t watchdog;
    bool watchdog_started;
    pthread_mutex_t wd_lock;
    pthread_cond_t wd_cond;         /* on CLOCK_MONOTONIC, like util_now_ns */
    bool wd_stop;                   /* guarded by wd_lock, like: */
    int64_t wd_next_ns;             /* when the watchdog wakes next; INT64_MAX: when signalled */
    int n;
    struct worker workers[];
};

/* One access-log line: time, client, "method path", status, body bytes,
 * seconds, request id. Everything from the request is escaped (no forged
 * lines), and the fields after the path always fit: a long path is cut. */
static void append_raw(char *buf, size_t len, size_t *pos, const char *s)
{
    size_t n = strlen(s);
    if (*pos + n < len) {
        memcpy(buf + *pos, s, n);
        *pos += n;
    }
}

/* A JSON string of s (quotes included) at buf+*pos: ", \ and bytes outside
 * 0x20..0x7e as escapes (a byte >= 0x80 as \u00HH, so the line is always
 * valid JSON, whatever the client sent). Leaves *pos where it was when s
 * does not fit. */
static bool json_str(char *buf, size_t len, size_t *pos, const char *s)
{
    size_t p = *pos;
    if (p + 2 >= len)
        return false;
    buf[p++] = '"';
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (p + 7 >= len)
            return false;
        if (*c == '"' || *c == '\\') {
            buf[p++] = '\\';
            buf[p++] = (char)*c;
        } else if (*c < 0x20 || *c > 0x7e) {
            p += (size_t)snprintf(buf + p, len - p, "\\u%04x", *c);
        } else {
            buf[p++] = (char)*c;
        }
    }
    buf[p++] = '"';
    *pos = p;
    return true;
}

/* access_log_format = json: one object per line, keys always in this order;
 * tokens_in/tokens_out only when known, model only when one served it. */
static void access_log_json(const struct req *r, const char *when, int status, long long us)
{
    char line[4096], num[256];
    size_t pos = 0;
    append_raw(line, sizeof line, &pos, "{\"time\":");
    json_str(line, sizeof line, &pos, when);
    append_raw(line, sizeof line, &pos, ",\"request_id\":");
    json_str(line, sizeof line, &pos, r->id);
    append_raw(line, sizeof line, &pos, ",\"remote_addr\":");
    json_str(line, sizeof line, &pos, r->remote_addr);
    append_raw(line, sizeof line, &pos, ",\"method\":");
    json_str(line, sizeof line, &pos, r->method_name);
    append_raw(line, sizeof line, &pos, ",\"path\":");
    if (!json_str(line, sizeof line - 600, &pos, r->path))
        json_str(line, sizeof line, &pos, "(too long)");
    if (r->route) {
        append_raw(line, sizeof line, &pos, ",\"route\":");
        json_str(line, sizeof line, &pos, r->route);
    }
    if (r->model_label) {
        append_raw(line, sizeof line, &pos, ",\"model\":");
        json_str(line, sizeof line, &pos, metrics_model_name(r->model_label));
    }
    snprintf(num, sizeof num, ",\"status\":%d,\"bytes\":%llu,\"duration\":%lld.%06lld", status,
             (unsigned long long)r->bytes_out, us / 1000000, us % 1000000);
    append_raw(line, sizeof line, &pos, num);
    if (r->tokens_in >= 0) {
        snprintf(num, sizeof num, ",\"tokens_in\":%ld", r->tokens_in);
        append_raw(line, sizeof line, &pos, num);
    }
    if (r->tokens_out >= 0) {
        snprintf(num, sizeof num, ",\"tokens_out\":%ld", r->tokens_out);
        append_raw(line, sizeof line, &pos, num);
    }
    if (r->cfg && r->cfg->keys) {               /* the key's name, never the key */
        append_raw(line, sizeof line, &pos, ",\"key\":");
        json_str(line, sizeof line, &pos, r->key ? r->key->name : "-");
    }
    append_raw(line, sizeof line, &pos, "}\n");
    log_access_line(line, pos);
}

/* A field of the text access log: quotes and backslashes escaped too, and
 * everything outside ASCII, as web servers' logs do. */
static void log_field(char *buf, size_t len, size_t *pos, const char *s)
{
    log_escape(buf, len, pos, s, strlen(s), LOG_ESC_QUOTED | LOG_ESC_ASCII);
}

static void access_log(const struct req *r)
{
    if (!log_access_enabled())
        return;
    char line[2048], tail[256], when[40];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    util_format_time(when, sizeof when, &now);
    int status = r->status ? r->status : (r->client_gone ? 499 : 0);
    long long us = (util_now_ns() - r->start_ns) / 1000;
    if (r->cfg && r->cfg->access_log_json) {
        access_log_json(r, when, status, us);
        return;
    }
    /* with [auth] keys_file: the key's name (never the key) last, "-" for none */
    const char *key = r->cfg->keys ? (r->key ? r->key->name : "-") : NULL;
    int tl = snprintf(tail, sizeof tail, "\" %d %llu %lld.%06lld %s%s%s\n", status,
                      (unsigned long long)r->bytes_out, us / 1000000, us % 1000000, r->id, key ? " " : "",
                      key ? key : "");
    if (tl < 0 || (size_t)tl >= sizeof tail)
        return;
    size_t room = sizeof line - (size_t)tl, pos = 0;   /* the head gets at most room-1 bytes */
    append_raw(line, room, &pos, when);
    append_raw(line, room, &pos, " ");
    log_field(line, room, &pos, r->remote_addr);
    append_raw(line, room, &pos, " \"");
    log_field(line, room, &pos, r->method_name);
    append_raw(line, room, &pos, " ");
    log_field(line, room, &pos, r->path);
    memcpy(line + pos, tail, (size_t)tl);
    log_access_line(line, pos + (size_t)tl);
}

/* A kept connection must be left at the start of the next request: libfcgi
 * takes leftover records of this one for a protocol error. Reads what the
 * handler left of the body; false when too much is left (close instead). */
static bool finish_reading(FCGX_Request *freq)
{
    char sink[8192];
    size_t total = 0;
    int n;
    while ((n = FCGX_GetStr(sink, sizeof sink, freq->in)) > 0)
        if ((total += (size_t)n) > KEEP_DRAIN_LIMIT)
            return false;
    return FCGX_GetError(freq->in) == 0;
}

/* How long a connection closed after its answer may go on sending: libfcgi's
 * own close reads until the client's end of file, 2 s at a time, and so
 * for ever while the client sends a byte now and then, holding the thread. */
#define LINGER_MS 2000

/* Closes a connection whose answer was sent: shuts our side, reads what
 * the client still sends until its end of file but LINGER_MS at most in
 * all (closing with unread input would reset the connection, and the client
 * could lose the end of the answer), then closes. */
static void linger_close(int fd)
{
    if (shutdown(fd, SHUT_WR) == 0) {
        int64_t end = util_now_ns() + LINGER_MS * 1000000LL;
        char sink[4096];
        for (;;) {
            int64_t left = end - util_now_ns();
            struct pollfd pfd = {.fd = fd, .events = POLLIN};
            if (left <= 0 || poll(&pfd, 1, (int)((left + 999999) / 1000000)) <= 0 ||
                recv(fd, sink, sizeof sink, MSG_DONTWAIT) <= 0)
                break;
        }
    }
    close(fd);
}

void pool_answer(struct server *srv, FCGX_Request *freq)
{
    atomic_fetch_add(&srv->busy, 1);
    struct config *cfg = server_config_acquire(srv);
    struct req r;
    int st = req_init(&r, freq, srv, cfg);
    if (st) {
        resp_error(&r, st, "%s", st == 414 ? "request target too long" :
                                 st == 404 ? "not found (outside path_prefix)" :
                                 "malformed request target: its path holds a control byte, %00 or a malformed "
                                 "%-escape");
    } else {
        router_dispatch(&r);
        if (!r.status && !r.client_gone) {
            log_error("request %s: %s %s: the handler sent no response", r.id, r.method_name, r.path);
            resp_error(&r, 500, "internal error: no response was produced");
        }
    }
    metrics_request(r.route, r.status ? r.status : r.client_gone ? 499 : 0, r.model_label,
                    util_now_ns() - r.start_ns);
    access_log(&r);
    size_t body_len = r.body_len;
    req_cleanup(&r);
    if (freq->keepConnection && (r.client_gone || !finish_reading(freq)))
        freq->keepConnection = 0;
    /* libfcgi is left to close only a connection that failed, and then at
     * once (detached); a connection to close after its answer lingers here */
    bool close_after = !freq->keepConnection;
    freq->keepConnection = 1;
    freq->detached = 1;
    FCGX_Finish_r(freq);
    freq->detached = 0;
    if (close_after && freq->ipcFd >= 0) {
        linger_close(freq->ipcFd);
        freq->ipcFd = -1;
    }
    memtrim_after_request(body_len, r.bytes_out);   /* the answer is out: give a large request's memory back */
    config_unref(cfg);
    atomic_fetch_add(&srv->requests, 1);
    atomic_fetch_sub(&srv->busy, 1);
}

/* Puts a connection (kept, or accepted before its request arrived) into the
 * epoll set, to be taken by whichever thread is free when it turns readable. */
static void park(struct pool *p, int fd)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT, .data.fd = fd};
    if ((size_t)fd < p->fd_cap)
        atomic_store(&p->fd_state[fd], FD_PARKED);
    atomic_fetch_add(&p->parked, 1);
    /* MOD re-arms a connection parked before; a new one (or a reused fd
     * number: close() removed the old registration) needs ADD */
    if (epoll_ctl(p->epfd, EPOLL_CTL_MOD, fd, &ev) == 0 ||
        (errno == ENOENT && epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) == 0))
        return;
    log_error("cannot park FastCGI connection %d: %s; closing it", fd, strerror(errno));
    atomic_fetch_sub(&p->parked, 1);
    if ((size_t)fd < p->fd_cap)
        atomic_store(&p->fd_state[fd], FD_UNTRACKED);
    close(fd);
}

static void rearm_listener(struct pool *p)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.fd = p->listen_fd};
    if (epoll_ctl(p->epfd, EPOLL_CTL_MOD, p->listen_fd, &ev) < 0)
        log_error("cannot re-arm the listening socket: %s", strerror(errno));
}

/* Web servers write the request right after connecting, so a new
 * connection is nearly always readable at once or within microseconds;
 * one that stays silent longer is parked rather than holding this thread. */
#define FIRST_BYTES_WAIT_MS 20

enum { NEXT_STOP = -1, NEXT_AGAIN = -2 };

/* Is a TCP peer one of the live config's web_server_addrs (every peer is,
 * when the list is empty: unset, or "any")? A refused one is counted and
 * logged, at most once a second. FastCGI has no authentication of its own. */
static bool web_server_allowed(struct pool *p, const struct sockaddr_storage *peer)
{
    struct config *cfg = server_config_acquire(p->srv);
    char addr[INET6_ADDRSTRLEN] = "";
    bool ok = cfg->n_web_server_addrs == 0;
    if (!ok) {
        const void *a = peer->ss_family == AF_INET ? (const void *)&((const struct sockaddr_in *)peer)->sin_addr
                      : peer->ss_family == AF_INET6 ? (const void *)&((const struct sockaddr_in6 *)peer)->sin6_addr
                      : NULL;
        ok = a && inet_ntop(peer->ss_family, a, addr, sizeof addr) &&
             cidr_list_contains(cfg->web_server_addrs, cfg->n_web_server_addrs, addr);
    }
    config_unref(cfg);
    if (ok)
        return true;
    unsigned long long n = atomic_fetch_add(&p->refused, 1) + 1;
    int64_t now = util_now_ns();
    if (now - atomic_exchange(&p->last_refusal_ns, now) > 1000000000LL)
        log_warn("refused a FastCGI connection from %s: not in web_server_addrs (%llu refused since start)",
                 addr[0] ? addr : "an unknown address", n);
    return false;
}

/* A new connection ready to serve: accepted from the listening socket and
 * readable. NEXT_AGAIN when none is waiting (or it was parked). */
static int accept_one(struct pool *p)
{
    struct sockaddr_storage peer;
    socklen_t peer_len = sizeof peer;
    memset(&peer, 0, sizeof peer);
    /* blocking, as libfcgi reads it */
    int fd = accept4(p->listen_fd, (struct sockaddr *)&peer, &peer_len, SOCK_CLOEXEC);
    if (fd < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED)
            return NEXT_AGAIN;
        /* EMFILE, ENFILE, ENOBUFS: say so (once a second) and back off instead of spinning */
        int64_t now = util_now_ns();
        if (now - atomic_exchange(&p->last_accept_error_ns, now) > 1000000000LL)
            log_error("accepting a FastCGI connection failed: %s", strerror(errno));
        poll(NULL, 0, 100);
        return NEXT_AGAIN;
    }
    if (p->tcp && !web_server_allowed(p, &peer)) {
        close(fd);
        return NEXT_AGAIN;
    }
    atomic_fetch_add(&p->srv->connections, 1);
    if (p->tcp) {
        int one = 1;                /* answers go out whole: no Nagle delay */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    /* a request that stops arriving half-way fails after read_timeout
     * instead of holding a thread for ever */
    int64_t ms = atomic_load(&p->srv->read_timeout_ms);
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (poll(&pfd, 1, FIRST_BYTES_WAIT_MS) <= 0) {
        park(p, fd);                /* its request is not here yet: no thread waits for it */
        return NEXT_AGAIN;
    }
    return fd;
}

/* Waits for one event of the shared epoll set. Returns a connection to
 * serve, NEXT_AGAIN or NEXT_STOP. */
static int next_connection(struct pool *p)
{
    struct epoll_event ev;
    int n = epoll_wait(p->epfd, &ev, 1, -1);
    if (n <= 0)
        return NEXT_AGAIN;
    int fd = ev.data.fd;
    if (fd == p->wake_fd)
        return NEXT_STOP;
    if (fd == p->listen_fd) {
        int c = accept_one(p);
        rearm_listener(p);
        return c;
    }
    atomic_fetch_sub(&p->parked, 1);
    if ((size_t)fd < p->fd_cap)
        atomic_store(&p->fd_state[fd], FD_UNTRACKED);
    if (atomic_load(&p->stopping)) {
        /* not served: leave it to pool_free, which closes parked connections */
        if ((size_t)fd < p->fd_cap)
            atomic_store(&p->fd_state[fd], FD_PARKED);
        return NEXT_STOP;
    }
    return fd;
}

/* The head watchdog. libfcgi reads a request's head inside FCGX_Accept_r
 * with blocking reads, which SO_RCVTIMEO (read_timeout) bounds one at a
 * time: a client that sends a byte now and then would hold the thread for
 * as long as it likes. At a head's deadline this thread shuts the
 * connection down, libfcgi's read returns, and FCGX_Accept_r fails. It
 * shuts down a dup of the connection that the responder thread closes only
 * after unwatch_head(), so the number is never a later connection's. */
static void *head_watchdog(void *arg)
{
    struct pool *p = arg;
    pthread_mutex_lock(&p->wd_lock);
    while (!p->wd_stop) {
        int64_t now = util_now_ns(), next = INT64_MAX;
        for (int i = 0; i < p->n; i++) {
            struct worker *w = &p->workers[i];
            if (w->head_fd < 0)
                continue;
            if (w->head_deadline_ns <= now) {
                shutdown(w->head_fd, SHUT_RDWR);
                w->head_deadline_ns = INT64_MAX;
            } else if (w->head_deadline_ns < next) {
                next = w->head_deadline_ns;
            }
        }
        p->wd_next_ns = next;
        if (next == INT64_MAX) {
            pthread_cond_wait(&p->wd_cond, &p->wd_lock);
        } else {
            struct timespec ts = {.tv_sec = next / 1000000000, .tv_nsec = next % 1000000000};
            pthread_cond_timedwait(&p->wd_cond, &p->wd_lock, &ts);
        }
    }
    pthread_mutex_unlock(&p->wd_lock);
    return NULL;
}

/* Puts fd's head under the watchdog until unwatch_head(). Without a spare
 * descriptor for the dup, only read_timeout bounds this one head. */
static void watch_head(struct pool *p, struct worker *w, int fd, int64_t deadline_ns)
{
    int dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup < 0)
        return;
    pthread_mutex_lock(&p->wd_lock);
    w->head_fd = dup;
    w->head_deadline_ns = deadline_ns;
    if (deadline_ns < p->wd_next_ns)
        pthread_cond_signal(&p->wd_cond);
    pthread_mutex_unlock(&p->wd_lock);
}

static void unwatch_head(struct pool *p, struct worker *w)
{
    pthread_mutex_lock(&p->wd_lock);
    int dup = w->head_fd;
    w->head_fd = -1;
    pthread_mutex_unlock(&p->wd_lock);
    if (dup >= 0)
        close(dup);
}

/* Answers the request waiting on fd; the connection is then closed by
 * libfcgi or, when the web server keeps it, parked again. What comes before
 * the request and the request's head share one deadline, head_timeout. */
static void serve(struct pool *p, struct worker *w, FCGX_Request *freq, int fd)
{
    int64_t deadline = util_now_ns() + atomic_load(&p->srv->head_timeout_ms) * 1000000;
    enum head_result h = fcgi_head(fd, p->n, deadline, atomic_load(&p->srv->read_timeout_ms));
    if (h != HEAD_RESPONDER) {
        if (h == HEAD_PARK && !atomic_load(&p->stopping))
            park(p, fd);
        else
            close(fd);
        return;
    }
    freq->ipcFd = fd;
    freq->keepConnection = 1;       /* so that FCGX_Accept_r does not close fd before reading it */
    /* a head that fails is closed at once: libfcgi's own close first waits
     * up to 2 s for the client's end of file, and for ever while the client
     * keeps sending */
    freq->detached = 1;
    watch_head(p, w, fd, deadline);
    int rc = FCGX_Accept_r(freq);
    unwatch_head(p, w);
    if (rc != 0)
        return;                     /* the web server closed the connection (libfcgi closed fd) */
    if (FCGX_GetError(freq->in) != 0) {
        /* libfcgi takes FCGI_PARAMS cut short by a read error (read_timeout,
         * the watchdog) for the whole head: such a request was answered,
         * to nobody, and its connection then lingered 2 s in libfcgi's
         * close (stalled heads cost read_timeout + 2 s a round) */
        FCGX_Free(freq, 1);
        return;
    }
    freq->detached = 0;
    pool_answer(p->srv, freq);
    if (freq->ipcFd >= 0) {
        int kept = freq->ipcFd;
        freq->ipcFd = -1;
        if (atomic_load(&p->stopping))
            close(kept);
        else
            park(p, kept);
    }
}

static void *responder(void *arg)
{
    struct worker *w = arg;
    struct pool *p = w->pool;
    FCGX_Request freq;
    /* listen socket -1: libfcgi is only ever handed connections, never accepts */
    if (FCGX_InitRequest(&freq, -1, 0) != 0) {
        log_error("responder %d: FCGX_InitRequest failed", w->index);
    } else {
        while (!atomic_load(&p->stopping)) {
            /* With connections parked, everything that can bring work (they
             * and the listener) is in the epoll set, whose ready list is
             * first come, first served. With none parked, new connections
             * are all there is, and under load one is usually waiting: a
             * direct accept saves the epoll round trip. */
            int fd = NEXT_AGAIN;
            if (atomic_load(&p->parked) == 0)
                fd = accept_one(p);
            if (fd == NEXT_AGAIN)
                fd = next_connection(p);
            if (fd == NEXT_STOP)
                break;
            if (fd >= 0)
                serve(p, w, &freq, fd);
        }
    }
    pthread_mutex_lock(&p->lock);
    p->running--;
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

static void pool_release(struct pool *p)
{
    if (p->watchdog_started) {
        pthread_mutex_lock(&p->wd_lock);
        p->wd_stop = true;
        pthread_cond_signal(&p->wd_cond);
        pthread_mutex_unlock(&p->wd_lock);
        pthread_join(p->watchdog, NULL);
    }
    pthread_cond_destroy(&p->wd_cond);
    pthread_mutex_destroy(&p->wd_lock);
    if (p->epfd >= 0)
        close(p->epfd);
    if (p->wake_fd >= 0)
        close(p->wake_fd);
    free(p->fd_state);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

int pool_start(struct pool **out, struct server *srv, int listen_fd, int n, char *err, size_t errlen)
{
    *out = NULL;
    struct pool *p = calloc(1, sizeof *p + (size_t)n * sizeof p->workers[0]);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    p->srv = srv;
    p->listen_fd = listen_fd;
    p->n = n;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    p->tcp = getsockname(listen_fd, (struct sockaddr *)&ss, &sl) == 0 && ss.ss_family != AF_UNIX;
    pthread_mutex_init(&p->lock, NULL);
    pthread_mutex_init(&p->wd_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->wd_cond, &ca);
    pthread_condattr_destroy(&ca);
    p->wd_next_ns = INT64_MAX;
    for (int i = 0; i < n; i++)
        p->workers[i].head_fd = -1;

    struct rlimit rl;
    p->fd_cap = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < FD_TRACK_MAX ? rl.rlim_cur : FD_TRACK_MAX;
    p->fd_state = calloc(p->fd_cap, sizeof *p->fd_state);
    p->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN | EPOLLONESHOT, .data.fd = listen_fd};
    struct epoll_event wev = {.events = EPOLLIN, .data.fd = p->wake_fd};
    int fl = fcntl(listen_fd, F_GETFL);
    if (!p->fd_state || p->wake_fd < 0 || p->epfd < 0 || fl < 0 || fcntl(listen_fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
        epoll_ctl(p->epfd, EPOLL_CTL_ADD, listen_fd, &lev) < 0 || epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->wake_fd, &wev) < 0) {
        snprintf(err, errlen, "pool set-up: %s", strerror(errno));
        pool_release(p);
        return -1;
    }
    int wrc = pthread_create(&p->watchdog, NULL, head_watchdog, p);
    if (wrc != 0) {
        snprintf(err, errlen, "cannot start the head watchdog thread: %s", strerror(wrc));
        pool_release(p);
        return -1;
    }
    p->watchdog_started = true;
    srv->threads = n;
    for (int i = 0; i < n; i++) {
        struct worker *w = &p->workers[i];
        w->pool = p;
        w->index = i;
        pthread_mutex_lock(&p->lock);
        p->running++;
        pthread_mutex_unlock(&p->lock);
        int rc = pthread_create(&w->thread, NULL, responder, w);
        if (rc != 0) {
            pthread_mutex_lock(&p->lock);
            p->running--;
            pthread_mutex_unlock(&p->lock);
            snprintf(err, errlen, "cannot start responder thread %d of %d: %s", i + 1, n, strerror(rc));
            pool_stop(p);
            pool_free(p);
            return -1;
        }
        w->started = true;
    }
    *out = p;
    return 0;
}

void pool_stop(struct pool *p)
{
    atomic_store(&p->stopping, true);
    uint64_t one = 1;
    if (write(p->wake_fd, &one, sizeof one) < 0)
        log_error("waking the responder threads failed: %s", strerror(errno));
}

int pool_running(struct pool *p)
{
    pthread_mutex_lock(&p->lock);
    int n = p->running;
    pthread_mutex_unlock(&p->lock);
    return n;
}

void pool_free(struct pool *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->n; i++)
        if (p->workers[i].started)
            pthread_join(p->workers[i].thread, NULL);
    for (size_t fd = 0; fd < p->fd_cap; fd++)   /* kept connections nobody will serve now */
        if (atomic_load(&p->fd_state[fd]) == FD_PARKED)
            close((int)fd);
    pool_release(p);
}
