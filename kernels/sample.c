/* sample.c -- the CPU reference of sample.h: penalties, greedy argmax, log-probabilities and top-n of one logits row, in the engine sampler's order of float operations. */
#include "config.h"
#include "sample.h"
#include "exp_poly.h"

#include <float.h>
#include <math.h>
#include <string.h>

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

/* exp(x) for x <= 0: one lane of the sampler's v4f_exp_neg, operation for
 * operation (each product and sum rounded on its own). */
static float exp_neg(float x)
{
    int under = x < EXP_UNDER;
    x = x > EXP_UNDER ? x : EXP_UNDER;
    volatile float t = x * EXP_LOG2E;   /* volatile: no contraction into a fused multiply-add */
    t = t + EXP_MAGIC;
    int32_t n = (int32_t)(f2u(t) - f2u(EXP_MAGIC));
    float fn = t - EXP_MAGIC;
    volatile float p = fn * EXP_C1;
    float r = x - p;
    p = fn * EXP_C2;
    r = r - p;
    volatile float r2 = r * r, r4 = r2 * r2;
    volatile float pa = EXP_P4 * r, pb = EXP_P2 * r, pc = EXP_P0 * r;
    float a = EXP_P5 + pa, b = EXP_P3 + pb, c = EXP_P1 + pc;
    volatile float br2 = b * r2, cr4 = c * r4;
    float y = (a + br2) + cr4;
    volatile float yr2 = y * r2;
    y = yr2 + r + 1.0f;
    y = y * u2f((uint32_t)(n + 127) << 23);
    return under ? 0.0f : y;
}

int ksample_greedy_ref(float *l, int n, const struct ksample_row *r, struct ksample_out *out)
{
    if (!l || n < 1 || !r || !out || r->top_n < 0 || r->top_n > KSAMPLE_TOP_N_MAX)
        return -1;
    if (r->repetition_penalty != 1.0f)
        for (int i = 0; i < r->n_rep; i++) {
            int32_t t = r->rep_ids[i];
            if (t >= 0 && t < n)
                l[t] = l[t] < 0 ? l[t] * r->repetition_penalty : l[t] / r->repetition_penalty;
        }
    if (r->frequency_penalty != 0.0f || r->presence_penalty != 0.0f)
        for (int i = 0; i < r->n_gen; i++) {
            int32_t t = r->gen_ids[i];
            if (t >= 0 && t < n) {
                volatile float f = (float)r->gen_counts[i] * r->frequency_penalty;
                l[t] -= f + r->presence_penalty;
            }
        }
    float mx = -INFINITY;
    int arg = -1;
    for (int i = 0; i < n; i++) {
        float v = l[i];
        v = v != v ? -INFINITY : v > FLT_MAX ? FLT_MAX : v;
        l[i] = v;
        if (v > mx || (arg < 0 && v == mx && v > -INFINITY)) {
            mx = v;
            arg = i;
        }
    }
    if (arg < 0 || mx == -INFINITY)
        return -1;
    /* The sum of exp(l - mx) in the sampler's order. */
    double acc[4] = {0, 0, 0, 0};
    int nb = n / EXP_BLOCK;
    for (int b = 0; b < nb; b++) {
        float f[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int k = 0; k < EXP_BLOCK; k += 8)
            for (int j = 0; j < 8; j++)
                f[j] += exp_neg(l[b * EXP_BLOCK + k + j] - mx);
        for (int j = 0; j < 4; j++)
            acc[j] += (double)f[j] + (double)f[j + 4];
    }
    for (int i = nb * EXP_BLOCK; i < n; i++)
        acc[0] += exp_neg(l[i] - mx);
    double logz = log((acc[0] + acc[1]) + (acc[2] + acc[3]));
    out->id = arg;
    out->logprob = (float)((double)(l[arg] - mx) - logz);
    /* top_n: value descending, lower id first among equals. */
    int cnt = 0;
    for (int i = 0; i < n && r->top_n > 0; i++) {
        float v = l[i];
        if (v == -INFINITY || (cnt == r->top_n && !(v > l[out->top_id[cnt - 1]])))
            continue;
        int pos = cnt < r->top_n ? cnt++ : r->top_n - 1;
        for (; pos > 0 && l[out->top_id[pos - 1]] < v; pos--)
            out->top_id[pos] = out->top_id[pos - 1];
        out->top_id[pos] = i;
    }
    for (int j = 0; j < cnt; j++)
        out->top_logprob[j] = (float)((double)(l[out->top_id[j]] - mx) - logz);
    out->n_top = cnt;
    return 0;
}
