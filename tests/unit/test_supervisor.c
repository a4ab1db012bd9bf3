/* test_supervisor.c -- the managed child: spawn, output relay, restart with backoff, stop of the whole group. */
#include "config.h"
#include "tap.h"
#include "log.h"
#include "supervisor.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char log_path[256];

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static double since_s(int64_t t0)
{
    return (double)(util_now_ns() - t0) / 1e9;
}

/* The whole error log so far (caller frees). */
static char *read_log(void)
{
    FILE *f = fopen(log_path, "r");
    if (!f)
        return strdup("");
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while (buf && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (len + 1 == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb)
                free(buf);
            buf = nb;
        }
    }
    fclose(f);
    if (buf)
        buf[len] = '\0';
    return buf;
}

/* Waits up to ms for `needle` in the log. */
static bool log_has(const char *needle, int ms)
{
    int64_t deadline = util_now_ns() + (int64_t)ms * 1000000;
    for (;;) {
        char *l = read_log();
        bool found = l && strstr(l, needle);
        free(l);
        if (found || util_now_ns() >= deadline)
            return found;
        sleep_ms(20);
    }
}

static int count_in_log(const char *needle)
{
    char *l = read_log();
    int n = 0;
    for (const char *p = l; p && (p = strstr(p, needle)); p += strlen(needle))
        n++;
    free(l);
    return n;
}

/* Waits up to ms for `needle` to be in the log n times; returns the count. */
static int wait_count(const char *needle, int n, int ms)
{
    int64_t deadline = util_now_ns() + (int64_t)ms * 1000000;
    int got;
    while ((got = count_in_log(needle)) < n && util_now_ns() < deadline)
        sleep_ms(20);
    return got;
}

/* Dead: no such process, or a zombie (killed, waiting for whoever reaps
 * orphans here). */
static bool proc_dead(pid_t pid)
{
    if (kill(pid, 0) < 0 && errno == ESRCH)
        return true;
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return true;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')');
    return rp && (rp[2] == 'Z' || rp[2] == 'X');
}

static bool wait_dead(pid_t pid, int ms)
{
    int64_t deadline = util_now_ns() + (int64_t)ms * 1000000;
    while (!proc_dead(pid)) {
        if (util_now_ns() >= deadline)
            return false;
        sleep_ms(10);
    }
    return true;
}

/* Waits up to ms for the state to satisfy starts >= n and pid != 0. */
static bool wait_starts(struct supervisor *s, unsigned n, int ms, struct supervisor_state *st)
{
    int64_t deadline = util_now_ns() + (int64_t)ms * 1000000;
    for (;;) {
        supervisor_get_state(s, st);
        if (st->starts >= n && st->pid > 0)
            return true;
        if (util_now_ns() >= deadline)
            return false;
        sleep_ms(10);
    }
}

/* The number after "bg " in the log line "upstream NAME: bg PID". */
static pid_t logged_pid(const char *name)
{
    char needle[128];
    snprintf(needle, sizeof needle, "upstream %s: bg ", name);
    if (!log_has(needle, 2000))
        return 0;
    char *l = read_log();
    const char *p = strstr(l, needle);
    pid_t pid = p ? (pid_t)atoi(p + strlen(needle)) : 0;
    free(l);
    return pid;
}

static struct supervisor *start(const char *name, const char *cmd, int64_t stop_ms, int64_t min_ms,
                                int64_t max_ms, int64_t stable_ms)
{
    struct supervisor_opts o = {.name = name, .command = cmd, .stop_timeout_ms = stop_ms,
                                .backoff_min_ms = min_ms, .backoff_max_ms = max_ms, .stable_ms = stable_ms};
    struct supervisor *s;
    char err[256];
    if (supervisor_start(&o, &s, err, sizeof err) < 0) {
        tap_diag("supervisor_start(%s): %s", name, err);
        return NULL;
    }
    return s;
}

