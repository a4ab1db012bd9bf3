/* test_cpu_ops.c -- the CPU kernels, every level this CPU supports (portable, AVX2, AVX-512, AVX-512 BF16, AMX), against double-precision references and the portable ones on random inputs, int8 (Q8_0) included, and the thread pool. */
#include "config.h"
#include "cpu/ops.h"
#include "cpu/threads.h"
#include "tap.h"

#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float frand(void)  /* uniform in [-1, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / (1 << 24))) * 2.0f - 1.0f;
}

/* Poisoned outputs: a kernel that skips an element leaves a NaN behind. */
static void poison(float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] = NAN;
}

/* Max |got - want| / max(max|want|, 1e-30) over n values; NaN counts as failure. */
static double rel_err(const float *got, const double *want, size_t n)
{
    double scale = 1e-30, err = 0.0;
    for (size_t i = 0; i < n; i++)
        if (fabs(want[i]) > scale)
            scale = fabs(want[i]);
    for (size_t i = 0; i < n; i++) {
        if (isnan(got[i]))
            return INFINITY;
        double e = fabs((double)got[i] - want[i]);
        if (e > err)
            err = e;
    }
    return err / scale;
}

/* The tuning the packed products of run_kernels take (main runs them in both). */
static enum ops_tuning tuning_now = OPS_LATENCY;

static const char *tuning_word(void)
{
    return tuning_now == OPS_THROUGHPUT ? " throughput" : " latency";
}

static void check_matmul_as(bool packed, enum ckpt_dtype wt, int T, int I, int O, int o0, int o1, bool acc,
                            bool bias_on)
{
    float *x = malloc(sizeof(float) * (size_t)T * I);
    float *wf = malloc(sizeof(float) * (size_t)O * I);     /* the exact values W holds */
    void *w = malloc(sizeof(float) * (size_t)O * I);
    float *bias = malloc(sizeof(float) * (size_t)O);
    float *y = malloc(sizeof(float) * (size_t)T * O);
    double *want = malloc(sizeof(double) * (size_t)T * O);
    for (int i = 0; i < T * I; i++)
        x[i] = frand();
    for (int i = 0; i < O * I; i++) {
        float v = frand() * 0.5f;
        if (wt == CKPT_F16) {
            ((uint16_t *)w)[i] = ckpt_f32_to_f16(v);
            wf[i] = ckpt_f16_to_f32(((uint16_t *)w)[i]);
        } else if (wt == CKPT_BF16) {
            ((uint16_t *)w)[i] = ckpt_f32_to_bf16(v);
            wf[i] = ckpt_bf16_to_f32(((uint16_t *)w)[i]);
        } else {
            ((float *)w)[i] = v;
            wf[i] = v;
        }
    }
    for (int o = 0; o < O; o++)
        bias[o] = frand();
    /* Outside [o0, o1) nothing may change; inside, y starts as a known value when accumulating. */
    for (int i = 0; i < T * O; i++)
        y[i] = 0.25f * (float)(i % 7);
    if (!acc)
        for (int t = 0; t < T; t++)
            poison(y + (size_t)t * O + o0, (size_t)(o1 - o0));
    double absdot = 0.0, wmax = 1e-30;     /* the largest sum |x w| and |want| */
    for (int t = 0; t < T; t++)
        for (int o = 0; o < O; o++) {
            double s = 0.0, a = 0.0;
            for (int i = 0; i < I; i++) {
                s += (double)x[t * I + i] * wf[o * I + i];
                a += fabs((double)x[t * I + i] * wf[o * I + i]);
            }
            if (o >= o0 && o < o1 && a > absdot)
                absdot = a;
            if (o < o0 || o >= o1)
                want[t * O + o] = 0.25 * ((t * O + o) % 7);
            else
                want[t * O + o] = s + (bias_on ? bias[o] : 0.0) + (acc ? 0.25 * ((t * O + o) % 7) : 0.0);
        }
    if (packed) {
        /* packed in two pieces (as the engine does, a panel at a time), into poisoned memory */
        size_t pb = ops_pack_bytes(wt, I, O), es = ckpt_dtype_size(wt);
        char *wp = malloc(pb);
        memset(wp, 0xff, pb);
        int split = O > OPS_PANEL ? OPS_PANEL : O;
        ops_pack(wp, w, wt, I, O, 0, split);
        ops_pack(wp, (char *)w + (size_t)split * I * es, wt, I, O, split, O);
        ops_matmul_packed(y, x, wp, wt, bias_on ? bias : NULL, T, I, O, o0, o1, acc, tuning_now);
        /* below the AMX level the other tuning is the same kernel: the same bits */
        if (!ops_tuning_matters()) {
            float *y2 = malloc(sizeof(float) * (size_t)T * O);
            memcpy(y2, y, sizeof(float) * (size_t)T * O);
            for (int t = 0; t < T; t++)
                for (int o = o0; o < o1; o++)
                    y2[(size_t)t * O + o] = acc ? 0.25f * (float)((t * O + o) % 7) : NAN;
            ops_matmul_packed(y2, x, wp, wt, bias_on ? bias : NULL, T, I, O, o0, o1, acc,
                              tuning_now == OPS_LATENCY ? OPS_THROUGHPUT : OPS_LATENCY);
            ok(memcmp(y2, y, sizeof(float) * (size_t)T * O) == 0,
               "%s packed %s T=%d I=%d O=%d: latency and throughput are one kernel at this level", ops_simd_name(),
               ckpt_dtype_name(wt), T, I, O);
            free(y2);
        }
        /* a row alone gives the batch's result exactly */
        float *y1 = malloc(sizeof(float) * (size_t)O);
        int same = 1;
        for (int t = 0; t < T; t += T > 3 ? T / 3 : 1) {
            for (int o = 0; o < O; o++)
                y1[o] = 0.25f * (float)((t * O + o) % 7);
            ops_matmul_packed(y1, x + (size_t)t * I, wp, wt, bias_on ? bias : NULL, 1, I, O, o0, o1, acc,
                              tuning_now);
            if (memcmp(y1, y + (size_t)t * O, sizeof(float) * (size_t)O) != 0)
                same = 0;
        }
        ok(same, "%s%s packed %s T=%d I=%d O=%d: a row alone is bit-identical to its row in the batch",
           ops_simd_name(), tuning_word(), ckpt_dtype_name(wt), T, I, O);
        float row[4096];
        int back = 1;
        for (int o = 0; o < O && I <= 4096; o += 1 + O / 7) {
            ops_packed_row(row, wp, wt, I, o);
            if (memcmp(row, wf + (size_t)o * I, sizeof(float) * (size_t)I) != 0)
                back = 0;
        }
        ok(back, "%s packed %s I=%d O=%d: ops_packed_row reads the rows back", ops_simd_name(), ckpt_dtype_name(wt),
           I, O);
        free(y1);
        free(wp);
    } else {
        ops_matmul(y, x, w, wt, bias_on ? bias : NULL, T, I, O, o0, o1, acc);
    }
    double e = rel_err(y, want, (size_t)T * O);
    for (int i = 0; i < T * O; i++)
        if (fabs(want[i]) > wmax)
            wmax = fabs(want[i]);
    /* With avx512_bf16, BF16 weights meet x split into two bf16 parts (16 of
     * its 24 significant bits): each product is then within 2^-16 of exact,
     * so the bound grows by 2^-16 sum |x w|, whatever the sum's cancellation. */
    double bound = 1e-5;
    if (wt == CKPT_BF16 && strstr(ops_simd_name(), "+bf16"))
        bound += ldexp(1.0, -16) * absdot / wmax;
    /* At the AMX level tuned for throughput F16 weights go to the tiles as
     * two exact bf16 parts (w = whi + wlo) against x's two, all four
     * products: only x's split is inexact, the same 2^-16 as BF16's. */
    if (packed && wt == CKPT_F16 && tuning_now == OPS_THROUGHPUT && ops_tuning_matters())
        bound += ldexp(1.0, -16) * absdot / wmax;
    /* F32 weights on the tiles: w and x each three exact bf16 parts, six
     * products (the dropped three within 2^-24 |x w|, about F32's own
     * rounding), so F32's bound stands, and tighter: 2e-6 (the FMA kernel
     * gives 1-7e-7; two bf16 parts of x, 2^-16, give 3-5e-6 with F16). */
    if (packed && wt == CKPT_F32 && tuning_now == OPS_THROUGHPUT && strstr(ops_simd_name(), "+f32tiles"))
        bound = 2e-6;
    ok(e <= bound, "%s matmul%s%s %s T=%d I=%d O=%d [%d,%d)%s%s: rel err %.2g", ops_simd_name(),
       packed ? " packed" : "", packed ? tuning_word() : "", ckpt_dtype_name(wt), T, I, O, o0, o1, acc ? " accumulate" : "",
       bias_on ? " bias" : "", e);
    free(x);
    free(wf);
    free(w);
    free(bias);
    free(y);
    free(want);
}

