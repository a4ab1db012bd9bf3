/* cors_origins.c -- the [cors] allow_origins syntax: exact origins ("scheme://host[:port]") or "*". */
#ifndef LLMCGI_CORS_ORIGINS_H
#define LLMCGI_CORS_ORIGINS_H

#include <stdbool.h>
#include <stddef.h>

/* Parses [cors] allow_origins ("https://a.example http://localhost:8080", or
 * "*") into a new array of strings (*out and its strings owned by the
 * caller) and *any. Returns 0, or -1 with the reason in err. */
int cors_parse_origins(const char *value, char ***out, size_t *n, bool *any, char *err, size_t errlen);

#endif
