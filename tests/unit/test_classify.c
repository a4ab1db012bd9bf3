/* test_classify.c -- GPT-2 sequence classifiers: config and labels, pooling, scores, categories; the CPU backend's score head against transformers' goldens (tests/golden/classifier_golden.json) for single texts and padded batches; the engine's classification sequences; the CUDA backend against the CPU one when a device is there. Embeddings: pooling and normalisation, and the engine's embedding sequences against GPT2Model's pooled hidden states (tests/golden/embeddings_golden.json), on the CPU and, when there is a device, on CUDA.
 *
 * The checkpoints are regenerated with the generator the golden script used
 * (tools/gen_gpt2_lib.c), so the test needs no network and no torch.
 * Logits are compared as max |ours - theirs| / max |theirs| over the row:
 * <= 1e-4. */
#include "config.h"
#include "checkpoint.h"
#include "classify.h"
#include "engine.h"
#include "gpu.h"
#include "llm.h"
#include "scratch.h"
#include "tap.h"
#include "tokenizer.h"
#include "util.h"
#include "../../tools/gen_gpt2.h"

#include <json-c/json.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TOL 1e-4
#define MAX_TEXTS 32
#define MAX_LABELS 8
#define BT 16

struct text {
    int32_t ids[256];
    int n;
};

static char tmp_root[256];
static struct text texts[MAX_TEXTS];
static int n_texts;

static double row_error(const float *z, json_object *want, int n)
{
    double err = 0, scale = 0;
    for (int i = 0; i < n; i++) {
        double w = json_object_get_double(json_object_array_get_idx(want, (size_t)i));
        double e = fabs(z[i] - w);
        if (isnan(z[i]))
            e = INFINITY;
        err = e > err ? e : err;
        scale = fabs(w) > scale ? fabs(w) : scale;
    }
    return err / (scale > 0 ? scale : 1);
}

/* ------------------------------------------------------------------ pure parts */