static void check_matmul(enum ckpt_dtype wt, int T, int I, int O, int o0, int o1, bool acc, bool bias_on)
{
    check_matmul_as(false, wt, T, I, O, o0, o1, acc, bias_on);
}

/* W's O quantized rows (wq) laid out as this level's int8 products read
 * them (ops_q8_pack_rows), in two calls where O > 16 (a first group, then
 * the rest with the last group's padding), as the engine lays them out in
 * chunks. Returns a malloc'ed copy the caller frees. */
static char *q8_pack(const char *wq, int I, int O)
{
    size_t bytes = (ops_q8_mat_bytes(I, O) + 63) / 64 * 64;
    char *wp = aligned_alloc(64, bytes);
    int first = O > 16 ? 16 : O;
    memset(wp, 0xa5, ops_q8_mat_bytes(I, O));   /* the packing writes every byte, padding included */
    ops_q8_pack_rows(wp, wq, I, O, 0, first);
    if (first < O)
        ops_q8_pack_rows(wp, wq + ops_q8_row_bytes(I) * (size_t)first, I, O, first, O - first);
    return wp;
}

/* int8: W and x quantized by ops_q8_quantize_row, the product against the
 * double-precision product of the dequantized values (what the integer
 * kernels must compute up to F32 summation), and the quantization itself
 * within half a step of the input. */
static void check_matmul_q8(int T, int I, int O, int o0, int o1, bool acc, bool bias_on)
{
    size_t rb = ops_q8_row_bytes(I);
    float *x = malloc(sizeof(float) * (size_t)T * I), *wf = malloc(sizeof(float) * (size_t)O * I);
    char *xq = malloc(rb * (size_t)T), *wq = malloc(rb * (size_t)O);
    float *bias = malloc(sizeof(float) * (size_t)O), *y = malloc(sizeof(float) * (size_t)T * O);
    double *want = malloc(sizeof(double) * (size_t)T * O);
    for (int i = 0; i < T * I; i++)
        x[i] = frand() * (i % 97 == 0 ? 20.0f : 1.0f);     /* outliers, as LayerNorm outputs have */
    for (int i = 0; i < O * I; i++)
        wf[i] = frand() * 0.1f;
    for (int o = 0; o < O; o++)
        bias[o] = frand();
    for (int t = 0; t < T; t++)
        ops_q8_quantize_row(xq + rb * t, x + (size_t)t * I, I);
    for (int o = 0; o < O; o++)
        ops_q8_quantize_row(wq + rb * o, wf + (size_t)o * I, I);
    /* dequantized values, and the worst quantization error in steps (the F16
     * scale adds up to 127 * 2^-11 of a step to the half of rounding) */
    double worst_step = 0;
    for (int o = 0; o < O; o++) {
        const struct ops_q8_block *b = (const struct ops_q8_block *)(wq + rb * o);
        for (int i = 0; i < I; i++) {
            double d = ckpt_f16_to_f32(b[i / 32].d), v = d * b[i / 32].q[i % 32];
            double st = d > 0 ? fabs(v - wf[(size_t)o * I + i]) / d : 0;
            if (st > worst_step)
                worst_step = st;
            wf[(size_t)o * I + i] = (float)v;
        }
    }
    for (int t = 0; t < T; t++) {
        const struct ops_q8_block *b = (const struct ops_q8_block *)(xq + rb * t);
        for (int i = 0; i < I; i++)
            x[(size_t)t * I + i] = ckpt_f16_to_f32(b[i / 32].d) * b[i / 32].q[i % 32];
    }
    for (int i = 0; i < T * O; i++)
        y[i] = 0.25f * (float)(i % 7);
    for (int t = 0; t < T; t++)
        for (int o = 0; o < O; o++) {
            double s = 0.0;
            for (int i = 0; i < I; i++)
                s += (double)x[t * I + i] * wf[o * I + i];
            double old = 0.25 * ((t * O + o) % 7);
            want[t * O + o] = o < o0 || o >= o1 ? old : s + (bias_on ? bias[o] : 0.0) + (acc ? old : 0.0);
        }
    if (!acc)
        for (int t = 0; t < T; t++)
            poison(y + (size_t)t * O + o0, (size_t)(o1 - o0));
    char *wp = q8_pack(wq, I, O);
    ops_matmul_q8(y, xq, wp, bias_on ? bias : NULL, T, I, O, o0, o1, acc);
    free(wp);
    double e = rel_err(y, want, (size_t)T * O);
    ok(e <= 1e-5 && worst_step <= 0.5 + 127.0 / 2048, "%s matmul Q8_0 T=%d I=%d O=%d [%d,%d)%s%s: rel err %.2g, quantized within %.3f steps",
       ops_simd_name(), T, I, O, o0, o1, acc ? " accumulate" : "", bias_on ? " bias" : "", e, worst_step);
    free(x);
    free(wf);
    free(xq);
    free(wq);
    free(bias);
    free(y);
    free(want);
}

/* int8: a row's result does not depend on the other rows of a call of 2 or
 * more (chunked prefill against whole prefill, batched decode): the T rows
 * at once and chunks of 3 and of 2 (T - 2 is then odd: a last chunk of 3)
 * give the same bits; one row alone takes the matrix-vector path, which
 * sums in another order (check_matmul_q8 holds it to the reference). */
static void check_q8_rows_alone(int T, int I, int O)
{
    size_t rb = ops_q8_row_bytes(I);
    float *x = malloc(sizeof(float) * (size_t)T * I), *w = malloc(sizeof(float) * (size_t)O * I);
    char *xq = malloc(rb * (size_t)T), *wq = malloc(rb * (size_t)O);
    float *all = malloc(sizeof(float) * (size_t)T * O), *c2 = malloc(sizeof(float) * (size_t)T * O);
    float *c3 = malloc(sizeof(float) * (size_t)T * O);
    for (int i = 0; i < T * I; i++)
        x[i] = frand();
    for (int i = 0; i < O * I; i++)
        w[i] = frand() * 0.1f;
    for (int t = 0; t < T; t++)
        ops_q8_quantize_row(xq + rb * t, x + (size_t)t * I, I);
    for (int o = 0; o < O; o++)
        ops_q8_quantize_row(wq + rb * o, w + (size_t)o * I, I);
    char *wp = q8_pack(wq, I, O);
    free(wq);
    wq = wp;
    ops_matmul_q8(all, xq, wq, NULL, T, I, O, 0, O, false);
    for (int t = 0; t < T; t += 3)
        ops_matmul_q8(c3 + (size_t)t * O, xq + rb * t, wq, NULL, T - t < 3 ? T - t : 3, I, O, 0, O, false);
    for (int t = 0; t < T;) {
        int n = T - t == 3 ? 3 : 2;
        ops_matmul_q8(c2 + (size_t)t * O, xq + rb * t, wq, NULL, n, I, O, 0, O, false);
        t += n;
    }
    size_t n = sizeof(float) * (size_t)T * O;
    ok(memcmp(all, c3, n) == 0 && memcmp(all, c2, n) == 0,
       "%s matmul Q8_0 T=%d I=%d O=%d: chunks of 3 and of 2 give the bits of all rows at once", ops_simd_name(),
       T, I, O);
    free(x);
    free(w);
    free(xq);
    free(wq);
    free(all);
    free(c2);
    free(c3);
}

/* int8 over x prepared once per product (ops_q8_prepare_x, what the
 * engine's threads do before a product's tasks): its parts made in reverse
 * order, as threads may, give the quantized rows ops_q8_quantize_row gives
 * and, for every row count 1..Tmax, widths with a partial last block, a
 * partial last part and the widest tile row, outputs inside the groups,
 * accumulate and bias, ops_matmul_q8x gives the bits of ops_matmul_q8 over
 * the rows, in one call and in tasks of 16 outputs. */
