/* test_stopseq.c -- stop sequences: every way of cutting a text into deltas gives the one-shot result; edge cases. */
#include "config.h"
#include "stopseq.h"
#include "tap.h"

#include <errno.h>
#include <stdint.h>

/* The reference: the first byte e at which some stop string ends; of those
 * ending there the longest. Returns its start, or -1 (which = -1). */
static long reference(const char *const *stops, size_t n, const char *text, size_t len, int *which)
{
    *which = -1;
    for (size_t e = 1; e <= len; e++) {
        size_t best = 0;
        for (size_t i = 0; i < n; i++) {
            size_t l = strlen(stops[i]);
            if (l <= e && l > best && memcmp(text + e - l, stops[i], l) == 0) {
                best = l;
                *which = (int)i;
            }
        }
        if (best)
            return (long)(e - best);
    }
    return -1;
}

struct outcome {
    char text[1024];
    size_t len;
    bool stopped;
    int which;
    size_t offset;
    bool bad;           /* an invariant broke on the way */
};

static void take(struct outcome *o, const struct stopseq_result *r)
{
    if (o->len + r->len >= sizeof o->text) {
        o->bad = true;
        return;
    }
    memcpy(o->text + o->len, r->text, r->len);
    o->len += r->len;
    if (r->stopped) {
        if (o->stopped)
            o->bad = true;
        o->stopped = true;
        o->which = r->which;
        o->offset = r->offset;
    }
}

/* Feeds text cut at the positions whose bit is set in cuts (bit i: a cut
 * after byte i), then finishes. */
static struct outcome run_cuts(const char *const *stops, size_t n, const char *text, size_t len, uint64_t cuts)
{
    struct outcome o = {.which = -1};
    struct stopseq *ss = stopseq_new(stops, NULL, n);
    if (!ss) {
        o.bad = true;
        return o;
    }
    size_t maxlen = 0;
    for (size_t i = 0; i < n; i++)
        maxlen = strlen(stops[i]) > maxlen ? strlen(stops[i]) : maxlen;
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        if (i + 1 == len || (cuts >> i & 1)) {
            struct stopseq_result r;
            if (stopseq_feed(ss, text + start, i + 1 - start, &r) != STOPSEQ_OK)
                o.bad = true;
            take(&o, &r);
            /* held back: never more than a stop string minus one byte */
            if (!o.stopped && (i + 1) - o.len > (maxlen ? maxlen - 1 : 0))
                o.bad = true;
            start = i + 1;
        }
    }
    struct stopseq_result r;
    stopseq_finish(ss, &r);
    take(&o, &r);
    stopseq_feed(ss, "more", 4, &r);    /* after the end: nothing */
    if (r.len || r.stopped)
        o.bad = true;
    stopseq_free(ss);
    return o;
}

/* Every way to cut text into deltas (up to 2^(len-1) of them, or a sample
 * of 4096 for longer texts) agrees with the reference. */
static void check_all_splits(const char *what, const char *const *stops, size_t n, const char *text)
{
    size_t len = strlen(text);
    int which;
    long start = reference(stops, n, text, len, &which);
    size_t want_len = start < 0 ? len : (size_t)start;
    uint64_t ways = len > 1 && len <= 13 ? (uint64_t)1 << (len - 1) : 4096;
    uint64_t rnd = 0x9e3779b97f4a7c15ull;
    size_t fails = 0;
    for (uint64_t cuts = 0; cuts < ways; cuts++) {
        uint64_t c = cuts;
        if (len > 13) {
            rnd ^= rnd << 13;
            rnd ^= rnd >> 7;
            rnd ^= rnd << 17;
            c = cuts == 0 ? 0 : cuts == 1 ? ~0ull : rnd & rnd >> 3;
        }
        struct outcome o = run_cuts(stops, n, text, len, c);
        bool good = !o.bad && o.len == want_len && memcmp(o.text, text, want_len) == 0 &&
                    o.stopped == (start >= 0) && o.which == which && (start < 0 || o.offset == (size_t)start);
        if (!good && fails++ == 0)
            printf("# %s: cuts %#llx: got \"%.*s\" stopped %d which %d offset %zu; want \"%.*s\" which %d at %ld\n",
                   what, (unsigned long long)c, (int)o.len, o.text, o.stopped, o.which, o.offset, (int)want_len,
                   text, which, start);
    }
    char shown[200];
    size_t k = 0;
    for (const char *c = text; *c && k + 3 < sizeof shown; c++) {
        if (*c == '\n') {
            shown[k++] = '\\';
            shown[k++] = 'n';
        } else {
            shown[k++] = *c;
        }
    }
    shown[k] = '\0';
    ok(fails == 0, "%s: %llu splits of \"%s\" give %s", what, (unsigned long long)ways, shown,
       start < 0 ? "no stop" : "the one-shot stop");
}

