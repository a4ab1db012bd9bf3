/* test_checkpoint.c -- safetensors parsing, GPT-2 checkpoint loading (every refusal) and half conversions, on generated models. */
#include "config.h"

#include "checkpoint.h"
#include "safetensors.h"
#include "scratch.h"
#include "tap.h"
#include "../../tools/gen_gpt2.h"

#include <errno.h>
#include <json-c/json.h>
#include <math.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static char base[4096];
static int dir_counter;

/* ------------------------------------------------------------------ helpers */

/* A fresh empty directory under base; returns a static-ish buffer the caller copies. */
static void new_dir(char *out, size_t len, const char *tag)
{
    snprintf(out, len, "%s/%02d-%s", base, ++dir_counter, tag);
    mkdir(out, 0755);
}

static void path_in(char *out, size_t len, const char *dir, const char *name)
{
    snprintf(out, len, "%s/%s", dir, name);
}

static int write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(data, 1, len, f);
    return fclose(f) == 0 && w == len ? 0 : -1;
}

static int write_text(const char *path, const char *text)
{
    return write_file(path, text, strlen(text));
}

/* Reads a whole file; the caller frees *out. */
static int read_file(const char *path, uint8_t **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    *out = malloc((size_t)n + 1);
    *len = fread(*out, 1, (size_t)n, f);
    fclose(f);
    return *len == (size_t)n ? 0 : -1;
}

