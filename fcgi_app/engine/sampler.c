/* sampler.c -- next-token choice: HF repetition penalty, OpenAI penalties, HF warpers, seeded draw, logprobs. */
#include "config.h"
#include "sampler.h"
#include "sampler_int.h"
#include "util.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ parameters */

struct sampler_params sampler_params_default(void)
{
    return (struct sampler_params){
        .do_sample = false,
        .temperature = 1.0f,
        .top_k = 0,
        .top_p = 1.0f,
        .typical_p = 1.0f,
        .repetition_penalty = 1.0f,
        .frequency_penalty = 0.0f,
        .presence_penalty = 0.0f,
        .seed = 0,
        .top_n = 0,
    };
}

static int param_error(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int param_error(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return SAMPLER_ERR_INVAL;
}

int sampler_params_check(const struct sampler_params *p, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!p)
        return param_error(err, errlen, "no sampling parameters");
    /* Written so that NaN fails every test. */
    if (!(p->temperature >= 0.0f && isfinite(p->temperature)))
        return param_error(err, errlen, "temperature must be a finite number >= 0 (got %g)", (double)p->temperature);
    if (p->top_k < 0)
        return param_error(err, errlen, "top_k must be >= 0 (got %d)", p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return param_error(err, errlen, "top_p must be > 0 and <= 1 (got %g)", (double)p->top_p);
    if (!(p->typical_p > 0.0f && p->typical_p <= 1.0f))
        return param_error(err, errlen, "typical_p must be > 0 and <= 1 (got %g)", (double)p->typical_p);
    if (!(p->repetition_penalty > 0.0f && isfinite(p->repetition_penalty)))
        return param_error(err, errlen, "repetition_penalty must be a finite number > 0 (got %g)",
                           (double)p->repetition_penalty);
    if (!(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f))
        return param_error(err, errlen, "frequency_penalty must be between -2 and 2 (got %g)",
                           (double)p->frequency_penalty);
    if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f))
        return param_error(err, errlen, "presence_penalty must be between -2 and 2 (got %g)",
                           (double)p->presence_penalty);
    if (p->top_n < 0 || p->top_n > SAMPLER_TOP_N_MAX)
        return param_error(err, errlen, "top_n must be between 0 and 20 (got %d)", p->top_n);
    return SAMPLER_OK;
}

/* ------------------------------------------------------------------ random numbers */

/* splitmix64 expands the 64-bit seed into xoshiro256**'s 256-bit state (the
 * seeding its authors recommend); both are integer-only, so a seed gives the
 * same stream on every machine. */
static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}


/* Uniform in [0, 1): the top 53 bits scaled by 2^-53, exact in a double. */
static double uniform01(uint64_t st[4])
{
    return (double)(util_xoshiro_next(st) >> 11) * 0x1.0p-53;
}

/* ------------------------------------------------------------------ life cycle */

void sampler_reset(struct sampler *s)
{
    uint64_t x = s->p.seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
    if (s->counts) {
        for (size_t i = 0; i < s->n_gen_ids; i++)
            s->counts[s->gen_ids[i]] = 0;
    }
    s->n_gen_ids = 0;
}

struct sampler *sampler_new(const struct sampler_params *p, int32_t n_vocab)
{
    if (sampler_params_check(p, NULL, 0) != SAMPLER_OK || n_vocab < 1) {
        errno = EINVAL;
        return NULL;
    }
    struct sampler *s = calloc(1, sizeof *s);
    if (!s) {
        errno = ENOMEM;
        return NULL;
    }
    size_t n = (size_t)n_vocab;
    s->p = *p;
    s->n = n_vocab;
    s->idx = malloc(n * sizeof *s->idx);
    s->key = malloc(n * sizeof *s->key);
    s->w = malloc(n * sizeof *s->w);
    s->tmpk = malloc(n * sizeof *s->tmpk);
    s->tmpw = malloc(n * sizeof *s->tmpw);
    s->bk = malloc(n * sizeof *s->bk);
    bool ok = s->idx && s->key && s->w && s->tmpk && s->tmpw && s->bk;
    if (ok && (p->frequency_penalty != 0.0f || p->presence_penalty != 0.0f)) {
        s->counts = calloc(n, sizeof *s->counts);
        s->gen_ids = malloc(n * sizeof *s->gen_ids);
        ok = s->counts && s->gen_ids;
    }
    if (ok && p->repetition_penalty != 1.0f) {
        s->stamp = calloc(n, sizeof *s->stamp);
        ok = s->stamp != NULL;
    }
    if (!ok) {
        sampler_free(s);
        errno = ENOMEM;
        return NULL;
    }
#ifdef SAMPLER_AVX2
    s->avx2 = __builtin_cpu_supports("avx2") && !getenv("LLMCGI_SAMPLER_NO_AVX2");
#endif
    sampler_reset(s);
    return s;
}

