/* proxy.c -- the gateway to remote model servers; for now the process-wide libcurl set-up. */
#include "config.h"
#include "proxy.h"

#include <curl/curl.h>
#include <stdio.h>

int proxy_global_init(char *err, size_t errlen)
{
    CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (rc != CURLE_OK) {
        snprintf(err, errlen, "curl_global_init: %s", curl_easy_strerror(rc));
        return -1;
    }
    curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    if (!v || !(v->features & CURL_VERSION_ASYNCHDNS)) {
        /* Without a thread-safe resolver, name lookups in threads need
         * CURLOPT_NOSIGNAL and cannot time out; say so once. */
        snprintf(err, errlen, "libcurl lacks an asynchronous resolver: DNS lookups of upstreams cannot time out");
        return 1;
    }
    return 0;
}

void proxy_global_cleanup(void)
{
    curl_global_cleanup();
}

const char *proxy_library_version(void)
{
    return curl_version();
}
