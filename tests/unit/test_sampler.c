/* test_sampler.c -- the sampler against transformers' golden distributions, seeds, draws, penalties, logprobs, edge cases. */
#include "config.h"
#include "sampler.h"
#include "sample.h"
#include "tap.h"

#include <errno.h>
#include <float.h>
#include <json-c/json.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

/* ------------------------------------------------------------------ logits from the shared hash */

/* lowbias32, as in tests/golden/make_sampler_golden.py. */
static uint32_t mix32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

struct spec {
    int vocab, seed, shape, mod, shift, mask;
};

/* The golden script's logits_row(): exact float32 values. */
static void logits_row(const struct spec *sp, float *out)
{
    for (int i = 0; i < sp->vocab; i++) {
        uint32_t h = mix32((uint32_t)sp->seed * 0x9e3779b1u + (uint32_t)i);
        if (sp->mask && mix32(h ^ 0x5bd1e995u) % (uint32_t)sp->mask == 0) {
            out[i] = -INFINITY;
            continue;
        }
        long v;
        if (sp->shape == 0)
            v = (long)(h % (uint32_t)sp->mod) - sp->mod / 2;
        else
            v = (long)(h ? __builtin_clz(h) : 32) * sp->mod + (long)(h & 7);
        out[i] = ldexpf((float)v, -sp->shift);
    }
}

/* ------------------------------------------------------------------ golden file */

static int jint(json_object *o, const char *k)
{
    json_object *v;
    return json_object_object_get_ex(o, k, &v) ? json_object_get_int(v) : -1;
}

static double jdbl(json_object *o, const char *k)
{
    json_object *v;
    return json_object_object_get_ex(o, k, &v) ? json_object_get_double(v) : NAN;
}

