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

void log_msg(enum log_level level, const char *fmt, ...)
{
    static const char *names[] = {[LL_ERROR] = "error", [LL_WARN] = "warn", [LL_NOTICE] = "notice",
                                  [LL_INFO] = "info", [LL_DEBUG] = "debug"};
    if ((int)level > atomic_load(&L.level))
        return;
    int fd = atomic_load(&L.err.fd);
    char line[2048];
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
    int n = vsnprintf(line + pos, sizeof line - pos - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    pos += (size_t)n;
    if (pos > sizeof line - 2)
        pos = sizeof line - 2;
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
    if (fd >= 0)
        write_all(fd, line, len);
}
