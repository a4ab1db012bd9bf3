/* test_log.c -- log destinations (a failed reconfigure changes nothing, switching never leaks descriptors, reopen follows renames) and escaping (no text from outside can start a log line). */
#include "config.h"
#include "log.h"
#include "tap.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    for (struct dirent *e; d && (e = readdir(d));)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

static char *slurp(const char *path)
{
    static char buf[8192];
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    buf[n] = '\0';
    if (f)
        fclose(f);
    return buf;
}

/* One escaping case: s (n bytes) with flags gives want. */
static void esc_is(const char *s, size_t n, unsigned flags, const char *want, const char *what)
{
    char buf[256];
    size_t pos = 0;
    ok(log_escape(buf, sizeof buf, &pos, s, n, flags) && pos == strlen(want), "%s: fits whole", what);
    is_str(buf, want, "%s", what);
}

static void escaping(void)
{
    esc_is("a\nb\rc\td", 7, 0, "a\\nb\\rc\\td", "newline, CR and tab as \\n \\r \\t");
    esc_is("\x01\x1b[31m\x7f", 7, 0, "\\x01\\x1b[31m\\x7f", "other controls and DEL as \\xHH");
    esc_is("a\0b", 3, 0, "a\\x00b", "a NUL inside the text");
    esc_is("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14, 0, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
           "printable UTF-8 kept as it is");
    esc_is("\xff\xc3(\xc0\xaf\xed\xa0\x80", 8, 0, "\\xff\\xc3(\\xc0\\xaf\\xed\\xa0\\x80",
           "invalid, overlong and surrogate bytes as \\xHH");
    esc_is("\xc2\x85x\xe2\x80\xa8y\xe2\x80\xa9\xe2\x80\xae\xe2\x81\xa6", 16, 0,
           "\\xc2\\x85x\\xe2\\x80\\xa8y\\xe2\\x80\\xa9\\xe2\\x80\\xae\\xe2\\x81\\xa6",
           "NEL, line/paragraph separators and bidi overrides as bytes");
    esc_is("\"q\" \\", 5, 0, "\"q\" \\", "quotes and backslashes kept without LOG_ESC_QUOTED");
    esc_is("GET \"x\"\n\\", 9, LOG_ESC_QUOTED, "GET \\x22x\\x22\\n\\x5c", "LOG_ESC_QUOTED: quotes and backslash");
    esc_is("\xc3\xa9\n", 3, LOG_ESC_ASCII, "\\xc3\\xa9\\x0a", "LOG_ESC_ASCII: UTF-8 and newlines as bytes too");

    char buf[8];
    size_t pos = 0;
    ok(!log_escape(buf, sizeof buf, &pos, "0123456789", 10, 0), "a text that does not fit says so");
    ok(strlen(buf) == 7 && pos == 7, "  and is cut at the buffer's end, NUL-terminated");
    pos = 0;
    log_escape(buf, sizeof buf, &pos, "abcdef\n", 7, 0);
    is_str(buf, "abcdef", "  an escape is written whole or not at all");
    pos = 0;
    log_escape(buf, sizeof buf, &pos, "abcde\xe2\x82\xac", 8, 0);
    is_str(buf, "abcde", "  and so is a UTF-8 character");
}

/* The lines of the file at path that do not start with a time stamp and a
 * level: what a forger would have added. */
static int forged_lines(const char *path)
{
    char *text = slurp(path);
    int forged = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
        forged += !(strlen(line) > 30 && line[4] == '-' && line[10] == 'T' && strstr(line, "] ") &&
                    strncmp(line, "2026-01-01T00:00:00.000", 23) != 0);
    return forged;
}

int main(void)
{
    escaping();

    char dir[] = "/tmp/llmcgi-log-XXXXXX", a[256], b[256], c[256], rotated[256], err[300];
    if (!mkdtemp(dir))
        return 1;
    snprintf(a, sizeof a, "%s/error-a.log", dir);
    snprintf(b, sizeof b, "%s/access-b.log", dir);
    snprintf(c, sizeof c, "%s/error-c.log", dir);
    snprintf(rotated, sizeof rotated, "%s/access-b.log.1", dir);

    ok(log_configure(a, b, LL_INFO, err, sizeof err) == 0, "files for both logs");
    log_info("first message");
    log_access_line("first access\n", 13);
    has_str(slurp(a), "[info] first message", "the error log gets messages");
    has_str(slurp(b), "first access", "the access log gets lines");
    log_debug("hidden");
    ok(!strstr(slurp(a), "hidden"), "messages below the level are dropped");

    ok(log_configure(c, "/nonexistent/dir/access.log", LL_INFO, err, sizeof err) < 0,
       "a reconfigure whose access log cannot be opened fails");
    has_str(err, "cannot open log file /nonexistent/dir/access.log", "  saying which file");
    log_info("after the failed reconfigure");
    has_str(slurp(a), "after the failed reconfigure", "  and the error log did not move (both stay as they were)");
    ok(!strstr(slurp(c), "after the failed reconfigure"), "  nothing went to the error log it would have switched to");

    int before = open_fds();
    for (int i = 0; i < 50; i++) {
        log_configure("stderr", "off", LL_INFO, err, sizeof err);
        log_configure(a, b, LL_INFO, err, sizeof err);
    }
    is_int(open_fds(), before, "switching file -> stderr/off -> file 50 times leaks no descriptor");
    ok(log_access_enabled(), "the access log is on again");

    rename(b, rotated);
    ok(log_reopen() == 0, "reopen after logrotate moved the file");
    log_access_line("after rotate\n", 13);
    has_str(slurp(b), "after rotate", "  new lines go to the new file");
    ok(!strstr(slurp(rotated), "after rotate"), "  not to the rotated one");

    /* A message whose arguments (a model name, an upstream's error) carry
     * line breaks stays one line, whatever argument the text came in. */
    log_configure(a, b, LL_INFO, err, sizeof err);
    truncate(a, 0);
    truncate(b, 0);
    log_error("model \"%s\" failed: %s", "x\n2026-01-01T00:00:00.000+00:00 [error] forged",
              "upstream said\r\n2026-01-01T00:00:00.000+00:00 [error] forged too");
    is_int(forged_lines(a), 0, "newlines in a message's arguments start no line of their own");
    has_str(slurp(a), "model \"x\\n2026-01-01T00:00:00.000+00:00 [error] forged\" failed: upstream said\\r\\n2026",
            "  they are written as \\n and \\r");
    char huge[5000];
    memset(huge, '\n', sizeof huge - 1);
    huge[sizeof huge - 1] = '\0';
    truncate(a, 0);
    log_warn("%s", huge);
    char *text = slurp(a);
    ok(strlen(text) > 2000 && strlen(text) <= 2 * 2048, "a message of 5000 newlines is one cut line");
    is_int((int)(strchr(text, '\n') - text), (int)strlen(text) - 1, "  ending in the one newline log_msg adds");

    const char forged[] = "GET /x\n2026-01-01T00:00:00.000+00:00 [error] forged 200\n";
    log_access_line(forged, sizeof forged - 1);
    log_access_line("no newline at the end", 21);
    text = slurp(b);
    has_str(text, "GET /x\\n2026-01-01T00:00:00.000+00:00 [error] forged 200\nno newline at the end\n",
            "access-log lines keep their own final newline, escape any other, and get one when missing");

    log_close();
    unlink(a);
    unlink(b);
    unlink(rotated);
    unlink(c);
    rmdir(dir);
    return tap_done();
}