/* Ends the run when a bug makes a stop hang, instead of hanging make check. */
static void *watchdog(void *arg)
{
    (void)arg;
    sleep_ms(60000);
    printf("Bail out! test_supervisor took more than 60 s\n");
    fflush(stdout);
    _exit(1);
}

static int count_fds(void)
{
    int n = 0;
    for (int fd = 0; fd < 1024; fd++)
        if (fcntl(fd, F_GETFD) >= 0)
            n++;
    return n;
}

static void test_options(void)
{
    struct supervisor *s = (struct supervisor *)1;
    char err[256] = "";
    struct supervisor_opts o = {.name = "bad", .command = "", .stop_timeout_ms = 100, .backoff_min_ms = 100,
                                .backoff_max_ms = 1000, .stable_ms = 1000};
    ok(supervisor_start(&o, &s, err, sizeof err) < 0 && s == NULL, "empty command refused");
    has_str(err, "launch command is empty", "... with a message");
    o.command = "true";
    o.backoff_min_ms = 0;
    ok(supervisor_start(&o, &s, err, sizeof err) < 0, "backoff_min 0 refused");
    o.backoff_min_ms = 100;
    o.workdir = "/nonexistent/dir";
    ok(supervisor_start(&o, &s, err, sizeof err) < 0, "missing workdir refused");
    has_str(err, "/nonexistent/dir", "... naming it");
    supervisor_stop(NULL);
    ok(1, "supervisor_stop(NULL) is a no-op");
}