void sampler_free(struct sampler *s)
{
    if (!s)
        return;
    free(s->idx);
    free(s->key);
    free(s->w);
    free(s->tmpk);
    free(s->tmpw);
    free(s->bk);
    free(s->counts);
    free(s->gen_ids);
    free(s->stamp);
    free(s);
}

int sampler_accept(struct sampler *s, int32_t id)
{
    if (!s || id < 0 || id >= s->n)
        return SAMPLER_ERR_INVAL;
    if (s->counts && s->counts[id]++ == 0)
        s->gen_ids[s->n_gen_ids++] = id;    /* distinct ids <= n: never overflows */
    return SAMPLER_OK;
}

/* ------------------------------------------------------------------ pipeline steps */

/* A new mark for the repetition penalty's stamp[] (one per call). */
static void next_stamp(struct sampler *s)
{
    if (++s->stamp_now == 0) {              /* wrapped after 2^32 calls: start over */
        memset(s->stamp, 0, (size_t)s->n * sizeof *s->stamp);
        s->stamp_now = 1;
    }
}

/* Repetition penalty, Hugging Face RepetitionPenaltyLogitsProcessor: for each
 * distinct token t of the context (prompt + generated; ids outside the
 * vocabulary are skipped, as HF drops them),
 *     logit[t] = logit[t] < 0 ? logit[t] * penalty : logit[t] / penalty
 * applied once per token however often it occurs (HF gathers, then scatters).
 * Then OpenAI's frequency and presence penalties over the generated tokens:
 *     logit[t] -= count[t] * frequency_penalty + (count[t] > 0) * presence_penalty */
static void apply_penalties(struct sampler *s, float *l, const int32_t *ctx, size_t n_ctx)
{
    if (s->stamp && ctx) {
        const float pen = s->p.repetition_penalty;
        next_stamp(s);
        for (size_t i = 0; i < n_ctx; i++) {
            int32_t t = ctx[i];
            if (t < 0 || t >= s->n || s->stamp[t] == s->stamp_now)
                continue;
            s->stamp[t] = s->stamp_now;
            l[t] = l[t] < 0 ? l[t] * pen : l[t] / pen;
        }
    }
    if (s->counts) {
        const float fp = s->p.frequency_penalty, pp = s->p.presence_penalty;
        for (size_t i = 0; i < s->n_gen_ids; i++) {
            int32_t t = s->gen_ids[i];
            l[t] -= (float)s->counts[t] * fp + pp;
        }
    }
}

/* NaN becomes -inf (never chosen) and +inf the largest float (so that
 * softmax stays defined: the +inf tokens share the mass); returns the
 * maximum, its first index in *argmax, the smallest logit above -inf in
 * *lmin, and counts the tokens above -inf. */
static float sanitize_max(float *l, size_t n, size_t *argmax, float *lmin, size_t *n_finite)
{
    const v4f ninf = v4f_splat(-INFINITY), big = v4f_splat(FLT_MAX), inf = v4f_splat(INFINITY);
    v4f mx0 = ninf, mx1 = ninf, mn = inf;
    v4i cnt = {0, 0, 0, 0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        /* max(v, -inf) is -inf for NaN (maxps' second operand), v otherwise */
        v4f v0 = v4f_min(v4f_max(v4f_load(l + i), ninf), big);
        v4f v1 = v4f_min(v4f_max(v4f_load(l + i + 4), ninf), big);
        v4f_store(l + i, v0);
        v4f_store(l + i + 4, v1);
        mx0 = v4f_max(mx0, v0);
        mx1 = v4f_max(mx1, v1);
        v4i f0 = v0 > ninf, f1 = v1 > ninf;
        mn = v4f_min(mn, v4f_min(v4f_select(f0, v0, inf), v4f_select(f1, v1, inf)));
        cnt -= f0;
        cnt -= f1;
    }
    v4f mx = v4f_max(mx0, mx1);
    float m = mx[0], lo = mn[0];
    for (int j = 1; j < 4; j++) {
        m = mx[j] > m ? mx[j] : m;
        lo = mn[j] < lo ? mn[j] : lo;
    }
    size_t c = (size_t)cnt[0] + (size_t)cnt[1] + (size_t)cnt[2] + (size_t)cnt[3];
    for (; i < n; i++) {
        float v = l[i];
        v = v != v ? -INFINITY : v > FLT_MAX ? FLT_MAX : v;
        l[i] = v;
        m = v > m ? v : m;
        if (v > -INFINITY && v < lo)
            lo = v;
        c += v > -INFINITY;
    }
    *lmin = lo;
    size_t a = 0;
    const v4f vm = v4f_splat(m);
    while (a + 4 <= n && !v4i_any(v4f_load(l + a) == vm))
        a += 4;
    while (a < n && l[a] != m)
        a++;
    *argmax = a < n ? a : 0;
    *n_finite = c;
    return m;
}

