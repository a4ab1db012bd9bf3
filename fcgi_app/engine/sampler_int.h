/* sampler_int.h -- what sampler.c (the sampling pipeline) and sampler_select.c (the vectorised exp sums and the selection of a mass) share: struct sampler, the four-lane vector helpers, the cut and the bucket map. Not for other modules: they use sampler.h. */
#ifndef LLMCGI_SAMPLER_INT_H
#define LLMCGI_SAMPLER_INT_H

#include "sampler.h"
#include "util.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SAMPLER_AVX2 1          /* sampler_exp_sum() has an AVX2 version, chosen at run time */
#elif defined(__SSE__)
#include <xmmintrin.h>
#endif

/* Mass (or count) selection (sampler_select_prefix()) works on histograms of
 * NBUCKETS buckets: equal parts of the key range first, then the keys' float
 * bits in digits of 11, 11 and 10 bits, each time refining only the bucket
 * where the cut falls; at most SMALL_SET elements left are sorted. top_k up
 * to TOPK_SMALL uses a small sorted array instead. The draw sums weights in
 * blocks of DRAW_BLOCK. */
#define NBUCKETS 2048
#define SMALL_SET 48
#define TOPK_SMALL 64
#define DRAW_BLOCK 256

/* Weight at or above which top_p's cut is first looked for (the largest
 * weight is 1): when those tokens alone carry the target mass, the cut lies
 * among them and the others can go at once. */
#define PREFILTER_W 0x1p-12f

struct sampler {
    struct sampler_params p;
    int32_t n;                  /* vocabulary size */
    uint64_t rng[4];            /* xoshiro256** state */

    /* OpenAI penalties (allocated only when one is non-zero): counts[id] of
     * generated tokens, gen_ids[0..n_gen_ids) the distinct ids among them. */
    int32_t *counts;
    int32_t *gen_ids;
    size_t n_gen_ids;

    /* Repetition penalty (allocated only when it is not 1): stamp[id] ==
     * stamp_now marks a token already penalised in this call. */
    uint32_t *stamp;
    uint32_t stamp_now;

    bool avx2;                  /* sampler_exp_sum() may use AVX2 (same results, faster) */

    /* Scratch, n entries each: the candidate set as token ids, sort keys and
     * unnormalised weights, plus room for the selection's refinement. */
    int32_t *idx;
    float *key;
    float *w;
    float *tmpk;
    float *tmpw;
    int32_t *bk;                /* bucket of each key (sampler_digits_hist()) */
    double hist[NBUCKETS + 16]; /* + spare slots where dropped (+inf) keys land, never read */
};

/* ------------------------------------------------------------------ vector helpers */

/* Four-lane vectors (GCC/clang vector extensions: SSE2 on baseline x86-64,
 * NEON on arm64, plain code elsewhere). Only IEEE operations with a defined
 * result, so every machine without FMA contraction computes the same bits. */
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));
typedef double v2d __attribute__((vector_size(16)));