static void le64_put(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Writes a safetensors file from header text and data bytes. */
static int write_st(const char *path, const char *header, const void *data, size_t dlen)
{
    size_t hl = strlen(header);
    uint8_t *buf = malloc(8 + hl + dlen + 1);
    le64_put(buf, hl);
    memcpy(buf + 8, header, hl);
    if (dlen)
        memcpy(buf + 8 + hl, data, dlen);
    int rc = write_file(path, buf, 8 + hl + dlen);
    free(buf);
    return rc;
}

/* Rewrites the header of a safetensors file through mutate(), keeping the
 * data region byte for byte; pads the header so that 8 + N = pad_to
 * (mod 8) (0: aligned as writers do). */
static int rewrite_header(const char *path, void (*mutate)(struct json_object *root, void *arg), void *arg, int pad_to)
{
    uint8_t *buf;
    size_t len;
    if (read_file(path, &buf, &len) < 0)
        return -1;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | buf[i];
    char *hdr = strndup((const char *)buf + 8, n);
    struct json_object *root = json_tokener_parse(hdr);
    free(hdr);
    if (!root) {
        free(buf);
        return -1;
    }
    mutate(root, arg);
    const char *s = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    size_t hl = strlen(s);
    while ((8 + hl) % 8 != (size_t)pad_to)
        hl++;
    uint8_t *out = malloc(8 + hl + (len - 8 - n) + 1);
    le64_put(out, hl);
    memset(out + 8, ' ', hl);
    memcpy(out + 8, s, strlen(s));
    memcpy(out + 8 + hl, buf + 8 + n, len - 8 - n);
    int rc = write_file(path, out, 8 + hl + (len - 8 - n));
    json_object_put(root);
    free(out);
    free(buf);
    return rc;
}

static struct gen_gpt2_opts tiny(const char *dir)
{
    struct gen_gpt2_opts o;
    gen_gpt2_defaults(&o);
    o.out_dir = dir;
    o.n_layer = 2;
    o.n_head = 2;
    o.n_embd = 16;
    o.n_positions = 32;
    o.vocab_size = 300;
    o.seed = 42;
    return o;
}

/* Generates a model; a failure is a test failure. */
static bool gen(const struct gen_gpt2_opts *o)
{
    char err[1024] = "";
    int rc = gen_gpt2_write(o, err, sizeof err);
    if (rc != 0)
        tap_diag("gen_gpt2_write: %s", err);
    return rc == 0;
}

/* Opens dir expecting failure; returns the message in err. */
static bool open_fails(const char *dir, char *err, size_t errlen)
{
    struct gpt2_checkpoint *ck = NULL;
    err[0] = '\0';
    int rc = gpt2_checkpoint_open(dir, &ck, err, errlen);
    if (rc == 0) {
        gpt2_checkpoint_close(ck);
        return false;
    }
    return ck == NULL && err[0] != '\0';
}

/* ------------------------------------------------------------------ half conversions */

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Checks that h is a correctly rounded (nearest, ties to even) conversion
 * of x, given the exact value of every candidate via back(). */
static bool rounds_right(float x, uint16_t h, float (*back)(uint16_t), uint16_t max_finite)
{
    if (isnan(x))
        return isnan(back(h));
    float y = back(h);
    if (isinf(x))
        return y == x;
    /* Neighbours of h with the same sign; the result must be at least as close as each. */
    uint16_t mag = h & 0x7fff, sign = h & 0x8000;
    double dx = x, best = fabs((double)y - dx);
    if (isinf(y)) {
        /* Overflow is right when x is at least halfway past the largest finite value. */
        double mf = back((uint16_t)(sign | max_finite)), ulp = mf - back((uint16_t)(sign | (max_finite - 1)));
        return fabs(dx) >= fabs(mf) + fabs(ulp) / 2;
    }
    for (int d = -1; d <= 1; d += 2) {
        int m = (int)mag + d;
        if (m < 0 || m > max_finite)
            continue;
        double other = back((uint16_t)(sign | m));
        double od = fabs(other - dx);
        if (od < best)
            return false;
        if (od == best && (h & 1))
            return false;   /* a tie must go to the even mantissa */
    }
    return true;
}

static void test_halves(void)
{
    int bad16 = 0, badb = 0;
    for (uint32_t i = 0; i < 65536; i++) {
        uint16_t h = (uint16_t)i;
        if (ckpt_f32_to_f16(ckpt_f16_to_f32(h)) != h)
            bad16++;
        if (ckpt_f32_to_bf16(ckpt_bf16_to_f32(h)) != h)
            badb++;
    }
    is_int(bad16, 0, "all 65536 f16 values survive f16 -> f32 -> f16 bit for bit");
    is_int(badb, 0, "all 65536 bf16 values survive bf16 -> f32 -> bf16 bit for bit");

    is_int(ckpt_f32_to_f16(1.0f), 0x3c00, "f16(1) = 0x3c00");
    is_int(ckpt_f32_to_f16(-2.0f), 0xc000, "f16(-2) = 0xc000");
    is_int(ckpt_f32_to_f16(65504.0f), 0x7bff, "f16(65504) is the largest half");
    is_int(ckpt_f32_to_f16(65519.0f), 0x7bff, "65519 rounds down to 65504");
    is_int(ckpt_f32_to_f16(65520.0f), 0x7c00, "65520 (the tie past the largest) rounds to inf");
    is_int(ckpt_f32_to_f16(1e10f), 0x7c00, "1e10 overflows to inf");
    is_int(ckpt_f32_to_f16(-INFINITY), 0xfc00, "-inf");
    ok((ckpt_f32_to_f16(NAN) & 0x7c00) == 0x7c00 && (ckpt_f32_to_f16(NAN) & 0x3ff) != 0, "NaN stays NaN in f16");
    ok((ckpt_f32_to_f16(float_of(0x7f800001u)) & 0x3ff) != 0, "a NaN with only low payload bits stays NaN");
    is_int(ckpt_f32_to_f16(-0.0f), 0x8000, "-0 keeps its sign");
    is_int(ckpt_f32_to_f16(ldexpf(1.0f, -24)), 0x0001, "2^-24 is the smallest subnormal");
    is_int(ckpt_f32_to_f16(ldexpf(1.0f, -25)), 0x0000, "2^-25 ties to even zero");
    is_int(ckpt_f32_to_f16(nextafterf(ldexpf(1.0f, -25), 1.0f)), 0x0001, "just above 2^-25 rounds up");
    is_int(ckpt_f32_to_f16(ldexpf(3.0f, -25)), 0x0002, "1.5 * 2^-24 ties to even 2 * 2^-24");
    is_int(ckpt_f32_to_f16(ldexpf(1023.5f, -24)), 0x0400, "the largest subnormal + half rounds to the smallest normal");
    is_int(ckpt_f32_to_f16(1.0f + ldexpf(1.0f, -11)), 0x3c00, "1 + half an ulp ties to even (down)");
    is_int(ckpt_f32_to_f16(1.0f + ldexpf(3.0f, -11)), 0x3c02, "1 + 1.5 ulp ties to even (up)");
    is_int(ckpt_f32_to_f16(2047.5f), 0x67ff + 1, "2047.5 ties up to 2048");
    ok(ckpt_f16_to_f32(0x0001) == ldexpf(1.0f, -24), "f16 0x0001 = 2^-24");
    ok(ckpt_f16_to_f32(0x03ff) == ldexpf(1023.0f, -24), "f16 0x03ff = 1023 * 2^-24");
    ok(isinf(ckpt_f16_to_f32(0x7c00)) && ckpt_f16_to_f32(0xfc00) < 0, "f16 infinities");
    ok(isnan(ckpt_f16_to_f32(0x7e00)), "f16 NaN");

    is_int(ckpt_f32_to_bf16(1.0f), 0x3f80, "bf16(1)");
    is_int(ckpt_f32_to_bf16(float_of(0x3f808000u)), 0x3f80, "bf16 tie to even (down)");
    is_int(ckpt_f32_to_bf16(float_of(0x3f818000u)), 0x3f82, "bf16 tie to even (up)");
    is_int(ckpt_f32_to_bf16(float_of(0x3f808001u)), 0x3f81, "bf16 above the tie rounds up");
    is_int(ckpt_f32_to_bf16(float_of(0x7f7fffffu)), 0x7f80, "the largest float rounds to bf16 inf");
    ok((ckpt_f32_to_bf16(float_of(0x7f800001u)) & 0x7f) != 0, "a NaN with only low payload bits stays NaN in bf16");
    is_int(ckpt_f32_to_bf16(float_of(0x00000001u)), 0x0000, "the smallest f32 subnormal rounds to bf16 zero");

    /* A sweep of f32 bit patterns: each conversion is the nearest value, ties to even. */
    int wrong16 = 0, wrongb = 0, wrongref = 0;
    for (uint64_t u = 0; u < 0x100000000ull; u += 4093) {
        float x = float_of((uint32_t)u);
        if (!rounds_right(x, ckpt_f32_to_f16(x), ckpt_f16_to_f32, 0x7bff))
            wrong16++;
        if (!rounds_right(x, ckpt_f32_to_bf16(x), ckpt_bf16_to_f32, 0x7f7f))
            wrongb++;
#ifdef __FLT16_MAX__
        if (!isnan(x)) {
            _Float16 r = (_Float16)x;
            uint16_t rb;
            memcpy(&rb, &r, 2);
            if (rb != ckpt_f32_to_f16(x))
                wrongref++;
        }
#endif
    }
    is_int(wrong16, 0, "f32 -> f16 rounds to nearest even over a sweep of 1M floats");
    is_int(wrongb, 0, "f32 -> bf16 rounds to nearest even over a sweep of 1M floats");
#ifdef __FLT16_MAX__
    is_int(wrongref, 0, "f32 -> f16 agrees with the compiler's _Float16 conversion");
    int wrongup = 0;
    for (uint32_t i = 0; i < 65536; i++) {
        uint16_t h = (uint16_t)i;
        _Float16 r;
        memcpy(&r, &h, 2);
        float want = (float)r, got = ckpt_f16_to_f32(h);
        if (!(bits_of(want) == bits_of(got) || (isnan(want) && isnan(got))))
            wrongup++;
    }
    is_int(wrongup, 0, "f16 -> f32 agrees with _Float16 for all 65536 values");
#else
    (void)wrongref;
    (void)bits_of;
#endif
}

/* ------------------------------------------------------------------ the buffer parser */

/* Parses header text with a data region of dlen zero bytes. */
static int parse_text(const char *header, size_t dlen, struct st_header *h, char *err, size_t errlen)
{
    size_t hl = strlen(header);
    uint8_t *buf = calloc(1, 8 + hl + dlen);
    le64_put(buf, hl);
    memcpy(buf + 8, header, hl);
    int rc = st_parse_header(buf, 8 + hl + dlen, 8 + hl + dlen, "x.safetensors", h, err, errlen);
    free(buf);
    return rc;
}

#define REFUSED(hdr, dlen, needle, what)                                                           \
    do {                                                                                           \
        struct st_header sh_;                                                                      \
        char e_[1024] = "";                                                                        \
        int rc_ = parse_text(hdr, dlen, &sh_, e_, sizeof e_);                                      \
        ok(rc_ == ST_ERR_FORMAT && sh_.n_tensors == 0 && sh_.tensors == NULL, "refused: %s", what); \
        has_str(e_, "x.safetensors: ", "  the message names the file");                            \
        has_str(e_, needle, "  and says why (%s)", needle);                                        \
    } while (0)

static void test_parser(void)
{
    struct st_header h;
    char err[1024];

    /* A valid header with several dtypes, metadata and padding. */
    const char *good = "{\"__metadata__\":{\"format\":\"pt\",\"note\":\"a\\u0000b\"},"
                       "\"b\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[8,16]},"
                       "\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]},"
                       "\"mask\":{\"dtype\":\"BOOL\",\"shape\":[2,2],\"data_offsets\":[16,20]},"
                       "\"i8\":{\"dtype\":\"I8\",\"shape\":[3],\"data_offsets\":[20,23]},"
                       "\"f4\":{\"dtype\":\"F4\",\"shape\":[2],\"data_offsets\":[23,24]},"
                       "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[24,28]},"
                       "\"empty\":{\"dtype\":\"F16\",\"shape\":[0,5],\"data_offsets\":[28,28]}}      ";
    int rc = parse_text(good, 28, &h, err, sizeof err);
    is_int(rc, ST_OK, "a header with F64/I32/BOOL/I8/F4/scalar/empty tensors and metadata parses");
    if (rc != ST_OK)
        tap_diag("%s", err);
    is_int(h.n_tensors, 7, "7 tensors");
    is_int(h.n_meta, 2, "2 metadata entries");
    ok(h.n_tensors == 7 && strcmp(h.tensors[0].name, "a") == 0 && strcmp(h.tensors[6].name, "s") == 0,
       "tensors sorted by name");
    const struct st_tensor *t = st_find(&h, "b");
    ok(t && t->dtype == ST_I32 && t->ndim == 1 && t->shape[0] == 2 && t->begin == 8 && t->end == 16, "st_find b");
    t = st_find(&h, "s");
    ok(t && t->ndim == 0 && t->nelem == 1, "a scalar has rank 0 and one element");
    t = st_find(&h, "empty");
    ok(t && t->nelem == 0 && t->begin == t->end, "an empty tensor");
    ok(st_find(&h, "zzz") == NULL && st_find(&h, "") == NULL, "st_find misses");
    bool meta_nul = false;
    for (size_t i = 0; i < h.n_meta; i++)
        meta_nul |= strcmp(h.meta[i].key, "note") == 0 && h.meta[i].value_len == 3;
    ok(meta_nul, "metadata values keep embedded NULs with their length");
    is_int(h.data_start, 8 + strlen(good), "data_start = 8 + N");
    st_header_free(&h);
    st_header_free(&h);

    is_int(parse_text("{}", 0, &h, err, sizeof err), ST_OK, "an empty object is a valid (empty) file");
    st_header_free(&h);
    is_int(parse_text("{\"__metadata__\":null}", 0, &h, err, sizeof err), ST_OK, "null metadata is accepted");
    st_header_free(&h);

    /* Short buffers ask for more; short files are refused. */
    uint8_t small[16] = {2, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    is_int(st_parse_header(small, 9, 10, "x", &h, err, sizeof err), ST_ERR_SHORT, "buffer ending inside the header: SHORT");
    is_int(st_parse_header(small, 4, 10, "x", &h, err, sizeof err), ST_ERR_SHORT, "buffer under 8 bytes: SHORT");
    is_int(st_parse_header(small, 10, 10, "x", &h, err, sizeof err), ST_OK, "the same bytes in full parse");
    st_header_free(&h);
    is_int(st_parse_header(small, 5, 5, "x", &h, err, sizeof err), ST_ERR_FORMAT, "a 5-byte file is refused");
    has_str(err, "too short", "  as too short");
    le64_put(small, 100);
    is_int(st_parse_header(small, 16, 16, "x", &h, err, sizeof err), ST_ERR_FORMAT, "header length beyond the file");
    has_str(err, "header length 100 reaches beyond the end of the file (16 bytes)", "  says so with both numbers");
    le64_put(small, 200000000);
    is_int(st_parse_header(small, 16, 300000000, "x", &h, err, sizeof err), ST_ERR_FORMAT, "header over 100 MB");
    has_str(err, "more than the limit", "  as over the limit");
    le64_put(small, UINT64_MAX);
    is_int(st_parse_header(small, 16, 16, "x", &h, err, sizeof err), ST_ERR_FORMAT, "header length 2^64-1 refused");

    REFUSED(" {}", 0, "does not start with '{'", "leading space");
    REFUSED("[]", 0, "does not start with '{'", "an array");
    REFUSED("{} x", 0, "not valid JSON", "trailing garbage");
    REFUSED("{}{}", 0, "not valid JSON", "two objects");
    REFUSED("{}\n\t\r ]", 0, "not valid JSON", "garbage after whitespace");
    REFUSED("{\"a\":1", 0, "ends too early", "incomplete JSON");
    REFUSED("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],}}", 4, "not valid JSON", "trailing comma (strict JSON)");
    REFUSED("{\"a\x01\":1}", 0, "control byte", "a raw control byte");
    REFUSED("{\"\xff\":1}", 0, "not valid JSON", "invalid UTF-8");
    REFUSED("{\"a\":1}", 0, "tensor a: entry is not a JSON object", "an entry that is a number");
    REFUSED("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor a: no \"dtype\"", "no dtype");
    REFUSED("{\"a\":{\"dtype\":\"Q4_K\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor a: unknown dtype \"Q4_K\"", "unknown dtype");
    REFUSED("{\"a\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "unknown dtype", "lower-case dtype");
    REFUSED("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "tensor a: no \"shape\"", "no shape");
    REFUSED("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "tensor a: shape[0]", "negative dim");
    REFUSED("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 4, "tensor a: shape[0]", "float dim");
    REFUSED("{\"a\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4, "tensor a: shape[0]", "string dim");
    REFUSED("{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,4]}}", 4, "tensor a: shape[0]", "dim past 2^64");
    REFUSED("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, "rank 9", "rank 9");
    REFUSED("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,2],\"data_offsets\":[0,4]}}", 4, "overflows", "element count overflow");
    REFUSED("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,1073741824],\"data_offsets\":[0,4]}}", 4, "byte size overflows", "byte size overflow");
    REFUSED("{\"a\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", 2, "do not fill whole bytes", "3 F4 elements");
    REFUSED("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "tensor a: \"data_offsets\"", "no data_offsets");
    REFUSED("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "\"data_offsets\" is not a list", "one offset");
    REFUSED("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8, "\"data_offsets\" is not a list", "three offsets");
    REFUSED("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, "\"data_offsets\" is not a list", "negative offset");
    REFUSED("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8, "end before they begin", "begin > end");
    REFUSED("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 4, "tensor a: data_offsets [4, 8] reach beyond the data region (4 bytes)", "end past the data");
    REFUSED("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,18446744073709551615]}}", 4, "\"data_offsets\"", "end 2^64-1");
    REFUSED("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 8, "tensor a: data_offsets [0, 4] hold 4 bytes, but shape [2] of F32 needs 8", "size not matching the shape");
    REFUSED("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "tensor a: the name appears twice", "duplicate names");
    REFUSED("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"\\u0061\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "tensor a: the name appears twice", "duplicate names, one escaped");
    REFUSED("{\"a\\u0000x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "contains a NUL", "NUL in a name");
    REFUSED("{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "empty name", "empty name");
    REFUSED("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "tensors a and b overlap", "overlapping tensors");
    REFUSED("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "overlap", "two tensors on the same bytes");
    REFUSED("{\"__metadata__\":{\"format\":1}}", 0, "__metadata__ value of \"format\" is not a string", "non-string metadata");
    REFUSED("{\"__metadata__\":[]}", 0, "__metadata__ is not a JSON object", "metadata list");
    REFUSED("{\"__metadata__\":{},\"__metadata__\":{}}", 0, "appears twice", "metadata twice");
    REFUSED("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":{\"y\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}}}", 4, "not valid JSON", "nesting too deep");

    /* Empty tensors may share an offset with anything; gaps are tolerated. */
    is_int(parse_text("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                      "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[2,2]},"
                      "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 16, &h, err, sizeof err),
           ST_OK, "empty tensors inside others and gaps between tensors are accepted");
    st_header_free(&h);
    is_int(parse_text("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"extra\":[1,2]}}", 4, &h, err, sizeof err),
           ST_OK, "unknown keys in an entry are ignored");
    st_header_free(&h);

    /* Every dtype name round-trips. */
    int badnames = 0;
    for (int i = 0; i < ST_NDTYPES; i++) {
        enum st_dtype d;
        if (st_dtype_parse(st_dtype_name((enum st_dtype)i), &d) < 0 || (int)d != i || st_dtype_bits(d) == 0)
            badnames++;
    }
    is_int(badnames, 0, "all %d dtype names parse back", ST_NDTYPES);
    char pb[64];
    is_str(st_printable("a\nb", pb, sizeof pb), "a\\x0ab", "st_printable escapes control bytes");
}

/* ------------------------------------------------------------------ files */

static void test_files(void)
{
    char dir[4096], p[4200], err[1024];
    struct st_file *f;
    new_dir(dir, sizeof dir, "files");

    path_in(p, sizeof p, dir, "nope.safetensors");
    is_int(st_open(p, &f, err, sizeof err), ST_ERR_IO, "st_open of a missing file");
    has_str(err, "nope.safetensors: cannot open", "  names the file");
    ok(f == NULL, "  and returns no file");

    is_int(st_open(dir, &f, err, sizeof err), ST_ERR_IO, "st_open of a directory");
    has_str(err, "not a regular file", "  is not a regular file");

    path_in(p, sizeof p, dir, "fifo.safetensors");
    mkfifo(p, 0600);
    is_int(st_open(p, &f, err, sizeof err), ST_ERR_IO, "st_open of a FIFO returns at once");
    has_str(err, "fifo.safetensors: not a regular file", "  as not a regular file");

    path_in(p, sizeof p, dir, "empty.safetensors");
    write_file(p, "", 0);
    is_int(st_open(p, &f, err, sizeof err), ST_ERR_FORMAT, "st_open of an empty file");
    has_str(err, "empty.safetensors: 0 bytes is too short", "  as too short");

    float vals[3] = {1.5f, -2.0f, 0.25f};
    path_in(p, sizeof p, dir, "ok.safetensors");
    write_st(p, "{\"v\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}  ", vals, sizeof vals);
    is_int(st_open(p, &f, err, sizeof err), ST_OK, "st_open of a small valid file");
    if (f) {
        const struct st_tensor *t = st_find(&f->hdr, "v");
        float got[3] = {0};
        if (t)
            memcpy(got, st_tensor_data(f, t), sizeof got);
        ok(t && memcmp(got, vals, sizeof vals) == 0, "tensor data read through the mapping");
        is_str(f->path, p, "the path is kept");
        st_close(f);
    }
    st_close(NULL);
}

/* ------------------------------------------------------------------ generated models */

/* Expected stored value: the generator's float, rounded to the file's dtype. */
static float stored(enum ckpt_dtype dt, float v)
{
    if (dt == CKPT_F16)
        return ckpt_f16_to_f32(ckpt_f32_to_f16(v));
    if (dt == CKPT_BF16)
        return ckpt_bf16_to_f32(ckpt_f32_to_bf16(v));
    return v;
}

/* Compares every element of t (or a stride of them in big tensors) with the generator. */
static int check_values(const struct gen_gpt2_opts *o, const char *name, const struct ckpt_tensor *t)
{
    size_t n = t->nbytes / ckpt_dtype_size(t->dtype), step = n > 5000 ? n / 4999 : 1, bad = 0;
    for (size_t i = 0; i < n; i += step) {
        float want = stored(o->dtype, gen_gpt2_value(o, name, i)), got = ckpt_get(t, i);
        if (bits_of(want) != bits_of(got))
            bad++;
    }
    float last = stored(o->dtype, gen_gpt2_value(o, name, n - 1));
    if (n && bits_of(last) != bits_of(ckpt_get(t, n - 1)))
        bad++;
    return (int)bad;
}

static bool shape_is(const struct ckpt_tensor *t, int ndim, int64_t d0, int64_t d1)
{
    return t->data && t->ndim == ndim && t->shape[0] == d0 && (ndim < 2 || t->shape[1] == d1) &&
           t->nbytes == (size_t)(d0 * (ndim == 2 ? d1 : 1)) * ckpt_dtype_size(t->dtype);
}

/* Opens what o wrote and checks config, shapes, alignment and values. */
static void check_model(const struct gen_gpt2_opts *o, const char *what)
{
    struct gpt2_checkpoint *ck = NULL;
    char err[1024] = "";
    int rc = gpt2_checkpoint_open(o->out_dir, &ck, err, sizeof err);
    is_int(rc, 0, "%s: opens", what);
    if (rc != 0) {
        tap_diag("%s", err);
        return;
    }
    const struct gpt2_config *c = &ck->cfg;
    int64_t C = o->n_embd, I = o->n_inner ? o->n_inner : 4 * o->n_embd, V = o->vocab_size;
    ok(c->n_layer == o->n_layer && c->n_head == o->n_head && c->n_embd == o->n_embd &&
           c->n_positions == o->n_positions && c->vocab_size == o->vocab_size && c->n_inner == I,
       "%s: config sizes", what);
    ok(strcmp(c->model_type, "gpt2") == 0 && strcmp(c->architecture, "GPT2LMHeadModel") == 0 &&
           strcmp(c->activation, o->activation) == 0 && c->tie_word_embeddings == !o->untied &&
           c->layer_norm_epsilon == 1e-5f && c->scale_attn_weights && !c->scale_attn_by_inverse_layer_idx,
       "%s: config flags", what);
    is_int(c->eos_token_id, o->vocab_size > 50256 ? 50256 : o->vocab_size - 1, "%s: eos", what);
    ok(shape_is(&ck->wte, 2, V, C) && shape_is(&ck->wpe, 2, o->n_positions, C) && shape_is(&ck->ln_f_w, 1, C, 0) &&
           shape_is(&ck->ln_f_b, 1, C, 0) && shape_is(&ck->lm_head, 2, V, C),
       "%s: top-level shapes", what);
    int badshape = 0, badval = 0, misaligned = 0, baddtype = 0;
    for (int l = 0; l < c->n_layer; l++) {
        const struct gpt2_layer_tensors *L = &ck->layers[l];
        const struct ckpt_tensor *ts[] = {&L->ln_1_w, &L->ln_1_b, &L->c_attn_w, &L->c_attn_b, &L->c_proj_w, &L->c_proj_b,
                                          &L->ln_2_w, &L->ln_2_b, &L->c_fc_w, &L->c_fc_b, &L->mlp_proj_w, &L->mlp_proj_b};
        const char *sfx[] = {"ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
                             "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
                             "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"};
        int64_t shp[][3] = {{1, C, 0}, {1, C, 0}, {2, C, 3 * C}, {1, 3 * C, 0}, {2, C, C}, {1, C, 0},
                            {1, C, 0}, {1, C, 0}, {2, C, I},     {1, I, 0},     {2, I, C}, {1, C, 0}};
        for (int k = 0; k < 12; k++) {
            char name[96];
            snprintf(name, sizeof name, "h.%d.%s", l, sfx[k]);
            badshape += !shape_is(ts[k], (int)shp[k][0], shp[k][1], shp[k][2]);
            badval += check_values(o, name, ts[k]);
            misaligned += (uintptr_t)ts[k]->data % ckpt_dtype_size(ts[k]->dtype) != 0;
            baddtype += ts[k]->dtype != o->dtype;
        }
    }
    is_int(badshape, 0, "%s: every block tensor has its shape", what);
    is_int(badval, 0, "%s: every block tensor holds the generator's values", what);
    is_int(misaligned, 0, "%s: every tensor is aligned to its element size", what);
    is_int(baddtype, 0, "%s: every tensor has dtype %s", what, ckpt_dtype_name(o->dtype));
    is_int(check_values(o, "wte.weight", &ck->wte) + check_values(o, "wpe.weight", &ck->wpe) +
               check_values(o, "ln_f.weight", &ck->ln_f_w) + check_values(o, "ln_f.bias", &ck->ln_f_b),
           0, "%s: wte, wpe, ln_f values", what);
    if (o->untied) {
        is_int(check_values(o, "lm_head.weight", &ck->lm_head), 0, "%s: lm_head has its own values", what);
        ok(ck->lm_head.data != ck->wte.data, "%s: lm_head is not wte", what);
    } else {
        ok(ck->lm_head.data == ck->wte.data && ck->lm_head.nbytes == ck->wte.nbytes, "%s: lm_head is wte", what);
    }
    is_int(ck->weight_bytes, gen_gpt2_weight_bytes(o), "%s: weight_bytes", what);
    gpt2_checkpoint_close(ck);
}

static void test_generated(void)
{
    char dir[4096];
    static const struct {
        const char *tag;
        enum ckpt_dtype dt;
        bool prefix, untied;
        int shards, inner;
        const char *act;
    } cases[] = {
        {"f32", CKPT_F32, false, false, 1, 0, "gelu_new"},
        {"f16", CKPT_F16, false, false, 1, 0, "gelu_new"},
        {"bf16", CKPT_BF16, false, false, 1, 0, "gelu_new"},
        {"f32-prefix", CKPT_F32, true, false, 1, 0, "gelu_new"},
        {"f16-sharded", CKPT_F16, false, false, 3, 0, "gelu_new"},
        {"f32-untied", CKPT_F32, false, true, 1, 0, "gelu_new"},
        {"bf16-prefix-untied-sharded", CKPT_BF16, true, true, 4, 40, "quick_gelu"},
        {"f32-inner-relu", CKPT_F32, false, false, 2, 24, "relu"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        new_dir(dir, sizeof dir, cases[i].tag);
        struct gen_gpt2_opts o = tiny(dir);
        o.dtype = cases[i].dt;
        o.prefix = cases[i].prefix;
        o.untied = cases[i].untied;
        o.shards = cases[i].shards;
        o.n_inner = cases[i].inner;
        o.activation = cases[i].act;
        ok(gen(&o), "%s: generated", cases[i].tag);
        check_model(&o, cases[i].tag);
    }

    /* Determinism and the dtypes agreeing. */
    char d1[4096], d2[4096], d3[4096], p1[4200], p2[4200];
    new_dir(d1, sizeof d1, "det-a");
    new_dir(d2, sizeof d2, "det-b");
    new_dir(d3, sizeof d3, "det-f16");
    struct gen_gpt2_opts a = tiny(d1), b = tiny(d2), h = tiny(d3);
    h.dtype = CKPT_F16;
    gen(&a);
    gen(&b);
    gen(&h);
    uint8_t *ba = NULL, *bb = NULL;
    size_t la = 0, lb = 0;
    path_in(p1, sizeof p1, d1, "model.safetensors");
    path_in(p2, sizeof p2, d2, "model.safetensors");
    ok(read_file(p1, &ba, &la) == 0 && read_file(p2, &bb, &lb) == 0 && la == lb && memcmp(ba, bb, la) == 0,
       "the same options give byte-identical files");
    ok(ba && la > 8 && ((ba[0] | (uint64_t)ba[1] << 8) + 8) % 8 == 0, "the data region starts 8-byte aligned");
    free(ba);
    free(bb);
    path_in(p1, sizeof p1, d1, "config.json");
    path_in(p2, sizeof p2, d2, "config.json");
    ba = bb = NULL;
    ok(read_file(p1, &ba, &la) == 0 && read_file(p2, &bb, &lb) == 0 && la == lb && memcmp(ba, bb, la) == 0,
       "and identical config.json");
    free(ba);
    free(bb);

    struct gpt2_checkpoint *c32 = NULL, *c16 = NULL;
    char err[1024];
    gpt2_checkpoint_open(d1, &c32, err, sizeof err);
    gpt2_checkpoint_open(d3, &c16, err, sizeof err);
    if (c32 && c16) {
        size_t n = c32->wte.nbytes / 4, far = 0;
        double sum = 0, sum2 = 0;
        for (size_t i = 0; i < n; i++) {
            float x = ckpt_get(&c32->wte, i), y = ckpt_get(&c16->wte, i);
            if (fabsf(x - y) > ldexpf(fabsf(x), -11) + ldexpf(1.0f, -25))
                far++;
            sum += x;
            sum2 += (double)x * x;
        }
        is_int(far, 0, "F16 and F32 files of one seed agree within half an f16 ulp");
        double mean = sum / (double)n, sd = sqrt(sum2 / (double)n - mean * mean);
        ok(fabs(mean) < 0.002 && fabs(sd - 0.08) < 0.002, "wte is centred with std 0.08 (mean %.5f, std %.5f)", mean, sd);
        float lo = 1e9f, hi = -1e9f;
        for (size_t i = 0; i < (size_t)c32->cfg.n_embd; i++) {
            float g = ckpt_get(&c32->layers[0].ln_1_w, i);
            lo = g < lo ? g : lo;
            hi = g > hi ? g : hi;
        }
        ok(lo > 0.85f && hi < 1.15f && hi - lo > 0.05f, "LayerNorm gains are 1 with noise [%.3f, %.3f]", lo, hi);
    } else {
        ok(0, "open the f32 and f16 twins");
    }
    gpt2_checkpoint_close(c32);
    gpt2_checkpoint_close(c16);
    gpt2_checkpoint_close(NULL);

    struct gen_gpt2_opts other = a;
    other.seed = 43;
    ok(gen_gpt2_value(&a, "wte.weight", 7) != gen_gpt2_value(&other, "wte.weight", 7) &&
           gen_gpt2_value(&a, "wte.weight", 7) != gen_gpt2_value(&a, "wte.weight", 8) &&
           gen_gpt2_value(&a, "h.0.ln_1.weight", 0) != gen_gpt2_value(&a, "h.1.ln_1.weight", 0),
       "values differ across seeds, elements and tensors");
    /* Pinned values: the generator's output must never change silently. */
    float v0 = gen_gpt2_value(&a, "wte.weight", 0), v1 = gen_gpt2_value(&a, "h.1.mlp.c_fc.bias", 5);
    tap_diag("pinned: wte[0] = %a, h.1.mlp.c_fc.bias[5] = %a", v0, v1);
    ok(v0 == -0x1.d5b7c6p-4f && v1 == 0x1.9938cap-7f, "seed 42 values are as pinned");

    /* Bad options are refused. */
    new_dir(dir, sizeof dir, "badopts");
    struct gen_gpt2_opts bad = tiny(dir);
    bad.n_embd = 15;
    char e[512];
    ok(gen_gpt2_write(&bad, e, sizeof e) < 0 && strstr(e, "divisible"), "generator refuses embd %% heads != 0");
    bad = tiny(dir);
    bad.activation = "swish";
    ok(gen_gpt2_write(&bad, e, sizeof e) < 0 && strstr(e, "swish"), "generator refuses an unknown activation");
    bad = tiny(dir);
    bad.shards = 1000;
    ok(gen_gpt2_write(&bad, e, sizeof e) < 0, "generator refuses more shards than tensors");
    bad = tiny(dir);
    bad.tokenizer_dir = "/nonexistent";
    bad.vocab_size = 50257;
    ok(gen_gpt2_write(&bad, e, sizeof e) < 0 && strstr(e, "/nonexistent/vocab.json"), "generator names a missing tokenizer file");

    /* A stale index does not survive a single-file run (and the other way round). */
    new_dir(dir, sizeof dir, "restale");
    struct gen_gpt2_opts s = tiny(dir);
    s.shards = 2;
    gen(&s);
    s.shards = 1;
    gen(&s);
    path_in(p1, sizeof p1, dir, "model.safetensors.index.json");
    path_in(p2, sizeof p2, dir, "model-00001-of-00002.safetensors");
    ok(access(p1, F_OK) < 0 && access(p2, F_OK) < 0, "rewriting a directory removes the old shards and index");
}

/* ------------------------------------------------------------------ config refusals */

static void cfg_case(const char *json, const char *needle, const char *what)
{
    char dir[4096], p[4200], err[1024];
    new_dir(dir, sizeof dir, "cfg");
    path_in(p, sizeof p, dir, "config.json");
    write_text(p, json);
    struct gpt2_config c;
    err[0] = '\0';
    int rc = gpt2_config_load(p, &c, err, sizeof err);
    ok(rc == -1, "config refused: %s", what);
    has_str(err, p, "  names the file");
    has_str(err, needle, "  says: %s", needle);
}

static void test_config(void)
{
    char dir[4096], p[4200], err[1024];
    struct gpt2_config c;
    new_dir(dir, sizeof dir, "cfg-defaults");
    path_in(p, sizeof p, dir, "config.json");
    write_text(p, "{}");
    is_int(gpt2_config_load(p, &c, err, sizeof err), 0, "an empty config takes GPT2Config's defaults");
    ok(c.n_layer == 12 && c.n_head == 12 && c.n_embd == 768 && c.n_positions == 1024 && c.vocab_size == 50257 &&
           c.n_inner == 3072 && c.layer_norm_epsilon == 1e-5f && strcmp(c.activation, "gelu_new") == 0 &&
           c.act == CKPT_ACT_GELU_TANH && c.tie_word_embeddings && c.scale_attn_weights && !c.scale_attn_by_inverse_layer_idx &&
           c.bos_token_id == 50256 && c.eos_token_id == 50256 && strcmp(c.model_type, "gpt2") == 0 &&
           c.architecture[0] == '\0',
       "  all of them");
    write_text(p, "{\"model_type\":\"gpt2\",\"n_ctx\":77,\"n_embd\":96,\"n_head\":4,\"n_inner\":null,"
                  "\"bos_token_id\":null,\"eos_token_id\":7,\"layer_norm_epsilon\":1e-6,\"activation_function\":\"gelu\","
                  "\"tie_word_embeddings\":false,\"scale_attn_by_inverse_layer_idx\":true,\"scale_attn_weights\":false,"
                  "\"architectures\":[\"GPT2LMHeadModel\"],\"unknown_key\":[1,{}]}\n\n");
    is_int(gpt2_config_load(p, &c, err, sizeof err), 0, "a config with old and null keys");
    ok(c.n_positions == 77 && c.n_inner == 384 && c.bos_token_id == -1 && c.eos_token_id == 7 &&
           fabsf(c.layer_norm_epsilon - 1e-6f) < 1e-12f && strcmp(c.activation, "gelu") == 0 &&
           c.act == CKPT_ACT_GELU_ERF && !c.tie_word_embeddings && c.scale_attn_by_inverse_layer_idx && !c.scale_attn_weights &&
           strcmp(c.architecture, "GPT2LMHeadModel") == 0,
       "  n_ctx for n_positions, null n_inner = 4C, null bos = -1, and the flags");
    write_text(p, "{\"n_positions\":64,\"n_ctx\":32,\"hidden_size\":32,\"num_hidden_layers\":3,\"num_attention_heads\":2}");
    is_int(gpt2_config_load(p, &c, err, sizeof err), 0, "a config with alias keys");
    ok(c.n_positions == 64 && c.n_embd == 32 && c.n_layer == 3 && c.n_head == 2, "  n_positions wins over n_ctx; aliases read");
    write_text(p, "{\"architectures\":[\"GPT2LMHeadModel\"]}");
    is_int(gpt2_config_load(p, &c, err, sizeof err), 0, "no model_type but a GPT2 architecture is accepted");
    write_text(p, "{\"model_type\":\"gpt2\",\"layer_norm_epsilon\":1}");
    ok(gpt2_config_load(p, &c, err, sizeof err) < 0, "layer_norm_epsilon 1 is refused");

    cfg_case("{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"hidden_size\":4096}",
             "unsupported architecture LlamaForCausalLM (model_type llama): llmcgi runs GPT-2 models", "a LLaMA config");
    cfg_case("{\"model_type\":\"gpt_neox\"}", "unsupported model_type gpt_neox: llmcgi runs GPT-2 models", "GPT-NeoX without architectures");
    cfg_case("{\"architectures\":[\"MistralForCausalLM\"]}", "unsupported architecture MistralForCausalLM (model_type not given)", "architecture only");
    cfg_case("{\"model_type\":\"gpt2\",\"n_layer\":2,", "invalid JSON", "truncated JSON");
    cfg_case("{\"model_type\":\"gpt2\",} ", "invalid JSON", "trailing comma");
    cfg_case("{\"model_type\":\"gpt2\"} x", "invalid JSON", "garbage after the object");
    cfg_case("[1,2]", "not a JSON object", "a list");
    cfg_case("", "invalid JSON", "an empty file");
    cfg_case("{\"model_type\":\"gpt2\",\"n_layer\":\"12\"}", "n_layer must be an integer, not string", "string n_layer");
    cfg_case("{\"model_type\":\"gpt2\",\"n_head\":12.0}", "n_head must be an integer, not double", "double n_head");
    cfg_case("{\"model_type\":\"gpt2\",\"n_embd\":null}", "n_embd must be an integer, not null", "null n_embd");
    cfg_case("{\"model_type\":\"gpt2\",\"n_layer\":0}", "n_layer = 0 is out of range", "zero layers");
    cfg_case("{\"model_type\":\"gpt2\",\"n_layer\":-3}", "n_layer = -3 is out of range", "negative layers");
    cfg_case("{\"model_type\":\"gpt2\",\"vocab_size\":99999999999}", "vocab_size = 99999999999 is out of range", "absurd vocab");
    cfg_case("{\"model_type\":\"gpt2\",\"n_positions\":100000000}", "n_positions = 100000000 is out of range", "absurd positions");
    cfg_case("{\"model_type\":\"gpt2\",\"n_embd\":100,\"n_head\":3}", "n_embd 100 is not divisible by n_head 3", "embd % heads");
    cfg_case("{\"model_type\":\"gpt2\",\"activation_function\":\"swish\"}", "activation_function \"swish\" is not supported", "unknown activation");
    cfg_case("{\"model_type\":\"gpt2\",\"activation_function\":5}", "activation_function must be a string, not int", "activation as a number");
    cfg_case("{\"model_type\":\"gpt2\",\"tie_word_embeddings\":\"yes\"}", "tie_word_embeddings must be true or false, not string", "string bool");
    cfg_case("{\"model_type\":\"gpt2\",\"layer_norm_epsilon\":\"1e-5\"}", "layer_norm_epsilon must be a number, not string", "string epsilon");
    cfg_case("{\"model_type\":\"gpt2\",\"layer_norm_epsilon\":-1e-5}", "layer_norm_epsilon = -1e-5 is out of range", "negative epsilon");
    cfg_case("{\"model_type\":7}", "model_type must be a string, not int", "numeric model_type");
    cfg_case("{\"model_type\":\"gpt2\",\"architectures\":\"GPT2LMHeadModel\"}", "architectures must be a list", "architectures as a string");
    cfg_case("{\"model_type\":\"gpt2\",\"eos_token_id\":-5}", "eos_token_id = -5 is out of range", "negative eos");
    cfg_case("{\"model_type\":\"gpt2\",\"add_cross_attention\":true}", "add_cross_attention", "cross attention");

    path_in(p, sizeof p, dir, "missing.json");
    ok(gpt2_config_load(p, &c, err, sizeof err) < 0, "a missing config file");
    has_str(err, "missing.json: not found", "  names it");
}

/* ------------------------------------------------------------------ weight refusals */

struct edit {
    const char *name;             /* the tensor to touch */
    const char *action;           /* "delete", "dtype", "shape-1", "end-4", "end+4", "copy-offsets", "rename", "dup-prefix" */
    const char *arg;
};

static struct json_object *arr2(uint64_t a, uint64_t b)
{
    struct json_object *x = json_object_new_array();
    json_object_array_add(x, json_object_new_int64((int64_t)a));
    json_object_array_add(x, json_object_new_int64((int64_t)b));
    return x;
}

static void get_offsets(struct json_object *e, uint64_t *b, uint64_t *en)
{
    struct json_object *o;
    json_object_object_get_ex(e, "data_offsets", &o);
    *b = (uint64_t)json_object_get_int64(json_object_array_get_idx(o, 0));
    *en = (uint64_t)json_object_get_int64(json_object_array_get_idx(o, 1));
}

static struct json_object *shape2(int64_t a, int64_t b)
{
    struct json_object *x = json_object_new_array();
    json_object_array_add(x, json_object_new_int64(a));
    if (b >= 0)
        json_object_array_add(x, json_object_new_int64(b));
    return x;
}

/* Appends a tensor (its bytes after the existing data) to a safetensors
 * file; shape is consumed. */
static int append_tensor(const char *path, const char *name, const char *dtype, struct json_object *shape,
                         const void *bytes, size_t nbytes)
{
    uint8_t *b;
    size_t l;
    if (read_file(path, &b, &l) < 0) {
        json_object_put(shape);
        return -1;
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | b[i];
    char *hdr = strndup((const char *)b + 8, n);
    struct json_object *root = json_tokener_parse(hdr), *e = json_object_new_object();
    uint64_t dlen = l - 8 - n;
    json_object_object_add(e, "dtype", json_object_new_string(dtype));
    json_object_object_add(e, "shape", shape);
    json_object_object_add(e, "data_offsets", arr2(dlen, dlen + nbytes));
    json_object_object_add(root, name, e);
    const char *s = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    size_t nl = strlen(s), padded = nl;
    while ((8 + padded) % 8)
        padded++;
    uint8_t *nb = malloc(8 + padded + dlen + nbytes + 1);
    le64_put(nb, padded);
    memset(nb + 8, ' ', padded);
    memcpy(nb + 8, s, nl);
    memcpy(nb + 8 + padded, b + 8 + n, dlen);
    if (nbytes)
        memcpy(nb + 8 + padded + dlen, bytes, nbytes);
    int rc = write_file(path, nb, 8 + padded + dlen + nbytes);
    free(nb);
    free(hdr);
    free(b);
    json_object_put(root);
    return rc;
}

static void apply_edit(struct json_object *root, void *arg)
{
    const struct edit *ed = arg;
    struct json_object *e;
    if (!json_object_object_get_ex(root, ed->name, &e))
        return;
    uint64_t b, en;
    get_offsets(e, &b, &en);
    if (strcmp(ed->action, "delete") == 0) {
        json_object_object_del(root, ed->name);
    } else if (strcmp(ed->action, "dtype") == 0) {
        json_object_object_add(e, "dtype", json_object_new_string(ed->arg));
    } else if (strcmp(ed->action, "shape-1") == 0) {
        /* Last dim one smaller, offsets shrunk to match: a consistent file of the wrong shape. */
        struct json_object *s;
        json_object_object_get_ex(e, "shape", &s);
        size_t nd = json_object_array_length(s);
        int64_t last = json_object_get_int64(json_object_array_get_idx(s, nd - 1)), rest = 1;
        for (size_t i = 0; i + 1 < nd; i++)
            rest *= json_object_get_int64(json_object_array_get_idx(s, i));
        json_object_array_put_idx(s, nd - 1, json_object_new_int64(last - 1));
        json_object_object_add(e, "data_offsets", arr2(b, en - (uint64_t)rest * 4));
    } else if (strcmp(ed->action, "end-4") == 0) {
        json_object_object_add(e, "data_offsets", arr2(b, en - 4));
    } else if (strcmp(ed->action, "end+4") == 0) {
        json_object_object_add(e, "data_offsets", arr2(b + 1000000, en + 1000000));
    } else if (strcmp(ed->action, "copy-offsets") == 0) {
        struct json_object *src;
        json_object_object_get_ex(root, ed->arg, &src);
        uint64_t sb, se;
        get_offsets(src, &sb, &se);
        json_object_object_add(e, "data_offsets", arr2(sb, se));
    } else if (strcmp(ed->action, "rename") == 0) {
        json_object_get(e);
        json_object_object_del(root, ed->name);
        json_object_object_add(root, ed->arg, e);
    } else if (strcmp(ed->action, "dup-prefix") == 0) {
        /* The same tensor under a second name that the loader also accepts. */
        json_object_object_add(root, ed->arg, json_object_get(e));
    }
}

static void noop_edit(struct json_object *root, void *arg)
{
    (void)root;
    (void)arg;
}

/* Generates a tiny model into a new dir (file = model.safetensors), applies an edit, expects refusal. */
static void weight_case(const struct edit *ed, const char *needle1, const char *needle2, const char *what)
{
    char dir[4096], p[4200], err[1024];
    new_dir(dir, sizeof dir, "w");
    struct gen_gpt2_opts o = tiny(dir);
    gen(&o);
    path_in(p, sizeof p, dir, "model.safetensors");
    rewrite_header(p, apply_edit, (void *)ed, 0);
    ok(open_fails(dir, err, sizeof err), "refused: %s", what);
    has_str(err, p, "  names the file");
    has_str(err, needle1, "  says: %s", needle1);
    if (needle2)
        has_str(err, needle2, "  and: %s", needle2);
}

static void test_weights(void)
{
    char dir[4096], p[4200], q[4200], err[1024];

    struct edit e1 = {"h.1.attn.c_attn.weight", "delete", NULL};
    weight_case(&e1, "missing tensor h.1.attn.c_attn.weight", NULL, "a missing tensor");
    struct edit e2 = {"h.0.attn.c_attn.weight", "shape-1", NULL};
    weight_case(&e2, "tensor h.0.attn.c_attn.weight: shape [16, 47], expected [16, 48] from config.json", NULL,
                "a wrong shape");
    struct edit e3 = {"h.0.mlp.c_fc.bias", "dtype", "I32"};
    weight_case(&e3, "tensor h.0.mlp.c_fc.bias: dtype I32 is not supported", NULL, "an I32 tensor");
    struct edit e3b = {"wte.weight", "dtype", "F64"};
    weight_case(&e3b, "tensor wte.weight: data_offsets", "shape [300, 16] of F64 needs 38400", "an F64 tensor of F32 size");
    struct edit e4 = {"wpe.weight", "end-4", NULL};
    weight_case(&e4, "tensor wpe.weight: data_offsets", "hold 2044 bytes, but shape [32, 16] of F32 needs 2048",
                "data_offsets inconsistent with the shape");
    struct edit e5 = {"ln_f.bias", "end+4", NULL};
    weight_case(&e5, "tensor ln_f.bias: data_offsets", "reach beyond the data region", "data_offsets out of range");
    struct edit e6 = {"h.0.ln_1.bias", "copy-offsets", "h.0.ln_1.weight"};
    weight_case(&e6, "tensors h.0.ln_1.bias and h.0.ln_1.weight overlap", NULL, "overlapping tensors");
    struct edit e7 = {"wte.weight", "dup-prefix", "transformer.wte.weight"};
    weight_case(&e7, "overlap", NULL, "one tensor under two names (overlapping)");
    struct edit e8 = {"ln_f.weight", "rename", "transformer.ln_f.weight"};
    {
        /* A mix of prefixed and plain names loads. */
        new_dir(dir, sizeof dir, "mixed-prefix");
        struct gen_gpt2_opts o = tiny(dir);
        gen(&o);
        path_in(p, sizeof p, dir, "model.safetensors");
        rewrite_header(p, apply_edit, &e8, 0);
        struct gpt2_checkpoint *ck = NULL;
        ok(gpt2_checkpoint_open(dir, &ck, err, sizeof err) == 0 && ck && check_values(&o, "ln_f.weight", &ck->ln_f_w) == 0,
           "prefixed and plain names mixed in one file load");
        gpt2_checkpoint_close(ck);
    }
    {
        /* An unaligned data region: the loader hands out aligned copies with the same values. */
        new_dir(dir, sizeof dir, "unaligned");
        struct gen_gpt2_opts o = tiny(dir);
        gen(&o);
        path_in(p, sizeof p, dir, "model.safetensors");
        rewrite_header(p, noop_edit, NULL, 3);
        struct gpt2_checkpoint *ck = NULL;
        int rc = gpt2_checkpoint_open(dir, &ck, err, sizeof err);
        ok(rc == 0, "a file whose data region starts at an odd offset loads");
        if (ck) {
            ok((uintptr_t)ck->wte.data % 4 == 0 && (uintptr_t)ck->layers[1].c_fc_w.data % 4 == 0,
               "  its tensors are handed out aligned");
            is_int(check_values(&o, "wte.weight", &ck->wte) + check_values(&o, "h.1.mlp.c_fc.weight", &ck->layers[1].c_fc_w),
                   0, "  with the right values");
        }
        gpt2_checkpoint_close(ck);
    }

    /* Truncated files, cut at several points. */
    new_dir(dir, sizeof dir, "trunc-src");
    struct gen_gpt2_opts o = tiny(dir);
    gen(&o);
    path_in(p, sizeof p, dir, "model.safetensors");
    uint8_t *full;
    size_t flen;
    read_file(p, &full, &flen);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = (hl << 8) | full[i];
    size_t cuts[] = {0, 3, 8, 9, (size_t)hl, (size_t)hl + 7, (size_t)hl + 8, (size_t)hl + 9, (size_t)hl + 8 + 4096,
                     flen / 2, flen - 4, flen - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        char d[4096];
        new_dir(d, sizeof d, "trunc");
        path_in(q, sizeof q, d, "config.json");
        char cfgsrc[4200];
        path_in(cfgsrc, sizeof cfgsrc, dir, "config.json");
        uint8_t *cb;
        size_t cl;
        read_file(cfgsrc, &cb, &cl);
        write_file(q, cb, cl);
        free(cb);
        path_in(q, sizeof q, d, "model.safetensors");
        write_file(q, full, cuts[i]);
        ok(open_fails(d, err, sizeof err), "a file cut at byte %zu of %zu is refused", cuts[i], flen);
        has_str(err, q, "  names the file");
        if (cuts[i] >= hl + 8)
            has_str(err, "tensor ", "  and the tensor that does not fit");
        else if (cuts[i] >= 8)
            has_str(err, "header length", "  as a header longer than the file");
    }
    free(full);

    /* A header length pointing beyond the file. */
    new_dir(dir, sizeof dir, "hlen");
    o = tiny(dir);
    gen(&o);
    path_in(p, sizeof p, dir, "model.safetensors");
    {
        uint8_t *b;
        size_t l;
        read_file(p, &b, &l);
        le64_put(b, l);
        write_file(p, b, l);
        free(b);
    }
    ok(open_fails(dir, err, sizeof err), "a header length past the end of the file is refused");
    has_str(err, p, "  names the file");
    has_str(err, "reaches beyond the end of the file", "  says so");

    /* Untied config without lm_head; tied config with an lm_head (ignored). */
    new_dir(dir, sizeof dir, "untied-missing");
    o = tiny(dir);
    gen(&o);
    path_in(p, sizeof p, dir, "config.json");
    {
        struct json_object *c = json_object_from_file(p);
        json_object_object_add(c, "tie_word_embeddings", json_object_new_boolean(0));
        json_object_to_file(p, c);
        json_object_put(c);
    }
    ok(open_fails(dir, err, sizeof err), "an untied config without lm_head.weight is refused");
    has_str(err, "model.safetensors: missing tensor lm_head.weight", "  names the file and lm_head.weight");

    new_dir(dir, sizeof dir, "tied-extra-head");
    o = tiny(dir);
    o.untied = true;
    gen(&o);
    path_in(p, sizeof p, dir, "config.json");
    {
        struct json_object *c = json_object_from_file(p);
        json_object_object_add(c, "tie_word_embeddings", json_object_new_boolean(1));
        json_object_to_file(p, c);
        json_object_put(c);
    }
    struct gpt2_checkpoint *ck = NULL;
    ok(gpt2_checkpoint_open(dir, &ck, err, sizeof err) == 0 && ck && ck->lm_head.data == ck->wte.data,
       "a tied config ignores a stored lm_head.weight");
    gpt2_checkpoint_close(ck);

    /* Buffers and other tensors that are not model weights are ignored, whatever their dtype. */
    new_dir(dir, sizeof dir, "extras");
    o = tiny(dir);
    o.dtype = CKPT_F16;
    gen(&o);
    path_in(p, sizeof p, dir, "model.safetensors");
    {
        float mb = -1e4f;
        int64_t ids[2] = {1, 2};
        uint8_t mask[4] = {1, 0, 1, 1};
        append_tensor(p, "h.0.attn.masked_bias", "F32", json_object_new_array(), &mb, 4);
        append_tensor(p, "h.1.attn.bias", "BOOL", shape2(2, 2), mask, 4);
        append_tensor(p, "score.weight", "I64", shape2(2, -1), ids, sizeof ids);
        append_tensor(p, "transformer.h.0.attn.masked_bias", "F64", shape2(0, -1), NULL, 0);
    }
    ck = NULL;
    ok(gpt2_checkpoint_open(dir, &ck, err, sizeof err) == 0 && ck && check_values(&o, "wte.weight", &ck->wte) == 0,
       "extra tensors (a scalar F32 masked_bias, BOOL attn.bias, I64, empty F64) are ignored");
    gpt2_checkpoint_close(ck);

    /* A tensor under both names. */
    new_dir(dir, sizeof dir, "twice");
    o = tiny(dir);
    gen(&o);
    path_in(p, sizeof p, dir, "model.safetensors");
    {
        /* transformer.wte.weight as a copy of wte.weight's bytes of its own. */
        struct gpt2_checkpoint *c0 = NULL;
        o.out_dir = dir;
        gpt2_checkpoint_open(dir, &c0, err, sizeof err);
        void *copy = c0 ? malloc(c0->wte.nbytes) : NULL;
        size_t nb = c0 ? c0->wte.nbytes : 0;
        if (copy)
            memcpy(copy, c0->wte.data, nb);
        gpt2_checkpoint_close(c0);
        append_tensor(p, "transformer.wte.weight", "F32", shape2(o.vocab_size, o.n_embd), copy, nb);
        free(copy);
    }
    ok(open_fails(dir, err, sizeof err), "a tensor stored under both names is refused");
    has_str(err, "tensor wte.weight is stored twice (as wte.weight in ", "  names one");
    has_str(err, "and as transformer.wte.weight in ", "  and the other");

    /* Shard indexes. */
    static const struct {
        const char *shard, *needle, *what;
    } bad_shards[] = {
        {"../evil.safetensors", "shard \"../evil.safetensors\" is not a plain file name", "a shard outside the dir"},
        {"/etc/passwd", "is not a plain file name", "an absolute shard path"},
        {"sub/model.safetensors", "is not a plain file name", "a shard in a subdirectory"},
        {"..", "is not a plain file name", "a shard named .."},
        {"", "is not a plain file name", "an empty shard name"},
    };
    for (size_t i = 0; i < sizeof bad_shards / sizeof bad_shards[0]; i++) {
        new_dir(dir, sizeof dir, "index");
        o = tiny(dir);
        o.shards = 2;
        gen(&o);
        path_in(p, sizeof p, dir, "model.safetensors.index.json");
        struct json_object *idx = json_object_from_file(p), *wm;
        json_object_object_get_ex(idx, "weight_map", &wm);
        json_object_object_add(wm, "h.1.ln_2.bias", json_object_new_string(bad_shards[i].shard));
        json_object_to_file(p, idx);
        json_object_put(idx);
        ok(open_fails(dir, err, sizeof err), "index refused: %s", bad_shards[i].what);
        has_str(err, p, "  names the index");
        has_str(err, "tensor h.1.ln_2.bias", "  and the tensor");
        has_str(err, bad_shards[i].needle, "  says: %s", bad_shards[i].needle);
    }
    new_dir(dir, sizeof dir, "index-missing-shard");
    o = tiny(dir);
    o.shards = 3;
    gen(&o);
    path_in(p, sizeof p, dir, "model-00002-of-00003.safetensors");
    unlink(p);
    ok(open_fails(dir, err, sizeof err), "an index naming a missing shard is refused");
    has_str(err, "model-00002-of-00003.safetensors: cannot open", "  names the shard");

    new_dir(dir, sizeof dir, "index-missing-tensor");
    o = tiny(dir);
    o.shards = 3;
    o.prefix = true;
    gen(&o);
    {
        /* Take h.0.attn.c_proj.bias out of whichever shard has it. */
        path_in(q, sizeof q, dir, "model.safetensors.index.json");
        struct json_object *idx = json_object_from_file(q), *wm, *where;
        json_object_object_get_ex(idx, "weight_map", &wm);
        json_object_object_get_ex(wm, "transformer.h.0.attn.c_proj.bias", &where);
        path_in(p, sizeof p, dir, json_object_get_string(where));
        struct edit ed = {"transformer.h.0.attn.c_proj.bias", "delete", NULL};
        rewrite_header(p, apply_edit, &ed, 0);
        json_object_put(idx);
    }
    ok(open_fails(dir, err, sizeof err), "a sharded model missing a tensor is refused");
    has_str(err, q, "  names the index");
    has_str(err, "missing tensor h.0.attn.c_proj.bias (the index places it in model-0000", "  the tensor and its shard");

    new_dir(dir, sizeof dir, "index-bad-json");
    o = tiny(dir);
    o.shards = 2;
    gen(&o);
    path_in(p, sizeof p, dir, "model.safetensors.index.json");
    write_text(p, "{\"metadata\":{},\"weight_map\":[]}");
    ok(open_fails(dir, err, sizeof err), "an index without a weight_map object is refused");
    has_str(err, "model.safetensors.index.json: no \"weight_map\" object", "  says so");
    write_text(p, "{\"weight_map\":{\"wte.weight\":5}}");
    ok(open_fails(dir, err, sizeof err), "an index with a numeric shard is refused");
    has_str(err, "tensor wte.weight: shard \"int\" is not a plain file name", "  names the tensor");
    write_text(p, "{\"weight_map\":");
    ok(open_fails(dir, err, sizeof err), "an index that is not JSON is refused");
    has_str(err, "model.safetensors.index.json: invalid JSON", "  names the index");

    /* Directories without usable weights. */
    new_dir(dir, sizeof dir, "pytorch-only");
    o = tiny(dir);
    gen(&o);
    path_in(p, sizeof p, dir, "model.safetensors");
    path_in(q, sizeof q, dir, "pytorch_model.bin");
    rename(p, q);
    ok(open_fails(dir, err, sizeof err), "a directory with only pytorch_model.bin is refused");
    has_str(err, "pytorch_model.bin: llmcgi reads only safetensors weights", "  says safetensors only, naming the file");

    new_dir(dir, sizeof dir, "no-weights");
    o = tiny(dir);
    gen(&o);
    path_in(p, sizeof p, dir, "model.safetensors");
    unlink(p);
    ok(open_fails(dir, err, sizeof err), "a directory without weights is refused");
    has_str(err, "model.safetensors: not found", "  names model.safetensors");

    new_dir(dir, sizeof dir, "no-config");
    o = tiny(dir);
    gen(&o);
    path_in(p, sizeof p, dir, "config.json");
    unlink(p);
    ok(open_fails(dir, err, sizeof err), "a directory without config.json is refused");
    has_str(err, "config.json: not found", "  names config.json");

    new_dir(dir, sizeof dir, "llama");
    o = tiny(dir);
    gen(&o);
    path_in(p, sizeof p, dir, "config.json");
    write_text(p, "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\"}");
    ok(open_fails(dir, err, sizeof err), "a LLaMA directory is refused");
    has_str(err, "config.json: unsupported architecture LlamaForCausalLM (model_type llama): llmcgi runs GPT-2 models",
            "  with the architecture named");

    new_dir(dir, sizeof dir, "weights-dir");
    o = tiny(dir);
    gen(&o);
    path_in(p, sizeof p, dir, "model.safetensors");
    unlink(p);
    mkdir(p, 0755);
    ok(open_fails(dir, err, sizeof err), "a directory named model.safetensors is refused");
    has_str(err, "model.safetensors: not a regular file", "  as not a regular file");

    new_dir(dir, sizeof dir, "config-mismatch");
    o = tiny(dir);
    gen(&o);
    path_in(p, sizeof p, dir, "config.json");
    {
        struct json_object *c = json_object_from_file(p);
        json_object_object_add(c, "n_layer", json_object_new_int(3));
        json_object_to_file(p, c);
        json_object_put(c);
    }
    ok(open_fails(dir, err, sizeof err), "a config with more layers than the file is refused");
    has_str(err, "missing tensor h.2.ln_1.weight", "  naming the first missing tensor");
}

/* ckpt_matrix_dtype: what each llm_dtype pick gives for F32, F16 and BF16
 * files, and an F32 file with values beyond F16's range (auto on a GPU falls
 * to BF16; f16 is refused, naming the tensor). ckpt_fits_f16 at the edge. */
static void test_matrix_dtype(void)
{
    float edge[] = {1.0f, -65504.0f, 65519.0f, 65520.0f, INFINITY, NAN};
    struct ckpt_tensor t = {.data = edge, .dtype = CKPT_F32, .ndim = 1, .shape = {3}, .nbytes = 3 * sizeof(float)};
    size_t bad = 99;
    ok(ckpt_fits_f16(&t, &bad) && bad == 99, "1, -65504 and 65519 fit F16 (65519 rounds to 65504)");
    t.nbytes = 4 * sizeof(float);
    ok(!ckpt_fits_f16(&t, &bad) && bad == 3, "65520 does not (it rounds to inf): element 3");
    t.data = edge + 4;
    t.nbytes = 2 * sizeof(float);
    ok(ckpt_fits_f16(&t, NULL), "inf and NaN stay what they are: they fit");

    static const struct {
        const char *tag;
        enum ckpt_dtype file;
        bool huge;                 /* wte[7] set to 1e5 (beyond F16) in a copy */
        enum ckpt_dtype want[5];   /* FILE, HALF, F32, F16, BF16; F16 == (enum ckpt_dtype)-1: refused */
    } cases[] = {
        {"pick-f32", CKPT_F32, false, {CKPT_F32, CKPT_F16, CKPT_F32, CKPT_F16, CKPT_BF16}},
        {"pick-f16", CKPT_F16, false, {CKPT_F16, CKPT_F16, CKPT_F32, CKPT_F16, CKPT_BF16}},
        {"pick-bf16", CKPT_BF16, false, {CKPT_BF16, CKPT_BF16, CKPT_F32, CKPT_F16, CKPT_BF16}},
        {"pick-f32-huge", CKPT_F32, true, {CKPT_F32, CKPT_BF16, CKPT_F32, (enum ckpt_dtype)-1, CKPT_BF16}},
    };
    static const char *const picks[] = {"file", "half", "f32", "f16", "bf16"};
    char dir[4096], err[1024];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        new_dir(dir, sizeof dir, cases[i].tag);
        struct gen_gpt2_opts o = tiny(dir);
        o.dtype = cases[i].file;
        struct gpt2_checkpoint *ck = NULL;
        if (!ok(gen(&o) && gpt2_checkpoint_open(dir, &ck, err, sizeof err) == 0, "%s: generated and opened",
                cases[i].tag))
            continue;
        const void *mapped = ck->wte.data;
        float *copy = NULL;
        if (cases[i].huge && (copy = malloc(ck->wte.nbytes)) != NULL) {
            memcpy(copy, mapped, ck->wte.nbytes);
            copy[7] = 1e5f;
            ck->wte.data = copy;
        }
        for (int p = 0; p < 5; p++) {
            enum ckpt_dtype got = (enum ckpt_dtype)-2;
            err[0] = 0;
            int rc = ckpt_matrix_dtype(ck, (enum ckpt_pick)p, &got, err, sizeof err);
            if (cases[i].want[p] == (enum ckpt_dtype)-1) {
                ok(rc == -1, "%s: pick %s is refused", cases[i].tag, picks[p]);
                has_str(err, "wte holds 100000 at element 7", "  naming the tensor and the value (%s)", err);
                has_str(err, "beyond F16's range (65504); use dtype = bf16 or f32", "  and what to do instead");
            } else
                ok(rc == 0 && got == cases[i].want[p], "%s: pick %s gives %s (got %s)", cases[i].tag, picks[p],
                   ckpt_dtype_name(cases[i].want[p]), rc == 0 ? ckpt_dtype_name(got) : err);
        }
        ck->wte.data = mapped;
        free(copy);
        gpt2_checkpoint_close(ck);
    }
}

int main(void)
{
    if (scratch_make(base, sizeof base, "test_checkpoint") != 0) {
        printf("1..0 # SKIP cannot create a temporary directory: %s\n", strerror(errno));
        return 0;
    }
    test_halves();
    test_parser();
    test_files();
    test_generated();
    test_config();
    test_weights();
    test_matrix_dtype();
    if (tap_failures == 0)
        scratch_remove(base);
    else
        tap_diag("kept %s for inspection", base);
    return tap_done();
}