/* Every token as a candidate: x = l[i] / T (T == 1: l[i]), clamped at
 * FLT_MAX like the sanitised logits, key[i] = -x, idx[i] = i, and with bm
 * the key's bucket in bk[i]; *kmax is the largest finite key. Returns how
 * many keys are +inf (x is -inf: the logit was, or the division overflowed). */
static size_t make_candidates(const float *l, float T, float *key, int32_t *idx, size_t n, float *kmax,
                              const struct bucket_map *bm, int32_t *bk)
{
    const v4f vt = v4f_splat(T), big = v4f_splat(FLT_MAX), ninf = v4f_splat(-INFINITY);
    const bool div = T != 1.0f;
    v4i cnt = {0, 0, 0, 0}, pos = {0, 1, 2, 3};
    v4f vmin = v4f_splat(INFINITY);     /* smallest x above -inf */
    size_t i = 0;
    for (; i + 4 <= n; i += 4, pos += 4) {
        v4f x = v4f_load(l + i);
        if (div)
            x = x / vt;
        x = v4f_min(x, big);
        v4i gone = x == ninf;
        cnt -= gone;
        vmin = v4f_min(vmin, v4f_select(gone, v4f_splat(INFINITY), x));
        v4f_store(key + i, -x);
        memcpy(idx + i, &pos, sizeof pos);
        if (bm) {
            v4i d = v4_buckets(-x, bm, i);
            memcpy(bk + i, &d, sizeof d);
        }
    }
    size_t c = (size_t)cnt[0] + (size_t)cnt[1] + (size_t)cnt[2] + (size_t)cnt[3];
    float xmin = vmin[0];
    for (int q = 1; q < 4; q++)
        xmin = vmin[q] < xmin ? vmin[q] : xmin;
    for (; i < n; i++) {
        float x = div ? l[i] / T : l[i];
        x = x > FLT_MAX ? FLT_MAX : x;
        c += x == -INFINITY;
        if (x != -INFINITY && x < xmin)
            xmin = x;
        key[i] = -x;
        idx[i] = (int32_t)i;
        if (bm)
            bk[i] = bucket_of(-x, bm, i);
    }
    *kmax = -xmin;
    return c;
}

/* Keeps the candidates whose key is <= kstar, in id order; with_w: their
 * weights too, and their sum in *z (sampler_sum_w()'s order). few: most go, so a
 * (well predicted) branch beats branch-free copying. */
static size_t keep_le(struct sampler *s, size_t c, float kstar, bool with_w, bool few, double *z)
{
    int32_t *idx = s->idx;
    float *key = s->key, *w = s->w;
    size_t m = 0;
    if (few) {
        const v4f vk = v4f_splat(kstar);
        size_t j = 0;
        while (j < c) {
            while (j + 4 <= c && !v4i_any(v4f_load(key + j) <= vk))
                j += 4;
            size_t end = j + 4 < c ? j + 4 : c;
            for (; j < end; j++) {
                if (key[j] <= kstar) {
                    idx[m] = idx[j];
                    key[m] = key[j];
                    if (with_w)
                        w[m] = w[j];
                    m++;
                }
            }
        }
    } else if (with_w) {
        for (size_t j = 0; j < c; j++) {
            float k = key[j];
            idx[m] = idx[j];
            key[m] = k;
            w[m] = w[j];
            m += k <= kstar;
        }
    } else {
        for (size_t j = 0; j < c; j++) {
            float k = key[j];
            idx[m] = idx[j];
            key[m] = k;
            m += k <= kstar;
        }
    }
    if (with_w && z)
        *z = sampler_sum_w(w, m);
    return m;
}

