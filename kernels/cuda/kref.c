/* kref.c -- CPU references of the CUDA attention and LayerNorm kernels (kref.h says what each computes and why they mirror the device's algorithm). */
#include "config.h"
#include "cuda/kref.h"

#include <math.h>
#include <string.h>

int kref_decode_splits(int rows_heads, int max_ctx, int sms)
{
    if (rows_heads < 1 || max_ctx <= KREF_SPLIT_MIN_KEYS || sms < 1)
        return 1;
    int by_len = (max_ctx + KREF_SPLIT_MIN_KEYS - 1) / KREF_SPLIT_MIN_KEYS;
    int want = (2 * sms + rows_heads - 1) / rows_heads;
    int n = by_len < want ? by_len : want;
    n = n < KREF_MAX_SPLITS ? n : KREF_MAX_SPLITS;
    return n > 1 ? n : 1;
}

size_t kref_decode_work_floats(int rows_heads, int head_dim, int sms)
{
    /* rows_heads * ceil(2 sms / rows_heads) < 2 sms + rows_heads */
    return ((size_t)2 * (sms > 0 ? sms : 0) + (size_t)rows_heads) * (2 + (size_t)head_dim);
}

/* The online-softmax state of one (row, head) over some keys. */
struct osm {
    float m, l;
    float *o;       /* [head_dim] */
};

/* Adds key k (score s, value row v) to the state, one key at a time. */
static void osm_add(struct osm *st, float s, const float *v, int hd)
{
    float mn = fmaxf(st->m, s), corr = expf(st->m - mn), e = expf(s - mn);
    st->l = st->l * corr + e;
    for (int d = 0; d < hd; d++)
        st->o[d] = st->o[d] * corr + e * v[d];
    st->m = mn;
}

static float dot_scaled(const float *q, const float *k, int hd, float scale)
{
    float s = 0.0f;
    for (int d = 0; d < hd; d++)
        s += q[d] * scale * k[d];
    return s;
}

void kref_attention_decode(float *out, const float *qkv, const float *kv, struct kref_kv kl, const int32_t *row_pos,
                           const int32_t *row_tab, const int32_t *tables, int T, int layer, float scale, int n_split)
{
    int hd = kl.head_dim, C = kl.n_head * hd, B = kl.block_tokens;
    float pm[KREF_MAX_SPLITS], pl[KREF_MAX_SPLITS], po[KREF_MAX_SPLITS * KREF_MAX_HEAD_DIM];
    if (hd < 1 || hd > KREF_MAX_HEAD_DIM)
        return;
    if (n_split < 1)
        n_split = 1;
    if (n_split > KREF_MAX_SPLITS)
        n_split = KREF_MAX_SPLITS;
    for (int r = 0; r < T; r++) {
        int ctx = row_pos[r] + 1;
        const int32_t *tab = tables + row_tab[r];
        for (int h = 0; h < kl.n_head; h++) {
            const float *q = qkv + (size_t)r * 3 * C + (size_t)h * hd;
            for (int s = 0; s < n_split; s++) {
                struct osm st = {-INFINITY, 0.0f, po + (size_t)s * hd};
                memset(st.o, 0, sizeof(float) * (size_t)hd);
                int k0, k1;
                kref_split_slice(ctx, n_split, s, &k0, &k1);
                for (int k = k0; k < k1; k++) {
                    const float *K = kv + kref_kv_index(kl, tab[k / B], layer, 0, h, k % B);
                    const float *V = kv + kref_kv_index(kl, tab[k / B], layer, 1, h, k % B);
                    osm_add(&st, dot_scaled(q, K, hd, scale), V, hd);
                }
                pm[s] = st.m;
                pl[s] = st.l;
            }
            /* the combine */
            float M = -INFINITY, L = 0.0f;
            for (int s = 0; s < n_split; s++)
                M = fmaxf(M, pm[s]);
            for (int s = 0; s < n_split; s++)
                L += pm[s] > -INFINITY ? pl[s] * expf(pm[s] - M) : 0.0f;
            for (int d = 0; d < hd; d++) {
                float A = 0.0f;
                for (int s = 0; s < n_split; s++)
                    A += pm[s] > -INFINITY ? po[(size_t)s * hd + d] * expf(pm[s] - M) : 0.0f;
                out[(size_t)r * C + (size_t)h * hd + d] = A / L;
            }
        }
    }
}

