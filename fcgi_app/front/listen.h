/* listen.c -- the FastCGI listening socket: from systemd, inherited on fd 0, or created from `listen`. */
#ifndef LLMCGI_LISTEN_H
#define LLMCGI_LISTEN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "listen_spec.h"

struct listener {
    int fd;                     /* the listening socket, -1 when closed */
    char desc[320];             /* where it came from, for the log */
    bool created;               /* we made it: close() also removes a unix socket file */
    char unlink_path[108];
    dev_t dev;
    ino_t ino;
};

/* Opens the listening socket, taking the first that applies:
 *   1. `cmdline` (--listen), when not NULL;
 *   2. a socket passed by systemd socket activation (exactly one);
 *   3. a listening socket inherited on fd 0 (spawn-fcgi, nginx-style spawners);
 *   4. `config_spec` (listen = ...), when not NULL.
 * Unix sockets created here get `mode`. Returns 0, or -1 with err filled. */
int listener_open(struct listener *l, const char *cmdline, const char *config_spec,
                  int backlog, unsigned mode, char *err, size_t errlen);

/* Is it a TCP socket that other machines can reach (bound to an address
 * that is not loopback, or to every interface)? Whatever opened it: the
 * config, --listen, systemd or spawn-fcgi. */
bool listener_exposed(const struct listener *l);

/* Closes the socket; removes the socket file when we created it and it is
 * still ours (a newer instance may have replaced it). */
void listener_close(struct listener *l);

#endif
