/* safetensors.c -- parses and checks safetensors headers (json-c) and maps safetensors files read-only. */
#include "config.h"

#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct {
    const char *name;
    unsigned bits;
} dtypes[ST_NDTYPES] = {
    [ST_BOOL] = {"BOOL", 8},       [ST_U8] = {"U8", 8},         [ST_I8] = {"I8", 8},
    [ST_I16] = {"I16", 16},        [ST_U16] = {"U16", 16},      [ST_I32] = {"I32", 32},
    [ST_U32] = {"U32", 32},        [ST_I64] = {"I64", 64},      [ST_U64] = {"U64", 64},
    [ST_F16] = {"F16", 16},        [ST_BF16] = {"BF16", 16},    [ST_F32] = {"F32", 32},
    [ST_F64] = {"F64", 64},        [ST_F8_E4M3] = {"F8_E4M3", 8}, [ST_F8_E5M2] = {"F8_E5M2", 8},
    [ST_F8_E8M0] = {"F8_E8M0", 8}, [ST_F6_E2M3] = {"F6_E2M3", 6}, [ST_F6_E3M2] = {"F6_E3M2", 6},
    [ST_F4] = {"F4", 4},           [ST_C64] = {"C64", 64},
};

const char *st_dtype_name(enum st_dtype t)
{
    return (unsigned)t < ST_NDTYPES ? dtypes[t].name : "?";
}

unsigned st_dtype_bits(enum st_dtype t)
{
    return (unsigned)t < ST_NDTYPES ? dtypes[t].bits : 0;
}

int st_dtype_parse(const char *s, enum st_dtype *out)
{
    for (int i = 0; i < ST_NDTYPES; i++) {
        if (strcmp(s, dtypes[i].name) == 0) {
            *out = (enum st_dtype)i;
            return 0;
        }
    }
    return -1;
}

const char *st_printable(const char *s, char *buf, size_t buflen)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0, i = 0;
    if (buflen == 0)
        return buf;
    for (; s[i] && i < 96; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) {
            if (o + 5 >= buflen)
                break;
            buf[o++] = '\\';
            buf[o++] = 'x';
            buf[o++] = hex[c >> 4];
            buf[o++] = hex[c & 15];
        } else {
            if (o + 2 >= buflen)
                break;
            buf[o++] = (char)c;
        }
    }
    if (s[i] && o + 4 < buflen) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
    return buf;
}

void st_errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static bool is_ws(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* The position of a top-level key in the header text: [start, end) including the quotes. */
struct key_span {
    size_t start, end;
};

/* Finds the keys of the top-level object in JSON text that json-c has
 * already accepted (so quotes, escapes and brackets are balanced). json-c
 * keeps only the last of duplicate keys and cuts keys at an escaped NUL,
 * so the keys are read from the text to catch both. Returns the count,
 * or -1 (malformed; cannot happen after json-c accepted it) / -2 (no memory);
 * *spans is malloc-ed and owned by the caller. */
static long scan_top_keys(const char *s, size_t len, struct key_span **spans)
{
    size_t cap = 64, n = 0, depth = 0;
    bool expect_key = false;
    struct key_span *v = malloc(cap * sizeof *v);
    if (!v)
        return -2;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '"') {
            size_t j = i + 1;
            while (j < len && s[j] != '"')
                j += s[j] == '\\' ? 2 : 1;
            if (j >= len) {
                free(v);
                return -1;
            }
            if (depth == 1 && expect_key) {
                if (n == cap) {
                    struct key_span *nv = realloc(v, 2 * cap * sizeof *v);
                    if (!nv) {
                        free(v);
                        return -2;
                    }
                    v = nv;
                    cap *= 2;
                }
                v[n].start = i;
                v[n].end = j + 1;
                n++;
                expect_key = false;
            }
            i = j;
        } else if (c == '{' || c == '[') {
            depth++;
            if (depth == 1)
                expect_key = true;
        } else if (c == '}' || c == ']') {
            if (depth == 0) {
                free(v);
                return -1;
            }
            depth--;
        } else if (c == ',' && depth == 1) {
            expect_key = true;
        }
    }
    *spans = v;
    return (long)n;
}

/* Decodes one JSON string token (quotes included) with json-c. Returns a
 * malloc-ed copy (caller owns) and its length in *len, or NULL (no memory
 * or not a string). */
