/* main.c -- llmcgi: command line, start-up, and the signal thread (drain on SIGTERM, reload on SIGHUP, reopen logs on SIGUSR1).
 *
 * llmcgi never forks and never changes user: systemd, spawn-fcgi or the
 * administrator start it as the user it should run as. After start-up the
 * main thread does nothing but wait for signals, which every other thread
 * has blocked. */
#include "config.h"
#include "conf.h"
#include "gpu.h"
#include "registry.h"
#include "listen.h"
#include "log.h"
#include "memtrim.h"
#include "metrics.h"
#include "pool.h"
#include "gateway.h"
#include "proxy.h"
#include "router.h"
#include "server.h"
#include "sysd.h"
#include "util.h"

#include <errno.h>
#include <fcgiapp.h>
#include <getopt.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef LLMCGI_SYSCONFDIR
#define LLMCGI_SYSCONFDIR "/etc"
#endif
#define DEFAULT_CONFIG LLMCGI_SYSCONFDIR "/llmcgi/llmcgi.conf"

struct options {
    const char *config;
    const char *listen;
    bool check;
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: llmcgi [-c FILE] [--listen ADDR]     run the FastCGI server\n"
            "       llmcgi -t [-c FILE]                  check a configuration file and exit\n"
            "       llmcgi -V                            version, build features and GPU check\n"
            "\n"
            "  -c, --config FILE   configuration file (default %s)\n"
            "  -l, --listen ADDR   listen on unix:/path or host:port, overriding the config\n"
            "                      and any socket passed by systemd or spawn-fcgi\n"
            "  -t, --check         validate the configuration: one 'file:line: message' per\n"
            "                      problem on stderr, exit status 1 when there is any\n"
            "  -V, --version       print the version and what this build can do\n"
            "  -h, --help          this text\n"
            "\n"
            "Signals: TERM/INT finish in-flight requests (up to shutdown_timeout) and exit;\n"
            "HUP reloads the configuration (kept as it is when the new one has errors);\n"
            "USR1 reopens the log files.\n",
            DEFAULT_CONFIG);
}

static int parse_args(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'}, {"listen", required_argument, NULL, 'l'},
        {"check", no_argument, NULL, 't'},        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    o->config = DEFAULT_CONFIG;
    int c;
    while ((c = getopt_long(argc, argv, "c:l:tVh", longopts, NULL)) != -1) {
        switch (c) {
        case 'c': o->config = optarg; break;
        case 'l': o->listen = optarg; break;
        case 't': o->check = true; break;
        case 'V': return 'V';
        case 'h': return 'h';
        default: return '?';
        }
    }
    if (optind < argc) {
        fprintf(stderr, "llmcgi: unexpected argument \"%s\"\n", argv[optind]);
        return '?';
    }
    return 0;
}

static int print_version(void)
{
    struct gpu_info g;
    int rc = gpu_probe(&g, true);
    printf("llmcgi %s\n", PACKAGE_VERSION);
    if (!g.built)
        printf("cuda: not built (%s)\n", g.error);
    else if (g.devices == 0)
        printf("cuda: built, runtime %d.%d; no usable device: %s\n", g.runtime_version / 1000,
               g.runtime_version % 1000 / 10, g.error);
    else
        printf("cuda: built, runtime %d.%d; %d device(s); device 0: %s (sm_%d%d, %.1f GiB), probe kernel %s\n",
               g.runtime_version / 1000, g.runtime_version % 1000 / 10, g.devices, g.name, g.cc_major,
               g.cc_minor, (double)g.memory_bytes / (1 << 30), g.kernel_ran ? "ok" : g.error);
#ifdef HAVE_LIBSYSTEMD
    printf("systemd: socket activation and sd_notify\n");
#else
    printf("systemd: not built (no libsystemd)\n");
#endif
    printf("libraries: %s json-c/%s\n", proxy_library_version(), json_c_version());
    return rc < 0 ? 1 : 0;
}

/* Loads `file`, printing every problem as file:line: message. */
static struct config *load_config(const char *file, bool to_log)
{
    struct config_errors errs = {0};
    struct config *cfg;
    if (config_load(file, &cfg, &errs) < 0) {
        for (size_t i = 0; i < errs.n; i++) {
            if (to_log)
                log_error("%s", errs.msg[i]);
            else
                fprintf(stderr, "%s\n", errs.msg[i]);
        }
    }
    config_errors_free(&errs);
    return cfg;
}

/* Tells what config_check_paths finds (a model path that is not there):
 * to the log, or as "file:line: warning: ..." on stderr. */