/* Applies top_p's cut: the candidates after it get key +inf and weight 0;
 * of those with key kstar only the last ct.r (the highest ids: HF's
 * ascending sort, stable, drops lower ids first) stay. Returns the weight
 * of the survivors, their number in *count, and in *wx the sum of their
 * w * (x - xmax) (x = -key), which gives typical_p its entropy. */
static double apply_cut(struct sampler *s, size_t c, struct cut ct, float xmax, size_t *count, double *wx)
{
    float *key = s->key, *w = s->w;
    const v4f vk = v4f_splat(ct.kstar), inf = v4f_splat(INFINITY), zero = v4f_splat(0.0f), vxm = v4f_splat(xmax);
    size_t skip = ct.ties - ct.r, m = 0;   /* ties to drop, met first going up */
    double acc = 0, accx = 0;
    v4f f = zero, fx = zero;                /* float sums of up to 16 groups, then in double */
    v4i cnt = {0, 0, 0, 0};
    size_t j = 0;
    for (; j + 4 <= c; j += 4) {
        if ((j & 63) == 0) {
            acc += ((double)f[0] + (double)f[1]) + ((double)f[2] + (double)f[3]);
            accx += ((double)fx[0] + (double)fx[1]) + ((double)fx[2] + (double)fx[3]);
            f = fx = zero;
        }
        v4f k = v4f_load(key + j);
        if (skip && v4i_any(k == vk)) {     /* ties still to drop: these four one by one */
            for (size_t q = j; q < j + 4; q++) {
                bool keep = key[q] < ct.kstar || (key[q] == ct.kstar && (skip == 0 || (skip--, false)));
                if (keep) {
                    acc += w[q];
                    accx += w[q] * (-key[q] - xmax);
                    m++;
                } else {
                    key[q] = INFINITY;
                    w[q] = 0.0f;
                }
            }
            continue;
        }
        v4i keep = k <= vk;
        v4f ww = v4f_select(keep, v4f_load(w + j), zero);
        v4f_store(key + j, v4f_select(keep, k, inf));
        v4f_store(w + j, ww);
        f += ww;
        fx += v4f_select(keep, ww * (-k - vxm), zero);
        cnt -= keep;
    }
    acc += ((double)f[0] + (double)f[1]) + ((double)f[2] + (double)f[3]);
    accx += ((double)fx[0] + (double)fx[1]) + ((double)fx[2] + (double)fx[3]);
    m += (size_t)cnt[0] + (size_t)cnt[1] + (size_t)cnt[2] + (size_t)cnt[3];
    for (; j < c; j++) {
        float k = key[j];
        bool keep = k < ct.kstar || (k == ct.kstar && (skip == 0 || (skip--, false)));
        if (keep) {
            acc += w[j];
            accx += w[j] * (-k - xmax);
            m++;
        } else {
            key[j] = INFINITY;
            w[j] = 0.0f;
        }
    }
    *count = m;
    *wx = accx;
    return acc;
}

/* The sum of the weights whose key is <= limit (float sums of 64, added in
 * double), and how many there are. */
static double masked_sum(const float *key, const float *w, size_t c, float limit, size_t *count)
{
    const v4f vl = v4f_splat(limit);
    double acc = 0;
    v4i cnt = {0, 0, 0, 0};
    size_t j = 0;
    for (; j + 64 <= c; j += 64) {
        v4f f0 = {0, 0, 0, 0}, f1 = {0, 0, 0, 0};
        for (size_t q = j; q < j + 64; q += 8) {
            v4i k0 = v4f_load(key + q) <= vl, k1 = v4f_load(key + q + 4) <= vl;
            f0 += (v4f)((v4i)v4f_load(w + q) & k0);
            f1 += (v4f)((v4i)v4f_load(w + q + 4) & k1);
            cnt -= k0;
            cnt -= k1;
        }
        f0 += f1;
        acc += ((double)f0[0] + (double)f0[1]) + ((double)f0[2] + (double)f0[3]);
    }
    size_t m = (size_t)cnt[0] + (size_t)cnt[1] + (size_t)cnt[2] + (size_t)cnt[3];
    for (; j < c; j++) {
        if (key[j] <= limit) {
            acc += w[j];
            m++;
        }
    }
    *count = m;
    return acc;
}