static char *decode_key(struct json_tokener *tok, const char *s, size_t len, size_t *outlen)
{
    json_tokener_reset(tok);
    struct json_object *o = json_tokener_parse_ex(tok, s, (int)len);
    if (!o)
        return NULL;
    char *r = NULL;
    if (json_object_is_type(o, json_type_string)) {
        size_t n = (size_t)json_object_get_string_len(o);
        r = malloc(n + 1);
        if (r) {
            memcpy(r, json_object_get_string(o), n);
            r[n] = '\0';
            *outlen = n;
        }
    }
    json_object_put(o);
    return r;
}

/* Reads a JSON integer that must be in [0, INT64_MAX]. Returns 0 and sets
 * *out, or -1 (not an integer, negative, or too large). */
static int get_count(struct json_object *o, uint64_t *out)
{
    if (!o || !json_object_is_type(o, json_type_int))
        return -1;
    if (json_object_get_int64(o) < 0)
        return -1;
    uint64_t u = json_object_get_uint64(o);
    if (u > (uint64_t)INT64_MAX)
        return -1;          /* also catches json-c clamping an overflowing number */
    *out = u;
    return 0;
}

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp(((const struct st_tensor *)a)->name, ((const struct st_tensor *)b)->name);
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

struct range {
    uint64_t begin, end;
    size_t idx;
};

static int cmp_range(const void *a, const void *b)
{
    const struct range *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return 0;
}

static void shape_str(const struct st_tensor *t, char *buf, size_t len)
{
    size_t o = 0;
    o += (size_t)snprintf(buf + o, len - o, "[");
    for (int i = 0; i < t->ndim && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (o < len)
        snprintf(buf + o, len - o, "]");
}

/* Fills t from one header entry. Returns 0, or -1 with err set. */
static int parse_entry(const char *fname, const char *pname, struct json_object *val, uint64_t data_len,
                       struct st_tensor *t, char *err, size_t errlen)
{
    struct json_object *jd, *js, *jo;
    if (!json_object_is_type(val, json_type_object)) {
        st_errf(err, errlen, "%s: tensor %s: entry is not a JSON object", fname, pname);
        return -1;
    }
    if (!json_object_object_get_ex(val, "dtype", &jd) || !json_object_is_type(jd, json_type_string)) {
        st_errf(err, errlen, "%s: tensor %s: no \"dtype\" string", fname, pname);
        return -1;
    }
    if (st_dtype_parse(json_object_get_string(jd), &t->dtype) < 0) {
        char pb[128];
        st_errf(err, errlen, "%s: tensor %s: unknown dtype \"%s\"", fname, pname,
             st_printable(json_object_get_string(jd), pb, sizeof pb));
        return -1;
    }
    if (!json_object_object_get_ex(val, "shape", &js) || !json_object_is_type(js, json_type_array)) {
        st_errf(err, errlen, "%s: tensor %s: no \"shape\" list", fname, pname);
        return -1;
    }
    size_t nd = json_object_array_length(js);
    if (nd > ST_MAX_DIMS) {
        st_errf(err, errlen, "%s: tensor %s: rank %zu is more than %d", fname, pname, nd, ST_MAX_DIMS);
        return -1;
    }
    t->ndim = (int)nd;
    uint64_t nelem = 1;
    for (size_t i = 0; i < nd; i++) {
        uint64_t d;
        if (get_count(json_object_array_get_idx(js, i), &d) < 0) {
            st_errf(err, errlen, "%s: tensor %s: shape[%zu] is not an integer in [0, 2^63)", fname, pname, i);
            return -1;
        }
        t->shape[i] = (int64_t)d;
        if (__builtin_mul_overflow(nelem, d, &nelem)) {
            st_errf(err, errlen, "%s: tensor %s: the element count overflows", fname, pname);
            return -1;
        }
    }
    t->nelem = nelem;
    uint64_t bits;
    if (__builtin_mul_overflow(nelem, (uint64_t)st_dtype_bits(t->dtype), &bits)) {
        st_errf(err, errlen, "%s: tensor %s: the byte size overflows", fname, pname);
        return -1;
    }
    if (bits % 8) {
        st_errf(err, errlen, "%s: tensor %s: %llu elements of %s do not fill whole bytes", fname, pname,
             (unsigned long long)nelem, st_dtype_name(t->dtype));
        return -1;
    }
    uint64_t nbytes = bits / 8, b, e;
    if (!json_object_object_get_ex(val, "data_offsets", &jo) || !json_object_is_type(jo, json_type_array) ||
        json_object_array_length(jo) != 2 || get_count(json_object_array_get_idx(jo, 0), &b) < 0 ||
        get_count(json_object_array_get_idx(jo, 1), &e) < 0) {
        st_errf(err, errlen, "%s: tensor %s: \"data_offsets\" is not a list [begin, end] of non-negative integers",
             fname, pname);
        return -1;
    }
    if (b > e) {
        st_errf(err, errlen, "%s: tensor %s: data_offsets [%llu, %llu] end before they begin", fname, pname,
             (unsigned long long)b, (unsigned long long)e);
        return -1;
    }
    if (e > data_len) {
        st_errf(err, errlen,
             "%s: tensor %s: data_offsets [%llu, %llu] reach beyond the data region (%llu bytes): "
             "truncated file or bad offsets",
             fname, pname, (unsigned long long)b, (unsigned long long)e, (unsigned long long)data_len);
        return -1;
    }
    if (e - b != nbytes) {
        char sb[256];
        shape_str(t, sb, sizeof sb);
        st_errf(err, errlen, "%s: tensor %s: data_offsets [%llu, %llu] hold %llu bytes, but shape %s of %s needs %llu",
             fname, pname, (unsigned long long)b, (unsigned long long)e, (unsigned long long)(e - b), sb,
             st_dtype_name(t->dtype), (unsigned long long)nbytes);
        return -1;
    }
    t->begin = b;
    t->end = e;
    return 0;
}

static int parse_metadata(const char *fname, struct json_object *val, struct st_header *h, char *err, size_t errlen)
{
    if (json_object_is_type(val, json_type_null))
        return ST_OK;
    if (!json_object_is_type(val, json_type_object)) {
        st_errf(err, errlen, "%s: __metadata__ is not a JSON object", fname);
        return ST_ERR_FORMAT;
    }
    size_t n = (size_t)json_object_object_length(val);
    if (n == 0)
        return ST_OK;
    h->meta = calloc(n, sizeof *h->meta);
    if (!h->meta) {
        st_errf(err, errlen, "%s: out of memory", fname);
        return ST_ERR_NOMEM;
    }
    json_object_object_foreach(val, k, v)
    {
        if (!json_object_is_type(v, json_type_string)) {
            char pb[128];
            st_errf(err, errlen, "%s: __metadata__ value of \"%s\" is not a string", fname, st_printable(k, pb, sizeof pb));
            return ST_ERR_FORMAT;
        }
        if (h->n_meta == n)
            break;
        struct st_meta *m = &h->meta[h->n_meta++];
        size_t vl = (size_t)json_object_get_string_len(v);
        m->key = strdup(k);
        m->value = malloc(vl + 1);
        if (!m->key || !m->value) {
            st_errf(err, errlen, "%s: out of memory", fname);
            return ST_ERR_NOMEM;
        }
        memcpy(m->value, json_object_get_string(v), vl);
        m->value[vl] = '\0';
        m->value_len = vl;
    }
    return ST_OK;
}

void st_header_free(struct st_header *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->n_tensors; i++)
        free(h->tensors[i].name);
    free(h->tensors);
    for (size_t i = 0; i < h->n_meta; i++) {
        free(h->meta[i].key);
        free(h->meta[i].value);
    }
    free(h->meta);
    memset(h, 0, sizeof *h);
}

