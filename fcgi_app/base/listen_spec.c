/* listen_spec.c -- the `listen` address syntax: unix:/path, host:port, [v6]:port, :port. */
#include "config.h"
#include "listen_spec.h"
#include "cidr.h"

#include <sys/socket.h>

#include <stdio.h>
#include <string.h>
#include <strings.h>

int listen_parse(const char *s, struct listen_spec *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!s || !*s) {
        snprintf(err, errlen, "empty listen address");
        return -1;
    }
    if (strncmp(s, "unix:", 5) == 0 || s[0] == '/') {
        const char *path = s[0] == '/' ? s : s + 5;
        if (path[0] != '/') {
            snprintf(err, errlen, "unix socket path must be absolute: \"%s\"", path);
            return -1;
        }
        if (strlen(path) >= sizeof out->path) {
            snprintf(err, errlen, "unix socket path longer than %zu bytes: \"%s\"", sizeof out->path - 1, path);
            return -1;
        }
        out->kind = LISTEN_UNIX;
        strcpy(out->path, path);
        return 0;
    }
    out->kind = LISTEN_TCP;
    const char *colon;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':') {
            snprintf(err, errlen, "expected [ipv6]:port, got \"%s\"", s);
            return -1;
        }
        size_t hl = (size_t)(close - s - 1);
        if (hl == 0 || hl >= sizeof out->host) {
            snprintf(err, errlen, "bad IPv6 address in \"%s\"", s);
            return -1;
        }
        memcpy(out->host, s + 1, hl);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon) {
            snprintf(err, errlen, "expected unix:/path or host:port, got \"%s\"", s);
            return -1;
        }
        size_t hl = (size_t)(colon - s);
        if (hl >= sizeof out->host || memchr(s, ':', hl)) {
            snprintf(err, errlen, "bad host in \"%s\" (write IPv6 addresses as [addr]:port)", s);
            return -1;
        }
        memcpy(out->host, s, hl);
        if (strcmp(out->host, "*") == 0)
            out->host[0] = '\0';
    }
    const char *port = colon + 1;
    size_t pl = strlen(port);
    long pv = 0;
    for (size_t i = 0; i < pl; i++) {
        if (port[i] < '0' || port[i] > '9' || (pv = pv * 10 + (port[i] - '0')) > 65535) {
            pv = -1;
            break;
        }
    }
    if (pl == 0 || pl >= sizeof out->port || pv < 1 || pv > 65535) {
        snprintf(err, errlen, "bad port in \"%s\" (1-65535)", s);
        return -1;
    }
    memcpy(out->port, port, pl + 1);
    return 0;
}

bool listen_spec_loopback(const struct listen_spec *sp)
{
    if (sp->kind != LISTEN_TCP || !sp->host[0])
        return false;
    if (strcasecmp(sp->host, "localhost") == 0)
        return true;
    int family;
    unsigned char a[16];
    if (!cidr_parse_addr(sp->host, &family, a))
        return false;
    static const unsigned char v6_loopback[16] = {[15] = 1};
    return family == AF_INET ? a[0] == 127 : memcmp(a, v6_loopback, 16) == 0;
}