static void test_start_and_output(const char *tmpdir, int leak_fd)
{
    struct supervisor_state st;
    struct supervisor *s = start("out", "echo line-one; echo line-two; printf 'bin\\001ary \\303\\251 \\377\\n';"
                                        " printf 'a\\tb\\r\\n'; printf 'progress 1\\rprogress 2\\n';"
                                        " head -c 2500 /dev/zero | tr '\\0' x; echo; sleep 30",
                                 5000, 100, 1000, 60000);
    ok(s != NULL, "supervisor started");
    if (!s)
        return;
    supervisor_get_state(s, &st);
    ok(st.pid > 0 && st.starts == 1 && st.last_status == -1 && st.started_ns > 0,
       "state right after start: pid %d, starts %u", (int)st.pid, st.starts);
    ok(kill(st.pid, 0) == 0, "the child exists");
    int64_t deadline = util_now_ns() + 1000000000;
    while (getpgid(st.pid) != st.pid && util_now_ns() < deadline)
        sleep_ms(5);                /* setsid() runs in the child after start returned */
    ok(getpgid(st.pid) == st.pid, "the child leads its own process group");
    ok(log_has("upstream out: started `echo line-one;", 2000), "the start is logged with the command");
    ok(log_has("upstream out: line-one\n", 2000) && log_has("upstream out: line-two\n", 100),
       "output lines are logged");
    ok(log_has("upstream out: bin\\x01ary \xc3\xa9 \\xff\n", 2000), "control and invalid bytes escaped, UTF-8 kept");
    ok(log_has("upstream out: a\tb\n", 2000), "tab kept, CRLF ends a line");
    ok(log_has("upstream out: progress 2\n", 2000) && count_in_log("upstream out: progress 1") == 0,
       "a bare CR overwrites the line");
    char xs[1100];
    snprintf(xs, sizeof xs, "upstream out: %0*d\n", 1024, 0);
    memset(xs + 14, 'x', 1024);
    ok(log_has(xs, 2000), "a long line is split at 1 KiB");
    snprintf(xs, sizeof xs, "upstream out: %0*d\n", 452, 0);
    memset(xs + 14, 'x', 452);
    ok(wait_count("upstream out: xxx", 3, 2000) == 3 && log_has(xs, 100) && count_in_log("x\n") == 3,
       "... into 3 pieces (1024 + 1024 + 452)");
    pid_t pid = st.pid;
    int64_t t0 = util_now_ns();
    supervisor_stop(s);
    double took = since_s(t0);
    ok(kill(pid, 0) < 0 && errno == ESRCH, "stopped: the child is gone and reaped");
    ok(took < 1.0, "SIGTERM stopped it at once (%.2f s): the child's signal mask is clean", took);

    /* workdir, a final line without '\n', fds of the parent closed */
    char cmd[256];
    snprintf(cmd, sizeof cmd, "echo \"cwd=$(pwd)\"; [ -e /proc/self/fd/%d ] && echo fd-leaked || echo fd-closed;"
             " grep -E '^Sig(Blk|Ign)' /proc/self/status; printf 'no newline'; exit 3", leak_fd);
    struct supervisor_opts o = {.name = "wd", .command = cmd, .workdir = tmpdir, .stop_timeout_ms = 1000,
                                .backoff_min_ms = 10000, .backoff_max_ms = 10000, .stable_ms = 60000};
    char err[256];
    ok(supervisor_start(&o, &s, err, sizeof err) == 0, "start with a workdir");
    if (s) {
        char want[300];
        snprintf(want, sizeof want, "upstream wd: cwd=%s\n", tmpdir);
        ok(log_has(want, 2000), "the command runs in the workdir");
        ok(leak_fd > 2 && log_has("upstream wd: fd-closed\n", 2000),
           "descriptors other than 0..2 are closed in the child (%d)", leak_fd);
        ok(log_has("upstream wd: SigBlk:\t0000000000000000\n", 2000), "no signal blocked in the child");
        /* Signals 32 and 33 are glibc's own (thread cancellation, setxid): sigaction()
         * cannot reset them, and a child's libc installs its handlers anyway. make
         * runs tests with 32 ignored. */
        bool ign_ok = false;
        if (log_has("upstream wd: SigIgn:\t", 2000)) {
            char *l = read_log();
            const char *p = l ? strstr(l, "upstream wd: SigIgn:\t") : NULL;
            unsigned long long mask = p ? strtoull(p + strlen("upstream wd: SigIgn:\t"), NULL, 16) : ~0ULL;
            ign_ok = (mask & ~((1ULL << 31) | (1ULL << 32))) == 0;
            free(l);
        }
        ok(ign_ok, "no signal ignored in the child (beyond glibc's internal ones)");
        ok(log_has("upstream wd: no newline\n", 2000), "a last line without newline is logged at exit");
        ok(log_has("upstream wd: launch command exited with status 3; restarting in 10s", 2000),
           "the exit is logged with status and delay");
        supervisor_get_state(s, &st);
        ok(st.pid == 0 && st.started_ns == 0 && WIFEXITED(st.last_status) && WEXITSTATUS(st.last_status) == 3,
           "state while waiting: no pid, last status 3");
        t0 = util_now_ns();
        supervisor_stop(s);
        ok(since_s(t0) < 0.5, "stop during the backoff wait is prompt (%.2f s)", since_s(t0));
    }
}

static void test_restart(void)
{
    struct supervisor_state st, st2;
    struct supervisor *s = start("rs", "sleep 30", 5000, 100, 1000, 60000);
    ok(s != NULL, "restart test started");
    if (!s)
        return;
    supervisor_get_state(s, &st);
    ok(kill(st.pid, SIGKILL) == 0, "killed the child");
    int64_t t0 = util_now_ns();
    ok(wait_starts(s, 2, 2000, &st2), "it is restarted");
    double took = since_s(t0);
    ok(st2.starts == 2 && st2.pid != st.pid && st2.pid > 0, "starts 2, new pid %d (was %d)", (int)st2.pid,
       (int)st.pid);
    ok(took >= 0.09 && took < 1.0, "after the backoff (%.2f s)", took);
    ok(WIFSIGNALED(st2.last_status) && WTERMSIG(st2.last_status) == SIGKILL, "last status: killed by SIGKILL");
    ok(log_has("upstream rs: launch command was killed by signal 9 (SIGKILL); restarting in 100ms", 1000),
       "the kill is logged");
    ok(kill(st.pid, 0) < 0 && errno == ESRCH, "the old child was reaped");

    /* TERM to the child alone (not to the group): it is not blocked or ignored */
    ok(kill(st2.pid, SIGTERM) == 0, "SIGTERM to the child");
    ok(wait_starts(s, 3, 2000, &st), "SIGTERM killed it and it was restarted");
    ok(WIFSIGNALED(st.last_status) && WTERMSIG(st.last_status) == SIGTERM, "last status: killed by SIGTERM");
    supervisor_stop(s);
}

