/* safetensors.h -- the safetensors file format: a checked header parser over a buffer, and read-only mapped files.
 *
 * Format (https://huggingface.co/docs/safetensors): 8 bytes N (little-endian
 * u64), then N bytes of UTF-8 JSON, then the data region. The JSON is an
 * object: "__metadata__" (optional) maps strings to strings; every other key
 * names a tensor {"dtype": "F32", "shape": [d0, ...], "data_offsets": [b, e]}
 * whose bytes are data[b, e), offsets counted from the start of the data
 * region. Nothing in a file is trusted: every length, number, dtype and range
 * is checked before a tensor is handed out, and every message names the file
 * and the tensor. */
#ifndef LLMCGI_SAFETENSORS_H
#define LLMCGI_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Largest header accepted (as the reference implementation). */
#define ST_MAX_HEADER (100u * 1000u * 1000u)
/* Largest rank accepted; higher-rank tensors make the file refused. */
#define ST_MAX_DIMS 8

/* Every dtype the format defines, including those llmcgi does not compute
 * with (kept so that a refusal can name them). */
enum st_dtype {
    ST_BOOL, ST_U8, ST_I8, ST_I16, ST_U16, ST_I32, ST_U32, ST_I64, ST_U64,
    ST_F16, ST_BF16, ST_F32, ST_F64,
    ST_F8_E4M3, ST_F8_E5M2, ST_F8_E8M0, ST_F6_E2M3, ST_F6_E3M2, ST_F4, ST_C64,
    ST_NDTYPES
};

/* Outcome of a parse or open. */
enum st_status {
    ST_OK = 0,
    ST_ERR_FORMAT = -1,   /* the bytes are not a valid safetensors file */
    ST_ERR_SHORT = -2,    /* the buffer ends before the header does (give more bytes) */
    ST_ERR_NOMEM = -3,
    ST_ERR_IO = -4        /* open/fstat/mmap failed, or not a regular file */
};

/* "F32", "BF16", ... ("?" for a value out of range). */
const char *st_dtype_name(enum st_dtype t);
/* Bits per element (4 for F4, 6 for F6_*, 1-byte types 8, ...). */
unsigned st_dtype_bits(enum st_dtype t);
/* Parses a dtype name; returns 0 and sets *out, or -1 if unknown. */
int st_dtype_parse(const char *s, enum st_dtype *out);

struct st_tensor {
    char *name;                   /* owned by the header; no NUL inside */
    enum st_dtype dtype;
    int ndim;                     /* 0 for a scalar */
    int64_t shape[ST_MAX_DIMS];
    uint64_t nelem;               /* product(shape) (1 for a scalar) */
    uint64_t begin, end;          /* byte range within the data region; end - begin = nelem * bits / 8 */
};

struct st_meta {
    char *key;                    /* owned by the header */
    char *value;                  /* owned; NUL-terminated, value_len bytes (may hold NULs) */
    size_t value_len;
};

struct st_header {
    uint64_t header_len;          /* N */
    uint64_t data_start;          /* 8 + N: file offset of the data region */
    uint64_t data_len;            /* file size - data_start */
    struct st_tensor *tensors;    /* sorted by name; owned */
    size_t n_tensors;
    struct st_meta *meta;         /* "__metadata__" entries; owned */
    size_t n_meta;
};

/* Parses the header of a safetensors file.
 *   buf, buflen: the first bytes of the file (at least 8 + N of them; the
 *                whole file is fine). Only read, never kept.
 *   file_size:   the size of the whole file, for checking tensor ranges.
 *   fname:       how the file is named in messages.
 * Checks: N <= ST_MAX_HEADER and 8 + N <= file_size; the header is a JSON
 * object starting with '{', padded with whitespace at most; every tensor has
 * a known dtype, a shape of non-negative integers whose product does not
 * overflow, data_offsets [begin, end] with begin <= end <= data_len and
 * end - begin equal to the size the shape and dtype give; names are unique,
 * non-empty and NUL-free; no two tensors overlap; "__metadata__" maps strings
 * to strings. Gaps between tensors are tolerated.
 * On success fills *out (release it with st_header_free) and returns ST_OK.
 * On failure *out is empty, err holds "FNAME: ..." (naming the tensor where
 * there is one) and a negative st_status is returned. */
int st_parse_header(const uint8_t *buf, size_t buflen, uint64_t file_size, const char *fname,
                    struct st_header *out, char *err, size_t errlen);

/* Frees what st_parse_header allocated and empties h (NULL and empty are fine). */
void st_header_free(struct st_header *h);

/* The tensor named `name`, or NULL (binary search; h stays the owner). */
const struct st_tensor *st_find(const struct st_header *h, const char *name);

/* A safetensors file mapped read-only (MAP_PRIVATE). */
struct st_file {
    char *path;                   /* owned copy of the path given */
    const uint8_t *map;           /* the whole file */
    size_t size;
    struct st_header hdr;
};

/* Opens, checks and maps `path` (a regular file; symlinks are followed).
 * On success *out is a new st_file (free with st_close) and ST_OK is
 * returned; otherwise a negative st_status and a message naming the file. */
int st_open(const char *path, struct st_file **out, char *err, size_t errlen);

/* Unmaps and frees f (NULL is fine). Pointers from it die with it. */
void st_close(struct st_file *f);

/* Where tensor t (from f->hdr) starts in the mapping. Only as aligned as the
 * file makes it. */
const void *st_tensor_data(const struct st_file *f, const struct st_tensor *t);

/* snprintf into err (nothing when err is NULL or errlen is 0): the error
 * messages of the loaders in kernels/ and tools/. */
void st_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Writes a printable rendering of s (at most 96 bytes of it; control bytes
 * as \xNN) into buf; returns buf. For messages. */
const char *st_printable(const char *s, char *buf, size_t buflen);

#ifdef __cplusplus
}
#endif

#endif
