/* classify.c -- sequence classification with GPT-2 classifiers: Hugging Face's pooling position, scores from the score head's logits, labels ranked, moderation categories; and embeddings' pooling and normalisation. */
#include "config.h"
#include "classify.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum clf_fn clf_function(const struct gpt2_config *cfg)
{
    if (cfg->problem == CKPT_PROBLEM_REGRESSION)
        return CLF_NONE;
    if (cfg->problem == CKPT_PROBLEM_MULTI || cfg->num_labels == 1)
        return CLF_SIGMOID;
    return CLF_SOFTMAX;
}

const char *clf_function_name(enum clf_fn f)
{
    return f == CLF_SOFTMAX ? "softmax" : f == CLF_SIGMOID ? "sigmoid" : "none";
}

int clf_pool_tokens(const int32_t *ids, int n, int pad)
{
    if (n <= 0)
        return 0;
    if (pad < 0)
        return n;
    for (int i = n - 1; i > 0; i--)
        if (ids[i] != pad)
            return i + 1;
    return 1;           /* argmax over all-zero products: index 0, pad or not */
}

void clf_scores(enum clf_fn f, const float *logits, int n, double *scores)
{
    if (f == CLF_SOFTMAX) {
        double mx = -INFINITY, sum = 0;
        for (int i = 0; i < n; i++)
            mx = logits[i] > mx ? logits[i] : mx;
        for (int i = 0; i < n; i++)
            sum += scores[i] = exp((double)logits[i] - mx);
        for (int i = 0; i < n; i++)
            scores[i] /= sum;
    } else {
        for (int i = 0; i < n; i++)
            scores[i] = f == CLF_SIGMOID ? 1.0 / (1.0 + exp(-(double)logits[i])) : (double)logits[i];
    }
}

void clf_rank(const double *scores, int n, int *order)
{
    /* insertion sort: a handful of labels, and stable */
    for (int i = 0; i < n; i++) {
        int j = i;
        for (; j > 0 && scores[order[j - 1]] < scores[i]; j--)
            order[j] = order[j - 1];
        order[j] = i;
    }
}


int emb_pool_parse(const char *s, enum emb_pool *out)
{
    if (!strcmp(s, "mean"))
        *out = EMB_MEAN;
    else if (!strcmp(s, "last"))
        *out = EMB_LAST;
    else
        return -1;
    return 0;
}

const char *emb_pool_name(enum emb_pool p)
{
    return p == EMB_MEAN ? "mean" : p == EMB_LAST ? "last" : "none";
}

void emb_pool_rows(enum emb_pool p, double *acc, const float *rows, int n, int C)
{
    if (n <= 0)
        return;
    if (p == EMB_LAST) {
        for (int c = 0; c < C; c++)
            acc[c] = rows[(size_t)(n - 1) * C + c];
        return;
    }
    for (int t = 0; t < n; t++)
        for (int c = 0; c < C; c++)
            acc[c] += rows[(size_t)t * C + c];
}

void emb_pool_finish(enum emb_pool p, const double *acc, int n_tokens, int C, float *out)
{
    double div = p == EMB_MEAN && n_tokens > 0 ? (double)n_tokens : 1.0;
    for (int c = 0; c < C; c++)
        out[c] = (float)(acc[c] / div);
}

void emb_normalize(float *v, int C)
{
    double ss = 0;
    for (int c = 0; c < C; c++)
        ss += (double)v[c] * v[c];
    double norm = sqrt(ss);
    if (norm < 1e-12)
        norm = 1e-12;
    for (int c = 0; c < C; c++)
        v[c] = (float)(v[c] / norm);
}