static void test_backoff(void)
{
    struct supervisor_state st;
    struct supervisor *s = start("loop", "exit 1", 1000, 100, 10000, 60000);
    ok(s != NULL, "crash loop started");
    if (!s)
        return;
    sleep_ms(1000);
    supervisor_get_state(s, &st);
    /* spawns at about 0, 0.1, 0.3, 0.7 s; the next at 1.5 s */
    ok(st.starts >= 3 && st.starts <= 5, "a crash loop backs off: %u starts in 1 s", st.starts);
    ok(log_has("upstream loop: launch command exited with status 1; restarting in 400ms", 1000),
       "the delay doubles");
    int64_t t0 = util_now_ns();
    supervisor_stop(s);
    ok(since_s(t0) < 0.5, "stop interrupts the backoff (%.2f s)", since_s(t0));

    /* runs longer than stable_ms reset the delay to min */
    s = start("stable", "sleep 0.3; exit 2", 1000, 100, 10000, 200);
    ok(s != NULL, "stable-run test started");
    if (!s)
        return;
    ok(wait_starts(s, 4, 3000, &st), "it keeps restarting");
    ok(wait_count("upstream stable: launch command exited with status 2; restarting in 100ms", 3, 1000) >= 3 &&
       count_in_log("upstream stable: launch command exited with status 2; restarting in 200ms") == 0,
       "a run longer than stable_ms resets the delay");
    supervisor_stop(s);
}

static void test_stop(void)
{
    struct supervisor_state st;
    /* the child and a grandchild both ignore SIGTERM */
    struct supervisor *s = start("stubborn", "trap '' TERM; sleep 30 & echo bg $!; sleep 31; wait", 300, 100, 1000,
                                 60000);
    ok(s != NULL, "TERM-ignoring child started");
    if (!s)
        return;
    supervisor_get_state(s, &st);
    pid_t bg = logged_pid("stubborn");
    ok(bg > 0 && kill(bg, 0) == 0, "its grandchild runs (pid %d)", (int)bg);
    int64_t t0 = util_now_ns();
    supervisor_stop(s);
    double took = since_s(t0);
    ok(took >= 0.29 && took < 1.5, "stop waited stop_timeout, then SIGKILL (%.2f s)", took);
    ok(kill(st.pid, 0) < 0 && errno == ESRCH, "the child is gone and reaped");
    ok(bg > 0 && wait_dead(bg, 1000), "the grandchild was killed too");
    ok(log_has("upstream stubborn: pid ", 1000) && log_has("did not exit within 300ms of SIGTERM; sending SIGKILL", 100),
       "the SIGKILL is logged");

    /* a group that obeys SIGTERM stops long before the timeout */
    s = start("polite", "sleep 30 & echo bg $!; sleep 31; wait", 5000, 100, 1000, 60000);
    ok(s != NULL, "TERM-obeying child started");
    if (!s)
        return;
    supervisor_get_state(s, &st);
    bg = logged_pid("polite");
    ok(bg > 0, "its grandchild runs (pid %d)", (int)bg);
    t0 = util_now_ns();
    supervisor_stop(s);
    took = since_s(t0);
    ok(took < 1.0, "stop took %.2f s of a 5 s timeout", took);
    ok(kill(st.pid, 0) < 0 && errno == ESRCH, "the child is gone and reaped");
    ok(bg > 0 && wait_dead(bg, 1000), "the grandchild is gone too");
    ok(log_has("upstream polite: launch command stopped: it was killed by signal 15 (SIGTERM)", 1000),
       "the stop is logged");

    /* the child leaves a grandchild behind and exits: the group is cleared before the restart */
    s = start("orphan", "sleep 30 & echo bg $!; exit 0", 1000, 10000, 10000, 60000);
    ok(s != NULL, "exiting child with a background grandchild started");
    if (!s)
        return;
    bg = logged_pid("orphan");
    ok(bg > 0 && wait_dead(bg, 2000), "the leftover grandchild was killed when the child exited");
    supervisor_stop(s);
}

