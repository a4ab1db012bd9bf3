/* model_pull.c -- llmcgi-model pull: a Hugging Face model repository's file list, each file downloaded (resumable, sha256- and size-checked against the hub's) into a staging directory, then installed. */
#include "config.h"
#include "model_cli.h"
#include "conf.h"
#include "router.h"
#include "util.h"

#include <ctype.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

/* ------------------------------------------------------------------ sha256 */

/* A running SHA-256; owns ctx. */
struct sha {
    EVP_MD_CTX *ctx;
};

static int sha_init(struct sha *h)
{
    h->ctx = EVP_MD_CTX_new();
    if (!h->ctx || EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(h->ctx);
        h->ctx = NULL;
        return -1;
    }
    return 0;
}

static int sha_update(struct sha *h, const void *p, size_t n)
{
    return EVP_DigestUpdate(h->ctx, p, n) == 1 ? 0 : -1;
}

/* Finishes into 64 lowercase hex digits + NUL and frees the context. */
static int sha_final(struct sha *h, char hex[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    int ok = EVP_DigestFinal_ex(h->ctx, md, &n) == 1 && n == 32;
    EVP_MD_CTX_free(h->ctx);
    h->ctx = NULL;
    if (!ok)
        return -1;
    for (unsigned i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return 0;
}

static void sha_free(struct sha *h)
{
    EVP_MD_CTX_free(h->ctx);
    h->ctx = NULL;
}

/* Feeds the first `limit` bytes of `path` (all when limit < 0) into h; *size gets
 * the bytes read. 0, or -1 with errno. */
static int sha_file(struct sha *h, const char *path, long long limit, long long *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    static unsigned char buf[1 << 20];
    long long total = 0;
    size_t got;
    while ((limit < 0 || total < limit) &&
           (got = fread(buf, 1, limit < 0 || limit - total > (long long)sizeof buf ? sizeof buf : (size_t)(limit - total),
                        f)) > 0) {
        if (sha_update(h, buf, got) != 0) {
            fclose(f);
            errno = EIO;
            return -1;
        }
        total += (long long)got;
    }
    int err = ferror(f) ? EIO : 0;
    fclose(f);
    *size = total;
    if (err) {
        errno = err;
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ HTTP */

/* The headers of the last answer seen (a redirect's, then the final one's). */
struct hdrs {
    long status;
    char etag[160], linked_etag[160];
    long long content_length, linked_size;
    char location[2048];
    char content_range[96];
    char error_code[64], error_msg[256];
};

/* One pull; owns curl, auth and the paths. */
struct pull {
    const char *endpoint;       /* HF_ENDPOINT without a trailing slash */
    const char *name, *revision;
    char commit[80];            /* the revision's commit sha (from the API), used for every file */
    struct curl_slist *auth;    /* "Authorization: Bearer ..." or NULL; never printed */
    CURL *curl;
    char errbuf[CURL_ERROR_SIZE];
    bool tty;
    char final[PATH_MAX], tmp[PATH_MAX], old[PATH_MAX];
    int downloaded;             /* files fetched (not already present) */
    long long bytes;            /* bytes fetched */

    /* the transfer in flight */
    FILE *out;
    struct sha *hash;
    long long offset, expect;   /* resumed from; expected total size or -1 */
    int write_errno;
    const char *file;
    int64_t last_draw_ns, start_ns;
    bool started, bad_range;    /* body begun; a 206 for another range than asked */
    struct hdrs *hd;            /* the transfer's headers */
    struct strbuf *mem;         /* GET into memory */
    size_t mem_max;
};

static void copy_value(char *dst, size_t cap, const char *v, size_t n)
{
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, v, n);
    dst[n] = '\0';
}

static size_t on_header(char *data, size_t size, size_t n, void *ud)
{
    struct hdrs *h = ud;
    size_t len = size * n, l = len;
    while (l && (data[l - 1] == '\n' || data[l - 1] == '\r'))
        l--;
    if (l >= 5 && memcmp(data, "HTTP/", 5) == 0) {     /* a new answer: forget the previous one's */
        const char *sp = memchr(data, ' ', l);
        memset(h, 0, sizeof *h);
        h->content_length = h->linked_size = -1;
        h->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        return len;
    }
    const char *colon = memchr(data, ':', l);
    if (!colon)
        return len;
    size_t kl = (size_t)(colon - data);
    const char *v = colon + 1, *end = data + l;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    size_t vl = (size_t)(end - v);
#define IS(k) (kl == sizeof(k) - 1 && strncasecmp(data, k, kl) == 0)
    if (IS("ETag"))
        copy_value(h->etag, sizeof h->etag, v, vl);
    else if (IS("X-Linked-Etag"))
        copy_value(h->linked_etag, sizeof h->linked_etag, v, vl);
    else if (IS("Content-Length"))
        h->content_length = strtoll(v, NULL, 10);
    else if (IS("X-Linked-Size"))
        h->linked_size = strtoll(v, NULL, 10);
    else if (IS("Location"))
        copy_value(h->location, sizeof h->location, v, vl);
    else if (IS("Content-Range"))
        copy_value(h->content_range, sizeof h->content_range, v, vl);
    else if (IS("X-Error-Code"))
        copy_value(h->error_code, sizeof h->error_code, v, vl);
    else if (IS("X-Error-Message"))
        copy_value(h->error_msg, sizeof h->error_msg, v, vl);
#undef IS
    return len;
}

static void draw_progress(struct pull *p, long long now_bytes, bool force)
{
    int64_t now = util_now_ns();
    if (!force && now - p->last_draw_ns < 200000000)
        return;
    p->last_draw_ns = now;
    char a[32], b[32], r[32];
    double secs = (double)(now - p->start_ns) / 1e9;
    double rate = secs > 0 ? (double)(now_bytes - p->offset) / secs : 0;
    if (p->expect > 0)
        fprintf(stderr, "\r\033[K  %-34.34s %3d%%  %s / %s  %s/s", p->file, (int)(100.0 * (double)now_bytes / (double)p->expect),
                human(a, sizeof a, (double)now_bytes), human(b, sizeof b, (double)p->expect), human(r, sizeof r, rate));
    else
        fprintf(stderr, "\r\033[K  %-34.34s %s  %s/s", p->file, human(a, sizeof a, (double)now_bytes),
                human(r, sizeof r, rate));
    fflush(stderr);
}

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
    struct pull *p = ud;
    size_t len = size * n;
    long status = 0;
    if (curl_easy_getinfo(p->curl, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK)
        return 0;
    if (status != 200 && status != 206)         /* an error page: not part of the file */
        return len;
    if (!p->mem && !p->started) {
        p->started = true;
        if (status == 200 && p->offset > 0) {   /* the whole file again: start over */
            if (fflush(p->out) != 0 || ftruncate(fileno(p->out), 0) != 0) {
                p->write_errno = errno ? errno : EIO;
                return 0;
            }
            sha_free(p->hash);
            if (sha_init(p->hash) != 0) {
                p->write_errno = EIO;
                return 0;
            }
            p->offset = 0;
        } else if (status == 206) {
            long long start = -1;
            if (p->hd && sscanf(p->hd->content_range, "bytes %lld-", &start) != 1)
                start = -1;
            if (start != p->offset) {
                p->bad_range = true;
                return 0;
            }
        }
    }
    if (p->mem) {
        if (p->mem->len + len > p->mem_max)
            return 0;
        strbuf_add(p->mem, data, len);
        return p->mem->nomem ? 0 : len;
    }
    if (fwrite(data, 1, len, p->out) != len) {
        p->write_errno = errno ? errno : EIO;
        return 0;
    }
    if (sha_update(p->hash, data, len) != 0) {
        p->write_errno = EIO;
        return 0;
    }
    p->bytes += (long long)len;
    return len;
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    (void)dltotal;
    (void)ultotal;
    (void)ulnow;
    struct pull *p = ud;
    if (p->tty && p->out)
        draw_progress(p, p->offset + (long long)dlnow, false);
    return 0;
}

#define SETOPT(c, opt, val)                                 \
    do {                                                    \
        CURLcode e_ = curl_easy_setopt((c), (opt), (val));  \
        if (e_ != CURLE_OK)                                 \
            return e_;                                      \
    } while (0)

/* Sets up p->curl for one request to url; hd gets the headers. extra (not owned) is sent too. */
static CURLcode setup(struct pull *p, const char *url, struct hdrs *hd, struct curl_slist *extra, bool head,
                      bool follow)
{
    CURL *c = p->curl;
    curl_easy_reset(c);
    memset(hd, 0, sizeof *hd);
    hd->content_length = hd->linked_size = -1;
    p->errbuf[0] = '\0';
    SETOPT(c, CURLOPT_URL, url);
    SETOPT(c, CURLOPT_NOSIGNAL, 1L);
    SETOPT(c, CURLOPT_ERRORBUFFER, p->errbuf);
    SETOPT(c, CURLOPT_USERAGENT, "llmcgi-model/" PACKAGE_VERSION);
    SETOPT(c, CURLOPT_FOLLOWLOCATION, follow ? 1L : 0L);
    SETOPT(c, CURLOPT_MAXREDIRS, 10L);
    SETOPT(c, CURLOPT_CONNECTTIMEOUT, 30L);
    SETOPT(c, CURLOPT_LOW_SPEED_LIMIT, 1L);     /* a transfer stalled for a minute is an error */
    SETOPT(c, CURLOPT_LOW_SPEED_TIME, 60L);
    SETOPT(c, CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(c, CURLOPT_HEADERDATA, hd);
    SETOPT(c, CURLOPT_WRITEFUNCTION, on_body);
    SETOPT(c, CURLOPT_WRITEDATA, p);
    SETOPT(c, CURLOPT_NOPROGRESS, 0L);
    SETOPT(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    SETOPT(c, CURLOPT_XFERINFODATA, p);
    if (head)
        SETOPT(c, CURLOPT_NOBODY, 1L);
    /* libcurl (>= 7.58) drops a custom Authorization header when a redirect
     * changes host, so the token never reaches the CDN, as with huggingface_hub. */
    SETOPT(c, CURLOPT_HTTPHEADER, extra);
    return CURLE_OK;
}

/* The scheme://host[:port] of a URL, for messages. */
static void origin_of(const char *url, char *out, size_t len)
{
    const char *h = strstr(url, "://");
    size_t n = h ? strcspn(h + 3, "/?#") + (size_t)(h + 3 - url) : strlen(url);
    copy_value(out, len, url, n);
}

/* Explains a failed transfer on stderr; returns the exit code. */
static int report_curl(struct pull *p, CURLcode e, const char *what)
{
    char origin[256];
    char *eff = NULL;
    if (curl_easy_getinfo(p->curl, CURLINFO_EFFECTIVE_URL, &eff) != CURLE_OK || !eff)
        eff = (char *)p->endpoint;
    origin_of(eff, origin, sizeof origin);
    const char *why = p->errbuf[0] ? p->errbuf : curl_easy_strerror(e);
    switch (e) {
    case CURLE_WRITE_ERROR:
        if (p->write_errno) {
            fprintf(stderr, "\nllmcgi-model: cannot write %s: %s\n", what, strerror(p->write_errno));
            return RC_FAIL;
        }
        fprintf(stderr, "\nllmcgi-model: %s: answer larger than expected from %s\n", what, origin);
        return RC_FAIL;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
        fprintf(stderr, "\nllmcgi-model: cannot reach %s: %s (offline? check the network, https_proxy or HF_ENDPOINT)\n",
                origin, why);
        return RC_NET;
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
        fprintf(stderr, "\nllmcgi-model: %s from %s broke off: %s; run the same command again to resume\n", what,
                origin, why);
        return RC_NET;
    default:
        fprintf(stderr, "\nllmcgi-model: %s from %s failed: %s\n", what, origin, why);
        return RC_NET;
    }
}

/* Explains an HTTP error status on stderr; returns the exit code. */
static int report_status(struct pull *p, const struct hdrs *h, const char *what)
{
    const char *code = h->error_code;
    const char *msg = h->error_msg[0] ? h->error_msg : NULL;
    if (!strcmp(code, "RepoNotFound") || (h->status == 404 && !*code && !strcmp(what, "the model's file list"))) {
        fprintf(stderr, "llmcgi-model: no model \"%s\" on %s (HTTP %ld)%s\n", p->name, p->endpoint, h->status,
                h->status == 401 ? ": it does not exist, or it is private and needs HF_TOKEN" : "");
        return h->status == 401 || h->status == 403 ? RC_AUTH : RC_NOTFOUND;
    }
    if (!strcmp(code, "RevisionNotFound")) {
        fprintf(stderr, "llmcgi-model: model \"%s\" has no revision \"%s\" (HTTP %ld)\n", p->name, p->revision,
                h->status);
        return RC_NOTFOUND;
    }
    if (!strcmp(code, "GatedRepo") || h->status == 401 || h->status == 403) {
        fprintf(stderr,
                "llmcgi-model: access to \"%s\" was refused (HTTP %ld%s%s): the model is gated or private; %s\n",
                p->name, h->status, msg ? ": " : "", msg ? msg : "",
                p->auth ? "the token in HF_TOKEN cannot read it (accept the model's terms on the hub?)"
                        : "set HF_TOKEN to a Hugging Face access token that can read it");
        return RC_AUTH;
    }
    if (h->status == 404) {
        fprintf(stderr, "llmcgi-model: %s: not found (HTTP 404%s%s)\n", what, msg ? ": " : "", msg ? msg : "");
        return RC_NOTFOUND;
    }
    fprintf(stderr, "llmcgi-model: %s: unexpected HTTP %ld from %s%s%s\n", what, h->status, p->endpoint,
            msg ? ": " : "", msg ? msg : "");
    return h->status >= 500 ? RC_NET : RC_FAIL;
}

/* Percent-encodes s into out (RFC 3986 unreserved kept, and '/' when keep_slash). */
static int url_escape(const char *s, bool keep_slash, char *out, size_t len)
{
    size_t at = 0;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (isalnum(ch) || strchr("-._~", ch) || (keep_slash && ch == '/')) {
            if (at + 1 >= len)
                return -1;
            out[at++] = (char)ch;
        } else {
            if (at + 3 >= len)
                return -1;
            snprintf(out + at, 4, "%%%02X", ch);
            at += 3;
        }
    }
    out[at] = '\0';
    return 0;
}

/* ------------------------------------------------------------------ the file list */

/* The files to fetch, in order; owns the names. */
struct plan {
    char *files[MAX_FILES];
    size_t n;
};

static void plan_free(struct plan *pl)
{
    for (size_t i = 0; i < pl->n; i++)
        free(pl->files[i]);
    pl->n = 0;
}

static bool plan_has(const struct plan *pl, const char *f)
{
    for (size_t i = 0; i < pl->n; i++)
        if (!strcmp(pl->files[i], f))
            return true;
    return false;
}

static int plan_add(struct plan *pl, const char *f)
{
    if (plan_has(pl, f))
        return 0;
    if (pl->n == MAX_FILES)
        return -1;
    char *d = strdup(f);
    if (!d)
        return -1;
    pl->files[pl->n++] = d;
    return 0;
}

/* Is f among the repository's files (the siblings array)? */
static bool in_siblings(json_object *siblings, const char *f)
{
    size_t n = json_object_array_length(siblings);
    for (size_t i = 0; i < n; i++) {
        json_object *rf;
        if (json_object_object_get_ex(json_object_array_get_idx(siblings, i), "rfilename", &rf) &&
            json_object_is_type(rf, json_type_string) && !strcmp(json_object_get_string(rf), f))
            return true;
    }
    return false;
}

/* GET /api/models/NAME/revision/R: fills p->commit and the first part of the
 * plan (the index's shards come once the index is downloaded). Returns an exit code. */
static int fetch_file_list(struct pull *p, struct plan *pl, bool *sharded)
{
    char rev[512], url[4096];
    if (url_escape(p->revision, false, rev, sizeof rev) != 0 ||
        snprintf(url, sizeof url, "%s/api/models/%s/revision/%s", p->endpoint, p->name, rev) >= (int)sizeof url) {
        fprintf(stderr, "llmcgi-model: revision too long\n");
        return RC_USAGE;
    }
    struct hdrs hd;
    struct strbuf body = {0};
    CURLcode e = setup(p, url, &hd, p->auth, false, true);
    p->mem = &body;
    p->mem_max = API_MAX_BYTES;
    if (e == CURLE_OK)
        e = curl_easy_perform(p->curl);
    p->mem = NULL;
    if (e != CURLE_OK) {
        strbuf_free(&body);
        return report_curl(p, e, "the model's file list");
    }
    if (hd.status != 200) {
        strbuf_free(&body);
        return report_status(p, &hd, "the model's file list");
    }
    json_object *root = body.s ? json_tokener_parse(body.s) : NULL;
    strbuf_free(&body);
    json_object *siblings, *sha;
    if (!root || !json_object_object_get_ex(root, "siblings", &siblings) ||
        !json_object_is_type(siblings, json_type_array)) {
        fprintf(stderr, "llmcgi-model: %s did not answer with a model's file list (no \"siblings\")\n", url);
        json_object_put(root);
        return RC_FAIL;
    }
    if (json_object_object_get_ex(root, "sha", &sha) && json_object_is_type(sha, json_type_string) &&
        strlen(json_object_get_string(sha)) < sizeof p->commit) {
        const char *s = json_object_get_string(sha);
        bool hex = *s != '\0';
        for (const char *c = s; *c; c++)
            hex = hex && isxdigit((unsigned char)*c);
        snprintf(p->commit, sizeof p->commit, "%s", hex ? s : p->revision);
    } else {
        snprintf(p->commit, sizeof p->commit, "%s", p->revision);
    }
    static const char *const required[] = {"config.json", "vocab.json", "merges.txt"};
    static const char *const optional[] = {"generation_config.json", "tokenizer_config.json",
                                           "special_tokens_map.json"};
    int rc = RC_OK;
    for (size_t i = 0; i < sizeof required / sizeof *required; i++)
        if (!in_siblings(siblings, required[i])) {
            fprintf(stderr, "llmcgi-model: %s has no %s: not a GPT-2 model directory llmcgi can serve\n", p->name,
                    required[i]);
            rc = RC_FAIL;
        }
    *sharded = false;
    const char *weights = NULL;
    if (in_siblings(siblings, "model.safetensors"))
        weights = "model.safetensors";
    else if (in_siblings(siblings, "model.safetensors.index.json"))
        weights = "model.safetensors.index.json", *sharded = true;
    else {
        fprintf(stderr,
                "llmcgi-model: %s has no model.safetensors (nor model.safetensors.index.json); llmcgi reads "
                "safetensors weights only, never pytorch_model.bin, TensorFlow, Flax or ONNX files\n",
                p->name);
        rc = RC_FAIL;
    }
    if (rc == RC_OK) {
        if (plan_add(pl, "config.json") != 0 || plan_add(pl, weights) != 0 || plan_add(pl, "vocab.json") != 0 ||
            plan_add(pl, "merges.txt") != 0)
            rc = RC_FAIL;
        for (size_t i = 0; rc == RC_OK && i < sizeof optional / sizeof *optional; i++)
            if (in_siblings(siblings, optional[i]) && plan_add(pl, optional[i]) != 0)
                rc = RC_FAIL;
    }
    json_object_put(root);
    return rc;
}

/* Adds the shards model.safetensors.index.json names (in tmp). Returns an exit code. */
static int add_shards(struct pull *p, struct plan *pl)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", p->tmp);
    json_object *root = json_object_from_file(path), *map;
    if (!root || !json_object_object_get_ex(root, "weight_map", &map) ||
        !json_object_is_type(map, json_type_object)) {
        fprintf(stderr, "llmcgi-model: %s: not a safetensors index (no \"weight_map\" object)\n", path);
        json_object_put(root);
        return RC_FAIL;
    }
    int rc = RC_OK;
    json_object_object_foreach(map, key, val)
    {
        (void)key;
        const char *f = json_object_is_type(val, json_type_string) ? json_object_get_string(val) : "";
        size_t n = strlen(f);
        if (!config_model_relpath_ok(f) || strchr(f, '/') || n < 13 || strcmp(f + n - 12, ".safetensors") != 0) {
            fprintf(stderr, "llmcgi-model: %s names an unsafe or non-safetensors shard \"%s\"\n", path, f);
            rc = RC_FAIL;
            break;
        }
        if (plan_add(pl, f) != 0) {
            fprintf(stderr, "llmcgi-model: %s names too many shards\n", path);
            rc = RC_FAIL;
            break;
        }
    }
    json_object_put(root);
    return rc;
}

/* ------------------------------------------------------------------ one file */

/* What the hub says a file is. */
struct expect {
    char sha256[65];            /* "" for non-LFS files (their etag is a git sha1: size only) */
    long long size;             /* -1 when unknown */
};

/* Strips W/ and quotes off an ETag into out; true when it is a sha256 (64 hex). */
static bool etag_sha256(const char *etag, char out[65])
{
    const char *s = etag;
    if (!strncmp(s, "W/", 2))
        s += 2;
    if (*s == '"')
        s++;
    size_t n = strcspn(s, "\"");
    if (n != 64)
        return false;
    for (size_t i = 0; i < 64; i++)
        if (!isxdigit((unsigned char)s[i]))
            return false;
    for (size_t i = 0; i < 64; i++)
        out[i] = (char)tolower((unsigned char)s[i]);
    out[64] = '\0';
    return true;
}

static int resolve_url(const struct pull *p, const char *file, char *url, size_t len)
{
    char rev[512], f[1024];
    if (url_escape(p->commit, false, rev, sizeof rev) != 0 || url_escape(file, true, f, sizeof f) != 0)
        return -1;
    int n = snprintf(url, len, "%s/%s/resolve/%s/%s", p->endpoint, p->name, rev, f);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* HEAD of the resolve URL, following only relative (same-host) redirects as
 * huggingface_hub does: X-Linked-Etag/X-Linked-Size of the hub's redirect
 * for LFS files, ETag/Content-Length otherwise. Returns an exit code. */
static int head_file(struct pull *p, const char *file, struct expect *ex)
{
    char url[4096], what[1200];
    snprintf(what, sizeof what, "%s", file);
    if (resolve_url(p, file, url, sizeof url) != 0) {
        fprintf(stderr, "llmcgi-model: %s: URL too long\n", file);
        return RC_FAIL;
    }
    struct curl_slist *h = NULL, *h2;
    for (struct curl_slist *a = p->auth; a; a = a->next)
        if (!(h2 = curl_slist_append(h, a->data)))
            goto nomem;
        else
            h = h2;
    if (!(h2 = curl_slist_append(h, "Accept-Encoding: identity")))
        goto nomem;
    h = h2;
    struct hdrs hd;
    for (int hop = 0;; hop++) {
        CURLcode e = setup(p, url, &hd, h, true, false);
        if (e == CURLE_OK)
            e = curl_easy_perform(p->curl);
        if (e != CURLE_OK) {
            int rc = report_curl(p, e, what);
            curl_slist_free_all(h);
            return rc;
        }
        if (hd.status >= 300 && hd.status < 400 && hd.location[0] == '/' && !hd.linked_etag[0] && hop < 5) {
            char next[4096];
            char origin[256];
            origin_of(url, origin, sizeof origin);
            if (snprintf(next, sizeof next, "%s%s", origin, hd.location) >= (int)sizeof next)
                break;
            snprintf(url, sizeof url, "%s", next);
            continue;
        }
        break;
    }
    curl_slist_free_all(h);
    if (hd.status >= 400 || hd.status < 200)
        return report_status(p, &hd, what);
    ex->sha256[0] = '\0';
    if (!etag_sha256(hd.linked_etag, ex->sha256))
        etag_sha256(hd.etag, ex->sha256);
    ex->size = hd.linked_size >= 0 ? hd.linked_size : (hd.status == 200 ? hd.content_length : -1);
    return RC_OK;
nomem:
    curl_slist_free_all(h);
    fprintf(stderr, "llmcgi-model: out of memory\n");
    return RC_FAIL;
}

/* Does `path` exist with the expected size and sha256 (size only for non-LFS files)? */
static bool file_matches(const char *path, const struct expect *ex)
{
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return false;
    if (ex->size >= 0 && st.st_size != ex->size)
        return false;
    if (!ex->sha256[0])
        return ex->size >= 0;           /* nothing to check it against: fetch again */
    struct sha h;
    char hex[65];
    long long n;
    if (sha_init(&h) != 0)
        return false;
    if (sha_file(&h, path, -1, &n) != 0) {
        sha_free(&h);
        return false;
    }
    return sha_final(&h, hex) == 0 && !strcmp(hex, ex->sha256);
}

static void file_line(struct pull *p, const char *file, const char *how, long long size, bool lfs)
{
    char s[32];
    if (p->tty)
        fprintf(stderr, "\r\033[K");
    fprintf(stderr, "  %-34s %10s  %s%s\n", file, size >= 0 ? human(s, sizeof s, (double)size) : "?", how,
            lfs ? ", sha256 ok" : (size >= 0 ? ", size ok" : ""));
}

/* Downloads `file` into p->tmp/file through file.part, resuming a part left by an
 * earlier run, and checks it against ex. Returns an exit code. */
static int download(struct pull *p, const char *file, const struct expect *ex)
{
    char url[4096], part[PATH_MAX + 64], dst[PATH_MAX + 64];
    if (resolve_url(p, file, url, sizeof url) != 0) {
        fprintf(stderr, "llmcgi-model: %s: URL too long\n", file);
        return RC_FAIL;
    }
    snprintf(part, sizeof part, "%s/%s.part", p->tmp, file);
    snprintf(dst, sizeof dst, "%s/%s", p->tmp, file);
    struct sha h;
    if (sha_init(&h) != 0) {
        fprintf(stderr, "llmcgi-model: cannot start SHA-256 (OpenSSL)\n");
        return RC_FAIL;
    }
    /* A part left by an interrupted run: hash what is there, then ask for the rest. */
    long long have = 0;
    struct stat st;
    if (stat(part, &st) == 0 && S_ISREG(st.st_mode) && (ex->size < 0 || st.st_size <= ex->size)) {
        if (sha_file(&h, part, st.st_size, &have) != 0 || have != st.st_size) {
            sha_free(&h);
            if (sha_init(&h) != 0)
                return RC_FAIL;
            have = 0;
        }
    }
    int rc = RC_OK;
    bool done_already = have > 0 && ex->size >= 0 && have == ex->size;
    FILE *out = fopen(part, have > 0 ? "ab" : "wb");
    if (!out) {
        fprintf(stderr, "llmcgi-model: cannot write %s: %s\n", part, strerror(errno));
        sha_free(&h);
        return RC_FAIL;
    }
    if (!done_already) {
        struct curl_slist *hl = NULL, *h2;
        char range[64];
        snprintf(range, sizeof range, "Range: bytes=%lld-", have);
        for (struct curl_slist *a = p->auth; a; a = a->next)
            if ((h2 = curl_slist_append(hl, a->data)))
                hl = h2;
            else
                rc = RC_FAIL;
        if ((h2 = curl_slist_append(hl, "Accept-Encoding: identity")))
            hl = h2;
        else
            rc = RC_FAIL;
        if (have > 0) {
            if ((h2 = curl_slist_append(hl, range)))
                hl = h2;
            else
                rc = RC_FAIL;
        }
        struct hdrs hd;
        CURLcode e = rc == RC_OK ? setup(p, url, &hd, hl, false, true) : CURLE_OUT_OF_MEMORY;
        p->out = out;
        p->hash = &h;
        p->offset = have;
        p->expect = ex->size;
        p->write_errno = 0;
        p->file = file;
        p->start_ns = util_now_ns();
        p->last_draw_ns = 0;
        p->started = false;
        p->bad_range = false;
        p->hd = &hd;
        if (e == CURLE_OK)
            e = curl_easy_perform(p->curl);
        p->out = NULL;
        p->hash = NULL;
        if (p->bad_range) {
            fprintf(stderr, "llmcgi-model: %s: the server answered a different range (%s) than asked (from %lld)\n",
                    file, hd.content_range, have);
            rc = RC_NET;
        } else if (e != CURLE_OK) {
            rc = report_curl(p, e, file);
        } else if (hd.status != 200 && hd.status != 206) {
            rc = report_status(p, &hd, file);
        }
        curl_slist_free_all(hl);
        p->hd = NULL;
    }
    /* On disk before it is renamed into place, so a crash never installs a short file. */
    if ((fflush(out) != 0 || fsync(fileno(out)) != 0) && rc == RC_OK) {
        fprintf(stderr, "llmcgi-model: cannot write %s: %s\n", part, strerror(errno));
        rc = RC_FAIL;
    }
    if (fclose(out) != 0 && rc == RC_OK) {
        fprintf(stderr, "llmcgi-model: cannot write %s: %s\n", part, strerror(errno));
        rc = RC_FAIL;
    }
    if (rc != RC_OK) {
        sha_free(&h);
        return rc;          /* the part stays for the next run to resume */
    }
    char hex[65];
    if (sha_final(&h, hex) != 0) {
        fprintf(stderr, "llmcgi-model: SHA-256 failed (OpenSSL)\n");
        return RC_FAIL;
    }
    if (stat(part, &st) != 0) {
        fprintf(stderr, "llmcgi-model: %s: %s\n", part, strerror(errno));
        return RC_FAIL;
    }
    if (ex->size >= 0 && st.st_size != ex->size) {
        fprintf(stderr, "llmcgi-model: %s: got %lld bytes, the hub says %lld; the partial file was deleted\n", file,
                (long long)st.st_size, ex->size);
        unlink(part);
        return RC_VERIFY;
    }
    if (ex->sha256[0] && strcmp(hex, ex->sha256) != 0) {
        fprintf(stderr, "llmcgi-model: %s: sha256 mismatch: expected %s, got %s; the partial file was deleted\n", file,
                ex->sha256, hex);
        unlink(part);
        return RC_VERIFY;
    }
    if (rename(part, dst) != 0) {
        fprintf(stderr, "llmcgi-model: cannot rename %s: %s\n", part, strerror(errno));
        return RC_FAIL;
    }
    p->downloaded++;
    file_line(p, file, have > 0 ? "resumed" : "downloaded", (long long)st.st_size, ex->sha256[0] != '\0');
    return RC_OK;
}

/* ------------------------------------------------------------------ pull */

/* Fetches (or takes from the installed copy) each planned file into p->tmp.
 * Returns an exit code. */
static int fetch_one(struct pull *p, const char *file)
{
    struct expect ex;
    int rc = head_file(p, file, &ex);
    if (rc != RC_OK)
        return rc;
    char in_tmp[PATH_MAX + 64], in_final[PATH_MAX + 64];
    snprintf(in_tmp, sizeof in_tmp, "%s/%s", p->tmp, file);
    snprintf(in_final, sizeof in_final, "%s/%s", p->final, file);
    if (file_matches(in_tmp, &ex)) {
        file_line(p, file, "already downloaded", ex.size, ex.sha256[0] != '\0');
        p->downloaded++;        /* new relative to the installed copy, so the pull must install */
        return RC_OK;
    }
    /* The installed copy is right: link it into the new directory instead of fetching it. */
    if (file_matches(in_final, &ex)) {
        unlink(in_tmp);
        if (link(in_final, in_tmp) == 0) {
            file_line(p, file, "present", ex.size, ex.sha256[0] != '\0');
            return RC_OK;
        }
    }
    return download(p, file, &ex);
}

/* Swaps the finished p->tmp in for p->final (the old copy, if any, removed after).
 * Returns an exit code. */
static int install(struct pull *p)
{
    struct stat st;
    if (lstat(p->final, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            fprintf(stderr, "llmcgi-model: %s exists and is not a directory; not replacing it\n", p->final);
            return RC_FAIL;
        }
        if (rm_tree(p->old) != 0 || rename(p->final, p->old) != 0) {
            fprintf(stderr, "llmcgi-model: cannot move the old %s aside: %s\n", p->final, strerror(errno));
            return RC_FAIL;
        }
    }
    if (rename(p->tmp, p->final) != 0) {
        fprintf(stderr, "llmcgi-model: cannot rename %s to %s: %s\n", p->tmp, p->final, strerror(errno));
        if (lstat(p->old, &st) == 0 && rename(p->old, p->final) != 0)
            fprintf(stderr, "llmcgi-model: the previous copy is in %s\n", p->old);
        return RC_FAIL;
    }
    rm_tree(p->old);
    return RC_OK;
}

int cmd_pull(const char *dir, const char *name, const char *revision)
{
    char parent[PATH_MAX];
    const char *base;
    if (!model_name_ok(name)) {
        fprintf(stderr,
                "llmcgi-model: \"%s\" is not a model name llmcgi accepts (NAME or ORG/NAME: letters, digits, '.', "
                "'_', '-', no segment starting with '.')\n",
                name);
        return RC_USAGE;
    }
    if (!*revision || strlen(revision) > 200) {
        fprintf(stderr, "llmcgi-model: --revision wants a branch, tag or commit\n");
        return RC_USAGE;
    }
    struct pull p = {.name = name, .revision = revision, .tty = isatty(STDERR_FILENO) == 1};
    static char endpoint[1024];
    const char *env = getenv("HF_ENDPOINT");
    snprintf(endpoint, sizeof endpoint, "%s", env && *env ? env : DEFAULT_ENDPOINT);
    for (size_t n = strlen(endpoint); n && endpoint[n - 1] == '/';)
        endpoint[--n] = '\0';
    p.endpoint = endpoint;
    if (model_paths(dir, name, parent, sizeof parent, &base) != 0 ||
        snprintf(p.final, sizeof p.final, "%s/%s", parent, base) >= (int)sizeof p.final ||
        snprintf(p.tmp, sizeof p.tmp, "%s/.%s.partial-pull", parent, base) >= (int)sizeof p.tmp ||
        snprintf(p.old, sizeof p.old, "%s/.%s.old-pull", parent, base) >= (int)sizeof p.old) {
        fprintf(stderr, "llmcgi-model: %s/%s: path too long\n", dir, name);
        return RC_USAGE;
    }
    const char *token = getenv("HF_TOKEN");
    if (token && *token) {
        char *h = NULL;
        if (asprintf(&h, "Authorization: Bearer %s", token) < 0 || !(p.auth = curl_slist_append(NULL, h))) {
            free(h);
            fprintf(stderr, "llmcgi-model: out of memory\n");
            return RC_FAIL;
        }
        free(h);
    }
    int rc = RC_FAIL, lock = -1;
    struct plan pl = {0};
    if (!(p.curl = curl_easy_init())) {
        fprintf(stderr, "llmcgi-model: cannot start libcurl\n");
        goto out;
    }
    bool sharded = false;
    if ((rc = fetch_file_list(&p, &pl, &sharded)) != RC_OK)
        goto out;
    fprintf(stderr, "%s @ %s%s%s%s: %zu files into %s\n", name, p.commit, strcmp(p.commit, revision) ? " (" : "",
            strcmp(p.commit, revision) ? revision : "", strcmp(p.commit, revision) ? ")" : "", pl.n, p.final);
    rc = RC_FAIL;
    if (mkdir_p(p.tmp) != 0) {
        fprintf(stderr, "llmcgi-model: cannot create %s: %s\n", p.tmp, strerror(errno));
        goto out;
    }
    if ((lock = open(p.tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 || flock(lock, LOCK_EX | LOCK_NB) != 0) {
        fprintf(stderr, "llmcgi-model: %s: %s\n", p.tmp,
                errno == EWOULDBLOCK ? "another llmcgi-model pull of this model is running" : strerror(errno));
        goto out;
    }
    for (size_t i = 0; i < pl.n; i++) {
        if ((rc = fetch_one(&p, pl.files[i])) != RC_OK)
            goto out;
        if (sharded && !strcmp(pl.files[i], "model.safetensors.index.json") && (rc = add_shards(&p, &pl)) != RC_OK)
            goto out;
    }
    struct stat st;
    if (p.downloaded == 0 && stat(p.final, &st) == 0) {
        rm_tree(p.tmp);
        printf("%s is up to date in %s\n", name, p.final);
        rc = RC_OK;
        goto out;
    }
    if ((rc = install(&p)) == RC_OK) {
        char b[32];
        printf("pulled %s (%s) into %s: %d files downloaded, %s\n", name, p.commit, p.final, p.downloaded,
               human(b, sizeof b, (double)p.bytes));
    }
out:
    if (lock >= 0)
        close(lock);
    plan_free(&pl);
    if (p.curl)
        curl_easy_cleanup(p.curl);
    curl_slist_free_all(p.auth);
    return rc;
}
