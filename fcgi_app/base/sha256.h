/* sha256.c -- SHA-256 digests (libcrypto), hex conversion and constant-time comparison, for API keys. */
#ifndef LLMCGI_SHA256_H
#define LLMCGI_SHA256_H

#include <stdbool.h>
#include <stddef.h>

#define SHA256_LEN 32

/* out = SHA-256 of data[0..len). Returns 0, or -1 when libcrypto fails. */
int sha256(const void *data, size_t len, unsigned char out[SHA256_LEN]);

/* 64 lowercase hex digits and a NUL into out. */
void sha256_hex(const unsigned char d[SHA256_LEN], char out[2 * SHA256_LEN + 1]);

/* Parses exactly 64 hex digits (either case) into out. Returns 0 or -1. */
int sha256_from_hex(const char *hex, unsigned char out[SHA256_LEN]);

/* a == b, taking the same time whatever the contents. */
bool sha256_equal(const unsigned char a[SHA256_LEN], const unsigned char b[SHA256_LEN]);

#endif
