/* supervisor.c -- a managed upstream child (`launch = ...`): start, relay its output, restart with backoff, stop.
 *
 * Each supervisor has one long-lived thread that does everything: it forks
 * the child (so PR_SET_PDEATHSIG, which follows the forking thread, fires
 * only when the process dies), then polls three descriptors at once:
 *   - the read end of the child's stdout+stderr pipe, relayed line by line;
 *   - a pidfd of the child, readable when it exits (without one, on kernels
 *     before 5.3 or under a seccomp filter, waitid() every 100 ms instead);
 *   - an eventfd written once by supervisor_stop(), never read, so that it
 *     wakes every later poll too (backoff waits included).
 * When the child exits it is still a zombie at first: what is left of its
 * process group gets SIGKILL before the zombie is reaped, while the group id
 * cannot yet name anybody else; then the supervisor waits out the backoff
 * and forks again.
 *
 * Output lines: '\n' ends a line, "\r\n" too; a bare '\r' starts the line
 * over like on a terminal (progress bars log their final state only). Lines
 * longer than 1 KiB are split (at a UTF-8 character boundary). Valid UTF-8
 * and tabs pass unchanged; other control bytes and invalid bytes are written
 * as \xHH, since log.c writes messages as they are. Empty lines are dropped.
 * A child's output may not flood the log: a token bucket lets through
 * OUTPUT_BYTES_PER_S (and OUTPUT_LINES_PER_S) after a burst of
 * OUTPUT_BYTES_BURST (OUTPUT_LINES_BURST); lines over it are dropped and
 * counted, and the count is logged ("N lines of output dropped") once a
 * second at most while it goes on, and when the child exits. */
#include "config.h"
#include "supervisor.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define LINE_MAX_BYTES 1024         /* longer output lines are split */
#define LOG_PIECE_BYTES 1280        /* escaped text per log line (log.c lines hold 2 KiB) */
#define READ_CHUNK 4096
#define READS_PER_WAKE 16           /* then look at the other descriptors again */
#define WAIT_FALLBACK_MS 100        /* waitid() period without a pidfd */
#define KILL_WAIT_MS 5000           /* how long a child gets to die of SIGKILL */
#define CLOSE_LOOP_MAX 65536        /* fd limit for closing by loop (no close_range) */
#define OUTPUT_LINES_PER_S 50       /* the child's output in the log, sustained... */
#define OUTPUT_BYTES_PER_S 8192
#define OUTPUT_LINES_BURST 1000     /* ...and at once (a start-up banner, a traceback) */
#define OUTPUT_BYTES_BURST (128 * 1024)
#define OUTPUT_LINE_COST 64         /* bytes a log line costs beyond the child's text */

struct supervisor {
    char *name, *command, *workdir;
    int64_t stop_timeout_ms, backoff_min_ms, backoff_max_ms, stable_ms;
    int wake_fd;                    /* eventfd: readable once supervisor_stop() ran */
    int null_fd;                    /* /dev/null, stdin of every run */
    atomic_bool stopping;
    pthread_t thread;

    pthread_mutex_t lock;           /* guards the fields below */
    pthread_cond_t cond;            /* first_done */
    struct supervisor_state st;
    bool first_done;                /* the first spawn was tried */
    int first_rc;
    char first_err[256];

    /* Used by the supervisor thread only. */
    char line[LINE_MAX_BYTES];      /* the output line being assembled */
    size_t line_len;
    bool cr;                        /* the last byte was a '\r' */
    double line_tokens, byte_tokens;    /* the output's token bucket */
    int64_t bucket_ns;              /* when it was last filled; 0: full, never used */
    int64_t report_ns;              /* when drops were last reported */
    uint64_t dropped_lines, dropped_bytes;  /* over the bucket, not yet reported */
};

/* One run of the child. */
struct run {
    pid_t pid;
    int pidfd;                      /* -1: poll waitid() instead */
    int out_fd;                     /* read end of its stdout+stderr; -1 once at EOF */
    int64_t started_ns;
};

/* ---- output relay ---- */

