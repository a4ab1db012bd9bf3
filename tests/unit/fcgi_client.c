/* fcgi_client.c -- a minimal FastCGI client for tests: send one request as a web server would, read the answer. */
#include "fcgi_client.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

enum { BEGIN_REQUEST = 1, END_REQUEST = 3, PARAMS = 4, STDIN = 5, STDOUT = 6, STDERR = 7 };

int fcgi_test_listen(char *path_out)
{
    char dir[] = "/tmp/llmcgi-unit-XXXXXX";
    if (!mkdtemp(dir))
        return -1;
    snprintf(path_out, 108, "%s/fcgi.sock", dir);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, path_out);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 64) < 0)
        return -1;
    return fd;
}

void fcgi_test_unlisten(int fd, const char *path)
{
    char dir[108];
    close(fd);
    unlink(path);
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = '\0';
        rmdir(dir);
    }
}

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int record(int fd, int type, const void *data, size_t len)
{
    unsigned char h[8] = {1, (unsigned char)type, 0, 1, (unsigned char)(len >> 8), (unsigned char)len, 0, 0};
    return write_all(fd, h, 8) || (len && write_all(fd, data, len)) ? -1 : 0;
}

static size_t put_length(unsigned char *p, size_t n)
{
    if (n < 128) {
        p[0] = (unsigned char)n;
        return 1;
    }
    p[0] = (unsigned char)((n >> 24) | 0x80);
    p[1] = (unsigned char)(n >> 16);
    p[2] = (unsigned char)(n >> 8);
    p[3] = (unsigned char)n;
    return 4;
}

int fcgi_client_request(const char *path, const char *const *params, const char *body, size_t body_len)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, path);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        goto fail;
    unsigned char begin[8] = {0, 1 /* responder */, 0 /* no keep-conn */};
    if (record(fd, BEGIN_REQUEST, begin, 8) < 0)
        goto fail;
    for (size_t i = 0; params && params[i]; i++) {
        const char *eq = strchr(params[i], '=');
        size_t nl = (size_t)(eq - params[i]), vl = strlen(eq + 1);
        unsigned char buf[65535];
        size_t pos = put_length(buf, nl);
        pos += put_length(buf + pos, vl);
        if (pos + nl + vl > sizeof buf)
            goto fail;
        memcpy(buf + pos, params[i], nl);
        memcpy(buf + pos + nl, eq + 1, vl);
        if (record(fd, PARAMS, buf, pos + nl + vl) < 0)
            goto fail;
    }
    if (record(fd, PARAMS, NULL, 0) < 0)
        goto fail;
    for (size_t off = 0; off < body_len;) {
        size_t chunk = body_len - off > 65535 ? 65535 : body_len - off;
        if (record(fd, STDIN, body + off, chunk) < 0)
            goto fail;
        off += chunk;
    }
    if (record(fd, STDIN, NULL, 0) < 0)
        goto fail;
    shutdown(fd, SHUT_WR);
    return fd;
fail:
    if (fd >= 0)
        close(fd);
    return -1;
}

static int read_full(int fd, void *buf, size_t len)
{
    char *p = buf;
    while (len) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int fcgi_client_read(int fd, struct fcgi_answer *a)
{
    memset(a, 0, sizeof *a);
    char *out = NULL;
    size_t out_len = 0;
    unsigned char h[8], content[65535 + 255];
    while (read_full(fd, h, 8) == 0) {
        size_t len = ((size_t)h[4] << 8) | h[5], pad = h[6];
        if (h[0] != 1 || read_full(fd, content, len + pad) < 0) {
            free(out);
            return -1;
        }
        if (h[1] == STDOUT && len) {
            char *grown = realloc(out, out_len + len + 1);
            if (!grown) {
                free(out);
                return -1;
            }
            out = grown;
            memcpy(out + out_len, content, len);
            out_len += len;
            out[out_len] = '\0';
        } else if (h[1] == END_REQUEST) {
            a->ended = 1;
            break;
        }
    }
    if (!out)
        out = calloc(1, 1);
    char *split = strstr(out, "\r\n\r\n");
    size_t head_len = split ? (size_t)(split - out) : out_len;
    a->head = strndup(out, head_len);
    size_t body_off = split ? head_len + 4 : out_len;
    a->body_len = out_len - body_off;
    a->body = malloc(a->body_len + 1);
    memcpy(a->body, out + body_off, a->body_len);
    a->body[a->body_len] = '\0';
    free(out);
    char st[16];
    a->status = fcgi_answer_header(a, "Status", st, sizeof st) ? atoi(st) : 200;
    return 0;
}

void fcgi_answer_free(struct fcgi_answer *a)
{
    free(a->head);
    free(a->body);
    memset(a, 0, sizeof *a);
}

const char *fcgi_answer_header(const struct fcgi_answer *a, const char *name, char *buf, size_t len)
{
    size_t nl = strlen(name);
    for (const char *line = a->head; line && *line;) {
        const char *end = strstr(line, "\r\n");
        size_t ll = end ? (size_t)(end - line) : strlen(line);
        if (ll > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ')
                v++;
            snprintf(buf, len, "%.*s", (int)(ll - (size_t)(v - line)), v);
            return buf;
        }
        line = end ? end + 2 : line + ll;
    }
    return NULL;
}
