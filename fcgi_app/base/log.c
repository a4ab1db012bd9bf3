/* log.c -- the error log and the access log: levels, journald prefixes, reopen on SIGUSR1. */
#include "config.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

struct log_dest {
    atomic_int fd;          /* -1: off; 2: stderr; else a file owned here */
    char path[PATH_MAX];    /* "" for stderr/off */
    int spare;              /* a number once used for a file, now on /dev/null; reused by the next file */
};

static struct {
    pthread_mutex_t lock;   /* serialises configure/reopen/close, never held while logging */
    struct log_dest err, acc;
    atomic_int level;
    atomic_bool journal;    /* stderr is a journald stream: "<N>" prefixes, no time stamps */
} L = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .err = {.fd = 2, .spare = -1},
    .acc = {.fd = -1, .spare = -1},
    .level = LL_INFO,
};

int log_level_parse(const char *s, enum log_level *out)
{
    static const struct { const char *name; enum log_level level; } names[] = {
        {"error", LL_ERROR}, {"warn", LL_WARN}, {"warning", LL_WARN},
        {"notice", LL_NOTICE}, {"info", LL_INFO}, {"debug", LL_DEBUG},
    };
    for (size_t i = 0; i < ARRAY_LEN(names); i++) {
        if (strcasecmp(s, names[i].name) == 0) {
            *out = names[i].level;
            return 0;
        }
    }
    return -1;
}

/* systemd sets JOURNAL_STREAM=dev:ino when stderr goes to the journal. */
static bool stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(2, &st) < 0)
        return false;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

static int open_log_file(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
        snprintf(err, errlen, "cannot open log file %s: %s", path, strerror(errno));
    return fd;
}

/* What a destination is to become, with its file already open: both logs
 * are prepared before either changes, so a failure changes nothing. */
struct dest_plan {
    enum { PLAN_FILE, PLAN_STDERR, PLAN_OFF } kind;
    int newfd;
    const char *path;
};

static int plan_dest(struct dest_plan *pl, const char *spec, bool allow_off, char *err, size_t errlen)
{
    pl->newfd = -1;
    pl->path = spec;
    if (allow_off && strcmp(spec, "off") == 0) {
        pl->kind = PLAN_OFF;
        return 0;
    }
    if (strcmp(spec, "stderr") == 0) {
        pl->kind = PLAN_STDERR;
        return 0;
    }
    if (strlen(spec) >= PATH_MAX) {
        snprintf(err, errlen, "log path too long: %s", spec);
        return -1;
    }
    pl->kind = PLAN_FILE;
    pl->newfd = open_log_file(spec, err, errlen);
    return pl->newfd < 0 ? -1 : 0;
}

/* Applies a plan. The descriptor number of a file, once handed to writers,
 * stays valid for the life of the process (see log.h): a new file is
 * dup2()ed onto it, and a file given up leaves its number on /dev/null for
 * the next file to take. */
static void apply_dest(struct log_dest *d, const struct dest_plan *pl)
{
    int cur = atomic_load(&d->fd);
    if (pl->kind == PLAN_FILE) {
        int slot = cur > 2 ? cur : d->spare, fd = pl->newfd;
        if (slot > 2) {
            dup2(pl->newfd, slot);
            close(pl->newfd);
            fd = slot;
            if (slot == d->spare)
                d->spare = -1;
        }
        snprintf(d->path, sizeof d->path, "%s", pl->path);
        atomic_store(&d->fd, fd);
        return;
    }
    atomic_store(&d->fd, pl->kind == PLAN_STDERR ? 2 : -1);
    d->path[0] = '\0';
    if (cur > 2) {
        int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (null >= 0) {
            dup2(null, cur);
            close(null);
        }
        d->spare = cur;
    }
}

int log_configure(const char *error_log, const char *access_log, enum log_level level,
                  char *err, size_t errlen)
{
    struct dest_plan pe, pa;
    pthread_mutex_lock(&L.lock);
    if (plan_dest(&pe, error_log, false, err, errlen) < 0) {
        pthread_mutex_unlock(&L.lock);
        return -1;
    }
    if (plan_dest(&pa, access_log, true, err, errlen) < 0) {
        if (pe.newfd >= 0)
            close(pe.newfd);
        pthread_mutex_unlock(&L.lock);
        return -1;
    }
    atomic_store(&L.journal, stderr_is_journal());
    apply_dest(&L.err, &pe);
    apply_dest(&L.acc, &pa);
    atomic_store(&L.level, level);
    pthread_mutex_unlock(&L.lock);
    return 0;
}

static int dest_reopen(struct log_dest *d)
{
    char err[256];
    int fd = atomic_load(&d->fd);
    if (fd <= 2 || !d->path[0])
        return 0;
    int nfd = open_log_file(d->path, err, sizeof err);
    if (nfd < 0) {
        log_error("%s (keeping the old file open)", err);
        return -1;
    }
    dup2(nfd, fd);
    close(nfd);
    return 0;
}