/* Logs p[0..n) escaped by log_escape (the escaper of every log line), in
 * as many log lines as the escaped text needs: a piece ends before the
 * first character whose escape would not fit. */
static void emit_line(struct supervisor *s, const char *text, size_t n)
{
    const unsigned char *p = (const unsigned char *)text, *end = p + n;
    char out[LOG_PIECE_BYTES];
    size_t o = 0;
    while (p < end) {
        size_t k = util_utf8_seq(p, end);   /* one character, or one byte of a bad sequence */
        if (!k)
            k = 1;
        size_t at = o;
        if (!log_escape(out, sizeof out, &o, (const char *)p, k, 0)) {
            out[at] = '\0';                 /* that character starts the next piece */
            log_msg(LL_INFO, "upstream %s: %s", s->name, out);
            o = 0;
            continue;
        }
        p += k;
    }
    if (o)
        log_msg(LL_INFO, "upstream %s: %s", s->name, out);
}

/* Fills the output's token bucket for the time since it was last filled. */
static void fill_bucket(struct supervisor *s)
{
    int64_t now = util_now_ns();
    if (s->bucket_ns == 0) {
        s->line_tokens = OUTPUT_LINES_BURST;
        s->byte_tokens = OUTPUT_BYTES_BURST;
    } else {
        double secs = (double)(now - s->bucket_ns) / 1e9;
        s->line_tokens = fmin(OUTPUT_LINES_BURST, s->line_tokens + secs * OUTPUT_LINES_PER_S);
        s->byte_tokens = fmin(OUTPUT_BYTES_BURST, s->byte_tokens + secs * OUTPUT_BYTES_PER_S);
    }
    s->bucket_ns = now;
}

/* Takes a line of `n` bytes from the bucket: false when it is over it. */
static bool take_tokens(struct supervisor *s, size_t n)
{
    double cost = (double)n + OUTPUT_LINE_COST;
    if (s->line_tokens < 1 || s->byte_tokens < cost)
        return false;
    s->line_tokens -= 1;
    s->byte_tokens -= cost;
    return true;
}

/* Logs how many lines were dropped since the last report, if any. Reports
 * cost the bucket nothing; relay_line() makes at most one a second. */
static void report_dropped(struct supervisor *s)
{
    if (s->dropped_lines == 0)
        return;
    log_warn("upstream %s: %llu lines (%llu bytes) of output dropped: the launch command wrote more than "
             "%d lines or %d bytes a second", s->name, (unsigned long long)s->dropped_lines,
             (unsigned long long)s->dropped_bytes, OUTPUT_LINES_PER_S, OUTPUT_BYTES_PER_S);
    s->dropped_lines = s->dropped_bytes = 0;
    s->report_ns = util_now_ns();
}

/* Reports the drops if the last report is a second old. */
static void report_dropped_now_and_then(struct supervisor *s)
{
    if (s->dropped_lines && util_now_ns() - s->report_ns >= 1000000000)
        report_dropped(s);
}

/* Logs a line of the child's output, or counts it as dropped when the
 * output is over its rate. */
static void relay_line(struct supervisor *s, const char *text, size_t n)
{
    fill_bucket(s);
    bool pass = take_tokens(s, n);
    if (!pass) {
        s->dropped_lines++;
        s->dropped_bytes += n;
    }
    report_dropped_now_and_then(s);
    if (pass)
        emit_line(s, text, n);
}

static void flush_line(struct supervisor *s)
{
    if (s->line_len > 0)
        relay_line(s, s->line, s->line_len);
    s->line_len = 0;
    s->cr = false;
}

/* The line buffer is full: logs it up to the last whole UTF-8 character
 * and keeps the rest (at most 3 bytes) for the next piece. */
static void split_full_line(struct supervisor *s)
{
    size_t cut = LINE_MAX_BYTES;
    for (size_t k = 1; k <= 3; k++) {
        unsigned char b = (unsigned char)s->line[LINE_MAX_BYTES - k];
        if ((b & 0xc0) == 0x80)
            continue;
        if (b >= 0xc2 && b <= 0xf4) {
            size_t need = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : 2;
            if (need > k)
                cut = LINE_MAX_BYTES - k;
        }
        break;
    }
    relay_line(s, s->line, cut);
    s->line_len = LINE_MAX_BYTES - cut;
    memmove(s->line, s->line + cut, s->line_len);
}