/* Typical decoding's scores, in place of the keys: with lp = log_softmax(x)
 * and H = -sum(p * lp) = log Z - sum(w * (x - xmax)) / Z, score = |-lp - H|
 * (float, as torch computes it). wx: that sum, or NAN to work it out here.
 * Also the scores' buckets in s->bk (range [0, a bound from kmax, the
 * largest finite key]); returns false when no bucket map fits. */
static bool typical_scores(struct sampler *s, size_t c, float xmax, double z, double wx, float kmax)
{
    float *key = s->key;
    const float *w = s->w;
    const float lz = (float)log(z);
    const v4f vxm = v4f_splat(xmax), vlz = v4f_splat(lz), inf = v4f_splat(INFINITY), zero = v4f_splat(0.0f);
    size_t j = 0;
    if (isnan(wx)) {
        wx = 0;
        for (; j + 64 <= c; j += 64) {     /* float sums of 64, added in double */
            v4f f = zero;
            for (size_t q = j; q < j + 64; q += 4) {
                v4f k = v4f_load(key + q);
                f += v4f_select(k < inf, v4f_load(w + q) * (-k - vxm), zero);
            }
            wx += ((double)f[0] + (double)f[1]) + ((double)f[2] + (double)f[3]);
        }
        for (; j < c; j++) {
            if (key[j] < INFINITY)
                wx += w[j] * (-key[j] - xmax);
        }
    }
    const float ent = (float)(log(z) - wx / z);
    struct bucket_map bm;
    float top = kmax + xmax + lz;           /* the largest -lp */
    top = top > ent ? top - ent : ent;
    bool digits = sampler_bucket_map(0.0f, top * 1.000001f + 1e-6f, &bm);
    const v4f vent = v4f_splat(ent);
    const v4i abs_mask = {0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff};
    for (j = 0; j + 4 <= c; j += 4) {
        v4f lp = (-v4f_load(key + j) - vxm) - vlz;
        v4f sc = (v4f)((v4i)(-lp - vent) & abs_mask);   /* +inf for keys +inf */
        v4f_store(key + j, sc);
        if (digits) {
            v4i d = v4_buckets(sc, &bm, j);
            memcpy(s->bk + j, &d, sizeof d);
        }
    }
    for (; j < c; j++) {
        key[j] = fabsf(-((-key[j] - xmax) - lz) - ent);
        if (digits)
            s->bk[j] = bucket_of(key[j], &bm, j);
    }
    return digits;
}

/* Index of the survivor (key <= limit) where the running sum of the
 * weights first exceeds t (block sums first, then one block element by
 * element); c when rounding leaves t beyond the total. */
static size_t draw_index(const float *key, const float *w, size_t c, float limit, double t)
{
    const v4f vl = v4f_splat(limit);
    double acc = 0;
    size_t j = 0;
    for (; j + DRAW_BLOCK <= c; j += DRAW_BLOCK) {
        v2d lo = {0, 0}, hi = {0, 0};
        for (size_t i = 0; i < DRAW_BLOCK; i += 4)
            acc4(&lo, &hi, (v4f)((v4i)v4f_load(w + j + i) & (v4f_load(key + j + i) <= vl)));
        double b = sum4(lo, hi);
        if (t < acc + b)
            break;
        acc += b;
    }
    for (; j < c; j++) {
        if (key[j] <= limit) {
            acc += w[j];
            if (t < acc)
                return j;
        }
    }
    return c;
}


/* top_p's prefilter: gathers the candidates with w >= th (skipping fours
 * below it) into the selection's scratch; when they carry the target with
 * room to spare for rounding, they become the candidates. Returns the new
 * count, or c (nothing changed). Ties share one weight: all or none go. */
static size_t prefilter(struct sampler *s, size_t c, float th, double target, double z)
{
    const v4f vt = v4f_splat(th);
    const size_t cap = c / 2;
    size_t m = 0, j = 0;
    double acc = 0;
    while (j < c) {
        while (j + 4 <= c && !v4i_any(v4f_load(s->w + j) >= vt))
            j += 4;
        size_t end = j + 4 < c ? j + 4 : c;
        for (; j < end; j++) {
            if (s->w[j] >= th) {
                if (m == cap)
                    return c;               /* not few: not worth it */
                s->tmpk[m] = s->key[j];
                s->tmpw[m] = s->w[j];
                s->bk[m] = s->idx[j];
                acc += s->w[j];
                m++;
            }
        }
    }
    if (!(acc >= target + 1e-6 * z))
        return c;
    memcpy(s->key, s->tmpk, m * sizeof *s->key);
    memcpy(s->w, s->tmpw, m * sizeof *s->w);
    memcpy(s->idx, s->bk, m * sizeof *s->idx);
    return m;
}

