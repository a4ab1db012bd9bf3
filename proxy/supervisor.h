/* supervisor.c -- a managed upstream child (`launch = ...`): start, relay its output, restart with backoff, stop.
 *
 * One thread per supervisor forks the command (/bin/sh -c COMMAND) in a
 * process group of its own, logs every line it writes to stdout or stderr as
 * "upstream NAME: LINE" (info), restarts it with a doubling delay when it
 * exits, and on stop sends SIGTERM to the group, then SIGKILL after the
 * grace time. Whether the child is ready (answers its health endpoint) is
 * the health checker's business; the supervisor only reports its state.
 *
 * The process may block every signal in every thread: the child gets an
 * empty signal mask and default dispositions all the same. The supervisor
 * reaps its own child by pid; nothing else in the process may wait for
 * "any child" (waitpid(-1)) or set SIGCHLD to SIG_IGN. */
#ifndef LLMCGI_SUPERVISOR_H
#define LLMCGI_SUPERVISOR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct supervisor;

struct supervisor_opts {
    const char *name;           /* upstream name, for log lines "upstream NAME: ..." (copied) */
    const char *command;        /* run as /bin/sh -c COMMAND (copied) */
    const char *workdir;        /* directory to run it in (copied); NULL = inherit */
    int64_t stop_timeout_ms;    /* SIGTERM -> SIGKILL grace on stop (e.g. 10000); >= 0 */
    int64_t backoff_min_ms;     /* first restart delay (e.g. 1000); >= 1 */
    int64_t backoff_max_ms;     /* the delay doubles up to this (e.g. 30000); >= backoff_min_ms */
    int64_t stable_ms;          /* a run at least this long resets the delay to min (e.g. 60000); >= 0 */
};

struct supervisor_state {
    pid_t pid;                  /* the running child (its process group id too); 0 when none */
    unsigned starts;            /* times spawned */
    int last_status;            /* wait status of the last exit (WIFEXITED...), -1 before any */
    int64_t started_ns;         /* util_now_ns() when the current run started; 0 when none */
};

/* Validates and copies `o` (the caller keeps its strings), starts the
 * supervisor thread and returns once the first spawn is done, so that
 * supervisor_get_state() shows starts == 1 and the pid at once. Call with
 * the signals the process handles blocked, like every other thread start.
 * Returns 0 with *out set (the caller owns it: free it with
 * supervisor_stop()), or -1 with a message in err and *out NULL: bad
 * options, a workdir that is not a directory, or a first spawn that failed
 * (pipe, fork). A command that fails later (not found: status 127) is
 * restarted like any exit. */
int supervisor_start(const struct supervisor_opts *o, struct supervisor **out, char *err, size_t errlen);

/* Stops and frees `s` (NULL is a no-op): a running child's process group
 * gets SIGTERM, then SIGKILL once stop_timeout_ms have passed without the
 * child exiting; what remains of the group after the child exited gets
 * SIGKILL too. Reaps the child, joins the thread, closes every descriptor.
 * Bounded: at most stop_timeout_ms plus 5 s for a child that does not die
 * even of SIGKILL (stuck in the kernel), which is then logged and left.
 * Safe when the child has already exited or never started. */
void supervisor_stop(struct supervisor *s);

/* Copies the current state of `s` into *out (thread-safe; any thread). */
void supervisor_get_state(struct supervisor *s, struct supervisor_state *out);

#endif