static void feed_output(struct supervisor *s, const char *buf, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = buf[i];
        if (s->cr) {
            s->cr = false;
            if (c != '\n')
                s->line_len = 0;    /* a bare '\r': what follows overwrites the line */
        }
        if (c == '\n') {
            flush_line(s);
        } else if (c == '\r') {
            s->cr = true;
        } else {
            if (s->line_len == LINE_MAX_BYTES)
                split_full_line(s);
            s->line[s->line_len++] = c;
        }
    }
}

/* Reads what the child wrote (up to READS_PER_WAKE chunks; all of it when
 * `drain`) and relays it; at EOF or on an error closes the pipe. */
static void read_output(struct supervisor *s, struct run *r, bool drain)
{
    char buf[READ_CHUNK];
    for (int i = 0; r->out_fd >= 0 && (drain || i < READS_PER_WAKE); i++) {
        ssize_t n = read(r->out_fd, buf, sizeof buf);
        if (n > 0) {
            feed_output(s, buf, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0)
            log_error("upstream %s: reading the output of the launch command: %s", s->name, strerror(errno));
        flush_line(s);
        close(r->out_fd);
        r->out_fd = -1;
    }
}

/* ---- the child ---- */

/* Everything the child needs, prepared before fork(): after it, the child
 * makes only async-signal-safe calls. */
struct spawn_prep {
    char *argv[4];
    char **envp;
    const char *workdir;
    sigset_t empty;
    struct sigaction dfl;
    pid_t parent;
    int null_fd, out_w;
    int close_max;                  /* close fds below this when close_range is missing */
};

static void append_str(char *buf, size_t *pos, size_t len, const char *s)
{
    while (*s && *pos + 1 < len)
        buf[(*pos)++] = *s++;
}

/* In the child: writes "llmcgi: WHAT failed (errno N)" to fd and exits 127. */
__attribute__((noreturn)) static void child_fail(int fd, const char *what, int e)
{
    char msg[160], digits[12];
    size_t pos = 0, nd = 0;
    unsigned v = e < 0 ? 0u : (unsigned)e;
    do {
        digits[nd++] = (char)('0' + v % 10);
        v /= 10;
    } while (v && nd < sizeof digits);
    append_str(msg, &pos, sizeof msg, "llmcgi: ");
    append_str(msg, &pos, sizeof msg, what);
    append_str(msg, &pos, sizeof msg, " failed (errno ");
    while (nd > 0 && pos + 1 < sizeof msg)
        msg[pos++] = digits[--nd];
    append_str(msg, &pos, sizeof msg, ")\n");
    if (write(fd, msg, pos) < 0) {
        /* nowhere left to say it */
    }
    _exit(127);
}

__attribute__((noreturn)) static void child_exec(const struct spawn_prep *p)
{
    if (setsid() < 0)
        child_fail(p->out_w, "setsid", errno);
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0)
        child_fail(p->out_w, "prctl(PR_SET_PDEATHSIG)", errno);
    if (getppid() != p->parent)
        _exit(127);                 /* llmcgi died before the prctl: nobody to serve */
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            sigaction(sig, &p->dfl, NULL);  /* fails (harmlessly) for libc's internal signals */
    if (sigprocmask(SIG_SETMASK, &p->empty, NULL) < 0)
        child_fail(p->out_w, "sigprocmask", errno);

    /* Move both descriptors above 2 first, so that dup2() never meets
     * itself (llmcgi may run with 0..2 closed) and clears FD_CLOEXEC. */
    int w = fcntl(p->out_w, F_DUPFD, 3);
    if (w < 0)
        child_fail(p->out_w, "fcntl(F_DUPFD)", errno);
    int nul = fcntl(p->null_fd, F_DUPFD, 3);
    if (nul < 0)
        child_fail(w, "fcntl(F_DUPFD)", errno);
    if (dup2(nul, 0) < 0 || dup2(w, 1) < 0 || dup2(w, 2) < 0)
        child_fail(w, "dup2", errno);
#ifdef SYS_close_range
    if (syscall(SYS_close_range, 3u, ~0u, 0u) < 0)
#endif
    {
        for (int fd = 3; fd < p->close_max; fd++)
            close(fd);
    }
    if (p->workdir && chdir(p->workdir) < 0)
        child_fail(2, "chdir to the workdir", errno);
    execve("/bin/sh", p->argv, p->envp);
    child_fail(2, "exec /bin/sh", errno);
}

