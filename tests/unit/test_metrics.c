/* test_metrics.c -- the Prometheus exposition: label escaping, family headers, histogram buckets, the rendered registry. */
#include "config.h"
#include "exposition.h"
#include "metrics.h"
#include "tap.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>

static void test_escape(void)
{
    char buf[64];
    metrics_escape_label(buf, sizeof buf, "plain");
    is_str(buf, "plain", "a plain value is unchanged");
    metrics_escape_label(buf, sizeof buf, "a\\b\"c\nd");
    is_str(buf, "a\\\\b\\\"c\\nd", "backslash, quote and newline are escaped");
    size_t n = metrics_escape_label(buf, 6, "ab\"cd");
    is_str(buf, "ab\\\"c", "truncation keeps whole escapes");
    is_int(n, 5, "the length written");
    n = metrics_escape_label(buf, 4, "ab\"");
    is_str(buf, "ab", "an escape that does not fit is left out whole");
    metrics_escape_label(buf, sizeof buf, "caf\xc3\xa9");
    is_str(buf, "caf\xc3\xa9", "UTF-8 passes through");

    metrics_labels(buf, sizeof buf, (const char *const[]){"route", "/v1/x", "model", "q\"", NULL});
    is_str(buf, "route=\"/v1/x\",model=\"q\\\"\"", "labels joined and escaped");
    metrics_labels(buf, sizeof buf, (const char *const[]){NULL});
    is_str(buf, "", "no labels");
}

static void test_family_and_samples(void)
{
    struct strbuf b = {0};
    metrics_family(&b, "llmcgi_x_total", "counter", "Help with \\ and\nnewline.");
    metrics_sample_u64(&b, "llmcgi_x_total", "a=\"1\"", 18446744073709551615ULL);
    metrics_sample(&b, "llmcgi_y", NULL, 0.1);
    metrics_sample(&b, "llmcgi_y", "", 2.0);
    metrics_sample(&b, "llmcgi_y", "", 1e-9);
    is_str(b.s,
           "# HELP llmcgi_x_total Help with \\\\ and\\nnewline.\n"
           "# TYPE llmcgi_x_total counter\n"
           "llmcgi_x_total{a=\"1\"} 18446744073709551615\n"
           "llmcgi_y 0.1\n"
           "llmcgi_y 2\n"
           "llmcgi_y 1e-09\n",
           "HELP/TYPE lines, samples with and without labels, shortest round-trip numbers");
    strbuf_free(&b);
}

static void test_histogram(void)
{
    struct strbuf b = {0};
    const double bounds[] = {0.005, 0.5, 1};
    const uint64_t counts[] = {2, 0, 3, 1};
    metrics_histogram(&b, "llmcgi_h_seconds", "m=\"a\"", bounds, 3, counts, 4.25);
    is_str(b.s,
           "llmcgi_h_seconds_bucket{m=\"a\",le=\"0.005\"} 2\n"
           "llmcgi_h_seconds_bucket{m=\"a\",le=\"0.5\"} 2\n"
           "llmcgi_h_seconds_bucket{m=\"a\",le=\"1\"} 5\n"
           "llmcgi_h_seconds_bucket{m=\"a\",le=\"+Inf\"} 6\n"
           "llmcgi_h_seconds_sum{m=\"a\"} 4.25\n"
           "llmcgi_h_seconds_count{m=\"a\"} 6\n",
           "buckets cumulative, +Inf equal to _count, _sum");
    strbuf_free(&b);
    b = (struct strbuf){0};
    const uint64_t none[] = {0, 0, 0, 0};
    metrics_histogram(&b, "llmcgi_h", NULL, bounds, 3, none, 0);
    has_str(b.s, "llmcgi_h_bucket{le=\"+Inf\"} 0\nllmcgi_h_sum 0\nllmcgi_h_count 0\n", "no labels: only le");
    strbuf_free(&b);
}

/* One sample line's value, or -1 when the line is not there. */
static long long value_of(const char *text, const char *line_head)
{
    const char *p = text;
    size_t n = strlen(line_head);
    while ((p = strstr(p, line_head))) {
        if ((p == text || p[-1] == '\n') && p[n] == ' ')
            return strtoll(p + n + 1, NULL, 10);
        p += n;
    }
    return -1;
}

static void *hammer(void *arg)
{
    (void)arg;
    int m = metrics_model_id("tiny");
    for (int i = 0; i < 10000; i++)
        metrics_request("/v1/completions", 200, m, 1000000);
    return NULL;
}