/* The warpers of HF generate() for do_sample, in its order (_get_logits_processor):
 * temperature, top_k, top_p, typical_p, each with min_tokens_to_keep = 1 and
 * filtered tokens dropped (HF sets them to -inf). Leaves the candidates as
 * s->idx[0..c) (ascending ids) with weights s->w[j] = exp(x - xmax), x the
 * tempered logit; the survivors are those with s->key[j] <= *limit. Returns
 * c, and the survivors' weight sum in *z. l are the sanitised, penalised
 * logits, with maximum mx, smallest lmin and n_finite tokens above -inf;
 * s->w holds exp(l - mx) by token id, summing to z1. */
static size_t warp(struct sampler *s, const float *l, float mx, float lmin, size_t n_finite, double z1, double *z,
                   float *limit)
{
    const struct sampler_params *p = &s->p;
    const size_t n = (size_t)s->n;
    const float T = p->temperature;

    /* Temperature (TemperatureLogitsWarper, applied when T != 1): x = logit / T,
     * a float division as torch does it. The keys are -x: ascending key order
     * is descending probability. The weights are the softmax numerators
     * exp(x - xmax); at T == 1 the log-softmax left them in s->w. */
    float xmax = T != 1.0f ? mx / T : mx;
    xmax = xmax > FLT_MAX ? FLT_MAX : xmax;
    const bool w_ok = T == 1.0f && n_finite == n;
    double zz = z1, wx = NAN;              /* wx: see typical_scores() */
    float lim = INFINITY;

    /* top_p looks first among the tokens with weight >= PREFILTER_W (below)
     * when a sample of every 16th logit says they are few. Otherwise, for
     * top_p without top_k, the keys' buckets come with them: the keys lie in
     * [-xmax, -lmin / T] (the division is monotone). */
    bool few = false;
    if (p->top_p < 1.0f && n > 1024) {
        const float lth = mx + T * logf(PREFILTER_W);
        size_t cnt = 0;
        for (size_t j = 0; j < n; j += 16)
            cnt += l[j] >= lth;
        few = cnt < n / 16 / 2;
    }
    struct bucket_map bm;
    bool bk_ok = p->top_p < 1.0f && p->top_k == 0 && !few &&
                 sampler_bucket_map(-xmax, -(T != 1.0f ? lmin / T : lmin), &bm);
    float kmax;                             /* the largest finite key */
    size_t c = n, n_inf = make_candidates(l, T, s->key, s->idx, n, &kmax, bk_ok ? &bm : NULL, s->bk);
    if (n_inf > 0) {                        /* (then T != 1: the weights come below) */
        c = keep_le(s, n, FLT_MAX, false, false, NULL);
        bk_ok = false;
    }

    /* top_k (TopKLogitsWarper): v = the k-th largest x; keep every x >= v
     * (tokens tied with the k-th all stay). */
    if (p->top_k > 0 && (size_t)p->top_k < c) {
        float kstar;
        if (p->top_k <= TOPK_SMALL) {
            kstar = sampler_kth_smallest(s->key, c, p->top_k);
        } else {
            struct cut ct = sampler_select_prefix(s, s->key, NULL, NULL, c, (double)p->top_k);
            kstar = ct.all ? INFINITY : ct.kstar;
        }
        c = keep_le(s, c, kstar, w_ok, (size_t)p->top_k < c / 8, &zz);
    }
    if (!w_ok)
        zz = sampler_exp_sum(s->key, -1.0f, xmax, s->w, c, s->avx2);

    /* top_p (TopPLogitsWarper): sort ascending, cum = cumsum(softmax); drop
     * where cum <= 1 - top_p (a float32 threshold), keep the largest always.
     * With S(i) the mass of the tokens before i in descending order, cum(i) =
     * 1 - S(i): keep the descending prefix whose S(i) < (1 - thr) * Z, i.e.
     * up to the first position where the running mass reaches that target;
     * ties split at the cut keep the higher ids (a stable ascending sort). */
    if (p->top_p < 1.0f) {
        float thr = (float)(1.0 - (double)p->top_p);
        double target = (1.0 - (double)thr) * zz;
        if (!(target > 0))
            target = DBL_MIN;   /* top_p so small that thr rounds to 1: only the top token */
        if (few && c > 1024) {
            /* Usually a few tokens carry the mass: then the cut is among them. */
            size_t m = prefilter(s, c, PREFILTER_W, target, zz);
            bk_ok = bk_ok && m == c;
            c = m;
        }
        /* the keys lie in [-xmax, kmax] (fewer after top_k or the prefilter: a wider range is fine) */
        bool digits = false;
        if (c > SMALL_SET && bk_ok) {
            sampler_hist_scatter(s, s->w, c);
            digits = true;
        } else if (c > SMALL_SET) {
            digits = sampler_digits_hist(s, s->key, s->w, c, -xmax, kmax);
        }
        struct cut ct = sampler_select_prefix(s, s->key, s->w, digits ? s->bk : NULL, c, target);
        if (!ct.all) {
            size_t kept;
            zz = apply_cut(s, c, ct, xmax, &kept, &wx);
            lim = FLT_MAX;                  /* the dropped ones have key +inf */
            if (kept < c / 8 && p->typical_p < 1.0f)
                c = keep_le(s, c, FLT_MAX, true, true, NULL);   /* few left: go on with those */
        }
    }

    /* typical_p (TypicalLogitsWarper): lp = log_softmax(x), H = -sum(p * lp),
     * score = |-lp - H|; sort by score ascending, cum = cumsum(p);
     * last = count(cum < mass); keep every score <= score[last] (so ties at the
     * cut stay), the lowest score always: in mass terms, the first position
     * where the running mass reaches mass * Z sets the score threshold.
     * Tokens top_p dropped have key +inf and weight 0: score +inf, no mass. */
    if (p->typical_p < 1.0f) {
        bool digits = typical_scores(s, c, xmax, zz, wx, kmax) && c > SMALL_SET;
        if (digits)
            sampler_hist_scatter(s, s->w, c);
        struct cut ct = sampler_select_prefix(s, s->key, s->w, digits ? s->bk : NULL, c, (double)p->typical_p * zz);
        if (!ct.all) {
            size_t kept;
            lim = ct.kstar < FLT_MAX ? ct.kstar : FLT_MAX;
            zz = masked_sum(s->key, s->w, c, lim, &kept);
        }
    }
    *z = zz;
    *limit = lim;
    return c;
}

