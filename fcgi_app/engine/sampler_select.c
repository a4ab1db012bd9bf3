/* sampler_select.c -- the sampler's heavy loops: exp sums over four-lane vectors (AVX2 when the CPU has it, the same bits either way) and the selection of the smallest keys that reach a mass (top-p, min-p, typical), by histogram and refinement. */
#include "config.h"
#include "sampler.h"
#include "sampler_int.h"
#include "exp_poly.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* exp(x) for x <= 0, lane by lane: x = n ln2 + r with |r| <= ln2/2, Cephes
 * expf's degree-6 polynomial evaluated in Estrin's scheme, 2^n put into the
 * exponent bits; about 1 ulp. Inputs below EXP_UNDER (and -inf) give 0. The
 * AVX2 version below performs the very same operations in the same order,
 * so both give the same bits. */
static inline v4f v4f_exp_neg(v4f x)
{
    const v4f magic = v4f_splat(EXP_MAGIC);
    v4i under = x < v4f_splat(EXP_UNDER);
    x = v4f_max(x, v4f_splat(EXP_UNDER));
    v4f t = x * v4f_splat(EXP_LOG2E) + magic;
    v4i n = (v4i)t - (v4i)magic;                    /* round(x / ln2) as an integer */
    v4f fn = t - magic;
    v4f r = x - fn * v4f_splat(EXP_C1);
    r = r - fn * v4f_splat(EXP_C2);
    v4f r2 = r * r, r4 = r2 * r2;
    v4f a = v4f_splat(EXP_P5) + v4f_splat(EXP_P4) * r;
    v4f b = v4f_splat(EXP_P3) + v4f_splat(EXP_P2) * r;
    v4f c = v4f_splat(EXP_P1) + v4f_splat(EXP_P0) * r;
    v4f y = (a + b * r2) + c * r4;
    y = y * r2 + r + v4f_splat(1.0f);
    y = y * (v4f)((n + 127) << 23);
    return (v4f)((v4i)y & ~under);
}

/* One block of sampler_exp_sum(): w[k] = exp(sgn * x[k] - off) for k < EXP_BLOCK;
 * lane j of the block sum, f[j] = sum of w[8i + j] (float, in order), goes
 * into acc[j % 4] as (double)f[j] + (double)f[j + 4] for j < 4. */
static void exp_block(const float *x, float sgn, float off, float *w, double acc[4])
{
    const v4f vs = v4f_splat(sgn), vo = v4f_splat(off);
    v4f f0 = {0, 0, 0, 0}, f1 = {0, 0, 0, 0};
    for (size_t k = 0; k < EXP_BLOCK; k += 8) {
        v4f y0 = v4f_exp_neg(v4f_load(x + k) * vs - vo);
        v4f y1 = v4f_exp_neg(v4f_load(x + k + 4) * vs - vo);
        v4f_store(w + k, y0);
        v4f_store(w + k + 4, y1);
        f0 += y0;
        f1 += y1;
    }
    for (int j = 0; j < 4; j++)
        acc[j] += (double)f0[j] + (double)f1[j];
}

#ifdef SAMPLER_AVX2
/* exp_block() eight lanes at a time, for CPUs with AVX2 (no FMA: the
 * products and sums round exactly as in the four-lane code). */