static void test_registry(void)
{
    metrics_init();
    int tiny = metrics_model_id("tiny");
    ok(tiny > 0, "a model gets a label id");
    is_int(metrics_model_id("tiny"), tiny, "the same id the second time");
    is_str(metrics_model_name(tiny), "tiny", "and its name back");
    is_int(metrics_model_id(NULL), 0, "NULL is the empty label");
    is_int(metrics_model_id(""), 0, "so is \"\"");

    metrics_request("/v1/completions", 200, tiny, 3000000);          /* 3 ms */
    metrics_request("/v1/completions", 200, tiny, 700000000);        /* 0.7 s */
    metrics_request("/v1/completions", 404, 0, 1000);
    metrics_request(NULL, 404, 0, 1000);
    metrics_ttft(tiny, 20000000);
    metrics_itl(tiny, 4000000);
    metrics_itl(tiny, 6000000);
    metrics_tokens(tiny, 5, 7);
    metrics_batch(tiny, 3);
    int up = metrics_upstream_id("oai");
    metrics_upstream_attempt(up, true, 1000000);
    metrics_upstream_attempt(up, false, 1000000);
    metrics_upstream_retry(up);
    metrics_rate_limited("key");
    metrics_rate_limited("key");
    metrics_rate_limited("address");

    struct strbuf b = {0};
    metrics_render(&b, NULL, NULL);
    ok(b.s && !b.nomem, "rendered");
    const char *t = b.s ? b.s : "";
    is_int(value_of(t, "llmcgi_requests_total{route=\"/v1/completions\",status=\"200\",model=\"tiny\"}"), 2,
           "requests by route, status, model");
    is_int(value_of(t, "llmcgi_requests_total{route=\"/v1/completions\",status=\"404\",model=\"\"}"), 1,
           "no model: the empty label value");
    is_int(value_of(t, "llmcgi_requests_total{route=\"(none)\",status=\"404\",model=\"\"}"), 1, "no route matched");
    is_int(value_of(t, "llmcgi_request_duration_seconds_bucket{route=\"/v1/completions\",model=\"tiny\",le=\"0.005\"}"),
           1, "3 ms in the 5 ms bucket");
    is_int(value_of(t, "llmcgi_request_duration_seconds_bucket{route=\"/v1/completions\",model=\"tiny\",le=\"0.5\"}"),
           1, "0.7 s not yet at 0.5");
    is_int(value_of(t, "llmcgi_request_duration_seconds_bucket{route=\"/v1/completions\",model=\"tiny\",le=\"1\"}"),
           2, "both by 1 s");
    is_int(value_of(t, "llmcgi_request_duration_seconds_bucket{route=\"/v1/completions\",model=\"tiny\",le=\"+Inf\"}"),
           2, "+Inf");
    has_str(t, "llmcgi_request_duration_seconds_sum{route=\"/v1/completions\",model=\"tiny\"} 0.703\n",
            "the sum in seconds");
    is_int(value_of(t, "llmcgi_time_to_first_token_seconds_count{model=\"tiny\"}"), 1, "TTFT");
    is_int(value_of(t, "llmcgi_inter_token_latency_seconds_count{model=\"tiny\"}"), 2, "inter-token latency");
    has_str(t, "llmcgi_inter_token_latency_seconds_sum{model=\"tiny\"} 0.01\n", "ITL sum");
    is_int(value_of(t, "llmcgi_prompt_tokens_total{model=\"tiny\"}"), 5, "prompt tokens");
    is_int(value_of(t, "llmcgi_generation_tokens_total{model=\"tiny\"}"), 7, "generated tokens");
    is_int(value_of(t, "llmcgi_batch_size_bucket{model=\"tiny\",le=\"2\"}"), 0, "batch of 3 above 2");
    is_int(value_of(t, "llmcgi_batch_size_bucket{model=\"tiny\",le=\"4\"}"), 1, "and within 4");
    has_str(t, "llmcgi_batch_size_sum{model=\"tiny\"} 3\n", "batch sum in sequences");
    is_int(value_of(t, "llmcgi_upstream_requests_total{upstream=\"oai\",result=\"ok\"}"), 1, "upstream ok");
    is_int(value_of(t, "llmcgi_upstream_requests_total{upstream=\"oai\",result=\"error\"}"), 1, "upstream error");
    is_int(value_of(t, "llmcgi_upstream_retries_total{upstream=\"oai\"}"), 1, "retries");
    is_int(value_of(t, "llmcgi_upstream_request_duration_seconds_count{upstream=\"oai\"}"), 2, "upstream latency");
    is_int(value_of(t, "llmcgi_rate_limited_total{scope=\"key\"}"), 2, "rate-limited by key");
    is_int(value_of(t, "llmcgi_rate_limited_total{scope=\"address\"}"), 1, "rate-limited by address");
    has_str(t, "llmcgi_build_info{version=\"" PACKAGE_VERSION "\"} 1\n", "build info");
    has_str(t, "# TYPE llmcgi_uptime_seconds gauge\n", "uptime");
    has_str(t, "# TYPE llmcgi_start_time_seconds gauge\n", "start time");
    ok(!strstr(t, "llmcgi_responder_threads"), "no server: no live gauges");
    strbuf_free(&b);

    /* several threads at once: nothing lost */
    metrics_init();
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, hammer, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    b = (struct strbuf){0};
    metrics_render(&b, NULL, NULL);
    is_int(value_of(b.s, "llmcgi_requests_total{route=\"/v1/completions\",status=\"200\",model=\"tiny\"}"), 40000,
           "4 threads x 10000 requests counted exactly");
    is_int(value_of(b.s, "llmcgi_request_duration_seconds_count{route=\"/v1/completions\",model=\"tiny\"}"), 40000,
           "and observed exactly");
    strbuf_free(&b);

    /* the label table is bounded: names past its size go to "" and are counted */
    metrics_init();
    char name[32];
    int last = 0;
    for (int i = 0; i < METRICS_MAX_MODELS + 10; i++) {
        snprintf(name, sizeof name, "m%d", i);
        last = metrics_model_id(name);
    }
    is_int(last, 0, "a full model table answers the empty label");
    b = (struct strbuf){0};
    metrics_render(&b, NULL, NULL);
    ok(value_of(b.s, "llmcgi_metrics_label_overflow_total") >= 10, "and counts the overflow");
    strbuf_free(&b);
}

int main(void)
{
    test_escape();
    test_family_and_samples();
    test_histogram();
    test_registry();
    return tap_done();
}