static void test_helpers(void)
{
    int32_t a[] = {5, 7, 9}, b[] = {5, 0, 0}, c[] = {0, 0, 0}, d[] = {0, 5, 0, 7, 0};
    is_int(clf_pool_tokens(a, 3, 0), 3, "pool: no pad token: the last");
    is_int(clf_pool_tokens(b, 3, 0), 1, "pool: trailing pads are skipped");
    is_int(clf_pool_tokens(c, 3, 0), 1, "pool: all pad: index 0 (transformers' argmax of zeros)");
    is_int(clf_pool_tokens(d, 5, 0), 4, "pool: the rightmost non-pad, pads inside kept");
    is_int(clf_pool_tokens(b, 3, -1), 3, "pool: no pad_token_id: the last token");
    is_int(clf_pool_tokens(a, 0, 0), 0, "pool: no tokens");

    float z[3] = {1.0f, 2.0f, 3.0f};
    double s[3];
    clf_scores(CLF_SOFTMAX, z, 3, s);
    ok(fabs(s[0] + s[1] + s[2] - 1) < 1e-12 && fabs(s[2] - 0.66524095577) < 1e-9, "softmax scores");
    clf_scores(CLF_SIGMOID, z, 3, s);
    ok(fabs(s[0] - 0.73105857863) < 1e-9, "sigmoid scores");
    clf_scores(CLF_NONE, z, 3, s);
    ok(s[1] == 2.0, "regression: the raw logits");
    double t[4] = {0.1, 0.7, 0.1, 0.3};
    int order[4];
    clf_rank(t, 4, order);
    ok(order[0] == 1 && order[1] == 3 && order[2] == 0 && order[3] == 2, "rank: by score, ties by index");

    struct gpt2_config cfg = {0};
    cfg.num_labels = 3;
    is_str(clf_function_name(clf_function(&cfg)), "softmax", "function: several labels, no problem_type: softmax");
    cfg.problem = CKPT_PROBLEM_MULTI;
    is_str(clf_function_name(clf_function(&cfg)), "sigmoid", "function: multi-label: sigmoid");
    cfg.problem = CKPT_PROBLEM_REGRESSION;
    is_str(clf_function_name(clf_function(&cfg)), "none", "function: regression: none");
    cfg.problem = CKPT_PROBLEM_NONE;
    cfg.num_labels = 1;
    is_str(clf_function_name(clf_function(&cfg)), "sigmoid", "function: one label: sigmoid");

    char *labels[] = {"toxic", "insult", "threat", "ok"};
    struct clf_categories cats;
    char err[256];
    ok(clf_categories_parse(NULL, "ok", labels, 4, &cats, err, sizeof err) == 0 && cats.n == 3 &&
           !strcmp(cats.cat[2].name, "threat") && cats.cat[2].labels[0] == 2,
       "categories: by default every label but the safe ones");
    clf_categories_free(&cats);
    ok(clf_categories_parse("harassment=toxic,insult violence=threat", NULL, labels, 4, &cats, err, sizeof err) == 0 &&
           cats.n == 2 && cats.cat[0].n_labels == 2 && cats.cat[0].labels[1] == 1 &&
           !strcmp(cats.cat[1].name, "violence"),
       "categories: CATEGORY=LABEL,LABEL");
    clf_categories_free(&cats);
    ok(clf_categories_parse("hate/threatening=threat", NULL, NULL, 0, &cats, err, sizeof err) == 0 && cats.n == 0,
       "categories: syntax only, before a model is read");
    struct {
        const char *spec, *safe, *want;
    } bad[] = {
        {"harassment", NULL, "not CATEGORY=LABEL"},
        {"=toxic", NULL, "not CATEGORY=LABEL"},
        {"a=toxic a=insult", NULL, "named twice"},
        {"a=toxic,,insult", NULL, "empty label"},
        {"a=nosuch", NULL, "no label \"nosuch\""},
        {NULL, "toxic insult threat ok", "nothing is left"},
        {NULL, "nosuch", "no label \"nosuch\""},
        {"   ", NULL, "no CATEGORY=LABEL"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        int rc = clf_categories_parse(bad[i].spec, bad[i].safe, labels, 4, &cats, err, sizeof err);
        ok(rc == -1 && strstr(err, bad[i].want) && cats.cat == NULL, "categories refused: %s", err);
    }
}

/* ------------------------------------------------------------------ checkpoints */

static void gen_opts(struct gen_gpt2_opts *o, json_object *g, const char *dir, char *labels, size_t len)
{
    gen_gpt2_defaults(o);
    o->out_dir = dir;
    o->n_layer = json_object_get_int(json_object_object_get(g, "layers"));
    o->n_head = json_object_get_int(json_object_object_get(g, "heads"));
    o->n_embd = json_object_get_int(json_object_object_get(g, "embd"));
    o->n_positions = json_object_get_int(json_object_object_get(g, "positions"));
    o->vocab_size = json_object_get_int(json_object_object_get(g, "vocab"));
    o->seed = (uint64_t)json_object_get_int64(json_object_object_get(g, "seed"));
    o->std = json_object_get_double(json_object_object_get(g, "std"));
    o->num_labels = json_object_get_int(json_object_object_get(g, "num_labels"));
    json_object *pt = json_object_object_get(g, "problem_type"), *pad = json_object_object_get(g, "pad_token_id"),
                *ls = json_object_object_get(g, "labels");
    o->problem_type = pt ? json_object_get_string(pt) : NULL;
    o->pad_token_id = pad ? json_object_get_int(pad) : -1;
    labels[0] = 0;
    for (size_t i = 0; ls && i < json_object_array_length(ls); i++)
        snprintf(labels + strlen(labels), len - strlen(labels), "%s%s", i ? "," : "",
                 json_object_get_string(json_object_array_get_idx(ls, i)));
    o->labels = ls ? labels : NULL;
}

/* Writes config.json of dir with key set to the JSON `value` (NULL: removed). */
static void edit_config(const char *dir, const char *key, const char *value)
{
    char path[600];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_object *c = json_object_from_file(path);
    if (value)
        json_object_object_add(c, key, json_tokener_parse(value));
    else
        json_object_object_del(c, key);
    json_object_to_file(path, c);
    json_object_put(c);
}

static void test_bad_configs(void)
{
    char dir[512], err[512], labels[8] = "";
    snprintf(dir, sizeof dir, "%s/bad", tmp_root);
    json_object *g = json_tokener_parse("{\"layers\":1,\"heads\":2,\"embd\":16,\"positions\":32,\"vocab\":50257,"
                                        "\"seed\":1,\"std\":0.1,\"num_labels\":3}");
    struct gen_gpt2_opts o;
    gen_opts(&o, g, dir, labels, sizeof labels);
    struct {
        const char *key, *value, *want;
    } cases[] = {
        {"id2label", "{\"0\":\"a\",\"2\":\"b\",\"1\":\"c\",\"3\":\"d\"}", "expected [4, 16] from config.json"},
        {"id2label", "{\"0\":\"a\",\"5\":\"b\",\"1\":\"c\"}", "is not one of the indices 0 to 2"},
        {"id2label", "{\"0\":\"a\",\"1\":7,\"2\":\"c\"}", "must be a label"},
        {"id2label", "[\"a\",\"b\"]", "must be an object"},
        {"num_labels", "4", "disagrees with the 3 labels"},
        {"problem_type", "\"ranking\"", "problem_type \"ranking\" is not supported"},
        {"pad_token_id", "\"x\"", "pad_token_id must be an integer"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (gen_gpt2_write(&o, err, sizeof err) != 0) {
            ok(0, "bad config %zu: generated: %s", i, err);
            continue;
        }
        if (i == 4)
            edit_config(dir, "id2label", "{\"0\":\"a\",\"1\":\"b\",\"2\":\"c\"}");
        edit_config(dir, cases[i].key, cases[i].value);
        struct gpt2_checkpoint *ck = NULL;
        err[0] = 0;
        int rc = gpt2_checkpoint_open(dir, &ck, err, sizeof err);
        ok(rc == -1 && strstr(err, cases[i].want) && strstr(err, "config.json"), "config refused: %s", err);
        gpt2_checkpoint_close(ck);
    }
    /* no id2label: num_labels names LABEL_i; the score head must be there, of that shape */
    gen_gpt2_write(&o, err, sizeof err);
    edit_config(dir, "id2label", NULL);
    edit_config(dir, "label2id", NULL);
    edit_config(dir, "num_labels", "3");
    struct gpt2_checkpoint *ck = NULL;
    ok(gpt2_checkpoint_open(dir, &ck, err, sizeof err) == 0 && ck->cfg.num_labels == 3 && ck->labels &&
           !strcmp(ck->labels[2], "LABEL_2"),
       "num_labels alone: LABEL_0..LABEL_2");
    gpt2_checkpoint_close(ck);
    ck = NULL;
    edit_config(dir, "pad_token_id", "-1");   /* transformers takes it: it matches no token */
    ok(gpt2_checkpoint_open(dir, &ck, err, sizeof err) == 0 && ck->cfg.pad_token_id == -1,
       "a negative pad_token_id is no pad token: %s", err);
    gpt2_checkpoint_close(ck);
    ck = NULL;
    edit_config(dir, "pad_token_id", NULL);
    edit_config(dir, "num_labels", NULL);
    ok(gpt2_checkpoint_open(dir, &ck, err, sizeof err) == -1 && strstr(err, "score.weight") &&
           strstr(err, "expected [2, 16]"),
       "neither: two labels (transformers' default), and the score head's shape is checked: %s", err);
    gpt2_checkpoint_close(ck);
    o.num_labels = 0;                   /* a language model's file under a classifier's config */
    gen_gpt2_write(&o, err, sizeof err);
    edit_config(dir, "architectures", "[\"GPT2ForSequenceClassification\"]");
    ck = NULL;
    ok(gpt2_checkpoint_open(dir, &ck, err, sizeof err) == -1 && strstr(err, "missing tensor score.weight"),
       "a classifier without score.weight is refused: %s", err);
    gpt2_checkpoint_close(ck);
    json_object_put(g);
    scratch_remove(dir);
}

/* ------------------------------------------------------------------ the backend */

/* Runs texts which[0..n) as one step of separate sequences (each cut at its
 * pooling position), chunked when chunk > 0; rows[k] gets text k's logits. */
static int run_texts(struct llm_model *m, const int *which, int n, int pad, int chunk, float *rows)
{
    const struct llm_info *in = llm_get_info(m);
    int NL = in->out_dim, bps = (in->cfg.n_positions + BT - 1) / BT;
    struct llm_seq seqs[MAX_TEXTS];
    int32_t tables[MAX_TEXTS][64];
    int len[MAX_TEXTS], done[MAX_TEXTS] = {0}, map[MAX_TEXTS];
    float *out = malloc(sizeof(float) * (size_t)NL * MAX_TEXTS);
    char err[256];
    for (int k = 0; k < n; k++) {
        len[k] = clf_pool_tokens(texts[which[k]].ids, texts[which[k]].n, pad);
        for (int b = 0; b < bps; b++)
            tables[k][b] = k * bps + b;
    }
    for (;;) {
        int ns = 0;
        for (int k = 0; k < n; k++) {
            if (done[k] >= len[k])
                continue;
            int l = chunk > 0 && len[k] - done[k] > chunk ? chunk : len[k] - done[k];
            seqs[ns] = (struct llm_seq){texts[which[k]].ids + done[k], l, done[k], tables[k], bps,
                                        done[k] + l == len[k] ? LLM_LOGITS_LAST : LLM_LOGITS_NONE};
            map[ns++] = k;
            done[k] += l;
        }
        if (ns == 0)
            break;
        if (llm_forward(m, seqs, ns, out, err, sizeof err) != 0) {
            printf("# forward: %s\n", err);
            free(out);
            return -1;
        }
        int r = 0;
        for (int s = 0; s < ns; s++)
            if (seqs[s].logits == LLM_LOGITS_LAST)
                memcpy(rows + (size_t)map[s] * NL, out + (size_t)(r++) * NL, sizeof(float) * (size_t)NL);
    }
    free(out);
    return 0;
}

static struct llm_model *load(const char *dir, enum llm_device dev, int *pad, char *err, size_t errlen)
{
    struct gpt2_checkpoint *ck;
    if (gpt2_checkpoint_open(dir, &ck, err, errlen) != 0)
        return NULL;
    *pad = ck->cfg.pad_token_id;
    int bps = (ck->cfg.n_positions + BT - 1) / BT;
    struct llm_load_opts lo = {.device = dev, .threads = 2, .kv_block_tokens = BT, .kv_blocks = bps * MAX_TEXTS,
                               .max_step_tokens = 256 * MAX_TEXTS, .max_step_logits = MAX_TEXTS};
    if (lo.max_step_tokens > ck->cfg.n_positions * MAX_TEXTS)
        lo.max_step_tokens = ck->cfg.n_positions * MAX_TEXTS;
    struct llm_model *m = NULL;
    if (llm_load(ck, &lo, &m, err, errlen) != 0)
        m = NULL;
    gpt2_checkpoint_close(ck);
    return m;
}

/* The engine's classification sequences: every text submitted at once (more
 * than max_concurrent, so some wait), EV_SCORES rows equal to the backend's. */
static void test_engine(struct llm_model *m, const char *name, const float *want, int pad,
                        const struct tokenizer *tok)
{
    const struct llm_info *in = llm_get_info(m);
    int NL = in->out_dim;
    struct engine_opts eo = {4, 64, 24, true, 0};
    struct engine *e;
    char err[256] = "";
    if (!ok(engine_start(&e, m, tok, &eo, name, err, sizeof err) == 0, "%s: engine starts%s%s", name,
            err[0] ? ": " : "", err)) {
        llm_free(m);
        return;
    }
    struct eseq_req reqs[MAX_TEXTS];
    for (int k = 0; k < n_texts; k++)
        reqs[k] = (struct eseq_req){.prompt = texts[k].ids, .n_prompt = clf_pool_tokens(texts[k].ids, texts[k].n, pad),
                                    .index = k, .classify = true};
    struct echan *c = echan_new();
    int rc = engine_submit(e, c, reqs, n_texts, err, sizeof err);
    ok(rc == ENGINE_OK, "%s: %d texts submitted at once (max_concurrent 4, steps of 24 tokens)", name, n_texts);
    struct ebatch b = {0};
    int got = 0, errors = 0;
    double worst = 0;
    int64_t until = util_now_ns() + 60 * (int64_t)1000000000;
    while (rc == ENGINE_OK && got + errors < n_texts && util_now_ns() < until) {
        struct pollfd p = {.fd = echan_fd(c), .events = POLLIN};
        if (poll(&p, 1, 1000) <= 0)
            continue;
        echan_take(c, &b);
        for (size_t i = 0; i < b.n; i++) {
            float row[MAX_LABELS];
            if (b.ev[i].kind != EV_SCORES || ebatch_scores(&b, &b.ev[i], row, MAX_LABELS) != NL) {
                errors++;
                continue;
            }
            const float *w = want + (size_t)b.ev[i].index * NL;
            for (int j = 0; j < NL; j++)
                worst = fmax(worst, fabs(row[j] - w[j]));
            got++;
        }
    }
    ok(got == n_texts && errors == 0 && worst <= 1e-5, "%s: %d EV_SCORES rows, as the backend's (%.2g)", name, got,
       worst);
    struct eseq_req gen = {.prompt = texts[0].ids, .n_prompt = texts[0].n};
    gen.params.sampling = sampler_params_default();
    gen.params.max_new_tokens = 1;
    ok(engine_submit(e, c, &gen, 1, err, sizeof err) == ENGINE_EINVAL && strstr(err, "does not generate"),
       "%s: a generation request is refused: %s", name, err);
    struct eseq_req toolong = {.prompt = texts[0].ids, .n_prompt = in->cfg.n_positions + 1, .classify = true};
    int32_t *big = calloc((size_t)in->cfg.n_positions + 1, sizeof *big);
    toolong.prompt = big;
    ok(engine_submit(e, c, &toolong, 1, err, sizeof err) == ENGINE_EINVAL && strstr(err, "context"),
       "%s: a text longer than the context is refused: %s", name, err);
    free(big);
    ebatch_free(&b);
    echan_put(c);
    engine_stop(e);
}

static void test_model(json_object *g, const struct tokenizer *tok)
{
    const char *name = json_object_get_string(json_object_object_get(g, "name"));
    char dir[512], err[512], labels[512];
    snprintf(dir, sizeof dir, "%s/%s", tmp_root, name);
    struct gen_gpt2_opts o;
    gen_opts(&o, g, dir, labels, sizeof labels);
    if (!ok(gen_gpt2_write(&o, err, sizeof err) == 0, "%s: checkpoint generated", name)) {
        printf("# %s\n", err);
        return;
    }
    struct gpt2_checkpoint *ck;
    if (!ok(gpt2_checkpoint_open(dir, &ck, err, sizeof err) == 0, "%s: checkpoint opens", name)) {
        printf("# %s\n", err);
        return;
    }
    const struct gpt2_config *cfg = &ck->cfg;
    ok(cfg->classifier && cfg->num_labels == o.num_labels && cfg->pad_token_id == o.pad_token_id &&
           ck->score.data && !ck->lm_head.data,
       "%s: GPT2ForSequenceClassification, %d labels, pad_token_id %d, a score head and no LM head", name,
       cfg->num_labels, cfg->pad_token_id);
    json_object *ls = json_object_object_get(g, "labels");
    bool same = ck->labels != NULL;
    for (int i = 0; same && i < cfg->num_labels; i++)
        same = !strcmp(ck->labels[i], ls ? json_object_get_string(json_object_array_get_idx(ls, (size_t)i))
                                          : (i ? "LABEL_1" : "LABEL_0"));
    ok(same, "%s: id2label read", name);
    gpt2_checkpoint_close(ck);

    int pad = -1;
    struct llm_model *m = load(dir, LLM_DEVICE_CPU, &pad, err, sizeof err);
    if (!ok(m != NULL, "%s: loads on the CPU backend", name)) {
        printf("# %s\n", err);
        return;
    }
    int NL = llm_get_info(m)->out_dim;
    is_int(NL, o.num_labels, "%s: logits rows are num_labels wide", name);
    json_object *singles = json_object_object_get(g, "singles"), *batches = json_object_object_get(g, "batches");
    float *rows = calloc((size_t)MAX_TEXTS * MAX_LABELS, sizeof *rows);
    float *alone = calloc((size_t)MAX_TEXTS * MAX_LABELS, sizeof *alone);
    double worst = 0;
    int worst_t = 0, rc = 0;
    for (int t = 0; t < n_texts && rc == 0; t++) {
        rc = run_texts(m, &t, 1, pad, 0, alone + (size_t)t * NL);
        double e = row_error(alone + (size_t)t * NL,
                             json_object_object_get(json_object_array_get_idx(singles, (size_t)t), "logits"), NL);
        if (!(e <= worst)) {
            worst = e;
            worst_t = t;
        }
    }
    ok(rc == 0 && worst <= TOL, "%s: %d texts alone: logits within %g of transformers (worst %.2g, text %d)", name,
       n_texts, TOL, worst, worst_t);
    for (size_t bi = 0; bi < json_object_array_length(batches); bi++) {
        json_object *b = json_object_array_get_idx(batches, bi), *bt = json_object_object_get(b, "texts"),
                    *bl = json_object_object_get(b, "logits");
        int which[MAX_TEXTS], n = (int)json_object_array_length(bt);
        for (int k = 0; k < n; k++)
            which[k] = json_object_get_int(json_object_array_get_idx(bt, (size_t)k));
        for (int chunk = 0; chunk <= 3; chunk += 3) {
            rc = run_texts(m, which, n, pad, chunk, rows);
            worst = 0;
            for (int k = 0; k < n && rc == 0; k++) {
                double e = row_error(rows + (size_t)k * NL, json_object_array_get_idx(bl, (size_t)k), NL);
                worst = e > worst || isnan(e) ? e : worst;
            }
            ok(rc == 0 && worst <= TOL,
               "%s: batch %zu (%d texts, padded in transformers) as one step%s: within %g (worst %.2g)", name, bi, n,
               chunk ? ", prefilled in chunks of 3" : "", TOL, worst);
        }
    }
    if (json_object_array_length(batches) == 0)
        ok(1, "%s: no pad_token_id: transformers runs no batches; each text alone above", name);
    /* the scores the pipeline reports, from our logits */
    json_object *pipe = json_object_object_get(g, "pipeline");
    enum clf_fn fn = clf_function(&llm_get_info(m)->cfg);
    double sworst = 0;
    bool order_ok = true;
    for (int t = 0; t < n_texts; t++) {
        double s[MAX_LABELS];
        int order[MAX_LABELS];
        clf_scores(fn, alone + (size_t)t * NL, NL, s);
        clf_rank(s, NL, order);
        json_object *want = json_object_array_get_idx(pipe, (size_t)t);
        for (int k = 0; k < NL; k++) {
            json_object *w = json_object_array_get_idx(want, (size_t)k);
            sworst = fmax(sworst, fabs(s[order[k]] - json_object_get_double(json_object_object_get(w, "score"))));
            const char *wl = json_object_get_string(json_object_object_get(w, "label"));
            char lb[32];
            snprintf(lb, sizeof lb, "LABEL_%d", order[k]);
            const char *ours = ls ? json_object_get_string(json_object_array_get_idx(ls, (size_t)order[k])) : lb;
            order_ok &= !strcmp(wl, ours) || fabs(s[order[k]] - json_object_get_double(json_object_object_get(
                                                                    w, "score"))) < 1e-6;
        }
    }
    ok(sworst <= 1e-5 && order_ok, "%s: %s scores and their order as the text-classification pipeline's (%.2g)",
       name, clf_function_name(fn), sworst);
    test_engine(m, name, alone, pad, tok);          /* takes m over */
    free(rows);
    free(alone);
    scratch_remove(dir);
}

/* The CUDA backend's score head against the CPU one (run only with a device). */
static void test_cuda(json_object *models)
{
    struct gpu_info gi;
    gpu_probe(&gi, false);
#ifndef HAVE_CUDA
    printf("ok %d # SKIP CUDA classifiers: %s\n", ++tap_count, gi.error[0] ? gi.error : "built without CUDA");
    (void)models;
#else
    if (gi.devices == 0) {
        printf("ok %d # SKIP CUDA classifiers: no CUDA device (%s)\n", ++tap_count, gi.error);
        return;
    }
    for (size_t k = 0; k < json_object_array_length(models); k++) {
        json_object *g = json_object_array_get_idx(models, k);
        const char *name = json_object_get_string(json_object_object_get(g, "name"));
        char dir[512], err[512], labels[512];
        snprintf(dir, sizeof dir, "%s/cuda-%s", tmp_root, name);
        struct gen_gpt2_opts o;
        gen_opts(&o, g, dir, labels, sizeof labels);
        int pad = -1;
        struct llm_model *cpu = NULL, *gpu = NULL;
        if (gen_gpt2_write(&o, err, sizeof err) == 0)
            cpu = load(dir, LLM_DEVICE_CPU, &pad, err, sizeof err);
        if (cpu)
            gpu = load(dir, LLM_DEVICE_CUDA, &pad, err, sizeof err);
        if (!ok(cpu && gpu, "cuda %s: loads: %s", name, gpu ? "" : err)) {
            llm_free(cpu);
            continue;
        }
        int which[MAX_TEXTS], NL = llm_get_info(cpu)->out_dim;
        for (int t = 0; t < n_texts; t++)
            which[t] = t;
        float *a = calloc((size_t)MAX_TEXTS * MAX_LABELS, sizeof *a), *b = calloc((size_t)MAX_TEXTS * MAX_LABELS, sizeof *b);
        int rc = run_texts(cpu, which, n_texts, pad, 0, a) | run_texts(gpu, which, n_texts, pad, 5, b);
        double d = 0, s = 0;
        for (int i = 0; i < n_texts * NL; i++) {
            d = fmax(d, fabs(a[i] - b[i]));
            s = fmax(s, fabs(a[i]));
        }
        ok(rc == 0 && d / s <= 1e-4, "cuda %s: %d texts as one step, as the CPU's (%.2g)", name, n_texts, d / s);
        free(a);
        free(b);
        llm_free(cpu);
        llm_free(gpu);
        scratch_remove(dir);
    }
#endif
}

/* ------------------------------------------------------------------ embeddings */

static void test_embed_helpers(void)
{
    enum emb_pool p = EMB_NONE;
    ok(emb_pool_parse("mean", &p) == 0 && p == EMB_MEAN && emb_pool_parse("last", &p) == 0 && p == EMB_LAST &&
       emb_pool_parse("max", &p) == -1 && !strcmp(emb_pool_name(EMB_MEAN), "mean"), "pooling names parse");
    /* three rows of two, read in two chunks (2 + 1), as the engine reads a long text */
    float rows[] = {1, 2, 3, 4, 5, 9}, out[2];
    double acc[2] = {0, 0};
    emb_pool_rows(EMB_MEAN, acc, rows, 2, 2);
    emb_pool_rows(EMB_MEAN, acc, rows + 4, 1, 2);
    emb_pool_finish(EMB_MEAN, acc, 3, 2, out);
    ok(out[0] == 3.0f && out[1] == 5.0f, "mean over chunks: (%g, %g)", out[0], out[1]);
    double last[2] = {0, 0};
    emb_pool_rows(EMB_LAST, last, rows, 2, 2);
    emb_pool_rows(EMB_LAST, last, rows + 4, 1, 2);
    emb_pool_finish(EMB_LAST, last, 3, 2, out);
    ok(out[0] == 5.0f && out[1] == 9.0f, "last: the last chunk's last row: (%g, %g)", out[0], out[1]);
    float v[] = {3, 4}, z[] = {0, 0}, tiny[] = {1e-30f, 0};
    emb_normalize(v, 2);
    emb_normalize(z, 2);
    emb_normalize(tiny, 2);
    ok(fabsf(v[0] - 0.6f) < 1e-7f && fabsf(v[1] - 0.8f) < 1e-7f, "normalize: unit length (%g, %g)", v[0], v[1]);
    ok(z[0] == 0 && z[1] == 0 && tiny[0] < 1e-17f, "normalize: zero stays zero, the norm floored at 1e-12 as torch does");
}

/* The texts of the embeddings golden through one engine on device dev,
 * each pooled by `pool`, into out (n x C). Returns how many came back. */
static int embed_run(const char *dir, enum llm_device dev, const struct tokenizer *tok, enum emb_pool pool,
                     const struct text *tx, int n, int rounds, float *out, char *err, size_t errlen)
{
    int pad;
    struct llm_model *m = load(dir, dev, &pad, err, errlen);
    if (!m)
        return -1;
    int C = llm_get_info(m)->cfg.n_embd;
    struct engine_opts eo = {3, 64, 24, true, 0};   /* long texts read in chunks; some texts wait; prefix cache on */
    struct engine *e;
    if (engine_start(&e, m, tok, &eo, "emb", err, errlen) != 0) {
        llm_free(m);
        return -1;
    }
    struct eseq_req reqs[MAX_TEXTS];
    for (int k = 0; k < n; k++)
        reqs[k] = (struct eseq_req){.prompt = tx[k].ids, .n_prompt = tx[k].n, .index = k, .embed = pool};
    int got = 0;
    for (int round = 0; round < rounds; round++) {     /* round 2: the prefix cache holds every text */
        struct echan *c = echan_new();
        struct ebatch b = {0};
        int here = 0;
        if (engine_submit(e, c, reqs, n, err, errlen) == ENGINE_OK) {
            int64_t until = util_now_ns() + 60 * (int64_t)1000000000;
            while (here < n && util_now_ns() < until) {
                struct pollfd p = {.fd = echan_fd(c), .events = POLLIN};
                if (poll(&p, 1, 1000) <= 0)
                    continue;
                echan_take(c, &b);
                for (size_t i = 0; i < b.n; i++) {
                    float *row = out + (size_t)b.ev[i].index * C;
                    if (b.ev[i].kind == EV_SCORES && ebatch_scores(&b, &b.ev[i], row, C) == C)
                        here++;
                    else
                        snprintf(err, errlen, "event %d: %s", b.ev[i].kind, ebatch_text(&b, &b.ev[i]));
                }
            }
        }
        got = round == 0 || here < got ? here : got;
        ebatch_free(&b);
        echan_put(c);
    }
    engine_stop(e);
    return got;
}

static void test_embeddings(enum llm_device dev, const struct tokenizer *tok)
{
    const char *src = getenv("LLMCGI_SRCDIR"), *dn = dev == LLM_DEVICE_CUDA ? "cuda" : "cpu";
    char path[1024], err[512] = "", labels[8];
    snprintf(path, sizeof path, "%s/tests/golden/embeddings_golden.json", src ? src : ".");
    json_object *root = json_object_from_file(path);
    if (!ok(root != NULL, "%s: embeddings golden file %s reads", dn, path))
        return;
    json_object *g = json_object_object_get(root, "model"), *recs = json_object_object_get(root, "texts");
    int n = (int)json_object_array_length(recs), C = json_object_get_int(json_object_object_get(g, "embd"));
    static struct text tx[MAX_TEXTS];
    n = n > MAX_TEXTS ? MAX_TEXTS : n;
    for (int t = 0; t < n; t++) {
        json_object *ids = json_object_object_get(json_object_array_get_idx(recs, (size_t)t), "ids");
        tx[t].n = (int)json_object_array_length(ids);
        for (int i = 0; i < tx[t].n && i < 256; i++)
            tx[t].ids[i] = json_object_get_int(json_object_array_get_idx(ids, (size_t)i));
    }
    snprintf(path, sizeof path, "%s/emb-%s", tmp_root, dn);
    struct gen_gpt2_opts o;
    gen_opts(&o, g, path, labels, sizeof labels);
    if (!ok(gen_gpt2_write(&o, err, sizeof err) == 0, "%s: the embeddings checkpoint is written%s", dn, err)) {
        json_object_put(root);
        return;
    }
    float *v = calloc((size_t)n * (size_t)C, sizeof *v);
    static const struct { enum emb_pool pool; const char *key, *norm_key; } kinds[] = {
        {EMB_MEAN, "mean", "mean_normalized"}, {EMB_LAST, "last", "last_normalized"}};
    for (size_t k = 0; v && k < 2; k++) {
        int got = embed_run(path, dev, tok, kinds[k].pool, tx, n, 2, v, err, sizeof err);
        double worst = 0, worst_norm = 0;
        for (int t = 0; got == n && t < n; t++) {
            json_object *rec = json_object_array_get_idx(recs, (size_t)t);
            float *row = v + (size_t)t * C;
            worst = fmax(worst, row_error(row, json_object_object_get(rec, kinds[k].key), C));
            emb_normalize(row, C);
            worst_norm = fmax(worst_norm, row_error(row, json_object_object_get(rec, kinds[k].norm_key), C));
        }
        ok(got == n && worst <= TOL && worst_norm <= TOL,
           "%s: %s pooling of %d texts (chunks of 24 tokens, twice: the second time from a warm prefix cache) "
           "equals GPT2Model's (%.2g; normalised %.2g)%s%s", dn, kinds[k].key, n, worst, worst_norm,
           err[0] ? ": " : "", err);
    }
    free(v);
    scratch_remove(path);
    json_object_put(root);
}

static void test_cuda_embeddings(const struct tokenizer *tok)
{
    struct gpu_info gi;
    gpu_probe(&gi, false);
#ifndef HAVE_CUDA
    printf("ok %d # SKIP CUDA embeddings: %s\n", ++tap_count, gi.error[0] ? gi.error : "built without CUDA");
    (void)tok;
#else
    if (gi.devices == 0) {
        printf("ok %d # SKIP CUDA embeddings: no CUDA device (%s)\n", ++tap_count, gi.error);
        return;
    }
    test_embeddings(LLM_DEVICE_CUDA, tok);
#endif
}

int main(void)
{
    const char *src = getenv("LLMCGI_SRCDIR");
    char path[1024], err[512];
    test_helpers();
    snprintf(path, sizeof path, "%s/tests/golden/classifier_golden.json", src ? src : ".");
    json_object *root = json_object_from_file(path);
    if (!ok(root != NULL, "golden file %s reads", path))
        return tap_done();
    struct tokenizer *tok = NULL;
    snprintf(path, sizeof path, "%s/tests/fixtures/gpt2-tokenizer", src ? src : ".");
    if (!ok(tokenizer_load_dir(path, &tok, err, sizeof err) == 0, "tokenizer loads from %s", path)) {
        printf("# %s\n", err);
        json_object_put(root);
        return tap_done();
    }
    if (scratch_make(tmp_root, sizeof tmp_root, "llmcgi-classify") != 0)
        return printf("Bail out! mkdtemp failed\n"), 1;
    json_object *models = json_object_object_get(root, "models");
    json_object *singles = json_object_object_get(json_object_array_get_idx(models, 0), "singles");
    n_texts = (int)json_object_array_length(singles);
    if (n_texts > MAX_TEXTS)
        n_texts = MAX_TEXTS;
    int tok_same = 0;
    json_object *ttexts = json_object_object_get(root, "texts");
    for (int t = 0; t < n_texts; t++) {
        json_object *ids = json_object_object_get(json_object_array_get_idx(singles, (size_t)t), "ids");
        texts[t].n = (int)json_object_array_length(ids);
        for (int i = 0; i < texts[t].n && i < 256; i++)
            texts[t].ids[i] = json_object_get_int(json_object_array_get_idx(ids, (size_t)i));
        const char *s = json_object_get_string(json_object_array_get_idx(ttexts, (size_t)t));
        int32_t *mine = NULL;
        size_t n = 0;
        if (tokenizer_encode(tok, s, strlen(s), true, &mine, &n) == TOKENIZER_OK && (int)n == texts[t].n &&
            !memcmp(mine, texts[t].ids, n * sizeof *mine))
            tok_same++;
        free(mine);
    }
    is_int(tok_same, n_texts, "the tokenizer gives transformers' ids for the %d texts", n_texts);
    test_bad_configs();
    for (size_t k = 0; k < json_object_array_length(models); k++)
        test_model(json_object_array_get_idx(models, k), tok);
    test_cuda(models);
    test_embed_helpers();
    test_embeddings(LLM_DEVICE_CPU, tok);
    test_cuda_embeddings(tok);
    scratch_remove(tmp_root);
    tokenizer_free(tok);
    json_object_put(root);
    return tap_done();
}