static int pidfd_open_child(pid_t pid)
{
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}

/* Forks and execs the command. Returns 0 with *r filled, or -1 with err. */
static int spawn(struct supervisor *s, struct run *r, char *err, size_t errlen)
{
    struct spawn_prep p = {
        .argv = {"sh", "-c", s->command, NULL},
        .envp = environ,
        .workdir = s->workdir,
        .parent = getpid(),
        .null_fd = s->null_fd,
        .close_max = CLOSE_LOOP_MAX,
    };
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)CLOSE_LOOP_MAX)
        p.close_max = (int)rl.rlim_cur;
    sigemptyset(&p.empty);
    p.dfl.sa_handler = SIG_DFL;
    sigemptyset(&p.dfl.sa_mask);

    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return -1;
    }
    int fl = fcntl(fds[0], F_GETFL);
    if (fl < 0 || fcntl(fds[0], F_SETFL, fl | O_NONBLOCK) < 0) {
        snprintf(err, errlen, "fcntl on the output pipe: %s", strerror(errno));
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    p.out_w = fds[1];

    pid_t pid = fork();
    if (pid == 0)
        child_exec(&p);
    int fork_errno = errno;
    close(fds[1]);
    if (pid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(fork_errno));
        close(fds[0]);
        return -1;
    }
    r->pid = pid;
    r->out_fd = fds[0];
    r->started_ns = util_now_ns();
    r->pidfd = pidfd_open_child(pid);
    if (r->pidfd < 0)
        log_debug("upstream %s: pidfd_open: %s; checking on the child every %d ms", s->name, strerror(errno),
                  WAIT_FALLBACK_MS);

    pthread_mutex_lock(&s->lock);
    s->st.pid = pid;
    s->st.starts++;
    s->st.started_ns = r->started_ns;
    pthread_mutex_unlock(&s->lock);
    log_notice("upstream %s: started `%s` (pid %d)", s->name, s->command, (int)pid);
    return 0;
}

/* ---- waiting and stopping ---- */

static const char *signal_name(int sig)
{
    switch (sig) {
    case SIGHUP: return "SIGHUP";
    case SIGINT: return "SIGINT";
    case SIGQUIT: return "SIGQUIT";
    case SIGILL: return "SIGILL";
    case SIGTRAP: return "SIGTRAP";
    case SIGABRT: return "SIGABRT";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGKILL: return "SIGKILL";
    case SIGUSR1: return "SIGUSR1";
    case SIGSEGV: return "SIGSEGV";
    case SIGUSR2: return "SIGUSR2";
    case SIGPIPE: return "SIGPIPE";
    case SIGALRM: return "SIGALRM";
    case SIGTERM: return "SIGTERM";
    case SIGXCPU: return "SIGXCPU";
    case SIGXFSZ: return "SIGXFSZ";
    case SIGSYS: return "SIGSYS";
    default: return "?";
    }
}

/* "exited with status 1", "was killed by signal 9 (SIGKILL)". */
static void describe_status(char *buf, size_t len, int status)
{
    if (status < 0)
        snprintf(buf, len, "exited (status unknown: it was reaped elsewhere)");
    else if (WIFEXITED(status))
        snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, len, "was killed by signal %d (%s)%s", WTERMSIG(status), signal_name(WTERMSIG(status)),
                 WCOREDUMP(status) ? ", core dumped" : "");
    else
        snprintf(buf, len, "ended with wait status %#x", (unsigned)status);
}

