/* sysd.c -- systemd integration: socket activation and sd_notify (no-ops without libsystemd). */
#include "config.h"
#include "sysd.h"
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

int sysd_listen_fds(void)
{
#ifdef HAVE_LIBSYSTEMD
    int n = sd_listen_fds(1);
    if (n < 0) {
        log_error("sd_listen_fds failed (%d); ignoring passed sockets", n);
        return 0;
    }
    return n;
#else
    if (getenv("LISTEN_FDS"))
        log_warn("LISTEN_FDS is set but llmcgi was built without libsystemd: socket activation is unavailable");
    return 0;
#endif
}

void sysd_notify(const char *state)
{
#ifdef HAVE_LIBSYSTEMD
    int rc = sd_notify(0, state);
    if (rc < 0)
        log_warn("sd_notify(%s) failed: %d", state, rc);
#else
    (void)state;
#endif
}

void sysd_notifyf(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    sysd_notify(buf);
}
