/* sha256.c -- SHA-256 digests (libcrypto), hex conversion and constant-time comparison, for API keys.
 *
 * libcrypto is already a dependency (configure requires it; llmcgi-model
 * checks downloads with it), so the digest is OpenSSL's rather than a
 * hand-written one; the comparison is CRYPTO_memcmp. */
#include "config.h"
#include "sha256.h"
#include "util.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <string.h>

int sha256(const void *data, size_t len, unsigned char out[SHA256_LEN])
{
    unsigned int n = 0;
    if (EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) != 1 || n != SHA256_LEN) {
        memset(out, 0, SHA256_LEN);
        return -1;
    }
    return 0;
}

void sha256_hex(const unsigned char d[SHA256_LEN], char out[2 * SHA256_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < SHA256_LEN; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[2 * SHA256_LEN] = '\0';
}

int sha256_from_hex(const char *hex, unsigned char out[SHA256_LEN])
{
    if (strlen(hex) != 2 * SHA256_LEN)
        return -1;
    for (size_t i = 0; i < SHA256_LEN; i++) {
        int hi = util_hexval(hex[2 * i]), lo = util_hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

bool sha256_equal(const unsigned char a[SHA256_LEN], const unsigned char b[SHA256_LEN])
{
    return CRYPTO_memcmp(a, b, SHA256_LEN) == 0;
}