/* Signals the child's process group, or the child alone while it has not
 * reached setsid() yet (it then dies once it unblocks signals). */
static void signal_group(struct supervisor *s, pid_t pid, int sig)
{
    if (kill(-pid, sig) == 0)
        return;
    if (errno == ESRCH && kill(pid, sig) == 0)
        return;
    if (errno != ESRCH)
        log_error("upstream %s: kill(-%d, %d): %s", s->name, (int)pid, sig, strerror(errno));
}

/* Has the child exited? Leaves it a zombie (WNOWAIT). ECHILD (somebody
 * else reaped it) counts as exited, with *gone set. */
static bool child_exited(struct supervisor *s, pid_t pid, bool *gone)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    *gone = false;
    if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0)
        return si.si_pid == pid;
    if (errno == ECHILD) {
        log_error("upstream %s: child %d was reaped outside the supervisor (SIGCHLD ignored?)", s->name, (int)pid);
        *gone = true;
        return true;
    }
    if (errno != EINTR)
        log_error("upstream %s: waitid(%d): %s", s->name, (int)pid, strerror(errno));
    return false;
}

/* The child has exited (still a zombie, unless *gone): kills what is left
 * of its group, reaps it, relays the rest of its output, closes the run's
 * descriptors. Returns its wait status (-1 when unknown). */
static int finish_run(struct supervisor *s, struct run *r, bool gone)
{
    int status = -1;
    if (!gone) {
        signal_group(s, r->pid, SIGKILL);
        while (waitpid(r->pid, &status, 0) < 0) {
            if (errno != EINTR) {
                log_error("upstream %s: waitpid(%d): %s", s->name, (int)r->pid, strerror(errno));
                status = -1;
                break;
            }
        }
    }
    read_output(s, r, true);
    flush_line(s);
    report_dropped(s);                  /* the last of a flood, even with an empty bucket */
    if (r->out_fd >= 0)
        close(r->out_fd);
    if (r->pidfd >= 0)
        close(r->pidfd);
    r->out_fd = r->pidfd = -1;

    pthread_mutex_lock(&s->lock);
    s->st.pid = 0;
    s->st.started_ns = 0;
    s->st.last_status = status;
    pthread_mutex_unlock(&s->lock);
    return status;
}

