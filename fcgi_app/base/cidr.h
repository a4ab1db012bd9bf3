/* cidr.c -- address blocks ("10.0.0.0/8 ::1 fd00::/8"): parsing a list and matching an address against it. */
#ifndef LLMCGI_CIDR_H
#define LLMCGI_CIDR_H

#include <stdbool.h>
#include <stddef.h>

/* An address block of [limits] trusted_proxies or [server] web_server_addrs. */
struct cidr {
    int family;                     /* AF_INET or AF_INET6 */
    unsigned char addr[16];
    int bits;
};

/* Parses one textual address into family/addr; IPv4-mapped IPv6 becomes IPv4. */
bool cidr_parse_addr(const char *s, int *family, unsigned char addr[16]);

/* Parses "127.0.0.1 10.0.0.0/8 ::1 fd00::/8" into a new array (*out, owned
 * by the caller, free()). Returns 0, or -1 with the reason in err. */
int cidr_parse_list(const char *value, struct cidr **out, size_t *n, char *err, size_t errlen);

/* Is the textual address `addr` inside one of v[0..n)? (IPv4-mapped IPv6 counts as IPv4.) */
bool cidr_list_contains(const struct cidr *v, size_t n, const char *addr);

#endif
