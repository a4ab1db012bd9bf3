/* tap.h -- a minimal TAP producer for the C unit tests; automake's tap-driver counts every case. */
#ifndef LLMCGI_TAP_H
#define LLMCGI_TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tap_count, tap_failures;

static void tap_result(int pass, const char *file, int line, const char *fmt, va_list ap)
{
    printf("%s %d - ", pass ? "ok" : "not ok", ++tap_count);
    vprintf(fmt, ap);
    printf("\n");
    if (!pass) {
        tap_failures++;
        printf("#   failed at %s:%d\n", file, line);
    }
    fflush(stdout);
}

static int tap_ok_at(int pass, const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int tap_ok_at(int pass, const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tap_result(pass, file, line, fmt, ap);
    va_end(ap);
    return pass;
}

/* ok(condition, "description %d", ...) */
#define ok(cond, ...) tap_ok_at(!!(cond), __FILE__, __LINE__, __VA_ARGS__)

/* is_int(got, want, "description") shows both values when they differ. */
#define is_int(got, want, ...)                                                                 \
    do {                                                                                       \
        long long g_ = (long long)(got), w_ = (long long)(want);                               \
        if (!tap_ok_at(g_ == w_, __FILE__, __LINE__, __VA_ARGS__))                             \
            printf("#   got %lld, want %lld\n", g_, w_);                                       \
    } while (0)

/* is_str(got, want, "description"); NULL is a value of its own. */
#define is_str(got, want, ...)                                                                 \
    do {                                                                                       \
        const char *g_ = (got), *w_ = (want);                                                  \
        int same_ = (g_ == NULL || w_ == NULL) ? g_ == w_ : strcmp(g_, w_) == 0;               \
        if (!tap_ok_at(same_, __FILE__, __LINE__, __VA_ARGS__))                                \
            printf("#   got \"%s\", want \"%s\"\n", g_ ? g_ : "(null)", w_ ? w_ : "(null)");  \
    } while (0)

/* has_str(haystack, needle, "description") */
#define has_str(hay, needle, ...)                                                              \
    do {                                                                                       \
        const char *h_ = (hay), *n_ = (needle);                                                \
        if (!tap_ok_at(h_ && strstr(h_, n_) != NULL, __FILE__, __LINE__, __VA_ARGS__))         \
            printf("#   \"%s\" does not contain \"%s\"\n", h_ ? h_ : "(null)", n_);            \
    } while (0)

static void tap_diag(const char *fmt, ...) __attribute__((format(printf, 1, 2), unused));
static void tap_diag(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("# ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}

/* Ends the test program: prints the plan; the exit status is 0 so that
 * failures count once, as "not ok" lines. */
static int tap_done(void)
{
    printf("1..%d\n", tap_count);
    return 0;
}

/* The whole program has nothing to test here (e.g. no GPU). */
__attribute__((unused)) static void tap_skip_all(const char *reason)
{
    printf("1..0 # SKIP %s\n", reason);
    exit(0);
}

#endif