#define STOPS(...) ((const char *const[]){__VA_ARGS__}), sizeof((const char *const[]){__VA_ARGS__}) / sizeof(char *)

static void test_validate(void)
{
    char err[160];
    const char *four[] = {"a", "b", "c", "d"}, *five[] = {"a", "b", "c", "d", "e"};
    ok(stopseq_validate(four, NULL, 4, err, sizeof err) == STOPSEQ_OK && err[0] == '\0', "four stop sequences are fine");
    ok(stopseq_validate(five, NULL, 5, err, sizeof err) == STOPSEQ_ERR_INVAL && strstr(err, "at most 4"),
       "five are refused: \"%s\"", err);
    const char *empty[] = {"a", ""};
    ok(stopseq_validate(empty, NULL, 2, err, sizeof err) == STOPSEQ_ERR_INVAL && strstr(err, "stop sequence 1"),
       "an empty one is refused: \"%s\"", err);
    const char *null[] = {NULL};
    ok(stopseq_validate(null, NULL, 1, err, sizeof err) == STOPSEQ_ERR_INVAL, "NULL is refused");
    char big[STOPSEQ_MAX_LEN + 2];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    const char *toolong[] = {big};
    ok(stopseq_validate(toolong, NULL, 1, err, sizeof err) == STOPSEQ_ERR_INVAL && strstr(err, "1 to 256 bytes"),
       "257 bytes are refused: \"%s\"", err);
    big[STOPSEQ_MAX_LEN] = '\0';
    ok(stopseq_validate(toolong, NULL, 1, err, sizeof err) == STOPSEQ_OK, "256 bytes are fine");
    ok(stopseq_validate(NULL, NULL, 0, err, sizeof err) == STOPSEQ_OK, "none is fine");
    errno = 0;
    ok(stopseq_new(five, NULL, 5) == NULL && errno == EINVAL, "stopseq_new refuses invalid ones (EINVAL)");
}

