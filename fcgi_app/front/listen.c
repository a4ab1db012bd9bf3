/* listen.c -- the FastCGI listening socket: from systemd, inherited on fd 0, or created from `listen`. */
#include "config.h"
#include "listen.h"
#include "sysd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static bool is_listening_stream(int fd)
{
    int v = 0, type = 0;
    socklen_t l = sizeof v, tl = sizeof type;
    return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &l) == 0 && v &&
           getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) == 0 && type == SOCK_STREAM;
}

/* A unix socket file left behind by a dead process is removed; one that
 * still accepts connections belongs to a live server and is an error. */
static int clear_stale_socket(const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : (snprintf(err, errlen, "%s: %s", path, strerror(errno)), -1);
    if (!S_ISSOCK(st.st_mode)) {
        snprintf(err, errlen, "%s exists and is not a socket", path);
        return -1;
    }
    /* non-blocking: a live server with a full backlog answers EAGAIN instead of blocking us */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, path);
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa), saved = errno;
    close(fd);
    if (rc == 0) {
        snprintf(err, errlen, "%s is in use by a running process", path);
        return -1;
    }
    if (saved != ECONNREFUSED) {
        /* EACCES, EAGAIN (a full backlog): maybe alive; never delete it */
        snprintf(err, errlen, "cannot tell whether %s is in use (%s); remove it if it is stale", path, strerror(saved));
        return -1;
    }
    if (unlink(path) < 0) {
        snprintf(err, errlen, "cannot remove stale socket %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int open_unix(struct listener *l, const struct listen_spec *sp, int backlog, unsigned mode,
                     char *err, size_t errlen)
{
    if (clear_stale_socket(sp->path, err, errlen) < 0)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, sp->path);
    struct stat st;
    /* bind, then chmod, then listen: no connection is accepted before the mode is right */
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        snprintf(err, errlen, "bind %s: %s", sp->path, strerror(errno));
        close(fd);
        return -1;
    }
    if (chmod(sp->path, mode) < 0 || stat(sp->path, &st) < 0 || listen(fd, backlog) < 0) {
        snprintf(err, errlen, "set up %s: %s", sp->path, strerror(errno));
        close(fd);
        unlink(sp->path);
        return -1;
    }
    l->fd = fd;
    l->created = true;
    strcpy(l->unlink_path, sp->path);
    l->dev = st.st_dev;
    l->ino = st.st_ino;
    snprintf(l->desc, sizeof l->desc, "unix:%s (mode %04o)", sp->path, mode);
    return 0;
}

static bool is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
    return false;
}

static int open_tcp(struct listener *l, const struct listen_spec *sp, int backlog, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV}, *res, *ai;
    int rc = getaddrinfo(sp->host[0] ? sp->host : NULL, sp->port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve %s: %s", sp->host, gai_strerror(rc));
        return -1;
    }
    int fd = -1, saved = 0;
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, backlog) == 0)
            break;
        saved = errno;
        close(fd);
        fd = -1;
    }
    if (fd < 0) {
        freeaddrinfo(res);
        snprintf(err, errlen, "cannot listen on %s:%s: %s", sp->host[0] ? sp->host : "*", sp->port, strerror(saved));
        return -1;
    }
    freeaddrinfo(res);
    l->fd = fd;
    snprintf(l->desc, sizeof l->desc, "tcp:%s:%s", sp->host[0] ? sp->host : "*", sp->port);
    return 0;
}

static int open_spec(struct listener *l, const char *spec, const char *what, int backlog, unsigned mode,
                     char *err, size_t errlen)
{
    struct listen_spec sp;
    char perr[200];
    if (listen_parse(spec, &sp, perr, sizeof perr) < 0) {
        snprintf(err, errlen, "%s: %s", what, perr);
        return -1;
    }
    return sp.kind == LISTEN_UNIX ? open_unix(l, &sp, backlog, mode, err, errlen)
                                  : open_tcp(l, &sp, backlog, err, errlen);
}

int listener_open(struct listener *l, const char *cmdline, const char *config_spec,
                  int backlog, unsigned mode, char *err, size_t errlen)
{
    memset(l, 0, sizeof *l);
    l->fd = -1;
    if (cmdline)
        return open_spec(l, cmdline, "--listen", backlog, mode, err, errlen);

    int n = sysd_listen_fds();
    if (n > 1) {
        snprintf(err, errlen, "systemd passed %d sockets; llmcgi takes exactly one (one ListenStream= in llmcgi.socket)", n);
        return -1;
    }
    if (n == 1) {
        if (!is_listening_stream(SYSD_LISTEN_FDS_START)) {
            snprintf(err, errlen, "the socket passed by systemd is not a listening stream socket");
            return -1;
        }
        l->fd = SYSD_LISTEN_FDS_START;
        snprintf(l->desc, sizeof l->desc, "socket from systemd (fd %d)", l->fd);
        return 0;
    }
    if (is_listening_stream(0)) {
        l->fd = 0;
        snprintf(l->desc, sizeof l->desc, "socket inherited on fd 0");
        return 0;
    }
    if (config_spec)
        return open_spec(l, config_spec, "listen", backlog, mode, err, errlen);
    snprintf(err, errlen, "nowhere to listen: set `listen` in [server], pass --listen, "
             "or start llmcgi with a socket (systemd llmcgi.socket, spawn-fcgi)");
    return -1;
}

bool listener_exposed(const struct listener *l)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (l->fd < 0 || getsockname(l->fd, (struct sockaddr *)&ss, &sl) < 0)
        return false;
    return (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) && !is_loopback((struct sockaddr *)&ss);
}

void listener_close(struct listener *l)
{
    if (l->fd < 0)
        return;
    if (l->created && l->unlink_path[0]) {
        struct stat st;
        if (stat(l->unlink_path, &st) == 0 && st.st_dev == l->dev && st.st_ino == l->ino)
            unlink(l->unlink_path);
    }
    close(l->fd);
    l->fd = -1;
}