void kref_attention_prefill(float *out, const float *qkv, const float *kv, struct kref_kv kl, const int32_t *row_pos,
                            const int32_t *row_tab, const int32_t *tables, int T, int layer, float scale)
{
    int hd = kl.head_dim, C = kl.n_head * hd, B = kl.block_tokens;
    float sc[KREF_PF_BK], o[KREF_MAX_HEAD_DIM];
    if (hd < 1 || hd > KREF_MAX_HEAD_DIM)
        return;
    for (int t0 = 0; t0 < T; t0 += KREF_PF_BQ) {
        int t1 = t0 + KREF_PF_BQ < T ? t0 + KREF_PF_BQ : T;
        for (int seg0 = t0, seg1; seg0 < t1; seg0 = seg1) {
            int pmax = row_pos[seg0];
            for (seg1 = seg0 + 1; seg1 < t1 && row_tab[seg1] == row_tab[seg0]; seg1++)
                pmax = row_pos[seg1] > pmax ? row_pos[seg1] : pmax;
            const int32_t *tab = tables + row_tab[seg0];
            for (int h = 0; h < kl.n_head; h++)
                for (int t = seg0; t < seg1; t++) {
                    int p = row_pos[t];
                    const float *q = qkv + (size_t)t * 3 * C + (size_t)h * hd;
                    float m = -INFINITY, l = 0.0f;
                    memset(o, 0, sizeof(float) * (size_t)hd);
                    for (int kt = 0; kt <= pmax; kt += KREF_PF_BK) {
                        if (kt > p)
                            continue;
                        int nk = pmax + 1 - kt < KREF_PF_BK ? pmax + 1 - kt : KREF_PF_BK;
                        float mt = -INFINITY;
                        for (int kk = 0; kk < nk; kk++) {
                            int k = kt + kk;
                            sc[kk] = k <= p ? dot_scaled(q, kv + kref_kv_index(kl, tab[k / B], layer, 0, h, k % B), hd,
                                                         scale)
                                            : -INFINITY;
                            mt = fmaxf(mt, sc[kk]);
                        }
                        float mn = fmaxf(m, mt), corr = expf(m - mn), sum = 0.0f;
                        for (int kk = 0; kk < nk; kk++) {
                            sc[kk] = sc[kk] > -INFINITY ? expf(sc[kk] - mn) : 0.0f;
                            sum += sc[kk];
                        }
                        l = l * corr + sum;
                        for (int d = 0; d < hd; d++) {
                            float a = o[d] * corr;
                            for (int kk = 0; kk < nk; kk++) {
                                int k = kt + kk;
                                a += sc[kk] * kv[kref_kv_index(kl, tab[k / B], layer, 1, h, k % B) + d];
                            }
                            o[d] = a;
                        }
                        m = mn;
                    }
                    for (int d = 0; d < hd; d++)
                        out[(size_t)t * C + (size_t)h * hd + d] = o[d] / l;
                }
        }
    }
}

void kref_residual_layernorm(float *x, const float *r, const float *rbias, float *out, const float *g, const float *b,
                             int T, int C, float eps)
{
    for (int t = 0; t < T; t++) {
        float *xr = x + (size_t)t * C, s = 0.0f, ss = 0.0f;
        for (int c = 0; c < C; c++) {
            if (r)
                xr[c] = xr[c] + (r[(size_t)t * C + c] + (rbias ? rbias[c] : 0.0f));
            s += xr[c];
        }
        float mean = s / (float)C;
        for (int c = 0; c < C; c++)
            ss += (xr[c] - mean) * (xr[c] - mean);
        float rstd = 1.0f / sqrtf(ss / (float)C + eps);
        for (int c = 0; c < C; c++)
            out[(size_t)t * C + c] = (xr[c] - mean) * rstd * g[c] + b[c];
    }
}