__attribute__((target("avx2"))) static void exp_blocks_avx2(const float *x, float sgn, float off, float *w,
                                                            size_t nblocks, double acc[4])
{
    const __m256 vs = _mm256_set1_ps(sgn), vo = _mm256_set1_ps(off), magic = _mm256_set1_ps(EXP_MAGIC);
    const __m256 under_c = _mm256_set1_ps(EXP_UNDER);
    __m256d a4 = _mm256_loadu_pd(acc);
    for (size_t blk = 0; blk < nblocks; blk++, x += EXP_BLOCK, w += EXP_BLOCK) {
        __m256 f = _mm256_setzero_ps();
        for (size_t k = 0; k < EXP_BLOCK; k += 8) {
            __m256 v = _mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(x + k), vs), vo);
            __m256 under = _mm256_cmp_ps(v, under_c, _CMP_LT_OQ);
            v = _mm256_max_ps(v, under_c);
            __m256 t = _mm256_add_ps(_mm256_mul_ps(v, _mm256_set1_ps(EXP_LOG2E)), magic);
            __m256i n = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_castps_si256(magic));
            __m256 fn = _mm256_sub_ps(t, magic);
            __m256 r = _mm256_sub_ps(v, _mm256_mul_ps(fn, _mm256_set1_ps(EXP_C1)));
            r = _mm256_sub_ps(r, _mm256_mul_ps(fn, _mm256_set1_ps(EXP_C2)));
            __m256 r2 = _mm256_mul_ps(r, r), r4 = _mm256_mul_ps(r2, r2);
            __m256 a = _mm256_add_ps(_mm256_set1_ps(EXP_P5), _mm256_mul_ps(_mm256_set1_ps(EXP_P4), r));
            __m256 b = _mm256_add_ps(_mm256_set1_ps(EXP_P3), _mm256_mul_ps(_mm256_set1_ps(EXP_P2), r));
            __m256 c = _mm256_add_ps(_mm256_set1_ps(EXP_P1), _mm256_mul_ps(_mm256_set1_ps(EXP_P0), r));
            __m256 y = _mm256_add_ps(_mm256_add_ps(a, _mm256_mul_ps(b, r2)), _mm256_mul_ps(c, r4));
            y = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(y, r2), r), _mm256_set1_ps(1.0f));
            __m256i e = _mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23);
            y = _mm256_andnot_ps(under, _mm256_mul_ps(y, _mm256_castsi256_ps(e)));
            _mm256_storeu_ps(w + k, y);
            f = _mm256_add_ps(f, y);
        }
        __m256d d = _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(f)),
                                  _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1)));
        a4 = _mm256_add_pd(a4, d);
    }
    _mm256_storeu_pd(acc, a4);
}
#endif

/* w[i] = exp(sgn * x[i] - off) for i < n, where every sgn * x[i] - off <= 0
 * (sgn is +1 or -1, so the product is exact); returns the sum of the w[i].
 * The same bits with or without AVX2. */