static void test_streaming(void)
{
    struct stopseq_result r;
    const char *end[] = {"END"};
    struct stopseq *ss = stopseq_new(end, NULL, 1);
    stopseq_feed(ss, "the E", 5, &r);
    ok(r.len == 4 && memcmp(r.text, "the ", 4) == 0 && !r.stopped, "\"the E\": emits \"the \", holds \"E\"");
    stopseq_feed(ss, "N", 1, &r);
    ok(r.len == 0 && !r.stopped, "\"N\": holds \"EN\"");
    stopseq_feed(ss, "d of it", 7, &r);
    ok(r.len == 9 && memcmp(r.text, "ENd of it", 9) == 0, "\"d of it\": releases \"ENd of it\"");
    stopseq_feed(ss, " EN", 3, &r);
    ok(r.len == 1 && r.text[0] == ' ', "\" EN\": holds \"EN\" again");
    stopseq_finish(ss, &r);
    ok(r.len == 2 && memcmp(r.text, "EN", 2) == 0 && !r.stopped, "finish releases the held \"EN\"");
    stopseq_finish(ss, &r);
    ok(r.len == 0, "a second finish gives nothing");
    stopseq_free(ss);

    ss = stopseq_new(end, NULL, 1);
    stopseq_feed(ss, "abc E", 5, &r);
    stopseq_feed(ss, "NDxyz", 5, &r);
    ok(r.stopped && r.which == 0 && r.offset == 4 && r.len == 0, "a stop across deltas: stopped at offset 4");
    stopseq_feed(ss, "more", 4, &r);
    ok(r.len == 0 && !r.stopped, "after the stop nothing more comes out");
    stopseq_finish(ss, &r);
    ok(r.len == 0 && !r.stopped, "nor from finish");
    stopseq_free(ss);

    ss = stopseq_new(NULL, NULL, 0);
    stopseq_feed(ss, "anything at all", 15, &r);
    ok(r.len == 15 && !r.stopped, "no stop strings: everything passes at once");
    stopseq_feed(ss, "", 0, &r);
    ok(r.len == 0, "an empty delta is fine");
    stopseq_free(ss);

    /* a 256-byte stop string fed byte by byte */
    char big[STOPSEQ_MAX_LEN + 1], text[600];
    for (int i = 0; i < STOPSEQ_MAX_LEN; i++)
        big[i] = (char)('a' + i % 3);
    big[STOPSEQ_MAX_LEN] = '\0';
    const char *bigs[] = {big};
    snprintf(text, sizeof text, "xyz%.*s%s tail", 100, big, big);
    ss = stopseq_new(bigs, NULL, 1);
    size_t got = 0, tl = strlen(text);
    bool stopped = false, bounded = true;
    size_t offset = 0;
    for (size_t i = 0; i < tl && !stopped; i++) {
        stopseq_feed(ss, text + i, 1, &r);
        got += r.len;
        stopped = r.stopped;
        offset = r.offset;
        bounded &= stopped || i + 1 - got <= STOPSEQ_MAX_LEN - 1;
    }
    ok(stopped && offset == 103 && got == 103 && bounded,
       "a 256-byte stop string fed byte by byte: stops at 103 (emitted %zu), never holds more than 255", got);
    stopseq_free(ss);

    /* several candidate matches in one delta: the first to complete wins */
    const char *two[] = {"yb", "b"};
    ss = stopseq_new(two, NULL, 2);
    stopseq_feed(ss, "xxabyyb", 7, &r);
    ok(r.stopped && r.which == 1 && r.offset == 3 && r.len == 3 && memcmp(r.text, "xxa", 3) == 0,
       "one delta, several matches: the first to end (\"b\" at 3) wins");
    stopseq_free(ss);
}

