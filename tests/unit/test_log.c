/* test_log.c -- log destinations: a failed reconfigure changes nothing, switching never leaks descriptors, reopen follows renames. */
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

int main(void)
{
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

    log_close();
    unlink(a);
    unlink(b);
    unlink(rotated);
    unlink(c);
    rmdir(dir);
    return tap_done();
}
