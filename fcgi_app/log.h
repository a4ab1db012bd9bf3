/* log.c -- the error log and the access log: levels, journald prefixes, reopen on SIGUSR1.
 *
 * The one piece of process-wide state in llmcgi: every module logs, and the
 * signal thread reopens the files, so the two log descriptors live here.
 * Their numbers never change after log_open(): reopening dup2()s the new file
 * onto the old number, so a thread writing at that moment never writes into
 * a closed or reused descriptor. */
#ifndef LLMCGI_LOG_H
#define LLMCGI_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level { LL_ERROR = 3, LL_WARN = 4, LL_NOTICE = 5, LL_INFO = 6, LL_DEBUG = 7 };

/* Parses "error|warn|notice|info|debug"; -1 when unknown. */
int log_level_parse(const char *s, enum log_level *out);

/* Opens (or switches to) the given destinations: a file path, "stderr", or
 * for the access log also "off". On failure leaves the previous destinations
 * in place, writes a message into err and returns -1. */
int log_configure(const char *error_log, const char *access_log, enum log_level level,
                  char *err, size_t errlen);

/* Reopens both files at their paths (after logrotate moved them). */
int log_reopen(void);

/* Closes the files (at exit). */
void log_close(void);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LL_WARN, __VA_ARGS__)
#define log_notice(...) log_msg(LL_NOTICE, __VA_ARGS__)
#define log_info(...) log_msg(LL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LL_DEBUG, __VA_ARGS__)

bool log_access_enabled(void);

/* Writes one access-log line (must end in '\n') with a single write(). */
void log_access_line(const char *line, size_t len);

#endif
