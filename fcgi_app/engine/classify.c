/* classify.c -- sequence classification with GPT-2 classifiers: Hugging Face's pooling position, scores from the score head's logits, labels ranked, moderation categories. */
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