static inline v4f v4f_load(const float *p)
{
    v4f v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void v4f_store(float *p, v4f v)
{
    memcpy(p, &v, sizeof v);
}

static inline v4f v4f_splat(float x)
{
    return (v4f){x, x, x, x};
}

static inline v4f v4f_select(v4i mask, v4f a, v4f b)    /* mask ? a : b, lane by lane */
{
    return (v4f)((mask & (v4i)a) | (~mask & (v4i)b));
}

static inline bool v4i_any(v4i m)             /* any lane of a comparison true */
{
#if defined(__SSE__)
    return _mm_movemask_ps((__m128)m) != 0;
#else
    return (m[0] | m[1] | m[2] | m[3]) != 0;
#endif
}

static inline v4f v4f_max(v4f a, v4f b)     /* a > b ? a : b, as maxps (b when either is NaN) */
{
#if defined(__SSE__)
    return (v4f)_mm_max_ps((__m128)a, (__m128)b);
#else
    return v4f_select(a > b, a, b);
#endif
}

static inline v4f v4f_min(v4f a, v4f b)     /* a < b ? a : b, as minps (b when either is NaN) */
{
#if defined(__SSE__)
    return (v4f)_mm_min_ps((__m128)a, (__m128)b);
#else
    return v4f_select(a < b, a, b);
#endif
}

/* Adds the four lanes of y to the double accumulators: lanes 0-1 into lo,
 * 2-3 into hi; sum4() adds them up in a fixed order. */
static inline void acc4(v2d *lo, v2d *hi, v4f y)
{
    *lo += __builtin_convertvector(__builtin_shufflevector(y, y, 0, 1), v2d);
    *hi += __builtin_convertvector(__builtin_shufflevector(y, y, 2, 3), v2d);
}

static inline double sum4(v2d lo, v2d hi)
{
    return (lo[0] + lo[1]) + (hi[0] + hi[1]);
}

/* The result of sampler_select_prefix(): order the elements by key ascending (ties in
 * some order among themselves); the cut is after the first position K where
 * the running weight reaches the target. kstar is the key at K, r how many
 * elements with that key are at or before K. all: the target is never reached
 * (nothing is cut). */
struct cut {
    bool all;
    float kstar;
    size_t r;
    size_t ties;    /* how many elements have key kstar in all */
};

/* A first level for sampler_select_prefix(): the bucket of a key among NBUCKETS
 * equal parts of [lo, hi] (keys outside are clamped into the first or last;
 * monotone in the key, each step rounding monotonically), or for a +inf key
 * (dropped already) one of the spare slots past the end, in turn. Equal
 * widths spread the keys over many buckets, which keeps the scattered adds
 * of the histogram independent. */
struct bucket_map {
    float lo, scale;
};

/* The buckets of key[j..j+4) (j a multiple of 4). */
static inline v4i v4_buckets(v4f k, const struct bucket_map *bm, size_t j)
{
    const v4i spare = {NBUCKETS, NBUCKETS + 1, NBUCKETS + 2, NBUCKETS + 3};
    v4f b = v4f_min(v4f_max((k - v4f_splat(bm->lo)) * v4f_splat(bm->scale), v4f_splat(0.0f)),
                    v4f_splat(NBUCKETS - 1));
    v4i d = __builtin_convertvector(b, v4i);
    v4i dropped = k == v4f_splat(INFINITY);
    return (dropped & (spare + (int32_t)(j & 12))) | (~dropped & d);
}

static inline int32_t bucket_of(float k, const struct bucket_map *bm, size_t j)
{
    if (k == INFINITY)
        return NBUCKETS + (int32_t)(j & 15);
    float d = (k - bm->lo) * bm->scale;
    d = d > 0 ? d : 0;
    return (int32_t)(d < NBUCKETS - 1 ? d : NBUCKETS - 1);
}

/* w[i] = exp(sgn * x[i] - off) for i < n, where every sgn * x[i] - off <= 0
 * (sgn is +1 or -1, so the product is exact); returns the sum of the w[i].
 * The same bits with or without AVX2. */
double sampler_exp_sum(const float *x, float sgn, float off, float *w, size_t n, bool avx2);

/* The sum of w[0..n) (in double, four lanes, a fixed order). */
double sampler_sum_w(const float *w, size_t n);

/* false when [lo, hi] does not make a usable map (empty, or too wide for a float) */
bool sampler_bucket_map(float lo, float hi, struct bucket_map *bm);

/* s->hist = the weights summed by bucket (s->bk[0..c)). */
void sampler_hist_scatter(struct sampler *s, const float *w, size_t c);

/* s->bk and s->hist for key[0..c), the keys in [lo, hi]; false (nothing
 * done) when that range makes no map. */
bool sampler_digits_hist(struct sampler *s, const float *key, const float *w, size_t c, float lo, float hi);

/* Finds where the running weight of the elements, in ascending key order,
 * first reaches target (w NULL: every weight is 1, a count). A radix select:
 * a weight histogram over the top 11 bits of the keys picks the bucket that
 * holds the cut, and only that bucket goes on to the next digit (or is
 * sorted once small), so O(n) whatever the keys. bk: a first level done
 * already, the bucket of each key and s->hist their weights (sampler_digits_hist()),
 * whose chosen bucket then goes through the radix levels; or NULL. Uses
 * s->tmpk/tmpw and the histogram; key and w are left untouched. */
struct cut sampler_select_prefix(struct sampler *s, const float *key, const float *w, const int32_t *bk, size_t n,
                                double target);

/* The k-th smallest key (1 <= k <= TOPK_SMALL, k <= n), by insertion into
 * a sorted array; four keys at a time are rejected when none is below the
 * current k-th. */
float sampler_kth_smallest(const float *key, size_t n, int k);

#endif
