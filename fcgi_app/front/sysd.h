/* sysd.c -- systemd integration: socket activation and sd_notify (no-ops without libsystemd). */
#ifndef LLMCGI_SYSD_H
#define LLMCGI_SYSD_H

#define SYSD_LISTEN_FDS_START 3

/* Number of sockets systemd passed (0 when not socket-activated). Unsets
 * LISTEN_* so children do not see them. */
int sysd_listen_fds(void);

/* Sends a state string ("READY=1", "RELOADING=1", "STOPPING=1",
 * "STATUS=...") to the service manager; does nothing outside systemd. */
void sysd_notify(const char *state);

/* Like sysd_notify, printf-style. */
void sysd_notifyf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
