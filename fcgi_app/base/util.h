/* util.c -- small helpers shared by every module: clocks, unit parsing, random ids, escaping. */
#ifndef LLMCGI_UTIL_H
#define LLMCGI_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Monotonic clock in nanoseconds (for durations and deadlines). */
int64_t util_now_ns(void);

/* Parsers for config values. Each returns 0 and sets *out, or -1 when `s` is
 * not a well-formed value (no partial parses, no trailing junk). */
int util_parse_long(const char *s, long *out);              /* decimal */
int util_parse_bool(const char *s, bool *out);              /* on/off yes/no true/false 1/0 */
int util_parse_duration_ms(const char *s, int64_t *out);    /* 250ms 15s 2m 1h; bare = seconds */
int util_parse_size(const char *s, uint64_t *out);          /* 512 64k 8M 1G (powers of 1024) */
int util_parse_octal(const char *s, unsigned *out);         /* 0660 */

/* Formats `ms` as the shortest exact unit ("15s", "250ms"). */
void util_format_duration(char *buf, size_t len, int64_t ms);

/* A random 64-bit number from the same per-thread generator (xoshiro256**
 * seeded from getrandom()): for load-balancing picks and jitter, not keys. */
uint64_t util_random_u64(void);

/* One step of xoshiro256** over state s (not all zero): the generator behind
 * util_random_u64 and the sampler's seeded draws (integer-only, so the same
 * stream on every machine). */
uint64_t util_xoshiro_next(uint64_t s[4]);

/* Fills `out` with 2*nbytes lowercase hex digits and a NUL (out must hold
 * 2*nbytes+1). Fast per-thread generator seeded from getrandom(): ids, not keys. */
void util_random_hex(char *out, size_t nbytes);

/* The value of hex digit c (0-9, a-f, A-F), or -1. */
int util_hexval(char c);

/* Local time as "2026-11-22T15:04:05.123+01:00" into buf (>= 32 bytes). */
void util_format_time(char *buf, size_t len, const struct timespec *ts);

/* The length of the well-formed UTF-8 sequence at p (RFC 3629: no overlong
 * forms, no surrogates, nothing above U+10FFFF), or 0; p < end. json-c's
 * own check lets overlong forms such as C0 AF ("/") through. */
size_t util_utf8_seq(const unsigned char *p, const unsigned char *end);

/* Replaces, in place, each byte of s that does not begin a well-formed
 * UTF-8 sequence with '?' (e.g. a name from a URL, or a message cut
 * mid-character), so that it can go into JSON. */
void util_utf8_scrub(char *s);

/* Decodes %XX escapes (and nothing else) from src[0..n) into dst (>= n+1 bytes).
 * Returns the decoded length, or -1 on a malformed escape or a decoded NUL. */
long util_url_decode(char *dst, const char *src, size_t n);

/* A growable string. s is NUL-terminated once anything was added (NULL
 * before). An append that runs out of memory sets nomem and freezes the
 * buffer, so a builder checks once at the end. The buffer owns s. */
struct strbuf {
    char *s;
    size_t len, cap;
    bool nomem;
};
void strbuf_add(struct strbuf *b, const char *s, size_t n);
void strbuf_puts(struct strbuf *b, const char *s);
void strbuf_free(struct strbuf *b);

#endif