/* The checks after the 8-byte length: JSON, keys, entries, overlaps. */
static int parse_json(const char *hdr, size_t n, const char *fname, struct st_header *out, char *err, size_t errlen)
{
    int rc = ST_ERR_FORMAT;
    struct json_tokener *tok = NULL, *ktok = NULL;
    struct json_object *root = NULL;
    struct key_span *spans = NULL;
    char **names = NULL, **sorted = NULL;
    struct range *ranges = NULL;
    long nkeys = 0;
    char pb[128], pb2[128];

    if (n < 2 || hdr[0] != '{') {
        st_errf(err, errlen, "%s: the header does not start with '{'", fname);
        return ST_ERR_FORMAT;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)hdr[i];
        if (c < 0x20 && !is_ws(c)) {
            st_errf(err, errlen, "%s: the header has a control byte 0x%02x at offset %zu", fname, c, i + 8);
            return ST_ERR_FORMAT;
        }
    }
    tok = json_tokener_new();
    ktok = json_tokener_new();
    if (!tok || !ktok) {
        st_errf(err, errlen, "%s: out of memory", fname);
        rc = ST_ERR_NOMEM;
        goto out;
    }
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    root = json_tokener_parse_ex(tok, hdr, (int)n);
    if (!root) {
        enum json_tokener_error je = json_tokener_get_error(tok);
        st_errf(err, errlen, "%s: the header is not valid JSON (%s at offset %zu)", fname,
             je == json_tokener_continue ? "it ends too early" : json_tokener_error_desc(je),
             json_tokener_get_parse_end(tok) + 8);
        goto out;
    }
    size_t end = json_tokener_get_parse_end(tok);
    for (size_t i = end; i < n; i++) {
        if (!is_ws((uint8_t)hdr[i])) {
            st_errf(err, errlen, "%s: the header has bytes after the JSON object (offset %zu)", fname, i + 8);
            goto out;
        }
    }
    if (!json_object_is_type(root, json_type_object)) {
        st_errf(err, errlen, "%s: the header is not a JSON object", fname);
        goto out;
    }
    nkeys = scan_top_keys(hdr, end, &spans);
    if (nkeys < 0) {
        st_errf(err, errlen, nkeys == -2 ? "%s: out of memory" : "%s: the header JSON could not be scanned", fname);
        rc = nkeys == -2 ? ST_ERR_NOMEM : ST_ERR_FORMAT;
        nkeys = 0;
        goto out;
    }
    names = calloc((size_t)nkeys + 1, sizeof *names);
    sorted = calloc((size_t)nkeys + 1, sizeof *sorted);
    if (!names || !sorted) {
        st_errf(err, errlen, "%s: out of memory", fname);
        rc = ST_ERR_NOMEM;
        goto out;
    }
    for (long i = 0; i < nkeys; i++) {
        size_t len = 0;
        names[i] = decode_key(ktok, hdr + spans[i].start, spans[i].end - spans[i].start, &len);
        if (!names[i]) {
            st_errf(err, errlen, "%s: out of memory (or an unreadable key at offset %zu)", fname, spans[i].start + 8);
            rc = ST_ERR_NOMEM;
            goto out;
        }
        if (strlen(names[i]) != len) {
            st_errf(err, errlen, "%s: tensor %s: the name contains a NUL character", fname,
                 st_printable(names[i], pb, sizeof pb));
            goto out;
        }
        if (len == 0) {
            st_errf(err, errlen, "%s: a tensor has an empty name", fname);
            goto out;
        }
        sorted[i] = names[i];
    }
    qsort(sorted, (size_t)nkeys, sizeof *sorted, cmp_str_ptr);
    for (long i = 1; i < nkeys; i++) {
        if (strcmp(sorted[i - 1], sorted[i]) == 0) {
            st_errf(err, errlen, "%s: tensor %s: the name appears twice in the header", fname,
                 st_printable(sorted[i], pb, sizeof pb));
            goto out;
        }
    }
    if ((long)json_object_object_length(root) != nkeys) {
        st_errf(err, errlen, "%s: the header's keys could not be matched up", fname);
        goto out;
    }

    out->tensors = calloc((size_t)nkeys + 1, sizeof *out->tensors);
    if (!out->tensors) {
        st_errf(err, errlen, "%s: out of memory", fname);
        rc = ST_ERR_NOMEM;
        goto out;
    }
    for (long i = 0; i < nkeys; i++) {
        struct json_object *val;
        if (!json_object_object_get_ex(root, names[i], &val)) {
            st_errf(err, errlen, "%s: tensor %s: not found again in the header", fname, st_printable(names[i], pb, sizeof pb));
            goto out;
        }
        if (strcmp(names[i], "__metadata__") == 0) {
            rc = parse_metadata(fname, val, out, err, errlen);
            if (rc != ST_OK)
                goto out;
            rc = ST_ERR_FORMAT;
            continue;
        }
        struct st_tensor *t = &out->tensors[out->n_tensors];
        if (parse_entry(fname, st_printable(names[i], pb, sizeof pb), val, out->data_len, t, err, errlen) < 0)
            goto out;
        t->name = names[i];
        names[i] = NULL;
        out->n_tensors++;
    }

    /* No two tensors with bytes share any (empty ones may sit anywhere). */
    ranges = malloc((out->n_tensors + 1) * sizeof *ranges);
    if (!ranges) {
        st_errf(err, errlen, "%s: out of memory", fname);
        rc = ST_ERR_NOMEM;
        goto out;
    }
    size_t nr = 0;
    for (size_t i = 0; i < out->n_tensors; i++) {
        if (out->tensors[i].end > out->tensors[i].begin)
            ranges[nr++] = (struct range){out->tensors[i].begin, out->tensors[i].end, i};
    }
    qsort(ranges, nr, sizeof *ranges, cmp_range);
    for (size_t i = 1; i < nr; i++) {
        if (ranges[i].begin < ranges[i - 1].end) {
            st_errf(err, errlen, "%s: tensors %s and %s overlap in the file", fname,
                 st_printable(out->tensors[ranges[i - 1].idx].name, pb, sizeof pb),
                 st_printable(out->tensors[ranges[i].idx].name, pb2, sizeof pb2));
            goto out;
        }
    }
    qsort(out->tensors, out->n_tensors, sizeof *out->tensors, cmp_tensor_name);
    rc = ST_OK;
