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

/* Writes one line to the error log: time (or journald's "<N>"), level, then
 * the formatted message with every control character escaped (log_escape,
 * flags 0), so text from clients, upstreams or children can never start a
 * line of its own, whichever argument it came in. Lines are cut at 2 KiB. */
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LL_WARN, __VA_ARGS__)
#define log_notice(...) log_msg(LL_NOTICE, __VA_ARGS__)
#define log_info(...) log_msg(LL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LL_DEBUG, __VA_ARGS__)

bool log_access_enabled(void);

/* Writes one access-log line with a single write(). The line's own final
 * '\n' is kept (one is added when missing); any other control character in
 * it is escaped as in log_msg, so a formatter that forgot a field still
 * cannot split the line. */
void log_access_line(const char *line, size_t len);

enum log_escape_flags {
    LOG_ESC_QUOTED = 1 << 0,    /* also '"' and '\\' as \xHH: the text goes between quotes */
    LOG_ESC_ASCII = 1 << 1,     /* every byte outside printable ASCII as \xHH (\n too), as nginx does */
};

/* The one escaper of log text. Appends s[0..n) to buf[*pos..len):
 * \n, \r and \t as such; other control characters, DEL, C1 controls
 * (U+0080..U+009F), the line and paragraph separators (U+2028, U+2029),
 * bidirectional overrides and isolates, and bytes that are not well-formed
 * UTF-8 as \xHH (each byte); printable UTF-8 as it is (see flags). Writes
 * whole escapes and characters only and always NUL-terminates (len > 0).
 * Returns false when s did not fit whole. Pure: unit-tested. */
bool log_escape(char *buf, size_t len, size_t *pos, const char *s, size_t n, unsigned flags);

#endif