static int ms_until(int64_t deadline_ns)
{
    int64_t left = deadline_ns - util_now_ns();
    if (left <= 0)
        return 0;
    int64_t ms = (left + 999999) / 1000000;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

static void pause_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Relays the child's output until it exits, or until stop is asked for:
 * then SIGTERM, the grace time, SIGKILL. Returns 0 with *status set once
 * the child is reaped, or -1 when it would not die even of SIGKILL. */
static int watch(struct supervisor *s, struct run *r, int *status)
{
    enum { RUNNING, TERMED, KILLED } phase = RUNNING;
    int64_t deadline = 0;
    for (;;) {
        struct pollfd pf[3] = {
            {.fd = phase == RUNNING ? s->wake_fd : -1, .events = POLLIN},
            {.fd = r->pidfd, .events = POLLIN},
            {.fd = r->out_fd, .events = POLLIN},
        };
        int timeout = r->pidfd < 0 ? WAIT_FALLBACK_MS : -1;
        if (s->dropped_lines && (timeout < 0 || timeout > 1000))
            timeout = 1000;             /* a flood that went quiet is reported within about a second */
        if (phase != RUNNING) {
            int left = ms_until(deadline);
            if (timeout < 0 || left < timeout)
                timeout = left;
        }
        int n = poll(pf, ARRAY_LEN(pf), timeout);
        if (n < 0) {
            if (errno != EINTR) {
                log_error("upstream %s: poll: %s", s->name, strerror(errno));
                pause_ms(WAIT_FALLBACK_MS);
            }
            continue;
        }
        if (pf[2].revents)
            read_output(s, r, false);
        report_dropped_now_and_then(s);
        bool gone;
        if ((r->pidfd < 0 || pf[1].revents) && child_exited(s, r->pid, &gone)) {
            *status = finish_run(s, r, gone);
            return 0;
        }
        if (phase == RUNNING && (pf[0].revents & POLLIN)) {
            log_notice("upstream %s: stopping pid %d (SIGTERM to its process group)", s->name, (int)r->pid);
            signal_group(s, r->pid, SIGTERM);
            phase = TERMED;
            deadline = util_now_ns() + s->stop_timeout_ms * 1000000;
        } else if (phase != RUNNING && util_now_ns() >= deadline) {
            if (phase == TERMED) {
                char d[32];
                util_format_duration(d, sizeof d, s->stop_timeout_ms);
                log_warn("upstream %s: pid %d did not exit within %s of SIGTERM; sending SIGKILL", s->name,
                         (int)r->pid, d);
                signal_group(s, r->pid, SIGKILL);
                phase = KILLED;
                deadline = util_now_ns() + (int64_t)KILL_WAIT_MS * 1000000;
            } else {
                log_error("upstream %s: pid %d did not exit %d ms after SIGKILL; leaving it", s->name, (int)r->pid,
                          KILL_WAIT_MS);
                read_output(s, r, true);
                flush_line(s);
                if (r->out_fd >= 0)
                    close(r->out_fd);
                if (r->pidfd >= 0)
                    close(r->pidfd);
                r->out_fd = r->pidfd = -1;
                return -1;
            }
        }
    }
}

/* Waits ms milliseconds; returns true at once when stop is asked for. */
static bool wait_or_stop(struct supervisor *s, int64_t ms)
{
    int64_t deadline = util_now_ns() + ms * 1000000;
    for (;;) {
        if (atomic_load(&s->stopping))
            return true;
        int left = ms_until(deadline);
        if (left == 0)
            return false;
        struct pollfd pf = {.fd = s->wake_fd, .events = POLLIN};
        if (poll(&pf, 1, left) < 0 && errno != EINTR) {
            log_error("upstream %s: poll: %s", s->name, strerror(errno));
            pause_ms(WAIT_FALLBACK_MS);
        }
    }
}

static void first_spawn_done(struct supervisor *s, int rc, const char *err)
{
    pthread_mutex_lock(&s->lock);
    if (!s->first_done) {
        s->first_done = true;
        s->first_rc = rc;
        snprintf(s->first_err, sizeof s->first_err, "%s", err);
        pthread_cond_signal(&s->cond);
    }
    pthread_mutex_unlock(&s->lock);
}

static void *supervise(void *arg)
{
    struct supervisor *s = arg;
    int64_t delay = s->backoff_min_ms;
    bool first = true;
    while (!atomic_load(&s->stopping)) {
        char err[256] = "", d[32];
        struct run r = {.pidfd = -1, .out_fd = -1};
        int status = -1;
        int rc = spawn(s, &r, err, sizeof err);
        if (first) {
            first = false;
            first_spawn_done(s, rc, err);
            if (rc < 0)
                return NULL;
        }
        if (rc == 0) {
            if (watch(s, &r, &status) < 0)
                return NULL;        /* unkillable: logged; stop goes on without it */
            if (r.started_ns && util_now_ns() - r.started_ns >= s->stable_ms * 1000000)
                delay = s->backoff_min_ms;
        }
        char how[96];
        describe_status(how, sizeof how, status);
        if (atomic_load(&s->stopping)) {
            log_notice("upstream %s: launch command stopped: it %s", s->name, how);
            break;
        }
        util_format_duration(d, sizeof d, delay);
        if (rc < 0)
            log_error("upstream %s: cannot start the launch command: %s; retrying in %s", s->name, err, d);
        else
            log_warn("upstream %s: launch command %s; restarting in %s", s->name, how, d);
        if (wait_or_stop(s, delay))
            break;
        delay = delay > s->backoff_max_ms / 2 ? s->backoff_max_ms : delay * 2;
    }
    return NULL;
}

/* ---- life cycle ---- */

static void supervisor_free(struct supervisor *s)
{
    if (s->wake_fd >= 0)
        close(s->wake_fd);
    if (s->null_fd >= 0)
        close(s->null_fd);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    free(s->name);
    free(s->command);
    free(s->workdir);
    free(s);
}

static int check_opts(const struct supervisor_opts *o, char *err, size_t errlen)
{
    const char *name = o->name && o->name[0] ? o->name : "?";
    struct stat st;
    if (!o->name || !o->name[0])
        snprintf(err, errlen, "supervisor: an upstream name is required");
    else if (!o->command || !o->command[0])
        snprintf(err, errlen, "upstream %s: the launch command is empty", name);
    else if (o->stop_timeout_ms < 0 || o->backoff_min_ms < 1 || o->backoff_max_ms < o->backoff_min_ms ||
             o->stable_ms < 0)
        snprintf(err, errlen, "upstream %s: bad supervisor timing (stop %lld ms, backoff %lld..%lld ms, stable %lld ms)",
                 name, (long long)o->stop_timeout_ms, (long long)o->backoff_min_ms, (long long)o->backoff_max_ms,
                 (long long)o->stable_ms);
    else if (o->workdir && stat(o->workdir, &st) < 0)
        snprintf(err, errlen, "upstream %s: workdir %s: %s", name, o->workdir, strerror(errno));
    else if (o->workdir && !S_ISDIR(st.st_mode))
        snprintf(err, errlen, "upstream %s: workdir %s is not a directory", name, o->workdir);
    else
        return 0;
    return -1;
}

int supervisor_start(const struct supervisor_opts *o, struct supervisor **out, char *err, size_t errlen)
{
    *out = NULL;
    if (check_opts(o, err, errlen) < 0)
        return -1;
    struct supervisor *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    s->st.last_status = -1;
    s->stop_timeout_ms = o->stop_timeout_ms;
    s->backoff_min_ms = o->backoff_min_ms;
    s->backoff_max_ms = o->backoff_max_ms;
    s->stable_ms = o->stable_ms;
    s->name = strdup(o->name);
    s->command = strdup(o->command);
    s->workdir = o->workdir ? strdup(o->workdir) : NULL;
    s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    int wake_errno = errno;
    s->null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (!s->name || !s->command || (o->workdir && !s->workdir)) {
        snprintf(err, errlen, "out of memory");
    } else if (s->wake_fd < 0) {
        snprintf(err, errlen, "upstream %s: eventfd: %s", o->name, strerror(wake_errno));
    } else if (s->null_fd < 0) {
        snprintf(err, errlen, "upstream %s: /dev/null: %s", o->name, strerror(errno));
    } else {
        int rc = pthread_create(&s->thread, NULL, supervise, s);
        if (rc == 0) {
            pthread_mutex_lock(&s->lock);
            while (!s->first_done)
                pthread_cond_wait(&s->cond, &s->lock);
            rc = s->first_rc;
            pthread_mutex_unlock(&s->lock);
            if (rc == 0) {
                *out = s;
                return 0;
            }
            pthread_join(s->thread, NULL);
            snprintf(err, errlen, "upstream %s: cannot start the launch command: %s", o->name, s->first_err);
        } else {
            snprintf(err, errlen, "upstream %s: cannot start the supervisor thread: %s", o->name, strerror(rc));
        }
    }
    supervisor_free(s);
    return -1;
}

void supervisor_stop(struct supervisor *s)
{
    if (!s)
        return;
    atomic_store(&s->stopping, true);
    uint64_t one = 1;
    while (write(s->wake_fd, &one, sizeof one) < 0) {
        if (errno != EINTR) {       /* cannot happen with a counter of 1; the join would hang */
            log_error("upstream %s: waking the supervisor failed: %s", s->name, strerror(errno));
            break;
        }
    }
    pthread_join(s->thread, NULL);
    supervisor_free(s);
}

void supervisor_get_state(struct supervisor *s, struct supervisor_state *out)
{
    pthread_mutex_lock(&s->lock);
    *out = s->st;
    pthread_mutex_unlock(&s->lock);
}