static void test_splits(void)
{
    check_all_splits("no match", STOPS("xyz"), "hello world");
    check_all_splits("partial match never completed", STOPS("worlds"), "hello world");
    check_all_splits("match at the very start", STOPS("ab"), "abcdef");
    check_all_splits("whole text is the stop", STOPS("abcdef"), "abcdef");
    check_all_splits("match at the very end", STOPS("ef"), "abcdef");
    check_all_splits("overlapping ab / b", STOPS("ab", "b"), "xxabyy");
    check_all_splits("overlapping b / ab (order does not matter)", STOPS("b", "ab"), "xxabyy");
    check_all_splits("b alone", STOPS("ab", "b"), "xxbyy");
    check_all_splits("first to complete wins", STOPS("abcd", "bc"), "xabcdx");
    check_all_splits("repeated prefix aab", STOPS("aab"), "aaaaab");
    check_all_splits("self-overlap abab", STOPS("abab"), "abaababab");
    check_all_splits("self-overlap aaa", STOPS("aaa"), "aabaaaa");
    check_all_splits("four stops", STOPS("zz", "abc", "bcd", "cde"), "xabxbcdex");
    check_all_splits("same stop twice", STOPS("cd", "cd"), "abcdcd");
    check_all_splits("stop repeated in text", STOPS("\n\n"), "a\nb\n\nc\n\n");
    check_all_splits("UTF-8 stop", STOPS("\xc3\xa9!"), "caf\xc3\xa9 caf\xc3\xa9!");
    check_all_splits("UTF-8 three-byte stop", STOPS("\xe2\x86\x92"), "a\xe2\x86\x90\xe2\x86\x92 b");
    check_all_splits("UTF-8 CJK", STOPS("\xe6\x97\xa5\xe6\x9c\xac"), "\xe6\x97\xa5\xe6\x97\xa5\xe6\x9c\xac");
    check_all_splits("UTF-8 prefix shared with text", STOPS("\xc3\xa9\xc3\xa8"), "\xc3\xa9\xc3\xa9\xc3\xa9x");
    check_all_splits("no stops at all", (const char *const[]){NULL}, 0, "free text");
    check_all_splits("long text, late stop", STOPS("<|end|>", "\nUser:"), "Some answer.\nUse\nUser: more <|end|>");

    /* many random texts over a small alphabet against the reference */
    uint32_t x = 12345;
    size_t fails = 0, total = 0, stopped = 0;
    for (int t = 0; t < 3000; t++) {
        char stops_buf[4][8], text[40];
        const char *stops[4];
        x = x * 1103515245u + 12345u;
        size_t n = (x >> 16) % 5;
        for (size_t i = 0; i < n; i++) {
            x = x * 1103515245u + 12345u;
            size_t l = 1 + (x >> 16) % 5;
            for (size_t k = 0; k < l; k++) {
                x = x * 1103515245u + 12345u;
                stops_buf[i][k] = (char)('a' + (x >> 16) % 3);
            }
            stops_buf[i][l] = '\0';
            stops[i] = stops_buf[i];
        }
        x = x * 1103515245u + 12345u;
        size_t len = 1 + (x >> 16) % 30;
        for (size_t k = 0; k < len; k++) {
            x = x * 1103515245u + 12345u;
            text[k] = (char)('a' + (x >> 16) % 3);
        }
        text[len] = '\0';
        int which;
        long start = reference(stops, n, text, len, &which);
        stopped += start >= 0;
        size_t want = start < 0 ? len : (size_t)start;
        for (int k = 0; k < 6; k++) {
            x = x * 1103515245u + 12345u;
            uint64_t cuts = k == 0 ? 0 : k == 1 ? ~0ull : ((uint64_t)x << 20) ^ x;
            struct outcome o = run_cuts(stops, n, text, len, cuts);
            total++;
            if (o.bad || o.len != want || memcmp(o.text, text, want) != 0 || o.which != which ||
                (start >= 0 && o.offset != (size_t)start)) {
                if (fails++ == 0)
                    printf("# random: text \"%s\" n %zu: got \"%.*s\"\n", text, n, (int)o.len, o.text);
            }
        }
    }
    ok(fails == 0, "random texts and stop strings: %zu streamed runs agree with the reference (%zu texts stop)",
       total, stopped);
}

/* Stop strings holding NUL (JSON's \u0000): matched by their length, not
 * cut at the NUL (which would make "\0b" the empty string, or "x\0y"
 * stop at "x"). */
static void test_nul(void)
{
    struct stopseq_result r;
    const char *stops[] = {"x\0y", "\0b"};
    const size_t lens[] = {3, 2};
    char err[200];
    ok(stopseq_validate(stops, lens, 2, err, sizeof err) == STOPSEQ_OK, "stop strings with NUL are valid: %s", err);
    struct stopseq *ss = stopseq_new(stops, lens, 2);
    ok(ss != NULL, "a matcher of stop strings with NUL");
    if (!ss)
        return;
    stopseq_feed(ss, "ax", 2, &r);
    ok(r.len == 1 && r.text[0] == 'a' && !r.stopped, "\"ax\": holds \"x\"");
    stopseq_feed(ss, "z\0", 2, &r);
    ok(r.len == 2 && memcmp(r.text, "xz", 2) == 0 && !r.stopped, "\"z\\0\": releases \"xz\", holds the NUL");
    stopseq_feed(ss, "bc", 2, &r);
    ok(r.stopped && r.which == 1 && r.offset == 3 && r.len == 0, "\"\\0b\" stops at offset 3");
    stopseq_free(ss);
    const size_t zero[] = {0};
    const char *plain[] = {"\0b"};
    ok(stopseq_validate(plain, zero, 1, err, sizeof err) == STOPSEQ_ERR_INVAL,
       "length 0 reads up to the NUL: an empty stop string, refused");
}

int main(void)
{
    test_nul();
    test_validate();
    test_streaming();
    test_splits();
    return tap_done();
}
