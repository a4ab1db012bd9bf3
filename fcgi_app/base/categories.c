/* categories.c -- the moderation categories of a classifier: the `categories` syntax ("CATEGORY=LABEL[,LABEL...] ...") and the label sets it names. */
#include "config.h"
#include "categories.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CATEGORIES 256

void clf_categories_free(struct clf_categories *c)
{
    for (int i = 0; c->cat && i < c->n; i++) {
        free(c->cat[i].name);
        free(c->cat[i].labels);
    }
    free(c->cat);
    c->cat = NULL;
    c->n = 0;
}

static int find_label(char *const *labels, int n, const char *s, size_t len)
{
    for (int i = 0; i < n; i++)
        if (strlen(labels[i]) == len && memcmp(labels[i], s, len) == 0)
            return i;
    return -1;
}

/* Is s[0..len) among the words of list (spaces or commas between)? */
static bool in_list(const char *list, const char *s, size_t len)
{
    while (list && *list) {
        list += strspn(list, " \t,");
        size_t l = strcspn(list, " \t,");
        if (l == len && memcmp(list, s, len) == 0)
            return true;
        list += l;
    }
    return false;
}

static int add_category(struct clf_categories *c, const char *name, size_t len, char *err, size_t errlen)
{
    if (c->n >= MAX_CATEGORIES) {
        snprintf(err, errlen, "categories: more than %d categories", MAX_CATEGORIES);
        return -1;
    }
    for (int i = 0; i < c->n; i++)
        if (strlen(c->cat[i].name) == len && memcmp(c->cat[i].name, name, len) == 0) {
            snprintf(err, errlen, "categories: \"%.*s\" is named twice", (int)len, name);
            return -1;
        }
    struct clf_category *g = realloc(c->cat, (size_t)(c->n + 1) * sizeof *g);
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    c->cat = g;
    struct clf_category *k = &c->cat[c->n];
    memset(k, 0, sizeof *k);
    if (!(k->name = strndup(name, len))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    c->n++;
    return 0;
}

static int add_label(struct clf_category *k, int label, char *err, size_t errlen)
{
    for (int i = 0; i < k->n_labels; i++)
        if (k->labels[i] == label)
            return 0;
    int *g = realloc(k->labels, (size_t)(k->n_labels + 1) * sizeof *g);
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    k->labels = g;
    k->labels[k->n_labels++] = label;
    return 0;
}

int clf_categories_parse(const char *spec, const char *safe, char *const *labels, int n_labels,
                         struct clf_categories *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (safe && labels) {
        for (const char *s = safe; *s;) {
            s += strspn(s, " \t,");
            size_t l = strcspn(s, " \t,");
            if (l && find_label(labels, n_labels, s, l) < 0) {
                snprintf(err, errlen, "safe_labels: the model has no label \"%.*s\"", (int)l, s);
                return -1;
            }
            s += l;
        }
    }
    if (!spec) {
        if (!labels)
            return 0;
        for (int i = 0; i < n_labels; i++) {
            if (in_list(safe, labels[i], strlen(labels[i])))
                continue;
            if (add_category(out, labels[i], strlen(labels[i]), err, errlen) < 0 ||
                add_label(&out->cat[out->n - 1], i, err, errlen) < 0) {
                clf_categories_free(out);
                return -1;
            }
        }
        if (out->n == 0) {
            snprintf(err, errlen, "safe_labels names every label of the model: nothing is left to flag");
            return -1;
        }
        return 0;
    }
    for (const char *s = spec; *s;) {
        s += strspn(s, " \t");
        size_t len = strcspn(s, " \t");
        if (!len)
            break;
        const char *eq = memchr(s, '=', len);
        if (!eq || eq == s || eq + 1 == s + len) {
            snprintf(err, errlen, "categories: \"%.*s\" is not CATEGORY=LABEL[,LABEL...]", (int)len, s);
            goto fail;
        }
        if (add_category(out, s, (size_t)(eq - s), err, errlen) < 0)
            goto fail;
        struct clf_category *k = &out->cat[out->n - 1];
        for (const char *l = eq + 1; l < s + len;) {
            size_t ll = strcspn(l, ",");
            if (l + ll > s + len)
                ll = (size_t)(s + len - l);
            if (ll == 0) {
                snprintf(err, errlen, "categories: \"%.*s\" has an empty label", (int)len, s);
                goto fail;
            }
            if (labels) {
                int i = find_label(labels, n_labels, l, ll);
                if (i < 0) {
                    snprintf(err, errlen, "categories: the model has no label \"%.*s\" (category %s)", (int)ll, l,
                             k->name);
                    goto fail;
                }
                if (add_label(k, i, err, errlen) < 0)
                    goto fail;
            }
            l += ll + 1;
        }
        s += len;
    }
    if (out->n == 0) {
        snprintf(err, errlen, "categories: no CATEGORY=LABEL given");
        goto fail;
    }
    if (!labels)
        clf_categories_free(out);
    return 0;
fail:
    clf_categories_free(out);
    return -1;
}
