/* cidr.c -- address blocks ("10.0.0.0/8 ::1 fd00::/8"): parsing a list and matching an address against it. */
#include "config.h"
#include "cidr.h"
#include "util.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* Parses one address into family/addr; IPv4-mapped IPv6 becomes IPv4. */
bool cidr_parse_addr(const char *s, int *family, unsigned char addr[16])
{
    memset(addr, 0, 16);
    if (inet_pton(AF_INET, s, addr) == 1) {
        *family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, s, addr) == 1) {
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(addr, mapped, 12) == 0) {
            memmove(addr, addr + 12, 4);
            memset(addr + 4, 0, 12);
            *family = AF_INET;
        } else {
            *family = AF_INET6;
        }
        return true;
    }
    return false;
}

int cidr_parse_list(const char *value, struct cidr **out, size_t *n, char *err, size_t errlen)
{
    *out = NULL;
    *n = 0;
    char *copy = strdup(value), *save = NULL;
    size_t cap = 1;
    for (const char *p = value; *p; p++)
        cap += *p == ' ' || *p == '\t' || *p == ',';
    struct cidr *v = calloc(cap, sizeof *v);
    if (!copy || !v) {
        snprintf(err, errlen, "out of memory");
        goto bad;
    }
    for (char *w = strtok_r(copy, " \t,", &save); w; w = strtok_r(NULL, " \t,", &save)) {
        struct cidr *c = &v[*n];
        char *slash = strchr(w, '/');
        if (slash)
            *slash = '\0';
        if (!cidr_parse_addr(w, &c->family, c->addr)) {
            snprintf(err, errlen, "\"%s\" is not an IPv4 or IPv6 address", w);
            goto bad;
        }
        int maxbits = c->family == AF_INET ? 32 : 128;
        c->bits = maxbits;
        if (slash) {
            long b;
            if (util_parse_long(slash + 1, &b) < 0 || b < 0 || b > maxbits) {
                snprintf(err, errlen, "\"%s/%s\": the prefix length must be 0 to %d", w, slash + 1,
                         maxbits);
                goto bad;
            }
            c->bits = (int)b;
        }
        (*n)++;
    }
    free(copy);
    *out = v;
    return 0;
bad:
    free(copy);
    free(v);
    *n = 0;
    return -1;
}

static bool cidr_match(const struct cidr *c, int family, const unsigned char addr[16])
{
    if (c->family != family)
        return false;
    int full = c->bits / 8, rest = c->bits % 8;
    if (memcmp(c->addr, addr, (size_t)full) != 0)
        return false;
    if (rest == 0)
        return true;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (c->addr[full] & mask) == (addr[full] & mask);
}

bool cidr_list_contains(const struct cidr *v, size_t n, const char *addr)
{
    int family;
    unsigned char a[16];
    if (!addr || !cidr_parse_addr(addr, &family, a))
        return false;
    for (size_t i = 0; i < n; i++)
        if (cidr_match(&v[i], family, a))
            return true;
    return false;
}
