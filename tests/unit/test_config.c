/* test_config.c -- the config file: defaults, every key type, and file:line errors for bad input. */
#include "config.h"
#include "conf.h"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[] = "/tmp/llmcgi-conf-XXXXXX";
static char path[256];

static void write_file(const char *text)
{
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

/* Loads `text`; returns the config or NULL, with the errors joined by '\n' in errbuf. */
static struct config *load(const char *text, char *errbuf, size_t len)
{
    struct config_errors errs = {0};
    struct config *c;
    write_file(text);
    config_load(path, &c, &errs);
    errbuf[0] = '\0';
    for (size_t i = 0; i < errs.n; i++) {
        strncat(errbuf, errs.msg[i], len - strlen(errbuf) - 2);
        strcat(errbuf, "\n");
    }
    config_errors_free(&errs);
    return c;
}

/* Expects `text` to be refused with an error containing `want`. */
static void refused(const char *text, const char *want, const char *what)
{
    char err[4096];
    struct config *c = load(text, err, sizeof err);
    ok(c == NULL, "refused: %s", what);
    has_str(err, want, "  message for %s", what);
    config_unref(c);
}

int main(void)
{
    char err[4096], want[512];
    if (!mkdtemp(dir))
        return 1;
    snprintf(path, sizeof path, "%s/llmcgi.conf", dir);

    struct config *c = load("[server]\n", err, sizeof err);
    ok(c != NULL, "an empty [server] section loads");
    if (c) {
        is_int(c->threads, 16, "default threads");
        is_int(c->max_body, 8 << 20, "default max_body 8M");
        is_int(c->shutdown_timeout_ms, 30000, "default shutdown_timeout 30s");
        is_int(c->sse_keepalive_ms, 15000, "default sse_keepalive 15s");
        is_int(c->read_timeout_ms, 60000, "default read_timeout 60s");
        is_int(c->socket_mode, 0660, "default socket_mode");
        is_str(c->access_log, "stderr", "default access log");
        ok(c->listen == NULL, "no default listen address");
        ok(!c->test_endpoints, "test endpoints off by default");
        is_str(c->path_prefix, "", "no prefix by default");
        is_int(c->n_models, 0, "no models");
    }
    config_unref(c);

    c = load("; comment\n# comment\n[server]\nlisten = unix:/run/x.sock ; inline comment\n"
             "threads=4\nmax_body = 512k\nshutdown_timeout = 2m\nsse_keepalive = 250ms\n"
             "socket_mode = 0666\naccess_log = logs/access.log\nerror_log = /var/log/e.log\n"
             "log_level = debug\ntest_endpoints = on\npath_prefix = /llm/\n"
             "\n[model gpt2]\npath = models/gpt2\n[model org/name-1.5]\npath = /abs/path\n",
             err, sizeof err);
    ok(c != NULL, "a full file loads");
    if (!c)
        tap_diag("%s", err);
    if (c) {
        is_str(c->listen, "unix:/run/x.sock", "listen, inline comment stripped");
        is_int(c->threads, 4, "threads");
        is_int(c->max_body, 512 << 10, "max_body 512k");
        is_int(c->shutdown_timeout_ms, 120000, "shutdown_timeout 2m");
        is_int(c->sse_keepalive_ms, 250, "sse_keepalive 250ms");
        is_int(c->socket_mode, 0666, "socket_mode");
        snprintf(want, sizeof want, "%s/logs/access.log", dir);
        char *real = realpath(dir, NULL);
        snprintf(want, sizeof want, "%s/logs/access.log", real);
        is_str(c->access_log, want, "relative log path taken from the config's directory");
        is_str(c->error_log, "/var/log/e.log", "absolute log path kept");
        is_int(c->log_level, LL_DEBUG, "log_level");
        ok(c->test_endpoints, "test_endpoints on");
        is_str(c->path_prefix, "/llm", "trailing slash of the prefix dropped");
        is_int(c->n_models, 2, "two models");
        const struct config_model *m = config_find_model(c, "gpt2");
        snprintf(want, sizeof want, "%s/models/gpt2", real);
        ok(m && strcmp(m->path, want) == 0, "model path resolved: %s", m ? m->path : "-");
        ok(config_find_model(c, "org/name-1.5") != NULL, "model names may contain / . -");
        ok(config_find_model(c, "nope") == NULL, "unknown model not found");
        free(real);
    }
    config_unref(c);

    c = load("[server]\nlisten = tcp\n  continued\nthreads = 2\n", err, sizeof err);
    ok(c == NULL, "continuation lines are joined to the value before them");
    snprintf(want, sizeof want, "%s:2: listen: expected unix:/path or host:port, got \"tcp continued\"", path);
    has_str(err, want, "  and the joined value is what gets checked");
    config_unref(c);

    struct config *r = load("[server]\nthreads = 3\n", err, sizeof err);
    ok(r && config_ref(r) == r, "config_ref returns the same snapshot");
    config_unref(r);
    ok(r && r->threads == 3, "still alive after one unref");
    config_unref(r);

    /* Errors: each with file:line. */
    snprintf(want, sizeof want, "%s:3: threads must be a whole number from 1 to 1024, got \"0\"", path);
    refused("[server]\n\nthreads = 0\n", want, "threads out of range");
    snprintf(want, sizeof want, "%s:2: unknown key \"treads\" in [server] (did you mean \"threads\"?)", path);
    refused("[server]\ntreads = 4\n", want, "a misspelt key, with a suggestion");
    snprintf(want, sizeof want, "%s:3: duplicate key \"threads\" (first set on line 2)", path);
    refused("[server]\nthreads = 4\nthreads = 5\n", want, "a duplicate key");
    snprintf(want, sizeof want, "%s:1: \"threads\" is outside any section", path);
    refused("threads = 4\n", want, "a key before any section");
    snprintf(want, sizeof want, "%s:2: expected \"key = value\" or \"[section]\", got \"garbage\"", path);
    refused("[server]\ngarbage\n", want, "a line that is neither key nor section");
    snprintf(want, sizeof want, "%s:1: section header without a closing ']'", path);
    refused("[server\n", want, "an unclosed section header");
    snprintf(want, sizeof want, "%s:1: unknown section [serverr]", path);
    refused("[serverr]\n", want, "an unknown section");
    snprintf(want, sizeof want, "%s:3: second [server] section (the first is on line 1)", path);
    refused("[server]\n\n[server]\n", want, "two [server] sections");
    snprintf(want, sizeof want, "%s:1: [model gpt2] needs a path", path);
    refused("[model gpt2]\n", want, "a model without a path");
    snprintf(want, sizeof want, "%s:3: model \"a\" is already defined on line 1", path);
    refused("[model a]\npath=/x\n[model a]\npath=/y\n", want, "a model defined twice");
    snprintf(want, sizeof want, "%s:1: [model NAME] needs a name", path);
    refused("[model bad name!]\npath=/x\n", want, "a model name with bad characters");
    snprintf(want, sizeof want, "%s:2: max_body must be a size like", path);
    refused("[server]\nmax_body = 2T\n", want, "a size with an unknown unit");
    snprintf(want, sizeof want, "%s:2: sse_keepalive must be a duration like 250ms, 15s, 2m or 1h, from 100ms to 1h", path);
    refused("[server]\nsse_keepalive = 10ms\n", want, "a duration below its minimum");
    snprintf(want, sizeof want, "%s:2: test_endpoints must be on or off", path);
    refused("[server]\ntest_endpoints = sometimes\n", want, "a bad boolean");
    snprintf(want, sizeof want, "%s:2: listen: bad port", path);
    refused("[server]\nlisten = 127.0.0.1:99999\n", want, "a port out of range");
    snprintf(want, sizeof want, "%s:2: listen: bad port", path);
    refused("[server]\nlisten = 127.0.0.1:0000000000000000000000009000\n", want,
            "a port with 28 digits (once a stack overflow, found in review)");
    snprintf(want, sizeof want, "%s:4: an indented line continues the value above; a section header must start the line", path);
    refused("[model a]\npath = /a\n\n  [model b]\n", want, "an indented section header");
    snprintf(want, sizeof want, "%s:2: listen: unix socket path must be absolute", path);
    refused("[server]\nlisten = unix:relative.sock\n", want, "a relative unix socket");
    snprintf(want, sizeof want, "%s:2: socket_mode must be an octal file mode", path);
    refused("[server]\nsocket_mode = rw\n", want, "a bad mode");
    snprintf(want, sizeof want, "%s:2: log_level must be one of", path);
    refused("[server]\nlog_level = loud\n", want, "a bad log level");
    snprintf(want, sizeof want, "%s:2: path_prefix must be a path", path);
    refused("[server]\npath_prefix = llm\n", want, "a prefix without a leading slash");
    snprintf(want, sizeof want, "%s:2: line longer than 196 characters", path);
    char longline[400];
    snprintf(longline, sizeof longline, "[server]\nerror_log = /%0250d\n", 0);
    refused(longline, want, "a line too long for the parser");
    snprintf(want, sizeof want, "%s:1: [upstream] is not supported", path);
    refused("[upstream a]\nurl = http://x\n", want, "a section of a later version");

    c = load("[server]\nthreads = 8\nthreads = 9\n  16\nlisten_backlog = 10\n", err, sizeof err);
    ok(c == NULL && strstr(err, ":3: duplicate key \"threads\"") && !strstr(err, "listen_backlog"),
       "a continuation of a refused key joins nothing else");
    if (!strstr(err, ":3:"))
        tap_diag("%s", err);

    c = load("[server]\nread_timeout = 1500ms\n", err, sizeof err);
    ok(c && c->read_timeout_ms == 1500, "read_timeout");
    config_unref(c);

    /* Several problems are all reported, in one pass. */
    c = load("[server]\nthreads = x\nmax_body = y\nbogus = 1\n", err, sizeof err);
    ok(c == NULL && strstr(err, ":2:") && strstr(err, ":3:") && strstr(err, ":4:"),
       "every problem of a file is reported, not just the first");

    struct config_errors errs = {0};
    ok(config_load("/nonexistent/llmcgi.conf", &c, &errs) < 0 && errs.n == 1 &&
           strstr(errs.msg[0], "/nonexistent/llmcgi.conf: cannot open: No such file or directory"),
       "a missing file: %s", errs.n ? errs.msg[0] : "-");
    config_errors_free(&errs);

    unlink(path);
    rmdir(dir);
    return tap_done();
}