static void warn_paths(const struct config *cfg, bool to_log)
{
    struct config_errors warns = {0};
    config_check_paths(cfg, &warns);
    for (size_t i = 0; i < warns.n; i++) {
        if (to_log) {
            log_warn("%s", warns.msg[i]);
            continue;
        }
        const char *rest = strstr(warns.msg[i], ": ");   /* "file:line" is before the first ": " */
        if (rest)
            fprintf(stderr, "%.*s: warning: %s\n", (int)(rest - warns.msg[i]), warns.msg[i], rest + 2);
        else
            fprintf(stderr, "warning: %s\n", warns.msg[i]);
    }
    config_errors_free(&warns);
}

static bool str_differs(const char *a, const char *b)
{
    return (a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0);
}

/* FastCGI has no authentication: a socket other machines can reach is
 * served only with web_server_addrs set (a list, or "any" on purpose),
 * wherever the socket came from. Logs why and returns false otherwise. */
static bool web_servers_ok(const struct config *cfg, const struct listener *lst)
{
    if (!listener_exposed(lst) || cfg->n_web_server_addrs || cfg->web_server_addrs_any)
        return true;
    log_error("FastCGI on %s can be reached from other machines and FastCGI has no authentication: set "
              "web_server_addrs in [server] to the web servers' addresses (or to \"any\" when a firewall already "
              "keeps everyone else out)", lst->desc);
    return false;
}

/* SIGHUP: the new file is checked completely before anything changes. */
static void reload(struct server *srv, const char *file, const struct listener *lst)
{
    sysd_notifyf("RELOADING=1\nMONOTONIC_USEC=%llu", (unsigned long long)(util_now_ns() / 1000));
    log_notice("SIGHUP: reloading %s", file);
    struct config *next = load_config(file, true);
    if (next && !web_servers_ok(next, lst)) {
        config_unref(next);
        next = NULL;
    }
    if (!next) {
        log_error("reload failed: keeping the running configuration");
        sysd_notify("READY=1\nSTATUS=reload failed; running the previous configuration");
        return;
    }
    char err[300];
    if (log_configure(next->error_log, next->access_log, next->log_level, err, sizeof err) < 0) {
        log_error("reload failed: %s; keeping the running configuration", err);
        config_unref(next);
        sysd_notify("READY=1\nSTATUS=reload failed; running the previous configuration");
        return;
    }
    warn_paths(next, true);
    struct config *cur = server_config_acquire(srv);
    if (str_differs(cur->listen, next->listen) || cur->listen_backlog != next->listen_backlog ||
        cur->socket_mode != next->socket_mode)
        log_warn("the listening socket settings changed: they take effect after a restart");
    if (cur->threads != next->threads)
        log_warn("threads changed from %ld to %ld: takes effect after a restart", cur->threads, next->threads);
    config_unref(cur);
    gateway_reconfigure(srv->gw, next);
    server_config_swap(srv, config_ref(next));  /* first, so no request reloads a model with the old settings */
    registry_reconfigure(srv->reg, next);
    log_notice("configuration reloaded (%zu models)", next->n_models);
    config_unref(next);
    sysd_notify("READY=1\nSTATUS=serving");
}

/* SIGTERM/SIGINT: stop accepting, let requests in flight finish (a second
 * signal or shutdown_timeout cuts that short). Returns the threads still
 * running when it gave up waiting. */
static int drain(struct server *srv, struct pool *pool, const sigset_t *set, int signo)
{
    struct config *cfg = server_config_acquire(srv);
    int64_t deadline = util_now_ns() + cfg->shutdown_timeout_ms * 1000000;
    config_unref(cfg);
    sysd_notify("STOPPING=1");
    log_notice("%s: finishing %d request(s) in flight, then exiting", strsignal(signo), atomic_load(&srv->busy));
    pool_stop(pool);
    while (pool_running(pool) > 0) {
        int64_t left = deadline - util_now_ns();
        if (left <= 0) {
            log_warn("shutdown_timeout reached with %d request(s) unfinished; exiting anyway",
                     atomic_load(&srv->busy));
            break;
        }
        struct timespec slice = {0, left < 100000000 ? left : 100000000};
        int s = sigtimedwait(set, NULL, &slice);
        if (s == SIGTERM || s == SIGINT) {
            log_warn("second %s: exiting without waiting for %d request(s)", strsignal(s), atomic_load(&srv->busy));
            break;
        }
        if (s == SIGUSR1)
            log_reopen();
    }
    return pool_running(pool);
}