/* A child that floods its output: the log gets a bounded part of it, and
 * says how much was dropped (logged + dropped = all of it). */
static void test_flood(void)
{
    int64_t t0 = util_now_ns();
    struct supervisor *s = start("flood", "seq -f flood-%g 1 200000; sleep 0.5; echo flood-end; exec sleep 30",
                                 2000, 10000, 10000, 1000);
    ok(s != NULL, "flood test started");
    bool ended = log_has("upstream flood: flood-end\n", 30000);
    double took = since_s(t0);
    ok(ended, "the line after the flood is logged (%.2f s)", took);
    supervisor_stop(s);                 /* the drops not yet reported are, at the child's exit */
    int logged = count_in_log("upstream flood: flood-") - (ended ? 1 : 0);
    /* the bucket: 1000 lines at once, then 50 a second */
    ok(logged >= 1000 && logged <= 1000 + 50 * (took + 1), "%d of 200000 lines logged in %.2f s", logged, took);
    char *l = read_log();
    long long dropped = 0;
    const char *needle = "upstream flood: ";
    for (const char *p = l; p && (p = strstr(p, needle)); p += strlen(needle)) {
        char *end;
        long long n = strtoll(p + strlen(needle), &end, 10);
        if (end != p + strlen(needle) && strncmp(end, " lines (", 8) == 0 && strstr(end, "of output dropped"))
            dropped += n;
    }
    free(l);
    ok(dropped > 0 && dropped + logged == 200000, "the drops are reported: %lld dropped + %d logged", dropped,
       logged);
}

int main(void)
{
    /* Like llmcgi: every signal blocked in every thread, SIGPIPE ignored. */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGUSR2, SIG_IGN);

    pthread_t wd;
    pthread_create(&wd, NULL, watchdog, NULL);
    pthread_detach(wd);

    char tmpdir[] = "/tmp/test_supervisor.XXXXXX";
    if (!mkdtemp(tmpdir)) {
        printf("Bail out! mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    snprintf(log_path, sizeof log_path, "%s/error.log", tmpdir);
    char err[256];
    if (log_configure(log_path, "off", LL_DEBUG, err, sizeof err) < 0) {
        printf("Bail out! %s\n", err);
        return 1;
    }
    /* A descriptor without FD_CLOEXEC, which the child must not get. */
    int nul = open("/dev/null", O_RDONLY);
    int leak_fd = nul >= 0 ? fcntl(nul, F_DUPFD, 40) : -1;
    if (nul >= 0)
        close(nul);

    int fds_before = count_fds();
    test_options();
    test_start_and_output(tmpdir, leak_fd);
    test_restart();
    test_backoff();
    test_stop();
    test_flood();
    is_int(count_fds(), fds_before, "every descriptor is closed again after the stops");

    log_close();
    if (getenv("TEST_SUPERVISOR_KEEP_LOG"))
        tap_diag("log kept in %s", log_path);
    else {
        unlink(log_path);
        rmdir(tmpdir);
    }
    return tap_done();
}
