/* ckpt_dtype.c -- the checkpoint's tensor dtypes (F32, F16, BF16): names, sizes, half <-> float conversions, one element read, the dtype the matrices are used in (and whether they fit F16). */
#include "config.h"

#include "checkpoint.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------------ dtypes and halves */

const char *ckpt_dtype_name(enum ckpt_dtype t)
{
    switch (t) {
    case CKPT_F32:
        return "F32";
    case CKPT_F16:
        return "F16";
    case CKPT_BF16:
        return "BF16";
    }
    return "?";
}

size_t ckpt_dtype_size(enum ckpt_dtype t)
{
    return t == CKPT_F32 ? 4 : 2;
}

static uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* IEEE binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits. Every
 * binary16 value is exact in binary32; NaN payloads are kept (shifted). */
float ckpt_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    if (exp == 0x1f)
        return u2f(sign | 0x7f800000u | (man << 13));     /* inf, NaN */
    if (exp == 0) {
        if (man == 0)
            return u2f(sign);                             /* +-0 */
        /* Subnormal man * 2^-24: shift the leading 1 up to bit 10. */
        uint32_t e = 113;                                 /* 127 - 14 */
        while (!(man & 0x400)) {
            man <<= 1;
            e--;
        }
        return u2f(sign | (e << 23) | ((man & 0x3ff) << 13));
    }
    return u2f(sign | ((exp + 112) << 23) | (man << 13));
}

/* Rounds to nearest, ties to even; beyond the largest half (65504) rounds
 * to infinity from 65520 up, as IEEE says. NaN stays NaN (payload's top bits
 * kept, quiet bit set only if nothing else would be left). */
uint16_t ckpt_f32_to_f16(float f)
{
    uint32_t x = f2u(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) {
        if (ax == 0x7f800000u)
            return sign | 0x7c00;
        uint32_t m = (ax & 0x7fffffu) >> 13;
        return (uint16_t)(sign | 0x7c00 | (m ? m : 0x200));
    }
    if (ax >= 0x477ff000u)                  /* >= 65520 */
        return sign | 0x7c00;
    if (ax < 0x38800000u) {                 /* below 2^-14: a subnormal half or zero */
        if (ax <= 0x33000000u)              /* <= 2^-25: rounds to zero (the tie goes to even 0) */
            return sign;
        uint32_t e = ax >> 23;              /* 102..112 */
        uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e;           /* value * 2^24 = m >> shift; 14..24 */
        uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1)))
            r++;
        return (uint16_t)(sign | r);
    }
    /* Rebias the exponent 127 -> 15 and drop 13 mantissa bits, adding just
     * under half (plus the kept lowest bit, for ties to even) first; a carry
     * into the exponent is right. Branch-free: the rounding is data-dependent. */
    uint32_t base = ax - (112u << 23);
    return (uint16_t)(sign | ((base + 0xfffu + ((base >> 13) & 1)) >> 13));
}

/* bfloat16 is the top half of a binary32. */
float ckpt_bf16_to_f32(uint16_t h)
{
    return u2f((uint32_t)h << 16);
}

