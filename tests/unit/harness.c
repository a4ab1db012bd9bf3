/* harness.c -- runs single requests through the real request path (libfcgi, req_init, router, pool_answer) in one thread. */
#include "config.h"
#include "harness.h"
#include "conf.h"
#include "log.h"
#include "pool.h"
#include "registry.h"

#include <fcgiapp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int harness_last_rc, harness_last_gone;

int harness_init(struct harness *h, const char *config_text)
{
    memset(h, 0, sizeof *h);
    signal(SIGPIPE, SIG_IGN);
    strcpy(h->conf_dir, "/tmp/llmcgi-harness-XXXXXX");
    if (!mkdtemp(h->conf_dir))
        return -1;
    snprintf(h->conf_path, sizeof h->conf_path, "%s/llmcgi.conf", h->conf_dir);
    FILE *f = fopen(h->conf_path, "w");
    if (!f)
        return -1;
    fputs(config_text, f);
    fclose(f);
    struct config_errors errs = {0};
    struct config *cfg;
    if (config_load(h->conf_path, &cfg, &errs) < 0) {
        for (size_t i = 0; i < errs.n; i++)
            fprintf(stderr, "%s\n", errs.msg[i]);
        config_errors_free(&errs);
        return -1;
    }
    config_errors_free(&errs);
    char err[300];
    if (log_configure(cfg->error_log, cfg->access_log, cfg->log_level, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    if (server_init(&h->srv, cfg) < 0 || FCGX_Init() != 0)
        return -1;
    if (registry_start(&h->srv.reg, cfg, err, sizeof err) < 0) {    /* the local models, as main.c starts them */
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    h->srv.threads = 1;
    h->listen_fd = fcgi_test_listen(h->sock);
    return h->listen_fd < 0 ? -1 : 0;
}

void harness_free(struct harness *h)
{
    log_close();
    fcgi_test_unlisten(h->listen_fd, h->sock);
    registry_stop(h->srv.reg);
    server_destroy(&h->srv);
    unlink(h->conf_path);
    rmdir(h->conf_dir);
}

int harness_run(struct harness *h, const char *const *params, const char *body, size_t len,
                int (*handle)(struct req *), int close_first, struct fcgi_answer *a)
{
    memset(a, 0, sizeof *a);
    int cfd = fcgi_client_request(h->sock, params, body, len);
    if (cfd < 0)
        return -1;
    if (close_first) {
        close(cfd);
        cfd = -1;
    }
    FCGX_Request freq;
    FCGX_InitRequest(&freq, h->listen_fd, 0);
    if (FCGX_Accept_r(&freq) != 0) {
        if (cfd >= 0)
            close(cfd);
        return -1;
    }
    if (!handle) {
        pool_answer(&h->srv, &freq);
    } else {
        struct config *cfg = server_config_acquire(&h->srv);
        struct req r;
        req_init(&r, &freq, &h->srv, cfg);
        harness_last_rc = handle(&r);
        harness_last_gone = r.client_gone;
        req_cleanup(&r);
        FCGX_Finish_r(&freq);
        config_unref(cfg);
    }
    int rc = 0;
    if (cfd >= 0) {
        rc = fcgi_client_read(cfd, a);
        close(cfd);
    }
    return rc;
}