static int b64val(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* The golden case's surviving set into want[0..vocab); false when malformed. */
static bool golden_kept(json_object *c, bool *want, int vocab)
{
    json_object *v;
    memset(want, 0, (size_t)vocab * sizeof *want);
    if (json_object_object_get_ex(c, "kept", &v)) {
        for (size_t i = 0; i < json_object_array_length(v); i++) {
            int id = json_object_get_int(json_object_array_get_idx(v, i));
            if (id < 0 || id >= vocab)
                return false;
            want[id] = true;
        }
        return true;
    }
    if (json_object_object_get_ex(c, "kept_runs", &v)) {
        long pos = 0;
        for (size_t i = 0; i + 1 < json_object_array_length(v); i += 2) {
            pos += json_object_get_int(json_object_array_get_idx(v, i));
            int keep = json_object_get_int(json_object_array_get_idx(v, i + 1));
            for (int j = 0; j < keep; j++, pos++) {
                if (pos < 0 || pos >= vocab)
                    return false;
                want[pos] = true;
            }
        }
        return true;
    }
    if (json_object_object_get_ex(c, "kept_bitmap", &v)) {
        const char *s = json_object_get_string(v);
        uint32_t acc = 0;
        int bits = 0;
        long byte = 0;
        for (; *s && *s != '='; s++) {
            int d = b64val((unsigned char)*s);
            if (d < 0)
                return false;
            acc = (acc << 6) | (uint32_t)d;
            bits += 6;
            if (bits >= 8) {
                bits -= 8;
                unsigned b = (acc >> bits) & 0xff;
                for (int k = 0; k < 8; k++)
                    if (b & (1u << k)) {
                        if (byte * 8 + k >= vocab)
                            return false;
                        want[byte * 8 + k] = true;
                    }
                byte++;
            }
        }
        return true;
    }
    return false;
}

static void test_golden(void)
{
    const char *src = getenv("LLMCGI_SRCDIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/golden/sampler_golden.json", src ? src : ".");
    json_object *root = json_object_from_file(path);
    if (!ok(root != NULL, "golden file %s loads", path))
        return;
    json_object *cases;
    json_object_object_get_ex(root, "cases", &cases);
    size_t n_cases = cases ? json_object_array_length(cases) : 0;
    ok(n_cases >= 100, "golden file has %zu cases", n_cases);

    float *row = NULL, *probs = NULL;
    bool *kept = NULL, *want = NULL;
    int cap = 0, n_pass = 0, n_large = 0;
    double worst = 0;
    for (size_t ci = 0; ci < n_cases; ci++) {
        json_object *c = json_object_array_get_idx(cases, ci), *lo, *pa, *ctxo, *pr;
        json_object_object_get_ex(c, "logits", &lo);
        json_object_object_get_ex(c, "params", &pa);
        json_object_object_get_ex(c, "context", &ctxo);
        json_object_object_get_ex(c, "probs", &pr);
        struct spec sp = {jint(lo, "vocab"), jint(lo, "seed"), jint(lo, "shape"), jint(lo, "mod"),
                          jint(lo, "shift"), jint(lo, "mask")};
        if (sp.vocab > cap) {
            cap = sp.vocab;
            row = realloc(row, (size_t)cap * sizeof *row);
            probs = realloc(probs, (size_t)cap * sizeof *probs);
            kept = realloc(kept, (size_t)cap * sizeof *kept);
            want = realloc(want, (size_t)cap * sizeof *want);
        }
        struct sampler_params p = sampler_params_default();
        p.do_sample = true;
        p.temperature = (float)jdbl(pa, "temperature");
        p.top_k = jint(pa, "top_k");
        p.top_p = (float)jdbl(pa, "top_p");
        p.typical_p = (float)jdbl(pa, "typical_p");
        p.repetition_penalty = (float)jdbl(pa, "repetition_penalty");
        size_t n_ctx = json_object_array_length(ctxo);
        int32_t ctx[64];
        for (size_t i = 0; i < n_ctx && i < 64; i++)
            ctx[i] = json_object_get_int(json_object_array_get_idx(ctxo, i));
        if (n_ctx > 64)
            n_ctx = 64;

        char what[200];
        snprintf(what, sizeof what, "case %zu: vocab %d seed %d, T=%g k=%d p=%g typ=%g rep=%g", ci, sp.vocab,
                 sp.seed, (double)p.temperature, p.top_k, (double)p.top_p, (double)p.typical_p,
                 (double)p.repetition_penalty);
        logits_row(&sp, row);
        struct sampler *s = sampler_new(&p, sp.vocab);
        int rc = s ? sampler_probs(s, row, ctx, n_ctx, probs, kept) : -99;
        sampler_free(s);
        bool good = rc == SAMPLER_OK && golden_kept(c, want, sp.vocab);
        int n_kept = 0, first_diff = -1;
        for (int i = 0; good && i < sp.vocab; i++) {
            n_kept += kept[i];
            if (kept[i] != want[i] && first_diff < 0)
                first_diff = i;
        }
        good = good && first_diff < 0 && n_kept == jint(c, "n_kept");
        double maxdiff = 0;
        for (size_t i = 0; good && i < json_object_array_length(pr); i++) {
            json_object *e = json_object_array_get_idx(pr, i);
            int id = json_object_get_int(json_object_array_get_idx(e, 0));
            double pw = json_object_get_double(json_object_array_get_idx(e, 1));
            double d = fabs((double)probs[id] - pw);
            maxdiff = d > maxdiff ? d : maxdiff;
        }
        worst = maxdiff > worst ? maxdiff : worst;
        if (good && maxdiff <= 1e-5) {
            n_pass++;
            n_large += sp.vocab > 1000;
        } else {
            ok(0, "%s", what);
            printf("#   rc %d, kept %d (want %d), first differing id %d, max prob diff %g\n", rc, n_kept,
                   jint(c, "n_kept"), first_diff, maxdiff);
        }
    }
    ok(n_pass == (int)n_cases && n_cases > 0,
       "golden: %d/%zu cases give transformers' surviving set and probabilities within 1e-5 (%d with vocab 50257)",
       n_pass, n_cases, n_large);
    tap_diag("note: largest probability difference from transformers: %.3g", worst);
    free(row);
    free(probs);
    free(kept);
    free(want);
    json_object_put(root);
}

static struct sampler *mk(struct sampler_params p, int vocab)
{
    struct sampler *s = sampler_new(&p, vocab);
    if (!s)
        printf("# sampler_new failed: %s\n", strerror(errno));
    return s;
}

/* ------------------------------------------------------------------ a sort-based reference */

/* HF's warpers written the plain way (full sorts, double sums), with the C
 * code's documented tie rule (a stable sort). Returns false when the case
 * is decided by float rounding (a cumulative mass or a typical score within
 * 1e-6 of the cut), which the comparison then skips. */
struct ref_item {
    int id;
    float x;
    double p, s;
};

static int by_x_asc(const void *a, const void *b)   /* ascending logit; ties: lower id first (stable) */
{
    const struct ref_item *u = a, *v = b;
    if (u->x != v->x)
        return u->x < v->x ? -1 : 1;
    return u->id - v->id;
}

static int by_s_asc(const void *a, const void *b)
{
    const struct ref_item *u = a, *v = b;
    if (u->s != v->s)
        return u->s < v->s ? -1 : 1;
    return u->id - v->id;
}

static void ref_softmax(struct ref_item *it, int n)
{
    float mx = -INFINITY;
    for (int i = 0; i < n; i++)
        mx = it[i].x > mx ? it[i].x : mx;
    double z = 0;
    for (int i = 0; i < n; i++)
        z += exp((double)(it[i].x - mx));
    for (int i = 0; i < n; i++)
        it[i].p = exp((double)(it[i].x - mx)) / z;
}

static bool reference_probs(const float *l, int n, const struct sampler_params *p, double *probs, bool *kept)
{
    struct ref_item *it = malloc((size_t)n * sizeof *it);
    int m = 0;
    for (int i = 0; i < n; i++) {
        float x = p->temperature != 1.0f ? l[i] / p->temperature : l[i];
        if (x > -INFINITY)
            it[m++] = (struct ref_item){.id = i, .x = x};
    }
    bool robust = true;
    if (p->top_k > 0 && p->top_k < m) {
        qsort(it, (size_t)m, sizeof *it, by_x_asc);
        float v = it[m - p->top_k].x;
        int k = 0;
        for (int i = 0; i < m; i++)
            if (it[i].x >= v)
                it[k++] = it[i];
        m = k;
    }
    if (p->top_p < 1.0f) {
        qsort(it, (size_t)m, sizeof *it, by_x_asc);
        ref_softmax(it, m);
        double thr = (float)(1.0 - (double)p->top_p), cum = 0;
        int first = 0;                      /* first kept position */
        for (int i = 0; i < m - 1; i++) {
            cum += it[i].p;
            if (fabs(cum - thr) < 1e-6)
                robust = false;
            if (cum <= thr)
                first = i + 1;
        }
        memmove(it, it + first, (size_t)(m - first) * sizeof *it);
        m -= first;
    }
    if (p->typical_p < 1.0f) {
        ref_softmax(it, m);
        double ent = 0;
        for (int i = 0; i < m; i++)
            if (it[i].p > 0)
                ent -= it[i].p * log(it[i].p);
        for (int i = 0; i < m; i++)
            it[i].s = fabs(-log(it[i].p) - ent);
        qsort(it, (size_t)m, sizeof *it, by_s_asc);
        double cum = 0;
        int last = 0;
        for (int i = 0; i < m; i++) {
            cum += it[i].p;
            if (fabs(cum - p->typical_p) < 1e-6)
                robust = false;
            if (cum < p->typical_p)
                last = i + 1;
        }
        last = last < m - 1 ? last : m - 1;
        double sstar = it[last].s;
        for (int i = 0; i < m; i++)
            if (fabs(it[i].s - sstar) < 1e-5 && it[i].s != sstar)
                robust = false;     /* the float scores may order these otherwise */
        int k = 0;
        for (int i = 0; i < m; i++)
            if (it[i].s <= sstar)
                it[k++] = it[i];
        m = k;
    }
    ref_softmax(it, m);
    for (int i = 0; i < n; i++) {
        probs[i] = 0;
        kept[i] = false;
    }
    for (int i = 0; i < m; i++) {
        probs[it[i].id] = it[i].p;
        kept[it[i].id] = true;
    }
    free(it);
    return robust;
}

/* Many random rows and settings against the reference: the same surviving
 * set, probabilities within 1e-6. Exercises the selection's paths (small
 * sets, histograms, the top_p prefilter, ties at the cut, typical after top_p). */
static void test_reference(void)
{
    uint32_t x = 777;
    int compared = 0, skipped = 0, bad = 0;
    double worst = 0;
    static const float temps[] = {1.0f, 0.7f, 1.5f, 0.3f};
    static const int topks[] = {0, 0, 0, 5, 100, 1000};
    static const float topps[] = {1.0f, 0.9f, 0.5f, 0.99f, 0.2f};
    static const float typs[] = {1.0f, 1.0f, 0.9f, 0.5f};
    for (int t = 0; t < 160; t++) {
        x = mix32(x + 1);
        int n = t % 8 == 0 ? 50257 : t % 2 ? 3000 : 300;
        struct spec sp = {n, (int)(x % 1000), (int)(x >> 10) % 2, t % 3 == 0 ? 64 : 4096, (t % 3 == 0) ? 3 : 9,
                          t % 5 == 0 ? 13 : 0};
        struct sampler_params p = sampler_params_default();
        p.do_sample = true;
        p.temperature = temps[(x >> 12) % 4];
        p.top_k = topks[(x >> 14) % 6];
        p.top_p = topps[(x >> 17) % 5];
        p.typical_p = typs[(x >> 20) % 4];
        float *row = malloc((size_t)n * sizeof *row), *probs = malloc((size_t)n * sizeof *probs);
        double *want = malloc((size_t)n * sizeof *want);
        bool *kept = malloc((size_t)n * sizeof *kept), *wkept = malloc((size_t)n * sizeof *wkept);
        logits_row(&sp, row);
        bool robust = reference_probs(row, n, &p, want, wkept);
        struct sampler *s = mk(p, n);
        int rc = sampler_probs(s, row, NULL, 0, probs, kept);
        sampler_free(s);
        if (!robust) {
            skipped++;
        } else {
            compared++;
            bool same = rc == SAMPLER_OK;
            double md = 0;
            for (int i = 0; same && i < n; i++) {
                same = kept[i] == wkept[i];
                double d = fabs(probs[i] - want[i]);
                md = d > md ? d : md;
            }
            worst = md > worst ? md : worst;
            if (!same || md > 1e-6) {
                if (bad++ < 3)
                    printf("# reference case %d: vocab %d spec %d/%d/%d/%d, T=%g k=%d p=%g typ=%g: %s, max diff %g\n",
                           t, n, sp.seed, sp.shape, sp.mod, sp.mask, (double)p.temperature, p.top_k,
                           (double)p.top_p, (double)p.typical_p, same ? "same set" : "different set", md);
            }
        }
        free(row);
        free(probs);
        free(want);
        free(kept);
        free(wkept);
    }
    ok(bad == 0 && compared > 100,
       "sort-based reference: %d random cases agree (set exact, probabilities within 1e-6; %d on a rounding edge skipped)",
       compared, skipped);
    tap_diag("note: largest probability difference from the reference: %.3g", worst);
}

/* ------------------------------------------------------------------ behaviour */


static void test_greedy(void)
{
    float l[8] = {0.5f, 3.0f, -1.0f, 3.0f, 2.0f, 3.0f, -INFINITY, 1.0f};
    struct sampler_params p = sampler_params_default();
    struct sampler *s = mk(p, 8);
    struct sample_out o;
    ok(sampler_next(s, l, NULL, 0, &o) == SAMPLER_OK && o.id == 1, "greedy: argmax, lowest id among equal maxima");
    sampler_free(s);

    /* temperature 0 is greedy even with do_sample, and draws nothing */
    p.do_sample = true;
    p.temperature = 0.0f;
    p.top_k = 3;
    s = mk(p, 8);
    int same = 1;
    for (int i = 0; i < 50; i++) {
        float m[8] = {0.5f, 2.0f, -1.0f, 2.5f, 2.4f, 1.0f, 0.0f, 1.0f};
        same &= sampler_next(s, m, NULL, 0, &o) == SAMPLER_OK && o.id == 3;
    }
    ok(same, "temperature 0 with do_sample: always the argmax");
    sampler_free(s);

    /* greedy over a large random row: the argmax */
    struct spec sp = {50257, 77, 0, 1 << 20, 14, 0};
    float *row = malloc(50257 * sizeof *row);
    logits_row(&sp, row);
    int best = 0;
    for (int i = 1; i < 50257; i++)
        if (row[i] > row[best])
            best = i;
    p = sampler_params_default();
    s = mk(p, 50257);
    ok(sampler_next(s, row, NULL, 0, &o) == SAMPLER_OK && o.id == best, "greedy over 50257 logits: argmax %d", best);
    sampler_free(s);
    free(row);
}

/* Draws n tokens from a fixed row (accepting each), into ids. */
static void draw_seq(struct sampler_params p, const float *row, int vocab, int n, int32_t *ids)
{
    struct sampler *s = mk(p, vocab);
    float *buf = malloc((size_t)vocab * sizeof *buf);
    int32_t ctx[256];
    for (int i = 0; i < n; i++) {
        memcpy(buf, row, (size_t)vocab * sizeof *buf);
        struct sample_out o;
        ids[i] = sampler_next(s, buf, ctx, (size_t)i, &o) == SAMPLER_OK ? o.id : -1;
        ctx[i] = ids[i];
        sampler_accept(s, ids[i]);
    }
    free(buf);
    sampler_free(s);
}

static void test_seeds(void)
{
    struct spec sp = {1000, 3, 0, 4096, 9, 0};
    float row[1000];
    logits_row(&sp, row);
    struct sampler_params p = sampler_params_default();
    p.do_sample = true;
    p.temperature = 0.9f;
    p.top_p = 0.95f;
    p.repetition_penalty = 1.1f;
    p.frequency_penalty = 0.3f;
    p.seed = 42;
    int32_t a[200], b[200], c[200];
    draw_seq(p, row, 1000, 200, a);
    draw_seq(p, row, 1000, 200, b);
    p.seed = 43;
    draw_seq(p, row, 1000, 200, c);
    ok(memcmp(a, b, sizeof a) == 0, "same seed: the same 200 tokens");
    int differ = 0;
    for (int i = 0; i < 200; i++)
        differ += a[i] != c[i];
    ok(differ > 150, "another seed: a different sequence (%d of 200 differ)", differ);

    /* The stream is fixed by the seed on every machine: these ids are what
     * xoshiro256** (splitmix64-seeded, 53-bit doubles) gives for seed 42. */
    char got[200];
    size_t pos = 0;
    for (int i = 0; i < 12; i++)
        pos += (size_t)snprintf(got + pos, sizeof got - pos, "%s%d", i ? "," : "", a[i]);
    is_str(got, "89,395,664,904,988,769,717,836,753,560,656,324", "seed 42 gives the recorded sequence");

    /* sampler_reset() starts the same stream again */
    p.seed = 42;
    struct sampler *s = mk(p, 1000);
    float buf[1000];
    int32_t first[5], again[5];
    struct sample_out o;
    for (int i = 0; i < 5; i++) {
        memcpy(buf, row, sizeof buf);
        sampler_next(s, buf, NULL, 0, &o);
        first[i] = o.id;
        sampler_accept(s, o.id);
    }
    sampler_reset(s);
    for (int i = 0; i < 5; i++) {
        memcpy(buf, row, sizeof buf);
        sampler_next(s, buf, NULL, 0, &o);
        again[i] = o.id;
        sampler_accept(s, o.id);
    }
    ok(memcmp(first, again, sizeof first) == 0, "sampler_reset: the same tokens again");
    sampler_free(s);
}

/* The AVX2 and the plain vector code compute the very same bits. */
static void test_paths(void)
{
    enum { V = 50257 };
    struct spec sp = {V, 21, 0, 4096, 9, 0};
    float *row = malloc(V * sizeof *row), *a = malloc(V * sizeof *a), *b = malloc(V * sizeof *b);
    float *pa = malloc(V * sizeof *pa), *pb = malloc(V * sizeof *pb);
    logits_row(&sp, row);
    struct sampler_params p = sampler_params_default();
    p.do_sample = true;
    p.temperature = 0.8f;
    p.top_p = 0.95f;
    p.typical_p = 0.9f;
    p.top_n = 5;
    p.seed = 9;
    struct sampler *fast = mk(p, V);
    setenv("LLMCGI_SAMPLER_NO_AVX2", "1", 1);
    struct sampler *plain = mk(p, V);
    unsetenv("LLMCGI_SAMPLER_NO_AVX2");
    memcpy(a, row, V * sizeof *row);
    memcpy(b, row, V * sizeof *row);
    sampler_probs(fast, a, NULL, 0, pa, NULL);
    sampler_probs(plain, b, NULL, 0, pb, NULL);
    ok(memcmp(pa, pb, V * sizeof *pa) == 0, "the same probabilities, bit for bit, with and without AVX2");
    int same = 1;
    for (int i = 0; i < 50; i++) {
        struct sample_out oa, ob;
        memcpy(a, row, V * sizeof *row);
        memcpy(b, row, V * sizeof *row);
        sampler_next(fast, a, NULL, 0, &oa);
        sampler_next(plain, b, NULL, 0, &ob);
        same &= oa.id == ob.id && memcmp(&oa.logprob, &ob.logprob, sizeof oa.logprob) == 0;
    }
    ok(same, "the same 50 draws with and without AVX2");
    sampler_free(fast);
    sampler_free(plain);
    free(row);
    free(a);
    free(b);
    free(pa);
    free(pb);
}

/* The empirical distribution of many draws matches sampler_probs(). */
static void test_chi_square(void)
{
    struct spec sp = {50, 11, 0, 256, 6, 0};
    float row[50], buf[50], probs[50];
    logits_row(&sp, row);
    struct sampler_params p = sampler_params_default();
    p.do_sample = true;
    p.temperature = 0.8f;
    p.top_k = 30;
    p.top_p = 0.97f;
    p.seed = 7;
    struct sampler *s = mk(p, 50);
    memcpy(buf, row, sizeof buf);
    sampler_probs(s, buf, NULL, 0, probs, NULL);
    enum { N = 200000 };
    long count[50] = {0};
    int bad = 0;
    struct sample_out o;
    for (int i = 0; i < N; i++) {
        memcpy(buf, row, sizeof buf);
        if (sampler_next(s, buf, NULL, 0, &o) != SAMPLER_OK || o.id < 0 || o.id >= 50)
            bad++;
        else
            count[o.id]++;
    }
    double chi = 0;
    int cats = 0, outside = 0;
    for (int i = 0; i < 50; i++) {
        double e = probs[i] * N;
        if (probs[i] == 0) {
            outside += count[i] != 0;
            continue;
        }
        chi += (count[i] - e) * (count[i] - e) / e;
        cats++;
    }
    int dof = cats - 1;
    double bound = dof + 6 * sqrt(2.0 * dof) + 10;
    ok(bad == 0 && outside == 0, "every draw is a surviving token");
    ok(dof > 5 && chi < bound, "chi-square of %d draws over %d tokens: %.1f < %.1f", N, cats, chi, bound);
    sampler_free(s);
}

static void test_penalties(void)
{
    struct sampler_params p = sampler_params_default();
    p.repetition_penalty = 2.0f;
    struct sampler *s = mk(p, 6);
    float l[6] = {1.0f, -1.0f, 2.0f, 0.5f, -3.0f, 0.0f};
    int32_t ctx[] = {0, 1, 1, 4, 4, 4, -5, 6, 999, 5};
    struct sample_out o;
    ok(sampler_next(s, l, ctx, sizeof ctx / sizeof *ctx, &o) == SAMPLER_OK, "repetition penalty: next ok");
    ok(l[0] == 0.5f && l[1] == -2.0f && l[2] == 2.0f && l[3] == 0.5f && l[4] == -6.0f && l[5] == 0.0f,
       "repetition penalty 2: positive /2, negative *2, once per distinct token, unseen and out-of-range ids left "
       "alone (got %g %g %g %g %g %g)",
       (double)l[0], (double)l[1], (double)l[2], (double)l[3], (double)l[4], (double)l[5]);
    ok(o.id == 2, "greedy after the penalty picks the unpenalised best");
    sampler_free(s);

    p.repetition_penalty = 0.5f;    /* < 1 rewards repetition */
    s = mk(p, 3);
    float m[3] = {1.0f, 1.5f, -1.0f};
    int32_t c2[] = {0, 2};
    sampler_next(s, m, c2, 2, &o);
    ok(m[0] == 2.0f && m[1] == 1.5f && m[2] == -0.5f && o.id == 0, "repetition penalty 0.5 rewards repeats");
    sampler_free(s);

    /* OpenAI: logit -= count * frequency + (count > 0) * presence, generated tokens only */
    p = sampler_params_default();
    p.frequency_penalty = 0.5f;
    p.presence_penalty = 0.25f;
    s = mk(p, 5);
    ok(sampler_accept(s, 2) == SAMPLER_OK && sampler_accept(s, 2) == SAMPLER_OK && sampler_accept(s, 3) == SAMPLER_OK,
       "sampler_accept records tokens");
    ok(sampler_accept(s, 5) == SAMPLER_ERR_INVAL && sampler_accept(s, -1) == SAMPLER_ERR_INVAL,
       "sampler_accept refuses ids outside the vocabulary");
    float f[5] = {1.0f, 1.0f, 2.0f, 2.0f, -1.0f};
    int32_t c3[] = {0, 0, 0, 2, 2, 3}; /* the prompt (0) does not count for OpenAI penalties */
    sampler_next(s, f, c3, 6, &o);
    ok(f[0] == 1.0f && f[1] == 1.0f && f[2] == 0.75f && f[3] == 1.25f && f[4] == -1.0f,
       "frequency 0.5 / presence 0.25: 2 -> 2 - 2*0.5 - 0.25, 3 -> 2 - 0.5 - 0.25 (got %g %g %g %g %g)", (double)f[0],
       (double)f[1], (double)f[2], (double)f[3], (double)f[4]);
    ok(o.id == 3, "and greedy follows (id %d)", o.id);
    sampler_reset(s);
    float g[5] = {1.0f, 1.0f, 2.0f, 2.0f, -1.0f};
    sampler_next(s, g, NULL, 0, &o);
    ok(g[2] == 2.0f && g[3] == 2.0f && o.id == 2, "sampler_reset clears the counts");
    sampler_free(s);

    /* negative presence penalty encourages; both penalties after the repetition penalty */
    p = sampler_params_default();
    p.repetition_penalty = 2.0f;
    p.presence_penalty = -1.0f;
    s = mk(p, 3);
    sampler_accept(s, 1);
    float h[3] = {3.0f, 2.0f, 0.0f};
    int32_t c4[] = {1};
    sampler_next(s, h, c4, 1, &o);
    ok(h[1] == 2.0f && h[0] == 3.0f && o.id == 0, "repetition (2/2 = 1) then presence (1 + 1 = 2) (got %g)",
       (double)h[1]);
    sampler_free(s);
}

static void test_logprobs(void)
{
    float l[7] = {1.0f, 3.0f, 2.0f, 3.0f, -INFINITY, 0.5f, -2.0f};
    double m = 3, z = 0;
    for (int i = 0; i < 7; i++)
        z += exp((double)l[i] - m);
    double lz = log(z);
    struct sampler_params p = sampler_params_default();
    p.top_n = 20;
    struct sampler *s = mk(p, 7);
    struct sample_out o;
    float buf[7];
    memcpy(buf, l, sizeof l);
    ok(sampler_next(s, buf, NULL, 0, &o) == SAMPLER_OK, "logprobs: next ok");
    ok(o.id == 1 && fabs(o.logprob - (3 - m - lz)) < 1e-6, "chosen token's logprob %g", (double)o.logprob);
    ok(o.n_top == 6, "top_n 20 over 6 finite tokens lists 6 (got %d)", o.n_top);
    static const int order[6] = {1, 3, 2, 0, 5, 6};
    int good = o.n_top == 6;
    for (int i = 0; good && i < 6; i++)
        good = o.top[i].id == order[i] && fabs(o.top[i].logprob - ((double)l[order[i]] - m - lz)) < 1e-6;
    ok(good, "alternatives sorted by logprob, lower id first among equals, values exact");
    double sum = 0;
    for (int i = 0; i < o.n_top; i++)
        sum += exp(o.top[i].logprob);
    ok(fabs(sum - 1) < 1e-6, "the listed probabilities sum to 1");
    sampler_free(s);

    /* the logprobs are the model's (after penalties), not the tempered/truncated ones */
    p.do_sample = true;
    p.temperature = 0.3f;
    p.top_k = 2;
    p.top_n = 3;
    p.seed = 1;
    s = mk(p, 7);
    memcpy(buf, l, sizeof l);
    sampler_next(s, buf, NULL, 0, &o);
    ok((o.id == 1 || o.id == 3) && fabs(o.logprob - (3 - m - lz)) < 1e-6 && o.n_top == 3 && o.top[0].id == 1 &&
           o.top[1].id == 3 && o.top[2].id == 2 && fabs(o.top[2].logprob - (2 - m - lz)) < 1e-6,
       "temperature and top_k leave logprobs alone");
    sampler_free(s);

    /* a penalty changes them */
    p = sampler_params_default();
    p.repetition_penalty = 3.0f;
    p.top_n = 1;
    s = mk(p, 7);
    memcpy(buf, l, sizeof l);
    int32_t ctx[] = {1};
    sampler_next(s, buf, ctx, 1, &o);
    z = 0;
    for (int i = 0; i < 7; i++)
        z += exp((double)(i == 1 ? 1.0f : l[i]) - 3.0);
    ok(o.id == 3 && fabs(o.logprob - (0 - log(z))) < 1e-6 && o.top[0].id == 3, "logprobs follow the penalties");
    sampler_free(s);

    /* top_n 0: no alternatives; logprob still set */
    p = sampler_params_default();
    s = mk(p, 7);
    memcpy(buf, l, sizeof l);
    sampler_next(s, buf, NULL, 0, &o);
    ok(o.n_top == 0 && o.logprob < 0, "top_n 0: no alternatives");
    sampler_free(s);

    /* large vocabulary: stable log-softmax with big logits */
    enum { V = 50257 };
    float *row = malloc(V * sizeof *row);
    for (int i = 0; i < V; i++)
        row[i] = 1000.0f + (float)(i % 7);
    p.top_n = 5;
    s = mk(p, V);
    sampler_next(s, row, NULL, 0, &o);
    z = 0;
    for (int i = 0; i < V; i++)
        z += exp((double)(i % 7) - 6);
    ok(o.id == 6 && fabs(o.logprob + log(z)) < 1e-5 && o.top[0].id == 6 && o.top[1].id == 13 && o.top[4].id == 34,
       "logits around 1000: finite logprob %g (want %g), ties by id", (double)o.logprob, -log(z));
    sampler_free(s);
    free(row);
}

static void test_ties(void)
{
    struct sampler_params p = sampler_params_default();
    p.do_sample = true;
    float probs[5];
    bool kept[5];

    /* top_p with a cut through equal logits: HF's ascending sort, if stable,
     * drops the lower ids first; the C code keeps the higher ids. */
    p.top_p = 0.5f;
    struct sampler *s = mk(p, 5);
    float a[5] = {0.0f, 1.0f, 1.0f, 1.0f, 0.0f};
    sampler_probs(s, a, NULL, 0, probs, kept);
    ok(!kept[0] && !kept[1] && kept[2] && kept[3] && !kept[4] && fabsf(probs[2] - 0.5f) < 1e-6f,
       "top_p 0.5 over [0 1 1 1 0]: keeps ids 2 and 3");
    sampler_free(s);

    /* top_p tiny: only the top token (min_tokens_to_keep) */
    p.top_p = 1e-9f;
    s = mk(p, 5);
    float b[5] = {0.0f, 1.0f, 2.0f, 2.0f, 0.0f};
    sampler_probs(s, b, NULL, 0, probs, kept);
    ok(!kept[0] && !kept[1] && !kept[2] && kept[3] && probs[3] == 1.0f, "top_p 1e-9 keeps one token");
    sampler_free(s);

    /* top_k keeps every token equal to the k-th */
    p.top_p = 1.0f;
    p.top_k = 2;
    s = mk(p, 5);
    float c[5] = {1.0f, 2.0f, 2.0f, 2.0f, 0.0f};
    sampler_probs(s, c, NULL, 0, probs, kept);
    ok(!kept[0] && kept[1] && kept[2] && kept[3] && !kept[4], "top_k 2 over [1 2 2 2 0] keeps the three 2s");
    sampler_free(s);

    /* typical_p: equal logits share a score, so they stay or go together */
    p.top_k = 0;
    p.typical_p = 0.2f;
    s = mk(p, 5);
    float d[5] = {1.0f, 1.0f, 1.0f, 1.0f, 1.0f};
    sampler_probs(s, d, NULL, 0, probs, kept);
    ok(kept[0] && kept[1] && kept[2] && kept[3] && kept[4] && fabsf(probs[4] - 0.2f) < 1e-6f,
       "typical_p over equal logits keeps them all");
    sampler_free(s);
}

static void test_params(void)
{
    char err[160];
    struct sampler_params p = sampler_params_default();
    ok(sampler_params_check(&p, err, sizeof err) == SAMPLER_OK && err[0] == '\0', "defaults are valid");
    p.temperature = 0;
    p.top_p = 1;
    p.typical_p = 1;
    p.frequency_penalty = -2;
    p.presence_penalty = 2;
    p.top_n = 20;
    p.top_k = 0;
    ok(sampler_params_check(&p, err, sizeof err) == SAMPLER_OK, "boundary values are valid");
#define CHECK_BAD(field, value, text)                                                                   \
    do {                                                                                                \
        struct sampler_params q_ = sampler_params_default();                                           \
        q_.field = value;                                                                               \
        int rc_ = sampler_params_check(&q_, err, sizeof err);                                           \
        ok(rc_ == SAMPLER_ERR_INVAL && strstr(err, #field) && strstr(err, text),                        \
           "%s = %s refused: \"%s\"", #field, #value, err);                                             \
    } while (0)
    CHECK_BAD(temperature, -0.1f, ">= 0");
    CHECK_BAD(temperature, NAN, ">= 0");
    CHECK_BAD(temperature, INFINITY, ">= 0");
    CHECK_BAD(top_k, -1, ">= 0");
    CHECK_BAD(top_p, 0.0f, "> 0 and <= 1");
    CHECK_BAD(top_p, 1.5f, "> 0 and <= 1");
    CHECK_BAD(top_p, NAN, "> 0 and <= 1");
    CHECK_BAD(typical_p, 0.0f, "> 0 and <= 1");
    CHECK_BAD(typical_p, 1.01f, "> 0 and <= 1");
    CHECK_BAD(repetition_penalty, 0.0f, "> 0");
    CHECK_BAD(repetition_penalty, -1.0f, "> 0");
    CHECK_BAD(frequency_penalty, 2.5f, "between -2 and 2");
    CHECK_BAD(frequency_penalty, -2.01f, "between -2 and 2");
    CHECK_BAD(presence_penalty, -3.0f, "between -2 and 2");
    CHECK_BAD(top_n, 21, "between 0 and 20");
    CHECK_BAD(top_n, -1, "between 0 and 20");
    p = sampler_params_default();
    p.top_p = 2;
    errno = 0;
    ok(sampler_new(&p, 10) == NULL && errno == EINVAL, "sampler_new refuses bad parameters (EINVAL)");
    p = sampler_params_default();
    errno = 0;
    ok(sampler_new(&p, 0) == NULL && errno == EINVAL, "sampler_new refuses an empty vocabulary");
    ok(sampler_params_check(NULL, err, sizeof err) == SAMPLER_ERR_INVAL, "NULL parameters refused");
}

static void test_non_finite(void)
{
    struct sampler_params p = sampler_params_default();
    struct sample_out o;
    struct sampler *g = mk(p, 4);
    p.do_sample = true;
    p.top_p = 0.9f;
    p.typical_p = 0.9f;
    p.top_k = 3;
    p.temperature = 0.5f;
    p.top_n = 4;
    struct sampler *r = mk(p, 4);

    float a[4] = {NAN, 1.0f, NAN, 0.5f};
    ok(sampler_next(g, a, NULL, 0, &o) == SAMPLER_OK && o.id == 1 && isinf(a[0]) && a[0] < 0,
       "NaN logits count as -inf (greedy)");
    int never = 1;
    for (int i = 0; i < 200; i++) {
        float b[4] = {NAN, 1.0f, NAN, 0.5f};
        never &= sampler_next(r, b, NULL, 0, &o) == SAMPLER_OK && (o.id == 1 || o.id == 3) && o.n_top == 2;
    }
    ok(never, "NaN tokens are never drawn nor listed");

    float c[4] = {NAN, NAN, NAN, NAN};
    ok(sampler_next(g, c, NULL, 0, &o) == SAMPLER_ERR_NO_TOKEN, "all NaN: SAMPLER_ERR_NO_TOKEN");
    float d[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
    ok(sampler_next(r, d, NULL, 0, &o) == SAMPLER_ERR_NO_TOKEN, "all -inf: SAMPLER_ERR_NO_TOKEN");

    float e[4] = {0.0f, INFINITY, 1e30f, INFINITY};
    ok(sampler_next(g, e, NULL, 0, &o) == SAMPLER_OK && o.id == 1 && e[1] == FLT_MAX,
       "+inf becomes the largest float; greedy takes the first");
    int only_inf = 1;
    for (int i = 0; i < 100; i++) {
        float f[4] = {0.0f, INFINITY, 1e30f, INFINITY};
        only_inf &= sampler_next(r, f, NULL, 0, &o) == SAMPLER_OK && (o.id == 1 || o.id == 3) && isfinite(o.logprob);
    }
    ok(only_inf, "sampling with +inf logits draws only those, with finite logprobs");

    float h[4] = {-FLT_MAX, FLT_MAX, -1e38f, 1e38f};
    ok(sampler_next(r, h, NULL, 0, &o) == SAMPLER_OK && o.id == 1, "extreme finite logits with temperature 0.5");

    float one[4] = {-INFINITY, -INFINITY, 2.0f, -INFINITY};
    ok(sampler_next(r, one, NULL, 0, &o) == SAMPLER_OK && o.id == 2 && o.logprob == 0.0f,
       "a single finite token is chosen with logprob 0");
    sampler_free(g);
    sampler_free(r);

    ok(sampler_next(NULL, a, NULL, 0, &o) == SAMPLER_ERR_INVAL, "NULL sampler refused");
}

/* ------------------------------------------------------------------ timing (printed, not asserted) */

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void time_one(const char *name, struct sampler_params p, const float *row, int vocab)
{
    struct sampler *s = mk(p, vocab);
    float *buf = malloc((size_t)vocab * sizeof *buf);
    int32_t ctx[512];
    for (int i = 0; i < 512; i++)
        ctx[i] = (int32_t)(mix32((uint32_t)i) % (uint32_t)vocab);
    for (int i = 0; i < 64; i++)
        sampler_accept(s, ctx[i]);
    enum { REPS = 300 };
    double best = 1e9, total = 0;
    struct sample_out o;
    for (int r = 0; r < REPS; r++) {
        memcpy(buf, row, (size_t)vocab * sizeof *buf);
        double t = now_s();
        sampler_next(s, buf, ctx, 512, &o);
        t = now_s() - t;
        total += t;
        best = t < best ? t : best;
    }
    tap_diag("note: %-44s %7.1f us/call (best %.1f)", name, total / REPS * 1e6, best * 1e6);
    free(buf);
    sampler_free(s);
}

static void test_timing(void)
{
    enum { V = 50257 };
    float *flat = malloc(V * sizeof *flat), *peak = malloc(V * sizeof *peak);
    struct spec f = {V, 6, 0, 4096, 9, 0}, pk = {V, 7, 1, 16, 4, 0};
    logits_row(&f, flat);
    logits_row(&pk, peak);
    struct sampler_params p = sampler_params_default();
    time_one("greedy (flat logits)", p, flat, V);
    p.top_n = 20;
    time_one("greedy + top_n 20", p, flat, V);
    p = sampler_params_default();
    p.do_sample = true;
    time_one("sample T=1, no truncation (flat)", p, flat, V);
    p.top_p = 0.9f;
    time_one("top_p 0.9 alone (flat: ~60% of vocab kept)", p, flat, V);
    time_one("top_p 0.9 alone (peaked)", p, peak, V);
    p.temperature = 0.7f;
    p.top_k = 50;
    time_one("T 0.7 + top_k 50 + top_p 0.9", p, flat, V);
    p.top_k = 0;
    p.typical_p = 0.95f;
    p.repetition_penalty = 1.2f;
    p.frequency_penalty = 0.5f;
    p.presence_penalty = 0.5f;
    p.top_n = 20;
    time_one("everything, no top_k (flat) + top_n 20", p, flat, V);
    time_one("everything, no top_k (peaked) + top_n 20", p, peak, V);
    free(flat);
    free(peak);
}

/* ------------------------------------------------------------------ kernels/sample.c, the device sampler's reference */

static uint64_t kr_state = 0x9e3779b97f4a7c15ull;

static uint32_t kr_next(void)
{
    kr_state ^= kr_state << 13;
    kr_state ^= kr_state >> 7;
    kr_state ^= kr_state << 17;
    return (uint32_t)(kr_state >> 32);
}

/* ksample_greedy_ref against sampler_next for greedy requests: the same
 * logits, context and generated tokens give the same id, the same bits of
 * logprob and of every top-n entry, and the same penalised logits, over
 * vocabularies around the 64-wide blocks and GPT-2's, with NaN, +-inf,
 * ties and every penalty. */
static void test_kernel_reference(void)
{
    static const int vocabs[] = {1, 3, 63, 64, 65, 130, 257, 1000, 50257};
    static const float reps[] = {1.0f, 1.3f, 0.7f}, freqs[] = {0.0f, 0.5f, -1.25f}, pres[] = {0.0f, 1.5f, -0.3f};
    int cases = 0, same = 0, same_rc = 0, errors = 0, rows_same = 0;
    char first[256] = "";
    for (int c = 0; c < 400; c++) {
        int V = vocabs[c % 9];
        struct sampler_params p = sampler_params_default();
        p.repetition_penalty = reps[kr_next() % 3];
        p.frequency_penalty = freqs[kr_next() % 3];
        p.presence_penalty = pres[kr_next() % 3];
        p.top_n = (int)(kr_next() % 21);
        struct sampler *s = sampler_new(&p, V);
        float *a = malloc(sizeof(float) * (size_t)V), *b = malloc(sizeof(float) * (size_t)V),
              *g = malloc(sizeof(float) * (size_t)V);
        int32_t ctx[64], rep[64], gen[32], cnt[32];
        int n_ctx = (int)(kr_next() % 40), n_gen = (int)(kr_next() % 20), n_rep = 0, n_dist = 0;
        float scale = (c % 7 == 0) ? 80.0f : (c % 5 == 0) ? 0.01f : 4.0f;
        for (int i = 0; i < V; i++) {
            a[i] = ((float)(kr_next() % 2000001) - 1e6f) * 1e-6f * scale;
            uint32_t k = kr_next() % 500;
            if (k == 0)
                a[i] = NAN;
            else if (k == 1)
                a[i] = -INFINITY;
            else if (k == 2 && c % 11 == 0)
                a[i] = INFINITY;
            else if (k < 20 && i > 0)
                a[i] = a[kr_next() % (uint32_t)i];      /* ties */
        }
        if (c % 37 == 0)
            for (int i = 0; i < V; i++)
                a[i] = -INFINITY;                       /* nothing to choose */
        for (int i = 0; i < n_ctx; i++)
            ctx[i] = (int32_t)(kr_next() % (uint32_t)(V + 3)) - 1;  /* some outside the vocabulary */
        for (int i = 0; i < n_gen; i++) {
            int32_t id = (int32_t)(kr_next() % (uint32_t)V);
            sampler_accept(s, id);
            ctx[n_ctx + i] = id;
            int d = 0;
            while (d < n_dist && gen[d] != id)
                d++;
            if (d == n_dist) {
                gen[n_dist] = id;
                cnt[n_dist++] = 0;
            }
            cnt[d]++;
        }
        for (int i = 0; i < n_ctx + n_gen; i++) {
            int d = 0;
            while (d < n_rep && rep[d] != ctx[i])
                d++;
            if (d == n_rep && ctx[i] >= 0 && ctx[i] < V)
                rep[n_rep++] = ctx[i];
        }
        memcpy(b, a, sizeof(float) * (size_t)V);
        memcpy(g, a, sizeof(float) * (size_t)V);
        /* the request the engine hands a backend (sampler_greedy_row) chooses the same */
        int32_t row_ids[64 + 2 * 32];
        struct ksample_row gr;
        struct ksample_out gk;
        bool fits = sampler_greedy_ints(s, (size_t)(n_ctx + n_gen)) <= sizeof row_ids / sizeof *row_ids;
        int grc = fits && sampler_greedy_row(s, ctx, (size_t)(n_ctx + n_gen), row_ids, &gr) >= 0
                      ? ksample_greedy_ref(g, V, &gr, &gk) : -2;
        struct sample_out o;
        struct ksample_out k;
        struct ksample_row r = {p.repetition_penalty, rep, n_rep, p.frequency_penalty, p.presence_penalty,
                                gen, cnt, n_dist, p.top_n};
        int rc1 = sampler_next(s, a, ctx, (size_t)(n_ctx + n_gen), &o);
        int rc2 = ksample_greedy_ref(b, V, &r, &k);
        cases++;
        bool geq = grc == rc2 && (rc2 != 0 || (gk.id == k.id && !memcmp(&gk.logprob, &k.logprob, 4) &&
                                               gk.n_top == k.n_top && !memcmp(g, b, sizeof(float) * (size_t)V)));
        for (int j = 0; geq && rc2 == 0 && j < k.n_top; j++)
            geq = gk.top_id[j] == k.top_id[j] && !memcmp(&gk.top_logprob[j], &k.top_logprob[j], 4);
        rows_same += geq;
        if ((rc1 == SAMPLER_OK) == (rc2 == 0))
            same_rc++;
        if (rc1 != SAMPLER_OK) {
            errors += rc2 != 0;
        } else if (rc2 == 0) {
            bool eq = o.id == k.id && !memcmp(&o.logprob, &k.logprob, 4) && o.n_top == k.n_top &&
                      !memcmp(a, b, sizeof(float) * (size_t)V);
            for (int j = 0; eq && j < o.n_top; j++)
                eq = o.top[j].id == k.top_id[j] && !memcmp(&o.top[j].logprob, &k.top_logprob[j], 4);
            same += eq;
            if (!eq && !first[0])
                snprintf(first, sizeof first, "case %d (V %d): id %d/%d logprob %a/%a n_top %d/%d", c, V, o.id,
                         k.id, (double)o.logprob, (double)k.logprob, o.n_top, k.n_top);
        }
        sampler_free(s);
        free(a);
        free(b);
        free(g);
    }
    is_int(same_rc, cases, "kernels' greedy reference: fails exactly when the engine's sampler does (%d cases)", cases);
    is_int(rows_same, cases, "  sampler_greedy_row's request (distinct context ids, generated ids and counts) "
           "chooses as the hand-built one");
    ok(errors > 0, "  (%d of them with nothing to choose)", errors);
    is_int(same, cases - errors, "  and otherwise the same id, logprob bits, top-n ids and bits, penalised logits%s%s",
           first[0] ? ": " : "", first);
}

int main(void)
{
    test_golden();
    test_reference();
    test_greedy();
    test_seeds();
    test_paths();
    test_chi_square();
    test_penalties();
    test_logprobs();
    test_ties();
    test_params();
    test_non_finite();
    test_kernel_reference();
    test_timing();
    return tap_done();
}