out:
    if (names) {
        for (long i = 0; i < nkeys; i++)
            free(names[i]);
    }
    free(names);
    free(sorted);
    free(spans);
    free(ranges);
    json_object_put(root);
    if (tok)
        json_tokener_free(tok);
    if (ktok)
        json_tokener_free(ktok);
    return rc;
}

int st_parse_header(const uint8_t *buf, size_t buflen, uint64_t file_size, const char *fname,
                    struct st_header *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!fname)
        fname = "(buffer)";
    if (file_size < 8) {
        st_errf(err, errlen, "%s: %llu bytes is too short for a safetensors file", fname, (unsigned long long)file_size);
        return ST_ERR_FORMAT;
    }
    if (buflen < 8) {
        st_errf(err, errlen, "%s: need the first 8 bytes", fname);
        return ST_ERR_SHORT;
    }
    uint64_t n = le64(buf);
    if (n > ST_MAX_HEADER) {
        st_errf(err, errlen, "%s: header length %llu is more than the limit of %u bytes", fname, (unsigned long long)n,
             ST_MAX_HEADER);
        return ST_ERR_FORMAT;
    }
    if (n > file_size - 8) {
        st_errf(err, errlen, "%s: header length %llu reaches beyond the end of the file (%llu bytes): truncated file?",
             fname, (unsigned long long)n, (unsigned long long)file_size);
        return ST_ERR_FORMAT;
    }
    if (buflen - 8 < n) {
        st_errf(err, errlen, "%s: need the first %llu bytes for the header", fname, (unsigned long long)(n + 8));
        return ST_ERR_SHORT;
    }
    out->header_len = n;
    out->data_start = 8 + n;
    out->data_len = file_size - out->data_start;
    int rc = parse_json((const char *)buf + 8, (size_t)n, fname, out, err, errlen);
    if (rc != ST_OK)
        st_header_free(out);
    return rc;
}

