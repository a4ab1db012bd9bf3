/* listen_spec.c -- the `listen` address syntax: unix:/path, host:port, [v6]:port, :port. */
#ifndef LLMCGI_LISTEN_SPEC_H
#define LLMCGI_LISTEN_SPEC_H

#include <stdbool.h>
#include <stddef.h>

enum listen_kind { LISTEN_UNIX, LISTEN_TCP };

struct listen_spec {
    enum listen_kind kind;
    char path[108];             /* LISTEN_UNIX: socket path */
    char host[256];             /* LISTEN_TCP: "" = every interface */
    char port[8];
};

/* Parses "unix:/path", "/path", "host:port", "[v6addr]:port", ":port" or
 * "*:port". Returns 0, or -1 with a message in err. */
int listen_parse(const char *s, struct listen_spec *out, char *err, size_t errlen);

/* Is a TCP spec reachable from this machine only: a loopback address
 * (127.0.0.0/8, ::1, IPv4-mapped 127/8) or "localhost"? Every interface ("",
 * "*", 0.0.0.0, ::) and any other name count as reachable from elsewhere. */
bool listen_spec_loopback(const struct listen_spec *sp);

#endif