/* The top_n most likely tokens under softmax(l), most likely first, lower id
 * first among equals; -inf tokens are never listed. Four logits at a time
 * are skipped when none beats the current last entry. */
static void top_alternatives(const float *l, size_t n, int top_n, float mx, double logz, struct sample_out *out)
{
    struct sample_logprob best[SAMPLER_TOP_N_MAX];
    float val[SAMPLER_TOP_N_MAX];
    int cnt = 0;
    size_t i = 0;
    while (i < n) {
        if (cnt == top_n) {                 /* skip fours that cannot enter the list */
            const v4f bar = v4f_splat(val[cnt - 1]);
            while (i + 4 <= n && !v4i_any(v4f_load(l + i) > bar))
                i += 4;
        }
        size_t end = i + 4 < n ? i + 4 : n;
        for (; i < end; i++) {
            float v = l[i];
            if (v == -INFINITY || (cnt == top_n && !(v > val[cnt - 1])))
                continue;
            int pos = cnt < top_n ? cnt++ : top_n - 1;
            for (; pos > 0 && val[pos - 1] < v; pos--) {
                val[pos] = val[pos - 1];
                best[pos] = best[pos - 1];
            }
            val[pos] = v;
            best[pos].id = (int32_t)i;
        }
    }
    for (int j = 0; j < cnt; j++) {
        best[j].logprob = (float)((double)(val[j] - mx) - logz);
        out->top[j] = best[j];
    }
    out->n_top = cnt;
}