double sampler_exp_sum(const float *x, float sgn, float off, float *w, size_t n, bool avx2)
{
    double acc[4] = {0, 0, 0, 0};
    size_t nb = n / EXP_BLOCK, i = nb * EXP_BLOCK;
#ifdef SAMPLER_AVX2
    if (avx2)
        exp_blocks_avx2(x, sgn, off, w, nb, acc);
    else
#endif
        for (size_t b = 0; b < nb; b++)
            exp_block(x + b * EXP_BLOCK, sgn, off, w + b * EXP_BLOCK, acc);
    /* the last partial block, four at a time (padded with -inf) */
    const v4f vs = v4f_splat(sgn), vo = v4f_splat(off);
    for (; i < n; i += 4) {
        float in[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY}, out[4];
        size_t m = n - i < 4 ? n - i : 4;
        memcpy(in, x + i, m * sizeof *in);
        v4f_store(out, v4f_exp_neg(v4f_load(in) * vs - vo));
        for (size_t j = 0; j < m; j++) {
            w[i + j] = out[j];
            acc[0] += out[j];
        }
    }
    return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

/* The sum of w[0..n) (in double, four lanes, a fixed order). */
double sampler_sum_w(const float *w, size_t n)
{
    v2d lo = {0, 0}, hi = {0, 0};
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        acc4(&lo, &hi, v4f_load(w + i));
    for (; i < n; i++)
        lo[0] += w[i];
    return sum4(lo, hi);
}

/* ------------------------------------------------------------------ mass selection */

static void swap_pair(float *k, float *w, size_t a, size_t b)
{
    float t = k[a];
    k[a] = k[b];
    k[b] = t;
    t = w[a];
    w[a] = w[b];
    w[b] = t;
}

static void sift_down(float *k, float *w, size_t root, size_t end)
{
    for (;;) {
        size_t child = 2 * root + 1;
        if (child >= end)
            return;
        if (child + 1 < end && k[child + 1] > k[child])
            child++;
        if (!(k[child] > k[root]))
            return;
        swap_pair(k, w, root, child);
        root = child;
    }
}

/* Sorts the pairs (k[i], w[i]) by k ascending: insertion sort for a few,
 * heapsort otherwise (in place, no allocation, O(n log n) at worst). */
static void sort_pairs(float *k, float *w, size_t n)
{
    if (n <= 32) {
        for (size_t i = 1; i < n; i++)
            for (size_t j = i; j > 0 && k[j - 1] > k[j]; j--)
                swap_pair(k, w, j - 1, j);
        return;
    }
    for (size_t i = n / 2; i-- > 0;)
        sift_down(k, w, i, n);
    for (size_t end = n - 1; end > 0; end--) {
        swap_pair(k, w, 0, end);
        sift_down(k, w, 0, end);
    }
}

/* The last step of sampler_select_prefix(): k[0..n) sorted ascending (or all equal),
 * acc the weight of everything before them. whole: these are all the
 * elements, so not reaching the target means no cut. */
static struct cut scan_cut(const float *k, const float *w, size_t n, double acc, double target, bool whole)
{
    size_t i = 0;
    for (; i < n; i++) {
        acc += w[i];
        if (acc >= target)
            break;
    }
    if (i == n) {
        if (whole)
            return (struct cut){.all = true};
        i = n - 1;  /* the bucket sums said the cut is here; rounding put it at the end */
    }
    struct cut c = {.all = false, .kstar = k[i], .r = 0, .ties = 0};
    for (size_t j = 0; j < n; j++) {
        c.r += j <= i && k[j] == k[i];
        c.ties += k[j] == k[i];
    }
    return c;
}

/* A float's bits as an unsigned integer in the same order as the floats
 * (negative ones flipped whole, positive ones get the top bit); -0 is first
 * made +0 so that equal keys have equal bits. */
static inline uint32_t key_bits(float k)
{
    k += 0.0f;
    uint32_t u;
    memcpy(&u, &k, sizeof u);
    return u ^ ((uint32_t)((int32_t)u >> 31) | 0x80000000u);
}

/* false when [lo, hi] does not make a usable map (empty, or too wide for a float) */
bool sampler_bucket_map(float lo, float hi, struct bucket_map *bm)
{
    float range = hi - lo;
    if (!(range > 0) || !isfinite(range) || !isfinite(NBUCKETS / range))
        return false;
    bm->lo = lo;
    bm->scale = NBUCKETS / range;
    return true;
}

/* s->hist = the weights summed by bucket (s->bk[0..c)). */
void sampler_hist_scatter(struct sampler *s, const float *w, size_t c)
{
    const int32_t *bk = s->bk;
    double *hist = s->hist;
    memset(hist, 0, sizeof s->hist);
    for (size_t j = 0; j < c; j++)
        hist[bk[j]] += w[j];
}

/* s->bk and s->hist for key[0..c), the keys in [lo, hi]; false (nothing
 * done) when that range makes no map. */
bool sampler_digits_hist(struct sampler *s, const float *key, const float *w, size_t c, float lo, float hi)
{
    struct bucket_map bm;
    if (!sampler_bucket_map(lo, hi, &bm))
        return false;
    size_t j = 0;
    for (; j + 4 <= c; j += 4) {
        v4i d = v4_buckets(v4f_load(key + j), &bm, j);
        memcpy(s->bk + j, &d, sizeof d);
    }
    for (; j < c; j++)
        s->bk[j] = bucket_of(key[j], &bm, j);
    sampler_hist_scatter(s, w, c);
    return true;
}

/* Finds where the running weight of the elements, in ascending key order,
 * first reaches target (w NULL: every weight is 1, a count). A radix select:
 * a weight histogram over the top 11 bits of the keys picks the bucket that
 * holds the cut, and only that bucket goes on to the next digit (or is
 * sorted once small), so O(n) whatever the keys. bk: a first level done
 * already, the bucket of each key and s->hist their weights (sampler_digits_hist()),
 * whose chosen bucket then goes through the radix levels; or NULL. Uses
 * s->tmpk/tmpw and the histogram; key and w are left untouched. */
struct cut sampler_select_prefix(struct sampler *s, const float *key, const float *w, const int32_t *bk, size_t n,
                                double target)
{
    static const int shift[3] = {21, 10, 0};
    static const uint32_t mask[3] = {0x7ff, 0x7ff, 0x3ff};
    const float *k = key, *wt = w;
    double acc = 0;
    for (int level = bk ? -1 : 0; level < 3; level++) {
        if (n <= SMALL_SET) {
            if (k != s->tmpk) {
                memcpy(s->tmpk, k, n * sizeof *k);
                for (size_t i = 0; i < n; i++)
                    s->tmpw[i] = wt ? wt[i] : 1.0f;
            }
            sort_pairs(s->tmpk, s->tmpw, n);
            return scan_cut(s->tmpk, s->tmpw, n, acc, target, k == key);
        }
        const int sh = level < 0 ? 0 : shift[level];
        const uint32_t m = level < 0 ? NBUCKETS - 1 : mask[level];
        const int32_t *dg = level < 0 ? bk : NULL;
        if (!dg) {
            memset(s->hist, 0, (m + 1) * sizeof *s->hist);
            if (wt) {
                for (size_t i = 0; i < n; i++)
                    s->hist[(key_bits(k[i]) >> sh) & m] += wt[i];
            } else {
                for (size_t i = 0; i < n; i++)
                    s->hist[(key_bits(k[i]) >> sh) & m] += 1.0;
            }
        }
        uint32_t b = 0;
        for (; b <= m; b++) {
            if (acc + s->hist[b] >= target)
                break;
            acc += s->hist[b];
        }
        if (b > m) {
            if (k == key)
                return (struct cut){.all = true};
            struct cut c = {.all = false, .kstar = k[0], .r = 0, .ties = 0};  /* rounding: cut at the end */
            for (size_t i = 1; i < n; i++)
                c.kstar = k[i] > c.kstar ? k[i] : c.kstar;
            for (size_t i = 0; i < n; i++)
                c.ties += k[i] == c.kstar;
            c.r = c.ties;
            return c;
        }
        /* Keep the bucket (in place from level 1 on, as j <= i). */
        size_t j = 0;
        if (dg) {
            /* one bucket of many: test four at a time */
            const v4i vb = {(int32_t)b, (int32_t)b, (int32_t)b, (int32_t)b};
            size_t i = 0;
            for (; i + 4 <= n; i += 4) {
                v4i d;
                memcpy(&d, dg + i, sizeof d);
                if (!v4i_any(d == vb))
                    continue;
                for (size_t q = i; q < i + 4; q++) {
                    s->tmpk[j] = k[q];
                    s->tmpw[j] = wt ? wt[q] : 1.0f;
                    j += dg[q] == (int32_t)b;
                }
            }
            for (; i < n; i++) {
                s->tmpk[j] = k[i];
                s->tmpw[j] = wt ? wt[i] : 1.0f;
                j += dg[i] == (int32_t)b;
            }
        } else {
            for (size_t i = 0; i < n; i++) {
                float ki = k[i];
                s->tmpk[j] = ki;
                s->tmpw[j] = wt ? wt[i] : 1.0f;
                j += ((key_bits(ki) >> sh) & m) == b;
            }
        }
        k = s->tmpk;
        wt = s->tmpw;
        n = j;
    }
    return scan_cut(k, wt, n, acc, target, false);     /* every key is equal now */
}

/* The k-th smallest key (1 <= k <= TOPK_SMALL, k <= n), by insertion into
 * a sorted array; four keys at a time are rejected when none is below the
 * current k-th. */
float sampler_kth_smallest(const float *key, size_t n, int k)
{
    float best[TOPK_SMALL];
    int cnt = 0;
    size_t i = 0;
    for (; cnt < k; i++) {
        int pos = cnt++;
        for (; pos > 0 && best[pos - 1] > key[i]; pos--)
            best[pos] = best[pos - 1];
        best[pos] = key[i];
    }
    while (i < n) {
        const v4f bar = v4f_splat(best[k - 1]);
        while (i + 4 <= n && !v4i_any(v4f_load(key + i) < bar))
            i += 4;
        size_t end = i + 4 < n ? i + 4 : n;
        for (; i < end; i++) {
            float v = key[i];
            if (!(v < best[k - 1]))
                continue;
            int pos = k - 1;
            for (; pos > 0 && best[pos - 1] > v; pos--)
                best[pos] = best[pos - 1];
            best[pos] = v;
        }
    }
    return best[k - 1];
}