static void check_q8_prepared(int Tmax, int I, int O)
{
    size_t rb = ops_q8_row_bytes(I), xb = ops_q8_x_bytes(Tmax, I);
    int o0 = O > 3 ? 3 : 0, o1 = O > 5 ? O - 2 : O, same = 1, rows_same = 1, cases = 0;
    float *x = malloc(sizeof(float) * (size_t)Tmax * I), *w = malloc(sizeof(float) * (size_t)O * I);
    char *xq = malloc(rb * (size_t)Tmax), *wq = malloc(rb * (size_t)O), *xp = aligned_alloc(64, (xb + 63) & ~(size_t)63);
    float *bias = malloc(sizeof(float) * (size_t)O), *a = malloc(sizeof(float) * (size_t)Tmax * O);
    float *b = malloc(sizeof(float) * (size_t)Tmax * O);
    for (int i = 0; i < Tmax * I; i++)
        x[i] = frand() * (i % 89 == 0 ? 30.0f : 1.0f);
    for (int i = 0; i < O * I; i++)
        w[i] = frand() * 0.1f;
    for (int o = 0; o < O; o++)
        bias[o] = frand();
    for (int o = 0; o < O; o++)
        ops_q8_quantize_row(wq + rb * o, w + (size_t)o * I, I);
    char *wp = q8_pack(wq, I, O);
    for (int T = 1; T <= Tmax; T++) {
        bool acc = T % 2 == 0;
        const float *bs = T % 3 ? bias : NULL;
        memset(xp, 0x5a, xb);
        for (int p = ops_q8_x_parts(T, I) - 1; p >= 0; p--)
            ops_q8_prepare_x(xp, x, T, I, p);
        for (int t = 0; t < T; t++)
            ops_q8_quantize_row(xq + rb * t, x + (size_t)t * I, I);
        rows_same &= memcmp(xp, xq, rb * (size_t)T) == 0;
        for (int i = 0; i < T * O; i++)
            a[i] = b[i] = 0.25f * (float)(i % 7);
        ops_matmul_q8(a, xq, wp, bs, T, I, O, o0, o1, acc);
        if (T % 2)
            ops_matmul_q8x(b, xp, wp, bs, T, I, O, o0, o1, acc);
        else
            for (int o = o0; o < o1; o += 16)
                ops_matmul_q8x(b, xp, wp, bs, T, I, O, o, o + 16 < o1 ? o + 16 : o1, acc);
        same &= memcmp(a, b, sizeof(float) * (size_t)T * O) == 0;
        cases++;
    }
    ok(rows_same && same, "%s matmul Q8_0 over x prepared once, I=%d O=%d: the rows and the bits of ops_matmul_q8, "
       "%d row counts", ops_simd_name(), I, O, cases);
    free(x);
    free(w);
    free(xq);
    free(wq);
    free(wp);
    free(xp);
    free(bias);
    free(a);
    free(b);
}

/* int8 at the AMX level: every row count 2..65 (the tiles of 16 rows from
 * AMX_MIN_ROWS up, the VNNI panel below it), a partial last block (I = 200:
 * 7 blocks) and a full width, outputs starting and ending inside the tiles of
 * 16, accumulate and bias, give exactly the bits of the VNNI level (whose
 * panel sums each output in the same order), so where AMX takes over does
 * not change a row's result. */
static void check_q8_amx_bits(void)
{
    static const int widths[] = {200, 768};
    int O = 37, o0 = 3, o1 = 35, Tmax = 65, same = 1, cases = 0;
    for (size_t wi = 0; wi < 2; wi++) {
        int I = widths[wi];
        size_t rb = ops_q8_row_bytes(I);
        float *x = malloc(sizeof(float) * (size_t)Tmax * I), *w = malloc(sizeof(float) * (size_t)O * I);
        char *xq = malloc(rb * (size_t)Tmax), *wq = malloc(rb * (size_t)O);
        float *bias = malloc(sizeof(float) * (size_t)O), *a = malloc(sizeof(float) * (size_t)Tmax * O);
        float *b = malloc(sizeof(float) * (size_t)Tmax * O);
        for (int i = 0; i < Tmax * I; i++)
            x[i] = frand() * (i % 97 == 0 ? 20.0f : 1.0f);
        for (int i = 0; i < O * I; i++)
            w[i] = frand() * 0.1f;
        for (int o = 0; o < O; o++)
            bias[o] = frand();
        for (int t = 0; t < Tmax; t++)
            ops_q8_quantize_row(xq + rb * t, x + (size_t)t * I, I);
        for (int o = 0; o < O; o++)
            ops_q8_quantize_row(wq + rb * o, w + (size_t)o * I, I);
        ops_init(OPS_AVX512_BF16);   /* the VNNI and AMX levels read the same layout */
        char *wp = q8_pack(wq, I, O);
        free(wq);
        wq = wp;
        for (int T = 2; T <= Tmax; T++) {
            bool acc = T % 2 == 0;
            const float *bs = T % 3 ? bias : NULL;
            for (int i = 0; i < T * O; i++)
                a[i] = b[i] = 0.25f * (float)(i % 7);
            ops_init(OPS_AVX512_BF16);
            ops_matmul_q8(a, xq, wq, bs, T, I, O, o0, o1, acc);
            ops_init(OPS_AMX);
            ops_matmul_q8(b, xq, wq, bs, T, I, O, o0, o1, acc);
            same &= memcmp(a, b, sizeof(float) * (size_t)T * O) == 0;
            cases++;
        }
        free(x);
        free(w);
        free(xq);
        free(wq);
        free(bias);
        free(a);
        free(b);
    }
    ok(same, "matmul Q8_0 at the AMX level: %d cases of 2..65 rows give the VNNI level's bits", cases);
}

/* The quantizer rounds as roundf (half away from zero), ties included:
 * with max |x| = 127 the scale is 1 and x * id is x. */
static void check_q8_rounding(void)
{
    float x[32] = {127.0f, 2.5f, -2.5f, 0.5f, -0.5f, 0.49999997f, -0.49999997f, 126.5f, -126.5f, 3.4999998f,
                   1.5f, -1.5f, 0.0f, -0.0f, 100.25f, -100.75f};
    struct ops_q8_block b;
    ops_q8_quantize_row(&b, x, 32);
    bool same = ckpt_f16_to_f32(b.d) == 1.0f;
    for (int i = 0; i < 32; i++)
        same = same && b.q[i] == (int8_t)roundf(x[i]);
    ok(same, "Q8_0 quantization rounds as roundf, ties away from zero (2.5 -> %d, -0.5 -> %d, 126.5 -> %d)",
       b.q[1], b.q[4], b.q[7]);
}

/* Whole rows (full blocks take the AVX-512 or AVX2 loop where there is
 * one, a partial last block the C one) against roundf of x / d, scale and
 * all. */
static void check_q8_quantize_row_width(int I)
{
    float x[1000];
    struct ops_q8_block b[(1000 + 31) / 32];
    bool same = true;
    for (int rep = 0; rep < 50; rep++) {
        for (int i = 0; i < I; i++)
            x[i] = frand() * (rep % 5 == 0 ? 1e-3f : rep % 7 == 3 ? 1e-6f : rep % 7 == 5 ? 2e6f : 4.0f) *
                   (i % 37 == 0 ? 30.0f : 1.0f);   /* scales in F16's subnormals, under its least, past its most */
        if (rep == 1)
            for (int i = 0; i < 32; i++)
                x[i] = 0.0f;   /* an all-zero block */
        ops_q8_quantize_row(b, x, I);
        for (int k = 0; k * 32 < I; k++) {
            float amax = 0.0f;
            for (int i = k * 32; i < I && i < k * 32 + 32; i++)
                amax = fmaxf(amax, fabsf(x[i]));
            float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
            same = same && b[k].d == ckpt_f32_to_f16(d);
            for (int i = 0; i < 32; i++) {
                float v = k * 32 + i < I ? x[k * 32 + i] * id : 0.0f;
                same = same && b[k].q[i] == (int8_t)fmaxf(-127.0f, fminf(127.0f, roundf(v)));
            }
        }
    }
    ok(same, "Q8_0 quantization of whole rows (I=%d) equals roundf(x / d) with d = max|x| / 127", I);
}

