/* proxy.c -- the gateway to remote model servers (TGI, transformers serve, OpenAI-compatible, HTTP).
 *
 * For now: the process-wide libcurl set-up, which must happen before any
 * thread starts (curl_global_init is not thread-safe). Upstream routing,
 * health checks and the dialect adapters build on this module. */
#ifndef LLMCGI_PROXY_H
#define LLMCGI_PROXY_H

#include <stddef.h>

/* Initialises libcurl. Call once, before threads. Returns 0; 1 with a
 * warning in err (works, with a limitation); -1 with the error in err. */
int proxy_global_init(char *err, size_t errlen);

/* Releases libcurl's global state (after every thread has stopped). */
void proxy_global_cleanup(void);

/* "libcurl/7.88.1 OpenSSL/3.0.x ..." for --version. */
const char *proxy_library_version(void);

#endif
