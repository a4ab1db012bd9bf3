/* stopseq.c -- streaming stop-sequence matcher: one KMP automaton per stop string, a held-back tail, earliest completion wins. */
#include "config.h"
#include "stopseq.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct stopseq {
    size_t n;
    char *str[STOPSEQ_MAX];
    size_t len[STOPSEQ_MAX];
    uint16_t *fail[STOPSEQ_MAX];    /* KMP failure function of each string */
    size_t state[STOPSEQ_MAX];      /* longest prefix of str[i] ending the text seen so far */

    /* buf[0..held) is the held-back tail; a feed appends the delta and hands
     * out buf[0..out) (so the pointer stays valid until the next call), the
     * next call first moves buf[out..len) to the front. */
    char *buf;
    size_t len_buf, cap, out;
    size_t emitted;                 /* bytes handed out before buf[0] */
    bool stopped, finished;
};

/* The length of stop string i (stopseq_validate's rule). */
static size_t stop_len(const char *const *stops, const size_t *lens, size_t i)
{
    return !stops || !stops[i] ? 0 : lens && lens[i] ? lens[i] : strlen(stops[i]);
}

int stopseq_validate(const char *const *stops, const size_t *lens, size_t n, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (n > STOPSEQ_MAX) {
        if (err && errlen)
            snprintf(err, errlen, "stop: at most %d stop sequences are allowed (got %zu)", STOPSEQ_MAX, n);
        return STOPSEQ_ERR_INVAL;
    }
    for (size_t i = 0; i < n; i++) {
        size_t l = stop_len(stops, lens, i);
        if (l == 0 || l > STOPSEQ_MAX_LEN) {
            if (err && errlen)
                snprintf(err, errlen, "stop: stop sequence %zu must be 1 to %d bytes long (got %zu)", i,
                         STOPSEQ_MAX_LEN, l);
            return STOPSEQ_ERR_INVAL;
        }
    }
    return STOPSEQ_OK;
}

struct stopseq *stopseq_new(const char *const *stops, const size_t *lens, size_t n)
{
    if (stopseq_validate(stops, lens, n, NULL, 0) != STOPSEQ_OK) {
        errno = EINVAL;
        return NULL;
    }
    struct stopseq *ss = calloc(1, sizeof *ss);
    if (!ss) {
        errno = ENOMEM;
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        size_t l = stop_len(stops, lens, i);
        ss->str[i] = malloc(l + 1);
        ss->fail[i] = malloc((l + 1) * sizeof *ss->fail[i]);
        ss->n = i + 1;
        if (!ss->str[i] || !ss->fail[i]) {
            stopseq_free(ss);
            errno = ENOMEM;
            return NULL;
        }
        memcpy(ss->str[i], stops[i], l);
        ss->str[i][l] = '\0';
        ss->len[i] = l;
        /* KMP: fail[k] = length of the longest proper prefix of str[0..k)
         * that is also its suffix (fail[0] = fail[1] = 0). */
        const char *p = ss->str[i];
        uint16_t *f = ss->fail[i];
        f[0] = 0;
        if (l >= 1)
            f[1] = 0;
        size_t k = 0;
        for (size_t q = 1; q < l; q++) {
            while (k > 0 && p[q] != p[k])
                k = f[k];
            if (p[q] == p[k])
                k++;
            f[q + 1] = (uint16_t)k;
        }
    }
    return ss;
}

void stopseq_free(struct stopseq *ss)
{
    if (!ss)
        return;
    for (size_t i = 0; i < ss->n; i++) {
        free(ss->str[i]);
        free(ss->fail[i]);
    }
    free(ss->buf);
    free(ss);
}

static void result_none(struct stopseq_result *res)
{
    res->text = "";
    res->len = 0;
    res->stopped = false;
    res->which = -1;
    res->offset = 0;
}

int stopseq_feed(struct stopseq *ss, const char *delta, size_t len, struct stopseq_result *res)
{
    result_none(res);
    if (ss->stopped || ss->finished)
        return STOPSEQ_OK;

    /* Drop what the last call handed out; make room for the delta. */
    if (ss->out) {
        memmove(ss->buf, ss->buf + ss->out, ss->len_buf - ss->out);
        ss->len_buf -= ss->out;
        ss->emitted += ss->out;
        ss->out = 0;
    }
    if (ss->len_buf + len > ss->cap) {
        size_t cap = ss->cap ? ss->cap : 256;
        while (cap < ss->len_buf + len)
            cap *= 2;
        char *nb = realloc(ss->buf, cap);
        if (!nb)
            return STOPSEQ_ERR_NOMEM;
        ss->buf = nb;
        ss->cap = cap;
    }
    if (len)
        memcpy(ss->buf + ss->len_buf, delta, len);
    size_t base = ss->len_buf;
    ss->len_buf += len;

    /* Run every automaton over the delta; the first byte that completes one
     * ends the text. A match in progress is never longer than the held tail
     * (that tail is the longest such prefix), so every match starts in buf. */
    for (size_t q = 0; q < len; q++) {
        const char ch = delta[q];
        size_t best = 0;
        int which = -1;
        for (size_t i = 0; i < ss->n; i++) {
            const char *p = ss->str[i];
            size_t st = ss->state[i];      /* < len[i]: a completed match has stopped us */
            while (st > 0 && p[st] != ch)
                st = ss->fail[i][st];
            if (p[st] == ch)
                st++;
            ss->state[i] = st;
            if (st == ss->len[i] && st > best) {    /* same end: the longest starts first */
                best = st;
                which = (int)i;
            }
        }
        if (which >= 0) {
            size_t start = base + q + 1 - best;
            ss->stopped = true;
            ss->len_buf = start;
            ss->out = start;
            res->text = ss->buf;
            res->len = start;
            res->stopped = true;
            res->which = which;
            res->offset = ss->emitted + start;
            return STOPSEQ_OK;
        }
    }

    /* Hold back the longest tail that could still grow into a stop string. */
    size_t hold = 0;
    for (size_t i = 0; i < ss->n; i++)
        hold = ss->state[i] > hold ? ss->state[i] : hold;
    ss->out = ss->len_buf - hold;
    res->text = ss->buf;
    res->len = ss->out;
    return STOPSEQ_OK;
}

void stopseq_finish(struct stopseq *ss, struct stopseq_result *res)
{
    result_none(res);
    if (ss->stopped || ss->finished)
        return;
    ss->finished = true;
    if (ss->out) {
        memmove(ss->buf, ss->buf + ss->out, ss->len_buf - ss->out);
        ss->len_buf -= ss->out;
        ss->emitted += ss->out;
    }
    ss->out = ss->len_buf;
    res->text = ss->len_buf ? ss->buf : "";
    res->len = ss->len_buf;
}