int main(int argc, char **argv)
{
    struct options opt = {0};
    switch (parse_args(argc, argv, &opt)) {
    case 'h': usage(stdout); return 0;
    case 'V': return print_version();
    case '?': usage(stderr); return 2;
    }

    config_set_path_in_use(router_path_in_use);      /* path_prefix may not hide the routes */
    struct config *cfg = load_config(opt.config, false);
    if (!cfg)
        return 1;
    if (opt.check) {
        warn_paths(cfg, false);         /* on stderr; the file is valid all the same */
        printf("%s: configuration is valid (%zu models, %zu upstreams)\n", opt.config, cfg->n_models,
               cfg->n_upstreams);
        config_unref(cfg);
        return 0;
    }

    /* Every thread started from here on inherits this mask: the signals
     * are taken only by sigwait in this thread. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    char err[400];
    if (log_configure(cfg->error_log, cfg->access_log, cfg->log_level, err, sizeof err) < 0) {
        fprintf(stderr, "llmcgi: %s\n", err);
        config_unref(cfg);
        return 1;
    }
    warn_paths(cfg, true);
    memtrim_init();                     /* before any responder thread exists */
    int prc = proxy_global_init(err, sizeof err);
    if (prc < 0) {
        log_error("%s", err);
        config_unref(cfg);
        return 1;
    }
    if (prc > 0)
        log_warn("%s", err);

    struct listener lst;
    if (listener_open(&lst, opt.listen, cfg->listen, (int)cfg->listen_backlog, cfg->socket_mode, err, sizeof err) < 0) {
        log_error("%s", err);
        proxy_global_cleanup();
        config_unref(cfg);
        return 1;
    }
    if (!web_servers_ok(cfg, &lst)) {
        listener_close(&lst);
        proxy_global_cleanup();
        config_unref(cfg);
        return 1;
    }
    if (FCGX_Init() != 0) {
        log_error("FCGX_Init failed");
        listener_close(&lst);
        proxy_global_cleanup();
        config_unref(cfg);
        return 1;
    }

    metrics_init();
    struct server srv;
    long threads = cfg->threads;
    if (server_init(&srv, cfg) < 0) {
        log_error("out of memory");
        listener_close(&lst);
        config_unref(cfg);
        return 1;
    }
    gpu_probe(&srv.gpu, false);
    if (srv.gpu.built && srv.gpu.devices == 0)
        log_notice("CUDA backend built, but no GPU is usable (%s): running on the CPU", srv.gpu.error);

    if (gateway_start(&srv.gw, cfg, err, sizeof err) < 0) {
        log_error("%s", err);
        listener_close(&lst);
        server_destroy(&srv);
        proxy_global_cleanup();
        return 1;
    }

    if (registry_start(&srv.reg, cfg, err, sizeof err) < 0) {
        log_error("%s", err);
        listener_close(&lst);
        gateway_stop(srv.gw);
        server_destroy(&srv);
        proxy_global_cleanup();
        return 1;
    }

    struct pool *pool;
    if (pool_start(&pool, &srv, lst.fd, (int)threads, err, sizeof err) < 0) {
        log_error("%s", err);
        listener_close(&lst);
        registry_stop(srv.reg);
        gateway_stop(srv.gw);
        server_destroy(&srv);
        proxy_global_cleanup();
        return 1;
    }
    log_notice("llmcgi %s ready: %s, %ld threads, config %s", PACKAGE_VERSION, lst.desc, threads, opt.config);
    sysd_notifyf("READY=1\nSTATUS=serving on %s with %ld threads", lst.desc, threads);

    int left = 0;
    for (;;) {
        int s = sigwaitinfo(&set, NULL);
        if (s < 0) {
            if (errno != EINTR)
                log_error("sigwaitinfo: %s", strerror(errno));
            continue;
        }
        if (s == SIGHUP) {
            reload(&srv, opt.config, &lst);
        } else if (s == SIGUSR1) {
            log_notice("SIGUSR1: reopening log files");
            log_reopen();
        } else {
            left = drain(&srv, pool, &set, s);
            break;
        }
    }
    listener_close(&lst);
    if (left == 0 && registry_loading(srv.reg)) {
        log_warn("a model is still loading; exiting without waiting for it");
        left = 1;
    }
    if (left > 0) {
        /* Threads still inside requests use the server state: end the
         * process without running destructors under their feet (but do
         * not leave managed children behind). */
        gateway_stop_children(srv.gw);
        log_notice("exiting");
        _exit(0);
    }
    pool_free(pool);
    registry_stop(srv.reg);
    srv.reg = NULL;
    gateway_stop(srv.gw);
    srv.gw = NULL;
    server_destroy(&srv);
    proxy_global_cleanup();
    log_notice("all requests finished; exiting");
    log_close();
    return 0;
}