uint16_t ckpt_f32_to_bf16(float f)
{
    uint32_t x = f2u(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) {  /* NaN: truncate, keep it a NaN */
        uint16_t h = (uint16_t)(x >> 16);
        return (h & 0x7f) ? h : (uint16_t)(h | 0x40);
    }
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

float ckpt_get(const struct ckpt_tensor *t, size_t i)
{
    const unsigned char *p = (const unsigned char *)t->data + i * ckpt_dtype_size(t->dtype);
    uint16_t h;
    float f;
    switch (t->dtype) {
    case CKPT_F32:
        memcpy(&f, p, 4);
        return f;
    case CKPT_F16:
        memcpy(&h, p, 2);
        return ckpt_f16_to_f32(h);
    case CKPT_BF16:
        memcpy(&h, p, 2);
        return ckpt_bf16_to_f32(h);
    }
    return 0.0f;
}

bool ckpt_fits_f16(const struct ckpt_tensor *t, size_t *bad)
{
    if (!t->data || t->dtype == CKPT_F16)
        return true;
    size_t n = t->nbytes / ckpt_dtype_size(t->dtype);
    for (size_t i = 0; i < n; i++) {
        float v = ckpt_get(t, i);
        /* Written so that NaN and +-inf (kept as they are) pass. */
        if (isfinite(v) && !isfinite(ckpt_f16_to_f32(ckpt_f32_to_f16(v)))) {
            if (bad)
                *bad = i;
            return false;
        }
    }
    return true;
}

/* Calls fn on each matrix a backend keeps in the matrix type, with its name;
 * stops at the first that returns false, and returns false then. */
static bool each_matrix(const struct gpt2_checkpoint *ck, bool (*fn)(const struct ckpt_tensor *t, const char *name,
                                                                    int layer, void *arg),
                        void *arg)
{
    if (!fn(&ck->wte, "wte", -1, arg) || (ck->lm_head.data && !fn(&ck->lm_head, "lm_head", -1, arg)) ||
        (ck->score.data && !fn(&ck->score, "score", -1, arg)))
        return false;
    for (int l = 0; l < ck->cfg.n_layer; l++) {
        const struct gpt2_layer_tensors *lt = &ck->layers[l];
        if (!fn(&lt->c_attn_w, "attn.c_attn.weight", l, arg) || !fn(&lt->c_proj_w, "attn.c_proj.weight", l, arg) ||
            !fn(&lt->c_fc_w, "mlp.c_fc.weight", l, arg) || !fn(&lt->mlp_proj_w, "mlp.c_proj.weight", l, arg))
            return false;
    }
    return true;
}

/* each_matrix's tests: one type shared (the score head, kept in F32 by the
 * CPU backend, does not count), and every value within F16's range. */
static bool same_type(const struct ckpt_tensor *t, const char *name, int layer, void *arg)
{
    (void)layer;
    return !strcmp(name, "score") || t->dtype == *(const enum ckpt_dtype *)arg;
}

struct f16_misfit {
    const struct gpt2_checkpoint *ck;
    char *err;
    size_t errlen;
};

static bool fits_f16(const struct ckpt_tensor *t, const char *name, int layer, void *arg)
{
    struct f16_misfit *f = arg;
    size_t bad;
    if (ckpt_fits_f16(t, &bad))
        return true;
    char where[16] = "";
    if (layer >= 0)
        snprintf(where, sizeof where, "h.%d.", layer);
    if (f->err && f->errlen)
        snprintf(f->err, f->errlen, "%s: %s%s holds %g at element %zu, beyond F16's range (65504)", f->ck->dir,
                 where, name, (double)ckpt_get(t, bad), bad);
    return false;
}

int ckpt_matrix_dtype(const struct gpt2_checkpoint *ck, enum ckpt_pick pick, enum ckpt_dtype *out, char *err,
                      size_t errlen)
{
    enum ckpt_dtype t = ck->wte.dtype;
    bool shared = each_matrix(ck, same_type, &t);
    struct f16_misfit f = {ck, err, errlen};
    switch (pick) {
    case CKPT_PICK_FILE:
        *out = shared ? t : CKPT_F32;
        return 0;
    case CKPT_PICK_HALF:
        if (shared && t != CKPT_F32) {
            *out = t;
            return 0;
        }
        /* F16 keeps 3 more mantissa bits than BF16 (closer to the F32
         * reference); BF16 when a value would overflow F16. */
        f.err = NULL;
        *out = each_matrix(ck, fits_f16, &f) ? CKPT_F16 : CKPT_BF16;
        return 0;
    case CKPT_PICK_F32:
        *out = CKPT_F32;
        return 0;
    case CKPT_PICK_F16:
        if (!each_matrix(ck, fits_f16, &f)) {
            size_t n = err && errlen ? strlen(err) : errlen;
            if (n + 1 < errlen)
                snprintf(err + n, errlen - n, "; use dtype = bf16 or f32");
            return -1;
        }
        *out = CKPT_F16;
        return 0;
    case CKPT_PICK_BF16:
        *out = CKPT_BF16;
        return 0;
    }
    *out = CKPT_F32;
    return 0;
}
