/* sampler.c -- next-token choice: HF repetition penalty, OpenAI penalties, HF warpers, seeded draw, logprobs. */
#include "config.h"
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
#define SAMPLER_AVX2 1          /* exp_sum() has an AVX2 version, chosen at run time */
#elif defined(__SSE__)
#include <xmmintrin.h>
#endif

/* Mass (or count) selection (select_prefix()) works on histograms of
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

    bool avx2;                  /* exp_sum() may use AVX2 (same results, faster) */

    /* Scratch, n entries each: the candidate set as token ids, sort keys and
     * unnormalised weights, plus room for the selection's refinement. */
    int32_t *idx;
    float *key;
    float *w;
    float *tmpk;
    float *tmpw;
    int32_t *bk;                /* bucket of each key (digits_hist()) */
    double hist[NBUCKETS + 16]; /* + spare slots where dropped (+inf) keys land, never read */
};

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

/* The constants of exp() below (Cephes expf). */
#define EXP_UNDER (-87.33654475f)   /* exp(EXP_UNDER) ~ FLT_MIN; anything below gives 0 */
#define EXP_MAGIC 12582912.0f       /* 1.5 * 2^23: adding it rounds to an integer */
#define EXP_LOG2E 1.44269504088896341f
#define EXP_C1 0.693359375f         /* ln 2 = C1 + C2, C1 exact in few bits */
#define EXP_C2 (-2.12194440e-4f)
#define EXP_P0 1.9875691500e-4f
#define EXP_P1 1.3981999507e-3f
#define EXP_P2 8.3334519073e-3f
#define EXP_P3 4.1665795894e-2f
#define EXP_P4 1.6666665459e-1f
#define EXP_P5 5.0000001201e-1f
#define EXP_BLOCK 64                /* exp_sum() sums each block in float, then the blocks in double */


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

/* One block of exp_sum(): w[k] = exp(sgn * x[k] - off) for k < EXP_BLOCK;
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
static double exp_sum(const float *x, float sgn, float off, float *w, size_t n, bool avx2)
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
static double sum_w(const float *w, size_t n)
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

/* The result of select_prefix(): order the elements by key ascending (ties in
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

/* The last step of select_prefix(): k[0..n) sorted ascending (or all equal),
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

/* A first level for select_prefix(): the bucket of a key among NBUCKETS
 * equal parts of [lo, hi] (keys outside are clamped into the first or last;
 * monotone in the key, each step rounding monotonically), or for a +inf key
 * (dropped already) one of the spare slots past the end, in turn. Equal
 * widths spread the keys over many buckets, which keeps the scattered adds
 * of the histogram independent. */
struct bucket_map {
    float lo, scale;
};

/* false when [lo, hi] does not make a usable map (empty, or too wide for a float) */
static bool bucket_map(float lo, float hi, struct bucket_map *bm)
{
    float range = hi - lo;
    if (!(range > 0) || !isfinite(range) || !isfinite(NBUCKETS / range))
        return false;
    bm->lo = lo;
    bm->scale = NBUCKETS / range;
    return true;
}

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

/* s->hist = the weights summed by bucket (s->bk[0..c)). */
static void hist_scatter(struct sampler *s, const float *w, size_t c)
{
    const int32_t *bk = s->bk;
    double *hist = s->hist;
    memset(hist, 0, sizeof s->hist);
    for (size_t j = 0; j < c; j++)
        hist[bk[j]] += w[j];
}

/* s->bk and s->hist for key[0..c), the keys in [lo, hi]; false (nothing
 * done) when that range makes no map. */
static bool digits_hist(struct sampler *s, const float *key, const float *w, size_t c, float lo, float hi)
{
    struct bucket_map bm;
    if (!bucket_map(lo, hi, &bm))
        return false;
    size_t j = 0;
    for (; j + 4 <= c; j += 4) {
        v4i d = v4_buckets(v4f_load(key + j), &bm, j);
        memcpy(s->bk + j, &d, sizeof d);
    }
    for (; j < c; j++)
        s->bk[j] = bucket_of(key[j], &bm, j);
    hist_scatter(s, w, c);
    return true;
}

/* Finds where the running weight of the elements, in ascending key order,
 * first reaches target (w NULL: every weight is 1, a count). A radix select:
 * a weight histogram over the top 11 bits of the keys picks the bucket that
 * holds the cut, and only that bucket goes on to the next digit (or is
 * sorted once small), so O(n) whatever the keys. bk: a first level done
 * already, the bucket of each key and s->hist their weights (digits_hist()),
 * whose chosen bucket then goes through the radix levels; or NULL. Uses
 * s->tmpk/tmpw and the histogram; key and w are left untouched. */
static struct cut select_prefix(struct sampler *s, const float *key, const float *w, const int32_t *bk, size_t n,
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
static float kth_smallest(const float *key, size_t n, int k)
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

/* ------------------------------------------------------------------ pipeline steps */

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
        if (++s->stamp_now == 0) {          /* wrapped after 2^32 calls: start over */
            memset(s->stamp, 0, (size_t)s->n * sizeof *s->stamp);
            s->stamp_now = 1;
        }
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
 * weights too, and their sum in *z (sum_w()'s order). few: most go, so a
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
        *z = sum_w(w, m);
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
    bool digits = bucket_map(0.0f, top * 1.000001f + 1e-6f, &bm);
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
                 bucket_map(-xmax, -(T != 1.0f ? lmin / T : lmin), &bm);
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
            kstar = kth_smallest(s->key, c, p->top_k);
        } else {
            struct cut ct = select_prefix(s, s->key, NULL, NULL, c, (double)p->top_k);
            kstar = ct.all ? INFINITY : ct.kstar;
        }
        c = keep_le(s, c, kstar, w_ok, (size_t)p->top_k < c / 8, &zz);
    }
    if (!w_ok)
        zz = exp_sum(s->key, -1.0f, xmax, s->w, c, s->avx2);

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
            hist_scatter(s, s->w, c);
            digits = true;
        } else if (c > SMALL_SET) {
            digits = digits_hist(s, s->key, s->w, c, -xmax, kmax);
        }
        struct cut ct = select_prefix(s, s->key, s->w, digits ? s->bk : NULL, c, target);
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
            hist_scatter(s, s->w, c);
        struct cut ct = select_prefix(s, s->key, s->w, digits ? s->bk : NULL, c, (double)p->typical_p * zz);
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
        z1 = exp_sum(l, 1.0f, mx, s->w, n, s->avx2);
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

int sampler_probs(struct sampler *s, float *logits, const int32_t *context, size_t n_context, float *probs,
                  bool *kept)
{
    if (!probs)
        return SAMPLER_ERR_INVAL;
    return run(s, logits, context, n_context, NULL, probs, kept);
}