int log_reopen(void)
{
    pthread_mutex_lock(&L.lock);
    int rc = dest_reopen(&L.err) | dest_reopen(&L.acc);
    pthread_mutex_unlock(&L.lock);
    return rc;
}

void log_close(void)
{
    pthread_mutex_lock(&L.lock);
    struct log_dest *d[] = {&L.err, &L.acc};
    for (size_t i = 0; i < ARRAY_LEN(d); i++) {
        int fd = atomic_exchange(&d[i]->fd, i == 0 ? 2 : -1);
        if (fd > 2)
            close(fd);
        if (d[i]->spare > 2)
            close(d[i]->spare);
        d[i]->spare = -1;
        d[i]->path[0] = '\0';
    }
    pthread_mutex_unlock(&L.lock);
}

static void write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return;                 /* nowhere left to report a logging failure */
        }
        buf += n;
        len -= (size_t)n;
    }
}

/* Is the well-formed UTF-8 character p[0..n) one that must not reach a log
 * as it is? C1 controls (U+0080..U+009F); U+2028 and U+2029, which some
 * readers take for line breaks; the bidirectional embeddings, overrides
 * (U+202A..U+202E) and isolates (U+2066..U+2069), which reorder what a
 * reader sees. */
static bool unprintable_char(const unsigned char *p, size_t n)
{
    if (n == 2)
        return p[0] == 0xc2 && p[1] < 0xa0;
    if (n != 3 || p[0] != 0xe2)
        return false;
    unsigned cp = 0x2000u | ((p[1] & 0x3fu) << 6) | (p[2] & 0x3fu);
    return (p[1] == 0x80 && cp >= 0x2028 && cp <= 0x202e) || (p[1] == 0x81 && cp >= 0x2066 && cp <= 0x2069);
}

bool log_escape(char *buf, size_t len, size_t *pos, const char *s, size_t n, unsigned flags)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    size_t o = *pos;
    if (o >= len)
        return n == 0;
    bool whole = true;
    while (p < end) {
        unsigned c = *p;
        size_t u = c >= 0x80 && !(flags & LOG_ESC_ASCII) ? util_utf8_seq(p, end) : 0;
        if (u && unprintable_char(p, u))
            u = 0;
        char esc[4];
        const char *out = (const char *)p;
        size_t k = u ? u : 1;
        if (!u && (c < 0x20 || c >= 0x7f || ((flags & LOG_ESC_QUOTED) && (c == '"' || c == '\\')))) {
            out = esc;
            esc[0] = '\\';
            if ((c == '\n' || c == '\r' || c == '\t') && !(flags & LOG_ESC_ASCII)) {
                esc[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
                k = 2;
            } else {
                esc[1] = 'x';
                esc[2] = hex[c >> 4];
                esc[3] = hex[c & 15];
                k = 4;
            }
        }
        if (o + k >= len) {
            whole = false;
            break;
        }
        memcpy(buf + o, out, k);
        o += k;
        p += u ? u : 1;
    }
    buf[o] = '\0';
    *pos = o;
    return whole;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    static const char *names[] = {[LL_ERROR] = "error", [LL_WARN] = "warn", [LL_NOTICE] = "notice",
                                  [LL_INFO] = "info", [LL_DEBUG] = "debug"};
    if ((int)level > atomic_load(&L.level))
        return;
    int fd = atomic_load(&L.err.fd);
    char line[2048], msg[2048];
    size_t pos;
    if (fd == 2 && atomic_load(&L.journal)) {
        pos = (size_t)snprintf(line, sizeof line, "<%d>", (int)level);
    } else {
        struct timespec ts;
        char when[40];
        clock_gettime(CLOCK_REALTIME, &ts);
        util_format_time(when, sizeof when, &ts);
        pos = (size_t)snprintf(line, sizeof line, "%s [%s] ", when, names[level]);
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t mlen = n < 0 ? 0 : (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1;
    /* the whole message, not only its arguments: no caller can forget one */
    log_escape(line, sizeof line - 1, &pos, msg, mlen, 0);
    line[pos++] = '\n';
    write_all(fd, line, pos);
}

bool log_access_enabled(void)
{
    return atomic_load(&L.acc.fd) >= 0;
}

void log_access_line(const char *line, size_t len)
{
    int fd = atomic_load(&L.acc.fd);
    if (fd < 0)
        return;
    char out[8192];
    size_t pos = 0;
    if (len > 0 && line[len - 1] == '\n')
        len--;
    log_escape(out, sizeof out - 1, &pos, line, len, 0);
    out[pos++] = '\n';
    write_all(fd, out, pos);
}