/* 6 full blocks and a partial one; 31 full blocks (16 at once, then one at a time at AVX-512) and a partial one */
static void check_q8_quantize_rows(void)
{
    check_q8_quantize_row_width(200);
    check_q8_quantize_row_width(1000);
}

static double ref_act(double v, enum ops_act act)
{
    switch (act) {
    case OPS_GELU_TANH: return 0.5 * v * (1.0 + tanh(sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
    case OPS_GELU_ERF: return 0.5 * v * (1.0 + erf(v / sqrt(2.0)));
    case OPS_RELU: return v > 0 ? v : 0;
    case OPS_QUICK_GELU: return v / (1.0 + exp(-1.702 * v));
    }
    return v;
}

static void check_small_ops(void)
{
    enum { N = 1037 };
    float x[N], y[N], g[N], b[N];
    double want[N];
    for (int i = 0; i < N; i++) {
        x[i] = frand() * 3.0f + 0.5f;
        g[i] = 1.0f + 0.1f * frand();
        b[i] = 0.1f * frand();
    }
    for (int n = 1; n <= N; n += 97) {
        double mean = 0, var = 0;
        for (int i = 0; i < n; i++)
            mean += x[i];
        mean /= n;
        for (int i = 0; i < n; i++)
            var += (x[i] - mean) * (x[i] - mean);
        var /= n;
        for (int i = 0; i < n; i++)
            want[i] = (x[i] - mean) / sqrt(var + 1e-5) * g[i] + b[i];
        poison(y, N);
        ops_layernorm(y, x, g, b, n, 1e-5f);
        double e = rel_err(y, want, (size_t)n);
        ok(e <= 1e-5, "%s layernorm n=%d: rel err %.2g", ops_simd_name(), n, e);
    }

    const char *names[] = {"gelu_new", "gelu", "relu", "quick_gelu"};
    for (int a = 0; a < 4; a++) {
        /* Absolute error relative to |x|: the activations are ~x for large x. */
        double worst = 0;
        for (int rep = 0; rep < 4; rep++) {
            float scale = rep == 0 ? 0.001f : rep == 1 ? 1.0f : rep == 2 ? 5.0f : 40.0f;
            for (int i = 0; i < N; i++)
                y[i] = x[i] * scale - 0.5f * scale;
            float in[N];
            memcpy(in, y, sizeof in);
            ops_activate(y, N, (enum ops_act)a);
            for (int i = 0; i < N; i++) {
                double w = ref_act(in[i], (enum ops_act)a);
                double e = fabs(y[i] - w) / (fabs(in[i]) + 1e-30);
                if (isnan(y[i]))
                    e = INFINITY;
                if (e > worst)
                    worst = e;
            }
        }
        ok(worst <= 2e-6, "%s %s over 4 scales: error / |x| %.2g", ops_simd_name(), names[a], worst);
    }

    for (int n = 1; n <= N; n += 101) {
        double s = 0;
        for (int i = 0; i < n; i++)
            s += (double)x[i] * g[i];
        float got = ops_dot(x, g, n);
        ok(fabs(got - s) <= 1e-5 * fabs(s) + 1e-6, "%s dot n=%d: %g vs %g", ops_simd_name(), n, got, s);

        for (int i = 0; i < n; i++) {
            y[i] = b[i];
            want[i] = (double)b[i] + 0.75 * x[i];
        }
        ops_axpy(y, 0.75f, x, n);
        double e = rel_err(y, want, (size_t)n);
        ok(e <= 1e-6, "%s axpy n=%d: rel err %.2g", ops_simd_name(), n, e);

        /* softmax, also with a wide range (exp8's clamping) */
        double mx = -INFINITY, z = 0;
        for (int i = 0; i < n; i++) {
            y[i] = x[i] * (n % 2 ? 30.0f : 1.0f);
            if (y[i] > mx)
                mx = y[i];
        }
        for (int i = 0; i < n; i++)
            z += exp(y[i] - mx);
        for (int i = 0; i < n; i++)
            want[i] = exp(y[i] - mx) / z;
        ops_softmax(y, n);
        double maxabs = 0;
        for (int i = 0; i < n; i++) {
            double d = fabs(y[i] - want[i]) / (want[i] + 1e-30);
            if (want[i] > 1e-30 && d > maxabs)
                maxabs = d;
            if (isnan(y[i]))
                maxabs = INFINITY;
        }
        ok(maxabs <= 1e-5, "%s softmax n=%d: max relative error per element %.2g", ops_simd_name(), n, maxabs);
    }
}

/* The KV block at kv (F32) or kh (F16, the same values) from row j on. */
static void scores_kv(bool half, float *s, const float *q, const float *kv, const uint16_t *kh, int j, int stride,
                      int n, int d)
{
    if (half)
        ops_scores_f16(s, q, kh + (size_t)j * stride, (size_t)stride, n, d, 0.125f);
    else
        ops_scores(s, q, kv + (size_t)j * stride, (size_t)stride, n, d, 0.125f);
}

static void scores_q_kv(bool half, float *s, size_t lds, const float *q, size_t ldq, int nq, const float *kv,
                        const uint16_t *kh, int stride, int n, int d)
{
    if (half)
        ops_scores_q_f16(s, lds, q, ldq, nq, kh, (size_t)stride, n, d, 0.125f);
    else
        ops_scores_q(s, lds, q, ldq, nq, kv, (size_t)stride, n, d, 0.125f);
}

static void mix_kv(bool half, float *out, size_t ldo, const float *a, size_t lda, int nq, const float *kv,
                   const uint16_t *kh, int stride, int n, int d)
{
    if (half)
        ops_mix_f16(out, ldo, a, lda, nq, kh, (size_t)stride, n, d);
    else
        ops_mix(out, ldo, a, lda, nq, kv, (size_t)stride, n, d);
}

/* ops_scores and ops_mix (half: ops_scores_f16 and ops_mix_f16, an F16 KV
 * cache) over n rows `stride` values apart, d wide, against double sums of
 * the values they hold. */
static void check_attention(int n, int d, int stride, bool half)
{
    const char *kt = half ? " f16 kv" : "";
    float *kv = malloc(sizeof(float) * (size_t)n * stride), *q = malloc(sizeof(float) * (size_t)d);
    uint16_t *kh = malloc(sizeof(uint16_t) * (size_t)n * stride);
    float *s = malloc(sizeof(float) * (size_t)(n + 1)), *a = malloc(sizeof(float) * (size_t)n);
    float *out = malloc(sizeof(float) * (size_t)(d + 1));
    double *want = malloc(sizeof(double) * (size_t)(n > d ? n : d));
    for (int i = 0; i < n * stride; i++) {
        kv[i] = frand();
        kh[i] = ckpt_f32_to_f16(kv[i]);
        if (half)
            kv[i] = ckpt_f16_to_f32(kh[i]);     /* what the F16 cache holds */
    }
    for (int i = 0; i < d; i++)
        q[i] = frand();
    for (int j = 0; j < n; j++) {
        double t = 0;
        for (int i = 0; i < d; i++)
            t += (double)q[i] * kv[(size_t)j * stride + i];
        want[j] = t * 0.125;
        a[j] = frand();
    }
    poison(s, (size_t)n + 1);
    s[n] = 7.0f;
    scores_kv(half, s, q, kv, kh, 0, stride, n, d);
    double e = rel_err(s, want, (size_t)n);
    ok(e <= 1e-5 && s[n] == 7.0f, "%s%s scores n=%d d=%d stride=%d: rel err %.2g, nothing past n", ops_simd_name(), kt,
       n, d, stride, e);
    /* keys are summed 16 (AVX-512) or 8, 4 and 1 (AVX2) at a time: each
     * key's score bit-identical to that key scored alone, so a score does
     * not depend on the keys beside it */
    int alone = 1;
    for (int j = 0; j < n; j++) {
        float s1[2] = {0.0f, 7.0f};
        scores_kv(half, s1, q, kv, kh, j, stride, 1, d);
        if (memcmp(&s1[0], &s[j], sizeof(float)) != 0 || s1[1] != 7.0f)
            alone = 0;
    }
    ok(alone, "%s%s scores n=%d d=%d: each key bit-identical to that key alone", ops_simd_name(), kt, n, d);
    /* 6 queries at once (a group of 4, then 2 alone; rows d + 3 apart, as
     * a prefill's queries sit in their QKV rows), query 2 the one above:
     * each row bit-identical to that query scored alone, nothing past n */
    {
        size_t ldq = (size_t)d + 3, lds = (size_t)n + 1;
        float *q6 = malloc(sizeof(float) * 6 * ldq), *s6 = malloc(sizeof(float) * 6 * lds);
        float *one = malloc(sizeof(float) * (size_t)n);
        for (size_t i = 0; i < 6 * ldq; i++)
            q6[i] = i / ldq == 2 && i % ldq < (size_t)d ? q[i % ldq] : frand();
        for (size_t i = 0; i < 6 * lds; i++)
            s6[i] = 7.0f;
        scores_q_kv(half, s6, lds, q6, ldq, 6, kv, kh, stride, n, d);
        int same = memcmp(s6 + 2 * lds, s, sizeof(float) * (size_t)n) == 0;
        for (int qi = 0; qi < 6; qi++) {
            scores_kv(half, one, q6 + qi * ldq, kv, kh, 0, stride, n, d);
            same = same && memcmp(s6 + qi * lds, one, sizeof(float) * (size_t)n) == 0 && s6[qi * lds + n] == 7.0f;
        }
        ok(same, "%s%s scores of 6 queries n=%d d=%d: each row bit-identical to that query alone", ops_simd_name(), kt,
           n, d);
        free(q6);
        free(s6);
        free(one);
    }
    for (int i = 0; i <= d; i++)
        out[i] = 0.5f;
    for (int i = 0; i < d; i++) {
        double t = 0.5;
        for (int j = 0; j < n; j++)
            t += (double)a[j] * kv[(size_t)j * stride + i];
        want[i] = t;
    }
    mix_kv(half, out, 0, a, 0, 1, kv, kh, stride, n, d);
    e = rel_err(out, want, (size_t)d);
    ok(e <= 1e-5 && out[d] == 0.5f, "%s%s mix n=%d d=%d stride=%d: rel err %.2g, nothing past d", ops_simd_name(), kt,
       n, d, stride, e);
    /* 6 queries at once (a group of 4, then 2 alone), query 2 the one above:
     * each row bit-identical to the same query mixed alone */
    float *a6 = malloc(sizeof(float) * 6 * (size_t)n), *o6 = malloc(sizeof(float) * 6 * (size_t)(d + 1));
    for (int i = 0; i < 6 * n; i++)
        a6[i] = i / n == 2 ? a[i % n] : frand();
    for (int i = 0; i < 6 * (d + 1); i++)
        o6[i] = 0.5f;
    mix_kv(half, o6, (size_t)d + 1, a6, (size_t)n, 6, kv, kh, stride, n, d);
    int same = memcmp(o6 + 2 * (d + 1), out, sizeof(float) * (size_t)(d + 1)) == 0;
    for (int qi = 0; qi < 6; qi++) {
        for (int i = 0; i <= d; i++)
            out[i] = 0.5f;
        mix_kv(half, out, 0, a6 + (size_t)qi * n, 0, 1, kv, kh, stride, n, d);
        if (memcmp(o6 + (size_t)qi * (d + 1), out, sizeof(float) * (size_t)(d + 1)) != 0)
            same = 0;
    }
    ok(same, "%s%s mix of 6 queries n=%d d=%d: each row bit-identical to that query alone", ops_simd_name(), kt, n,
       d);
    free(a6);
    free(o6);
    free(kv);
    free(kh);
    free(q);
    free(s);
    free(a);
    free(out);
    free(want);
}

/* ops_to_f16 (the KV cache's rounding) against ckpt_f32_to_f16 bit for bit:
 * ties both ways, subnormal halves, the overflow edge, infinities, quiet and
 * signalling NaNs, random values; lengths across the 8- and 16-lane passes, a NaN
 * in a pass of ordinary values, and nothing written past n. */
static void check_to_f16(void)
{
    enum { N = 1000 };
    static const uint32_t edge[] = {
        0x00000000u, 0x80000000u, 0x3f800000u, 0x3f801000u, 0x3f803000u, 0x3f801001u, /* ties to even, both ways */
        0x33000000u, 0x33000001u, 0x337fffffu, 0x33800000u, 0x38000000u, 0x387fc000u, /* subnormal halves */
        0x38800000u, 0x387ff000u, 0x477fe000u, 0x477fefffu, 0x477ff000u, 0x47800000u, /* the largest half, overflow */
        0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc00001u, 0x7f800001u, 0x7fa00000u, /* infinities, NaNs */
        0x00000001u, 0x807fffffu, 0x3eaaaaabu, 0xc2f6e979u};
    float *x = malloc(sizeof(float) * N);
    uint16_t *got = malloc(sizeof(uint16_t) * (N + 1)), *want = malloc(sizeof(uint16_t) * N);
    size_t ne = sizeof edge / sizeof edge[0];
    for (int i = 0; i < N; i++) {
        uint32_t u = (uint32_t)rand() * 2654435761u;
        if (i < (int)ne)
            u = edge[i];
        else if (i % 3 == 0)
            u = (u & 0x807fffffu) | ((uint32_t)(100 + i % 45) << 23);   /* around the half range's bottom and top */
        memcpy(&x[i], &u, 4);
        want[i] = ckpt_f32_to_f16(x[i]);
    }
    int same = 1;
    static const size_t lens[] = {1, 7, 8, 9, 15, 16, 17, 33, 64, N};
    for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++)
        for (size_t off = 0; off < 3; off++) {
            size_t n = lens[l] + off > N ? N - off : lens[l];
            for (size_t i = 0; i <= n; i++)
                got[i] = 0xabcd;
            ops_to_f16(got, x + off, n);
            same = same && memcmp(got, want + off, n * sizeof(uint16_t)) == 0 && got[n] == 0xabcd;
        }
    ok(same, "%s to_f16: bit-identical to ckpt_f32_to_f16 (ties, subnormals, overflow, NaNs), nothing past n",
       ops_simd_name());
    free(x);
    free(got);
    free(want);
}

/* ops_attend1 (decode: one query over n keys in blocks of B, each block's
 * K and V apart) bit-identical to the per-block ops_scores, ops_softmax and
 * ops_mix calls it replaces, and within 1e-5 of a double softmax-mix. */
static void check_attend1(int n, int B, int d, bool half)
{
    int nb = (n + B - 1) / B;
    const void *kb[16], *vb[16];
    void *blk[32];
    float *kf = malloc(sizeof(float) * (size_t)n * d), *vf = malloc(sizeof(float) * (size_t)n * d);
    float *q = malloc(sizeof(float) * (size_t)d), *s = malloc(sizeof(float) * (size_t)n);
    float *s2 = malloc(sizeof(float) * (size_t)n), *out = malloc(sizeof(float) * (size_t)(d + 1));
    float *ref = malloc(sizeof(float) * (size_t)d);
    double *w = malloc(sizeof(double) * (size_t)n), *want = malloc(sizeof(double) * (size_t)d);
    size_t es = half ? sizeof(uint16_t) : sizeof(float);
    for (int i = 0; i < d; i++)
        q[i] = frand();
    for (int b = 0; b < nb; b++)
        for (int x = 0; x < 2; x++) {
            int rows = n - b * B < B ? n - b * B : B;
            blk[2 * b + x] = malloc(es * (size_t)rows * d);
            float *f = (x ? vf : kf) + (size_t)b * B * d;
            for (int i = 0; i < rows * d; i++) {
                f[i] = frand();
                if (half) {
                    ((uint16_t *)blk[2 * b + x])[i] = ckpt_f32_to_f16(f[i]);
                    f[i] = ckpt_f16_to_f32(((uint16_t *)blk[2 * b + x])[i]);
                } else
                    ((float *)blk[2 * b + x])[i] = f[i];
            }
            (x ? vb : kb)[b] = blk[2 * b + x];
        }
    for (int i = 0; i < d; i++)
        ref[i] = 0.0f;
    for (int b = 0; b < nb; b++) {
        int rows = n - b * B < B ? n - b * B : B;
        scores_kv(half, s2 + b * B, q, (const float *)kb[b], (const uint16_t *)kb[b], 0, d, rows, d);
    }
    ops_softmax(s2, n);
    for (int b = 0; b < nb; b++) {
        int rows = n - b * B < B ? n - b * B : B;
        mix_kv(half, ref, 0, s2 + b * B, 0, 1, (const float *)vb[b], (const uint16_t *)vb[b], d, rows, d);
    }
    double mx = -1e300, sum = 0;
    for (int j = 0; j < n; j++) {
        double t = 0;
        for (int i = 0; i < d; i++)
            t += (double)q[i] * kf[(size_t)j * d + i];
        w[j] = t * 0.125;
        mx = w[j] > mx ? w[j] : mx;
    }
    for (int j = 0; j < n; j++)
        sum += w[j] = exp(w[j] - mx);
    for (int i = 0; i < d; i++) {
        want[i] = 0;
        for (int j = 0; j < n; j++)
            want[i] += w[j] / sum * vf[(size_t)j * d + i];
    }
    for (int i = 0; i <= d; i++)
        out[i] = 9.0f;
    ops_attend1(out, s, q, kb, vb, n, B, d, 1, 0, 0.125f, half);
    double e = rel_err(out, want, (size_t)d);
    ok(memcmp(out, ref, sizeof(float) * (size_t)d) == 0 && e <= 1e-5 && out[d] == 9.0f,
       "%s%s attend1 n=%d B=%d d=%d: bit-identical to the per-block calls, rel err %.2g, nothing past d",
       ops_simd_name(), half ? " f16 kv" : "", n, B, d, e);
    for (int b = 0; b < 2 * nb; b++)
        free(blk[b]);
    free(kf);
    free(vf);
    free(q);
    free(s);
    free(s2);
    free(out);
    free(ref);
    free(w);
    free(want);
}

/* ops_attend1 over nh heads of a block (head i's runs hstride values after
 * head 0's): each head's output bit-identical to ops_attend1 of that head
 * alone, whatever the heads beside it, and nothing written past the nh
 * outputs. */
static void check_attend_heads(int n, int B, int d, int nh, bool half)
{
    int nb = (n + B - 1) / B;
    size_t es = half ? sizeof(uint16_t) : sizeof(float), hstride = (size_t)B * d + 16;
    const void *kb[16], *vb[16], *k1[16], *v1[16];
    char *blk[32];
    float *q = malloc(sizeof(float) * (size_t)nh * d), *s = malloc(sizeof(float) * (size_t)n);
    float *out = malloc(sizeof(float) * ((size_t)nh * d + 1)), *one = malloc(sizeof(float) * (size_t)d);
    for (int i = 0; i < nh * d; i++)
        q[i] = frand();
    for (int b = 0; b < 2 * nb; b++) {
        blk[b] = malloc(es * hstride * (size_t)nh);
        for (size_t i = 0; i < hstride * (size_t)nh; i++) {
            if (half)
                ((uint16_t *)blk[b])[i] = ckpt_f32_to_f16(frand());
            else
                ((float *)blk[b])[i] = frand();
        }
        (b % 2 ? vb : kb)[b / 2] = blk[b];
    }
    for (int i = 0; i <= nh * d; i++)
        out[i] = 9.0f;
    ops_attend1(out, s, q, kb, vb, n, B, d, nh, hstride, 0.125f, half);
    bool same = out[nh * d] == 9.0f;
    for (int i = 0; i < nh; i++) {
        for (int b = 0; b < nb; b++) {
            k1[b] = (const char *)kb[b] + (size_t)i * hstride * es;
            v1[b] = (const char *)vb[b] + (size_t)i * hstride * es;
        }
        ops_attend1(one, s, q + (size_t)i * d, k1, v1, n, B, d, 1, 0, 0.125f, half);
        same = same && memcmp(one, out + (size_t)i * d, sizeof(float) * (size_t)d) == 0;
    }
    ok(same, "%s%s attend1 of %d heads n=%d B=%d d=%d: each head bit-identical to that head alone, nothing past them",
       ops_simd_name(), half ? " f16 kv" : "", nh, n, B, d);
    for (int b = 0; b < 2 * nb; b++)
        free(blk[b]);
    free(q);
    free(s);
    free(out);
    free(one);
}

static void run_kernels(void)
{
    check_to_f16();
    static const int a1[][3] = {{1, 16, 64}, {16, 16, 64}, {17, 16, 64}, {128, 16, 64}, {40, 16, 37}, {33, 8, 100}};
    for (size_t c = 0; c < sizeof a1 / sizeof a1[0]; c++)
        for (int half = 0; half <= 1; half++)
            check_attend1(a1[c][0], a1[c][1], a1[c][2], half);
    static const int ah[][4] = {{128, 16, 64, 12}, {17, 16, 64, 3}, {1, 16, 64, 5}, {40, 16, 37, 2}, {33, 8, 100, 4}};
    for (size_t c = 0; c < sizeof ah / sizeof ah[0]; c++)
        for (int half = 0; half <= 1; half++)
            check_attend_heads(ah[c][0], ah[c][1], ah[c][2], ah[c][3], half);
    /* heads of 64 (GPT-2), odd widths, past 8 vectors; blocks of 16 keys, partial ones
     * (13: a group of 8, one of 4 and one key alone at AVX2) */
    /* each in F32 and over an F16 KV cache */
    static const int att[][3] = {{16, 64, 768}, {13, 64, 64}, {15, 128, 130}, {5, 64, 64}, {3, 37, 40}, {16, 128, 130}, {7, 160, 170}, {1, 1, 1}, {40, 64, 64}, {33, 100, 101}};
    for (size_t c = 0; c < sizeof att / sizeof att[0]; c++)
        for (int half = 0; half <= 1; half++)
            check_attention(att[c][0], att[c][1], att[c][2], half);
    enum ckpt_dtype types[] = {CKPT_F32, CKPT_F16, CKPT_BF16};
    for (int k = 0; k < 3; k++) {
        /* tile edges: T across the 3-row tile, I across 8 lanes, O across the 4-output tile */
        check_matmul(types[k], 1, 64, 16, 0, 16, false, true);
        check_matmul(types[k], 2, 64, 16, 0, 16, false, false);
        check_matmul(types[k], 3, 72, 20, 4, 20, true, true);
        check_matmul(types[k], 7, 37, 13, 1, 12, false, true);
        check_matmul(types[k], 8, 768, 48, 16, 32, true, true);
        check_matmul(types[k], 5, 5, 3, 0, 3, false, true);
    }
    for (int k = 0; k < 3; k++) {
        /* the AVX-512 tiles: up to 6 rows of x (so 9 = 6 + 3, 64 = 10 x 6 + 4), masked tails of I % 16 */
        check_matmul(types[k], 9, 100, 24, 0, 24, false, true);
        check_matmul(types[k], 64, 768, 16, 0, 16, true, true);
        check_matmul(types[k], 12, 33, 9, 2, 9, false, true);
    }
    check_matmul(CKPT_F32, 200, 512, 40, 0, 40, false, true);   /* several row chunks */
    for (int k = 0; k < 3; k++) {
        /* the packed product: rows across the 6-row groups and the 64-row
         * passes (1, 2, 63, 64, 65, 130), inputs across the KC blocks (128
         * for F32, 256 for 16-bit, 64 for widened F16, and for BF16 widened
         * at AVX2 from 13 rows, whose odd tails (257, 129, 37) end in half
         * a pair) and not multiples of 16, outputs across
         * panels of 64 with a padded last one, a range that starts and ends
         * inside panels */
        check_matmul_as(true, types[k], 1, 768, 200, 0, 200, false, true);
        check_matmul_as(true, types[k], 2, 300, 64, 0, 64, true, false);
        check_matmul_as(true, types[k], 63, 257, 70, 0, 70, false, true);
        check_matmul_as(true, types[k], 64, 129, 13, 0, 13, true, true);
        check_matmul_as(true, types[k], 65, 100, 130, 64, 128, false, true);
        check_matmul_as(true, types[k], 130, 37, 150, 10, 140, true, true);
        check_matmul_as(true, types[k], 7, 5, 3, 0, 3, false, true);
        /* AMX (BF16 and F16 at OPS_AMX; F16 a group of 32 inputs at a time,
         * so these also take a group's tail and panels converted one group
         * ahead of their products): A/C tiles of min(T, 16) rows (15, 16, 17:
         * a padded last row tile), passes of up to 256 rows (300), blocks of
         * 256 inputs and groups of 32 padded with zeros (600, 31, 33), one
         * row over several blocks, ranges that start and end inside panels */
        check_matmul_as(true, types[k], 1, 600, 70, 3, 69, true, true);
        check_matmul_as(true, types[k], 15, 31, 64, 1, 63, false, true);
        check_matmul_as(true, types[k], 16, 33, 128, 0, 128, true, false);
        check_matmul_as(true, types[k], 17, 600, 65, 0, 65, false, true);
        check_matmul_as(true, types[k], 300, 40, 66, 5, 66, true, true);
        /* balanced row groups (8 = 4 + 4, 13 = 5 + 4 + 4, 32 = 6 + 6 + 5 +
         * 5 + 5 + 5) and, from two groups on, F16 blocks widened to F32 by
         * the first group (KC 64: 200 inputs = 3 blocks and a tail of 8) */
        check_matmul_as(true, types[k], 8, 300, 130, 0, 130, false, true);
        check_matmul_as(true, types[k], 13, 65, 64, 0, 64, true, false);
        check_matmul_as(true, types[k], 32, 200, 70, 3, 70, true, true);
    }
    /* int8: T across the tiles (1, 2, 4 rows), I across blocks (with a padded last one), O across 4 */
    check_matmul_q8(1, 768, 16, 0, 16, false, true);
    check_matmul_q8(2, 64, 16, 4, 16, true, false);
    check_matmul_q8(7, 100, 13, 1, 12, false, true);
    check_matmul_q8(64, 768, 24, 0, 24, true, true);
    check_matmul_q8(3, 5, 3, 0, 3, false, true);
    /* one row (the matrix-vector path): an odd block count, rows left over
     * from the tiles of 4, one partial block, a row too wide to prepare */
    check_matmul_q8(1, 96, 13, 1, 12, true, true);
    check_matmul_q8(1, 5, 3, 0, 3, false, false);
    check_matmul_q8(1, 3072, 22, 2, 22, false, true);
    check_matmul_q8(1, 8224, 5, 0, 5, true, false);
    check_matmul_q8(1, 200, 37, 3, 35, true, true);     /* an odd block count, outputs inside the groups of 16 */
    check_matmul_q8(1, 768, 50, 17, 49, false, true);   /* a partial last group */
    /* several rows (VNNI: the panel of 16 outputs, tiles of up to 8 rows,
     * chunks of 32): row counts across the tiles and chunks, odd and even
     * block counts and a partial last block, outputs not a multiple of 16
     * (nor of 4), a range inside the matrix, rows too wide for each path */
    {
        static const int rows[] = {2, 7, 8, 31, 32, 33, 64, 65};
        for (size_t k = 0; k < sizeof rows / sizeof rows[0]; k++) {
            check_matmul_q8(rows[k], 200, 13, 0, 13, k % 2 == 0, true);
            check_matmul_q8(rows[k], 768, 22, 1, 22, k % 2 == 1, k % 2 == 0);
        }
        check_matmul_q8(33, 4096, 17, 0, 17, true, true);   /* the widest row of the panel path */
        check_matmul_q8(7, 5000, 9, 1, 9, false, true);     /* wider: the tiles of 4 by 4 */
        check_matmul_q8(8, 8224, 6, 0, 6, false, true);     /* wider still: the 256-bit tiles */
        check_q8_rows_alone(33, 200, 13);
        check_q8_rows_alone(9, 768, 22);
        check_q8_rows_alone(5, 3072, 7);
        check_q8_rows_alone(65, 200, 37);    /* AMX: tiles of 16 rows and the VNNI panel below 5 */
        check_q8_prepared(65, 200, 37);      /* 7 blocks: a partial last block and last part */
        check_q8_prepared(34, 768, 50);
        check_q8_prepared(21, 4096, 19);     /* the widest row the tiles take */
        check_q8_prepared(9, 4128, 5);       /* wider: no tiles */
        for (int T = 1; T <= 65; T++)        /* every row count, outputs inside the tiles of 16 */
            check_matmul_q8(T, 200, 37, 3, 35, T % 2 == 0, T % 3 != 0);
    }
    check_small_ops();
}

struct pool_ctx {
    atomic_int hits[1000];
    atomic_int bad_thread;
    int threads;
};

static void pool_task(void *ctx, int task, int thread)
{
    struct pool_ctx *c = ctx;
    atomic_fetch_add(&c->hits[task], 1);
    if (thread < 0 || thread >= c->threads)
        atomic_fetch_add(&c->bad_thread, 1);
}

static void check_pool(int threads)
{
    struct tpool *p;
    ok(tpool_new(threads, &p) == 0, "pool of %d threads starts", threads);
    is_int(tpool_threads(p), threads, "it has %d threads", threads);
    struct pool_ctx *c = calloc(1, sizeof *c);
    c->threads = threads;
    int all_once = 1;
    for (int round = 0; round < 200; round++) {
        int n = 1 + (round * 37) % 1000;
        for (int i = 0; i < 1000; i++)
            atomic_store(&c->hits[i], 0);
        tpool_run(p, pool_task, c, n);
        for (int i = 0; i < 1000; i++)
            if (atomic_load(&c->hits[i]) != (i < n))
                all_once = 0;
        if (round == 100)
            usleep(5000);   /* the workers fall asleep and must wake for the next loop */
    }
    ok(all_once, "%d threads: 200 loops ran every task exactly once", threads);
    is_int(atomic_load(&c->bad_thread), 0, "thread numbers are in range");
    free(c);
    tpool_free(p);
}

/* F16 at the AMX level: OPS_LATENCY on the AVX-512 FMA kernel (the
 * AVX-512 BF16 level's bits), OPS_THROUGHPUT on the tiles (other bits), at
 * one row and at 32, the two alternating in one process (two models of
 * different tunings); BF16 on the tiles either way. The level's name is
 * the same for both: the choice is the caller's, per product. */
static void check_tuning(void)
{
    int I = 300, O = 70, T = 32;
    uint16_t *w = malloc(sizeof(uint16_t) * (size_t)O * I), *wb = malloc(sizeof(uint16_t) * (size_t)O * I);
    float *x = malloc(sizeof(float) * (size_t)T * I), *fma = malloc(sizeof(float) * (size_t)T * O);
    float *y = malloc(sizeof(float) * (size_t)T * O), *y2 = malloc(sizeof(float) * (size_t)T * O);
    void *wp = malloc(ops_pack_bytes(CKPT_F16, I, O)), *wbp = malloc(ops_pack_bytes(CKPT_BF16, I, O));
    for (int i = 0; i < O * I; i++) {
        float v = frand() * 0.5f;
        w[i] = ckpt_f32_to_f16(v);
        wb[i] = ckpt_f32_to_bf16(v);
    }
    for (int i = 0; i < T * I; i++)
        x[i] = frand();
    ops_pack(wp, w, CKPT_F16, I, O, 0, O);
    ops_pack(wbp, wb, CKPT_BF16, I, O, 0, O);
    ops_init(OPS_AVX512_BF16);
    bool below_one = !ops_tuning_matters();
    ops_init(OPS_AMX);
    bool amx_two = ops_tuning_matters(), named = strstr(ops_simd_name(), "f16tiles") == NULL;
    bool lat_fma = true, tp_tiles = true, bf16_same = true;
    for (int pass = 0; pass < 4; pass++) {
        int rows = pass & 1 ? T : 1;
        size_t n = (size_t)rows * O;
        ops_init(OPS_AVX512_BF16);
        ops_matmul_packed(fma, x, wp, CKPT_F16, NULL, rows, I, O, 0, O, false, OPS_LATENCY);
        ops_init(OPS_AMX);
        /* throughput, then latency, then throughput again: each its own kernel's bits every time */
        ops_matmul_packed(y2, x, wp, CKPT_F16, NULL, rows, I, O, 0, O, false, OPS_THROUGHPUT);
        ops_matmul_packed(y, x, wp, CKPT_F16, NULL, rows, I, O, 0, O, false, OPS_LATENCY);
        lat_fma = lat_fma && memcmp(y, fma, sizeof(float) * n) == 0;
        tp_tiles = tp_tiles && memcmp(y2, fma, sizeof(float) * n) != 0;
        ops_matmul_packed(y, x, wp, CKPT_F16, NULL, rows, I, O, 0, O, false, OPS_THROUGHPUT);
        tp_tiles = tp_tiles && memcmp(y, y2, sizeof(float) * n) == 0;
        ops_matmul_packed(y, x, wbp, CKPT_BF16, NULL, rows, I, O, 0, O, false, OPS_LATENCY);
        ops_matmul_packed(y2, x, wbp, CKPT_BF16, NULL, rows, I, O, 0, O, false, OPS_THROUGHPUT);
        bf16_same = bf16_same && memcmp(y, y2, sizeof(float) * n) == 0;
    }
    ok(below_one && amx_two, "the two tunings are two kernels at the AMX level only");
    ok(named, "the AMX level's name does not depend on a tuning (%s)", ops_simd_name());
    ok(lat_fma, "F16 at the AMX level tuned for latency gives the FMA kernel's bits at 1 and 32 rows");
    ok(tp_tiles, "F16 at the AMX level tuned for throughput runs on the tiles (its own bits, not the FMA kernel's), "
                 "the same when latency products come between");
    ok(bf16_same, "BF16 at the AMX level is on the tiles for both tunings");
    ops_init(OPS_AVX512_BF16);
    free(w);
    free(wb);
    free(x);
    free(fma);
    free(y);
    free(y2);
    free(wp);
    free(wbp);
}

/* F32 at the AMX level: the FMA kernel under both tunings by default, the
 * tiles tuned for throughput with LLMCGI_F32_TILES=1 (w and x each three
 * exact bf16 parts, six products): other bits than the FMA kernel's at
 * every row count 1..65 (odd I, a partial last panel), within 1e-6 of the
 * double reference each, and a row alone bit-identical to its row in
 * every batch; latency keeps the FMA kernel's bits even then. */
static void check_f32_tiles(void)
{
    int I = 300, O = 70, T = 65;
    float *w = malloc(sizeof(float) * (size_t)O * I), *x = malloc(sizeof(float) * (size_t)T * I);
    float *fma = malloc(sizeof(float) * (size_t)T * O), *y = malloc(sizeof(float) * (size_t)T * O);
    float *alone = malloc(sizeof(float) * (size_t)T * O);
    double *want = malloc(sizeof(double) * (size_t)T * O);
    void *wp = malloc(ops_pack_bytes(CKPT_F32, I, O));
    for (int i = 0; i < O * I; i++)
        w[i] = frand() * 0.5f;
    for (int i = 0; i < T * I; i++)
        x[i] = frand();
    for (int t = 0; t < T; t++)
        for (int o = 0; o < O; o++) {
            double s = 0.0;
            for (int i = 0; i < I; i++)
                s += (double)x[t * I + i] * w[o * I + i];
            want[t * O + o] = s;
        }
    ops_pack(wp, w, CKPT_F32, I, O, 0, O);
    bool off_same = true, differ = true, rows_same = true, named = true;
    double worst = 0.0;
    for (int rows = 1; rows <= T; rows++) {
        ops_init(OPS_AVX512_BF16);
        ops_matmul_packed(fma, x, wp, CKPT_F32, NULL, rows, I, O, 0, O, false, OPS_LATENCY);
        ops_init(OPS_AMX);
        named = named && strstr(ops_simd_name(), "f32tiles") == NULL;
        for (int tu = OPS_LATENCY; tu <= OPS_THROUGHPUT; tu++) {
            ops_matmul_packed(y, x, wp, CKPT_F32, NULL, rows, I, O, 0, O, false, (enum ops_tuning)tu);
            off_same = off_same && memcmp(y, fma, sizeof(float) * (size_t)rows * O) == 0;
        }
        ops_init(OPS_AVX512_BF16);
        setenv("LLMCGI_F32_TILES", "1", 1);
        ops_init(OPS_AMX);
        named = named && strstr(ops_simd_name(), "+amx+f32tiles") != NULL;
        ops_matmul_packed(y, x, wp, CKPT_F32, NULL, rows, I, O, 0, O, false, OPS_LATENCY);
        off_same = off_same && memcmp(y, fma, sizeof(float) * (size_t)rows * O) == 0;
        ops_matmul_packed(y, x, wp, CKPT_F32, NULL, rows, I, O, 0, O, false, OPS_THROUGHPUT);
        for (int t = 0; t < rows; t++)
            if (t == 0 || t == rows - 1)   /* first and last row of each batch, each against itself alone */
                ops_matmul_packed(alone + (size_t)t * O, x + (size_t)t * I, wp, CKPT_F32, NULL, 1, I, O, 0, O,
                                  false, OPS_THROUGHPUT);
        rows_same = rows_same && memcmp(y, alone, sizeof(float) * O) == 0 &&
                    memcmp(y + (size_t)(rows - 1) * O, alone + (size_t)(rows - 1) * O, sizeof(float) * O) == 0;
        differ = differ && memcmp(y, fma, sizeof(float) * (size_t)rows * O) != 0;
        double e = rel_err(y, want, (size_t)rows * O);
        if (e > worst)
            worst = e;
        unsetenv("LLMCGI_F32_TILES");
        ops_init(OPS_AVX512_BF16);
    }
    ok(named, "AMX level named +amx+f32tiles with LLMCGI_F32_TILES=1, without f32tiles otherwise");
    ok(off_same, "F32 at the AMX level gives the FMA kernel's bits at 1..65 rows under both tunings by default, "
                 "and tuned for latency with LLMCGI_F32_TILES=1");
    ok(differ, "LLMCGI_F32_TILES=1: F32 tuned for throughput runs on the tiles at 1..65 rows (not the FMA kernel's bits)");
    ok(rows_same, "LLMCGI_F32_TILES=1: F32 on the tiles, a row alone is bit-identical to its row in batches of 1..65");
    ok(worst <= 1e-6, "LLMCGI_F32_TILES=1: F32 on the tiles within 1e-6 of the double reference at 1..65 rows: %.2g",
       worst);
    free(w);
    free(x);
    free(fma);
    free(y);
    free(alone);
    free(want);
    free(wp);
}

int main(void)
{
    /* Every level this CPU has, from the portable reference up. */
    enum ops_level top = ops_cpu_level();
    static const char *const prefix[] = {"portable", "avx2+fma+f16c", "avx512f+bw+vl", "avx512f+bw+vl", "avx512f+bw+vl"};
    for (int lv = OPS_PORTABLE; lv <= (int)top; lv++) {
        is_int((int)ops_init((enum ops_level)lv), lv, "level %d can be chosen", lv);
        ok(strncmp(ops_simd_name(), prefix[lv], strlen(prefix[lv])) == 0 &&
               (lv < OPS_AVX512_BF16) == (strstr(ops_simd_name(), "bf16") == NULL) &&
               (lv < OPS_AMX) == (strstr(ops_simd_name(), "+amx") == NULL),
           "level %d is named %s", lv, ops_simd_name());
        run_kernels();
        /* every case again tuned for throughput where that is another kernel
         * (below, the packed cases check the two tunings give the same bits) */
        if (lv == OPS_AMX) {
            tuning_now = OPS_THROUGHPUT;
            run_kernels();
            tuning_now = OPS_LATENCY;
        }
    }
    printf("# this CPU's best level: %d (%s)\n", (int)top, ops_simd_name());
    if (top >= OPS_AMX) {
        check_q8_amx_bits();
        check_tuning();
        check_f32_tiles();
        /* every kernel again tuned for throughput with F32 on the tiles too
         * (the measuring switch LLMCGI_F32_TILES=1) */
        setenv("LLMCGI_F32_TILES", "1", 1);
        ops_init(OPS_AVX512_BF16);
        ops_init(OPS_AMX);
        tuning_now = OPS_THROUGHPUT;
        run_kernels();
        tuning_now = OPS_LATENCY;
        unsetenv("LLMCGI_F32_TILES");
        ops_init(OPS_AVX512_BF16);
    }
    is_int((int)ops_init(OPS_BEST), (int)top, "OPS_BEST picks the CPU's best level");
    check_q8_rounding();
    check_q8_quantize_rows();
    check_pool(1);
    check_pool(2);
    check_pool(4);
    return tap_done();
}
