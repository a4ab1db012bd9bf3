/* util.c -- small helpers shared by every module: clocks, unit parsing, random ids, escaping. */
#include "config.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

int64_t util_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int util_parse_long(const char *s, long *out)
{
    char *end;
    if (!s || !*s || isspace((unsigned char)*s))
        return -1;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

int util_parse_bool(const char *s, bool *out)
{
    static const char *yes[] = {"on", "yes", "true", "1"};
    static const char *no[] = {"off", "no", "false", "0"};
    for (size_t i = 0; i < ARRAY_LEN(yes); i++) {
        if (strcasecmp(s, yes[i]) == 0) { *out = true; return 0; }
        if (strcasecmp(s, no[i]) == 0) { *out = false; return 0; }
    }
    return -1;
}

struct unit {
    const char *suffix;
    uint64_t scale;
};

/* Parses "<digits><suffix>" where suffix is one of units[]; the result is
 * digits * scale, refused when it does not fit below `max`. */
static int parse_scaled(const char *s, const struct unit *units, size_t n, uint64_t max, uint64_t *out)
{
    if (!s || !isdigit((unsigned char)*s))
        return -1;
    uint64_t v = 0;
    while (isdigit((unsigned char)*s)) {
        unsigned d = (unsigned)(*s++ - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(s, units[i].suffix) == 0) {
            if (v > max / units[i].scale)
                return -1;
            *out = v * units[i].scale;
            return 0;
        }
    }
    return -1;
}

int util_parse_duration_ms(const char *s, int64_t *out)
{
    static const struct unit units[] = {
        {"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000},
    };
    uint64_t v;
    if (parse_scaled(s, units, ARRAY_LEN(units), INT64_MAX, &v) < 0)
        return -1;
    *out = (int64_t)v;
    return 0;
}

int util_parse_size(const char *s, uint64_t *out)
{
    static const struct unit units[] = {
        {"", 1}, {"k", 1 << 10}, {"K", 1 << 10}, {"m", 1 << 20}, {"M", 1 << 20}, {"g", 1 << 30}, {"G", 1 << 30},
    };
    return parse_scaled(s, units, ARRAY_LEN(units), UINT64_MAX, out);
}

int util_parse_octal(const char *s, unsigned *out)
{
    unsigned v = 0;
    if (!s || !*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '7' || v > 07777)
            return -1;
        v = v * 8 + (unsigned)(*s - '0');
    }
    *out = v;
    return 0;
}

void util_format_duration(char *buf, size_t len, int64_t ms)
{
    if (ms % 3600000 == 0 && ms)
        snprintf(buf, len, "%lldh", (long long)(ms / 3600000));
    else if (ms % 60000 == 0 && ms)
        snprintf(buf, len, "%lldm", (long long)(ms / 60000));
    else if (ms % 1000 == 0)
        snprintf(buf, len, "%llds", (long long)(ms / 1000));
    else
        snprintf(buf, len, "%lldms", (long long)ms);
}

/* xoshiro256** per thread, seeded once from getrandom(). */
static _Thread_local uint64_t rng_state[4];
static _Thread_local bool rng_seeded;

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t util_random_u64(void)
{
    if (!rng_seeded) {
        if (getrandom(rng_state, sizeof rng_state, 0) != (ssize_t)sizeof rng_state) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            rng_state[0] = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32);
            rng_state[1] = (uint64_t)(uintptr_t)&ts;
            rng_state[2] = 0x9e3779b97f4a7c15ull;
            rng_state[3] = (uint64_t)util_now_ns();
        }
        rng_seeded = true;
    }
    return util_xoshiro_next(rng_state);
}

uint64_t util_xoshiro_next(uint64_t s[4])
{
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

void util_random_hex(char *out, size_t nbytes)
{
    static const char hex[] = "0123456789abcdef";
    uint64_t v = 0;
    for (size_t i = 0; i < nbytes; i++) {
        if (i % 8 == 0)
            v = util_random_u64();
        unsigned b = v & 0xff;
        v >>= 8;
        out[2 * i] = hex[b >> 4];
        out[2 * i + 1] = hex[b & 15];
    }
    out[2 * nbytes] = '\0';
}

void util_format_time(char *buf, size_t len, const struct timespec *ts)
{
    /* localtime_r and strftime run once a second per thread, not per line */
    static _Thread_local time_t cached_sec = -1;
    static _Thread_local char date[24], zone[8];
    if (ts->tv_sec != cached_sec) {
        struct tm tm;
        localtime_r(&ts->tv_sec, &tm);
        strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
        long off = tm.tm_gmtoff / 60;
        snprintf(zone, sizeof zone, "%c%02ld:%02ld", off < 0 ? '-' : '+', labs(off) / 60, labs(off) % 60);
        cached_sec = ts->tv_sec;
    }
    snprintf(buf, len, "%s.%03ld%s", date, ts->tv_nsec / 1000000, zone);
}

int util_hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

long util_url_decode(char *dst, const char *src, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = src[i];
        if (c == '%') {
            if (i + 2 >= n)
                return -1;
            int hi = util_hexval(src[i + 1]), lo = util_hexval(src[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = (char)(hi * 16 + lo);
            i += 2;
        }
        if (c == '\0')
            return -1;
        dst[o++] = c;
    }
    dst[o] = '\0';
    return (long)o;
}

void strbuf_add(struct strbuf *b, const char *s, size_t n)
{
    if (b->nomem)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->nomem = true;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    if (n)                                      /* s may be NULL when n is 0 */
        memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

void strbuf_puts(struct strbuf *b, const char *s)
{
    strbuf_add(b, s, strlen(s));
}

void strbuf_free(struct strbuf *b)
{
    free(b->s);
    *b = (struct strbuf){0};
}

size_t util_utf8_seq(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0];
    size_t n = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (!n || (size_t)(end - p) < n)
        return 0;
    for (size_t i = 1; i < n; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    if ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] > 0x9f) ||     /* overlong; a surrogate */
        (c == 0xf0 && p[1] < 0x90) || (c == 0xf4 && p[1] > 0x8f))       /* overlong; above U+10FFFF */
        return 0;
    return n;
}

void util_utf8_scrub(char *s)
{
    const unsigned char *end = (const unsigned char *)s + strlen(s);
    for (unsigned char *p = (unsigned char *)s; p < end;) {
        size_t n = util_utf8_seq(p, end);
        if (!n) {
            *p++ = '?';
            continue;
        }
        p += n;
    }
}