const struct st_tensor *st_find(const struct st_header *h, const char *name)
{
    size_t lo = 0, hi = h->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, h->tensors[mid].name);
        if (c == 0)
            return &h->tensors[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

int st_open(const char *path, struct st_file **out, char *err, size_t errlen)
{
    *out = NULL;
    /* O_NONBLOCK: opening a FIFO planted in place of a model must not hang. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        st_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return ST_ERR_IO;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        st_errf(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return ST_ERR_IO;
    }
    if (!S_ISREG(st.st_mode)) {
        st_errf(err, errlen, "%s: not a regular file", path);
        close(fd);
        return ST_ERR_IO;
    }
    if (st.st_size < 8) {
        st_errf(err, errlen, "%s: %lld bytes is too short for a safetensors file", path, (long long)st.st_size);
        close(fd);
        return ST_ERR_FORMAT;
    }
    if ((uint64_t)st.st_size > (uint64_t)SIZE_MAX) {
        st_errf(err, errlen, "%s: too large to map", path);
        close(fd);
        return ST_ERR_IO;
    }
    struct st_file *f = calloc(1, sizeof *f);
    char *p = strdup(path);
    if (!f || !p) {
        free(f);
        free(p);
        close(fd);
        st_errf(err, errlen, "%s: out of memory", path);
        return ST_ERR_NOMEM;
    }
    f->path = p;
    f->size = (size_t)st.st_size;
    void *m = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    int merr = errno;
    close(fd);
    if (m == MAP_FAILED) {
        st_errf(err, errlen, "%s: cannot map: %s", path, strerror(merr));
        free(f->path);
        free(f);
        return ST_ERR_IO;
    }
    f->map = m;
    int rc = st_parse_header(f->map, f->size, f->size, path, &f->hdr, err, errlen);
    if (rc != ST_OK) {
        st_close(f);
        return rc;
    }
    *out = f;
    return ST_OK;
}

void st_close(struct st_file *f)
{
    if (!f)
        return;
    if (f->map)
        munmap((void *)f->map, f->size);
    st_header_free(&f->hdr);
    free(f->path);
    free(f);
}

const void *st_tensor_data(const struct st_file *f, const struct st_tensor *t)
{
    return f->map + f->hdr.data_start + t->begin;
}