/* sampler_next() and sampler_probs(): exactly one of out and probs is set. */
static int run(struct sampler *s, float *l, const int32_t *ctx, size_t n_ctx, struct sample_out *out, float *probs,
               bool *kept)
{
    if (!s || !l || (n_ctx && !ctx))
        return SAMPLER_ERR_INVAL;
    const size_t n = (size_t)s->n;
    apply_penalties(s, l, ctx, n_ctx);
    size_t n_finite, argmax;
    float lmin;
    float mx = sanitize_max(l, n, &argmax, &lmin, &n_finite);
    if (n_finite == 0)
        return SAMPLER_ERR_NO_TOKEN;
    const bool greedy = !s->p.do_sample || s->p.temperature == 0.0f;

    /* Log-softmax of the penalised logits, numerically safe:
     * lp = l - mx - log(sum(exp(l - mx))), the sum at least 1. */
    double z1 = 1, logz = 0;
    if (out || !greedy) {
        z1 = sampler_exp_sum(l, 1.0f, mx, s->w, n, s->avx2);
        logz = log(z1);
    }

    int32_t id = (int32_t)argmax;
    if (!greedy) {
        double z;
        float lim;
        size_t c = warp(s, l, mx, lmin, n_finite, z1, &z, &lim);
        if (probs) {
            memset(probs, 0, n * sizeof *probs);
            if (kept)
                memset(kept, 0, n * sizeof *kept);
            for (size_t j = 0; j < c; j++) {
                if (s->key[j] <= lim) {
                    probs[s->idx[j]] = (float)((double)s->w[j] / z);
                    if (kept)
                        kept[s->idx[j]] = true;
                }
            }
            return SAMPLER_OK;
        }
        /* One draw: u uniform in [0, 1), the first survivor (in id order)
         * whose running weight exceeds u * Z. */
        size_t pick = draw_index(s->key, s->w, c, lim, uniform01(s->rng) * z);
        if (pick == c) {                    /* rounding left u * Z at the very end */
            while (pick > 0 && !(s->key[pick - 1] <= lim && s->w[pick - 1] > 0))
                pick--;
            pick = pick > 0 ? pick - 1 : 0;
        }
        if (c > 0)
            id = s->idx[pick];
    } else if (probs) {
        memset(probs, 0, n * sizeof *probs);
        probs[argmax] = 1.0f;
        if (kept) {
            memset(kept, 0, n * sizeof *kept);
            kept[argmax] = true;
        }
        return SAMPLER_OK;
    }
    out->id = id;
    out->logprob = (float)((double)(l[id] - mx) - logz);
    out->n_top = 0;
    if (s->p.top_n > 0)
        top_alternatives(l, n, s->p.top_n, mx, logz, out);
    return SAMPLER_OK;
}

int sampler_next(struct sampler *s, float *logits, const int32_t *context, size_t n_context,
                 struct sample_out *out)
{
    if (!out)
        return SAMPLER_ERR_INVAL;
    return run(s, logits, context, n_context, out, NULL, NULL);
}

bool sampler_greedy(const struct sampler *s)
{
    return !s->p.do_sample || s->p.temperature == 0.0f;
}

size_t sampler_greedy_ints(const struct sampler *s, size_t n_context)
{
    return (s->stamp ? n_context : 0) + (s->counts ? 2 * s->n_gen_ids : 0);
}

int sampler_greedy_row(struct sampler *s, const int32_t *ctx, size_t n_ctx, int32_t *ids, struct ksample_row *r)
{
    if (!s || !r || !sampler_greedy(s) || (n_ctx && !ctx) || (sampler_greedy_ints(s, n_ctx) && !ids))
        return SAMPLER_ERR_INVAL;
    *r = (struct ksample_row){.repetition_penalty = s->p.repetition_penalty,
                              .frequency_penalty = s->p.frequency_penalty,
                              .presence_penalty = s->p.presence_penalty,
                              .top_n = s->p.top_n};
    size_t k = 0;
    if (s->stamp) {                         /* apply_penalties()' distinct in-vocabulary ids */
        next_stamp(s);
        r->rep_ids = ids;
        for (size_t i = 0; i < n_ctx; i++) {
            int32_t t = ctx[i];
            if (t < 0 || t >= s->n || s->stamp[t] == s->stamp_now)
                continue;
            s->stamp[t] = s->stamp_now;
            ids[k++] = t;
        }
        r->n_rep = (int)k;
    } else {
        r->repetition_penalty = 1.0f;
    }
    if (s->counts) {
        r->gen_ids = ids + k;
        r->gen_counts = ids + k + s->n_gen_ids;
        r->n_gen = (int)s->n_gen_ids;
        for (size_t i = 0; i < s->n_gen_ids; i++) {
            ids[k + i] = s->gen_ids[i];
            ids[k + s->n_gen_ids + i] = s->counts[s->gen_ids[i]];
        }
        k += 2 * s->n_gen_ids;
    } else {
        r->frequency_penalty = r->presence_penalty = 0.0f;
    }
    return (int)k;
}

int sampler_probs(struct sampler *s, float *logits, const int32_t *context, size_t n_context, float *probs,
                  bool *kept)
{
    if (!probs)
        return SAMPLER_ERR_INVAL;
    return run(s, logits, context, n_context, NULL, probs, kept);
}
