/* categories.c -- the moderation categories of a classifier: the `categories` syntax ("CATEGORY=LABEL[,LABEL...] ...") and the label sets it names. */
#ifndef LLMCGI_CATEGORIES_H
#define LLMCGI_CATEGORIES_H

#include <stdbool.h>
#include <stddef.h>

struct clf_category {
    char *name;                 /* owned */
    int *labels;                /* label indices; owned */
    int n_labels;
};

struct clf_categories {
    struct clf_category *cat;   /* owned */
    int n;
};

/* Builds the categories of a moderation model. spec is the config's
 * `categories` ("CATEGORY=LABEL[,LABEL...] ..." separated by spaces), or
 * NULL: every label that `safe` (labels separated by spaces or commas; may
 * be NULL) does not name is a category of its own name. With labels NULL
 * only the syntax is checked (the config parser, before any model is
 * read); else every label named must be one of the model's n_labels. On
 * success *out is filled (free with clf_categories_free) and 0 returned;
 * -1 with err otherwise. */
int clf_categories_parse(const char *spec, const char *safe, char *const *labels, int n_labels,
                         struct clf_categories *out, char *err, size_t errlen);
void clf_categories_free(struct clf_categories *c);

#endif
