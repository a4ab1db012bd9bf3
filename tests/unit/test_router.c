/* test_router.c -- route matching, parameters, and the 404/405/OPTIONS/HEAD answers through real libfcgi. */
#include "config.h"
#include "harness.h"
#include "router.h"
#include "tap.h"

#include <json-c/json.h>
#include <unistd.h>

static const struct route *match(const char *method_path, unsigned method, bool test, unsigned *allow, struct req *r)
{
    memset(r, 0, sizeof *r);
    snprintf(r->path, sizeof r->path, "%s", method_path);
    r->method = method;
    return router_match(r, test, allow);
}

/* GET/POST... `path` through the whole request path; returns the answer. */
static void run(struct harness *h, const char *method, const char *uri, struct fcgi_answer *a)
{
    char m[64], u[REQ_PATH_MAX + 32];
    snprintf(m, sizeof m, "REQUEST_METHOD=%s", method);
    snprintf(u, sizeof u, "REQUEST_URI=%s", uri);
    const char *params[] = {m, u, "REMOTE_ADDR=127.0.0.1", NULL};
    if (harness_run(h, params, NULL, 0, NULL, 0, a) < 0)
        memset(a, 0, sizeof *a);
}

static json_object *body_json(const struct fcgi_answer *a)
{
    return a->body ? json_tokener_parse(a->body) : NULL;
}

static const char *jstr(json_object *o, const char *k1, const char *k2)
{
    json_object *v = NULL;
    if (!json_object_object_get_ex(o, k1, &v))
        return NULL;
    if (k2 && !json_object_object_get_ex(v, k2, &v))
        return NULL;
    return json_object_get_string(v);
}

int main(void)
{
    struct req r;
    unsigned allow;
    const struct route *rt;
    char buf[128];

    rt = match("/health", M_GET, false, &allow, &r);
    ok(rt && strcmp(rt->pattern, "/health") == 0, "GET /health matches");
    ok(match("/health", M_HEAD, false, &allow, &r) != NULL, "HEAD is admitted wherever GET is");
    rt = match("/health", M_POST, false, &allow, &r);
    ok(rt == NULL && allow == (M_GET | M_HEAD), "POST /health: no route, allow = GET, HEAD");
    rt = match("/nope", M_GET, false, &allow, &r);
    ok(rt == NULL && allow == 0, "unknown path: no route, nothing allowed");
    rt = match("/v1/models/gpt2", M_GET, false, &allow, &r);
    ok(rt && r.n_params == 1 && strcmp(r.params[0].name, "id") == 0 && strcmp(r.params[0].value, "gpt2") == 0,
       "{id*} captures one segment");
    rt = match("/v1/models/openai-community/gpt2", M_GET, false, &allow, &r);
    ok(rt && strcmp(req_param(&r, "id"), "openai-community/gpt2") == 0, "{id*} captures the rest of the path");
    rt = match("/v1/models/a%2Fb%20c", M_GET, false, &allow, &r);
    ok(rt && strcmp(req_param(&r, "id"), "a/b c") == 0, "parameters are percent-decoded");
    ok(match("/v1/models/bad%zz", M_GET, false, &allow, &r) == NULL, "a malformed escape matches nothing");
    ok(match("/v1/models/", M_GET, false, &allow, &r) == NULL, "an empty parameter matches nothing");
    ok(match("/v1/models", M_GET, false, &allow, &r) != NULL, "/v1/models itself");
    ok(match("/health/", M_GET, false, &allow, &r) == NULL, "a trailing slash is another path");
    ok(match("/_test/sse", M_GET, false, &allow, &r) == NULL && allow == 0, "test routes hidden by default");
    ok(match("/_test/sse", M_GET, true, &allow, &r) != NULL, "test routes present with test_endpoints");
    router_allow_string(M_GET | M_HEAD | M_POST | M_OPTIONS, buf, sizeof buf);
    is_str(buf, "GET, HEAD, POST, OPTIONS", "Allow header text");

    struct harness h;
    if (harness_init(&h, "[server]\naccess_log = off\n[model tiny]\npath = /models/tiny\n[model org/m]\npath=/m\n") < 0)
        return 1;
    struct fcgi_answer a;
    json_object *j;
    char hv[256];

    run(&h, "GET", "/nope?x=1", &a);
    j = body_json(&a);
    is_int(a.status, 404, "404 for an unknown path");
    is_str(jstr(j, "error_type", NULL), "not_found", "  in the TGI error shape outside /v1");
    has_str(jstr(j, "error", NULL), "no route for GET /nope", "  saying what was asked");
    has_str(fcgi_answer_header(&a, "Content-Type", hv, sizeof hv), "application/json", "  as JSON");
    json_object_put(j);
    fcgi_answer_free(&a);

    run(&h, "GET", "/v1/nope", &a);
    j = body_json(&a);
    is_int(a.status, 404, "404 under /v1");
    is_str(jstr(j, "error", "type"), "invalid_request_error", "  in the OpenAI error shape");
    ok(json_object_object_get_ex(json_object_object_get(j, "error"), "param", NULL), "  with param and code fields");
    json_object_put(j);
    fcgi_answer_free(&a);

    run(&h, "DELETE", "/health", &a);
    j = body_json(&a);
    is_int(a.status, 405, "405 for DELETE /health");
    is_str(fcgi_answer_header(&a, "Allow", hv, sizeof hv), "GET, HEAD, OPTIONS", "  with Allow");
    has_str(jstr(j, "error", NULL), "DELETE is not allowed on /health", "  and a message");
    json_object_put(j);
    fcgi_answer_free(&a);

    run(&h, "OPTIONS", "/v1/models", &a);
    is_int(a.status, 204, "OPTIONS answers 204");
    is_str(fcgi_answer_header(&a, "Allow", hv, sizeof hv), "GET, HEAD, OPTIONS", "  with Allow");
    ok(!fcgi_answer_header(&a, "Content-Type", hv, sizeof hv) && !fcgi_answer_header(&a, "Content-Length", hv, sizeof hv),
       "  and no Content-Type or Content-Length (RFC 9110 for 204)");
    fcgi_answer_free(&a);

    /* Both models load in the background (and fail: no such paths); the
     * HEAD below must see the body the GET saw, so wait for them to settle. */
    for (int tries = 0; tries < 500; tries++) {
        run(&h, "GET", "/health", &a);
        bool loading = a.body && memmem(a.body, a.body_len, "\"loading\"", 9);
        fcgi_answer_free(&a);
        if (!loading)
            break;
        usleep(10000);
    }
    run(&h, "GET", "/health", &a);
    j = body_json(&a);
    is_int(a.status, 200, "GET /health");
    is_str(jstr(j, "status", NULL), "ok", "  status ok");
    is_str(jstr(j, "version", NULL), PACKAGE_VERSION, "  version");
    ok(json_object_object_get_ex(j, "cuda", NULL) && json_object_object_get_ex(j, "threads", NULL),
       "  threads and cuda reported");
    size_t health_len = a.body_len;
    json_object_put(j);
    fcgi_answer_free(&a);

    run(&h, "HEAD", "/health", &a);
    is_int(a.status, 200, "HEAD /health");
    is_int(a.body_len, 0, "  without a body");
    ok(fcgi_answer_header(&a, "Content-Length", hv, sizeof hv) && (size_t)atoi(hv) == health_len,
       "  but with the Content-Length of the GET answer");
    fcgi_answer_free(&a);

    run(&h, "GET", "/v1/models", &a);
    j = body_json(&a);
    json_object *data = json_object_object_get(j, "data");
    ok(a.status == 200 && json_object_array_length(data) == 2, "/v1/models lists the configured models");
    is_str(jstr(json_object_array_get_idx(data, 0), "id", NULL), "tiny", "  first id");
    is_str(jstr(json_object_array_get_idx(data, 0), "object", NULL), "model", "  object: model");
    json_object_put(j);
    fcgi_answer_free(&a);

    run(&h, "GET", "/v1/models/org/m", &a);
    j = body_json(&a);
    ok(a.status == 200 && jstr(j, "id", NULL) && strcmp(jstr(j, "id", NULL), "org/m") == 0, "/v1/models/{id} with a slash");
    json_object_put(j);
    fcgi_answer_free(&a);

    run(&h, "GET", "/v1/models/missing", &a);
    j = body_json(&a);
    is_int(a.status, 404, "unknown model: 404");
    is_str(jstr(j, "error", "code"), "model_not_found", "  code model_not_found");
    is_str(jstr(j, "error", "param"), "model", "  param model");
    json_object_put(j);
    fcgi_answer_free(&a);

    run(&h, "GET", "/_test/state?id=x", &a);
    is_int(a.status, 404, "test endpoints answer 404 when off");
    fcgi_answer_free(&a);

    char longuri[REQ_PATH_MAX + 16];
    memset(longuri, 'a', sizeof longuri - 1);
    longuri[0] = '/';
    longuri[sizeof longuri - 1] = '\0';
    run(&h, "GET", longuri, &a);
    is_int(a.status, 414, "a request target over 2 KiB: 414");
    fcgi_answer_free(&a);

    run(&h, "GET", "no-slash", &a);
    is_int(a.status, 400, "a target without a leading slash: 400");
    fcgi_answer_free(&a);

    run(&h, "BREW", "/health", &a);
    is_int(a.status, 405, "an unknown method: 405");
    fcgi_answer_free(&a);
    harness_free(&h);

    /* The access log: hostile REMOTE_ADDR and paths stay on one bounded line each. */
    char logpath[] = "/tmp/llmcgi-access-XXXXXX", conf[256];
    int lfd = mkstemp(logpath);
    close(lfd);
    snprintf(conf, sizeof conf, "[server]\naccess_log = %s\n", logpath);
    if (harness_init(&h, conf) < 0)
        return 1;
    char big_addr[3100] = "REMOTE_ADDR=";
    memset(big_addr + 12, '9', 3000);
    big_addr[3012] = '\0';
    char quotes[800] = "REQUEST_URI=/";
    memset(quotes + 13, '"', 700);
    quotes[713] = '\0';
    const char *p1[] = {"REQUEST_METHOD=GET", "REQUEST_URI=/health", "REMOTE_ADDR=1.2.3.4\n2000-01-01 forged", NULL};
    const char *p2[] = {"REQUEST_METHOD=GET", "REQUEST_URI=/health", big_addr, "HTTP_X_REQUEST_ID=long-addr", NULL};
    const char *p3[] = {"REQUEST_METHOD=GET", quotes, "REMOTE_ADDR=::1", "HTTP_X_REQUEST_ID=many-quotes", NULL};
    const char *const *reqs[] = {p1, p2, p3};
    for (size_t i = 0; i < 3; i++) {
        harness_run(&h, reqs[i], NULL, 0, NULL, 0, &a);
        fcgi_answer_free(&a);
    }
    harness_free(&h);
    FILE *lf = fopen(logpath, "r");
    char lline[4096];
    int lines = 0, bounded = 1, forged = 0;
    while (lf && fgets(lline, sizeof lline, lf)) {
        lines++;
        bounded &= strlen(lline) < 2048 && lline[strlen(lline) - 1] == '\n';
        forged |= strncmp(lline, "2000-01-01", 10) == 0;
    }
    if (lf)
        fclose(lf);
    is_int(lines, 3, "three requests, three access-log lines");
    ok(bounded, "  each under 2 KiB and ending in a newline (a long client address or path is cut)");
    ok(!forged, "  a newline in REMOTE_ADDR forges no line (it is escaped)");
    lf = fopen(logpath, "r");
    char all[16384] = "";
    size_t got = lf ? fread(all, 1, sizeof all - 1, lf) : 0;
    all[got] = '\0';
    if (lf)
        fclose(lf);
    has_str(all, "\" 200 ", "  the status survives a cut");
    has_str(all, " long-addr\n", "  so does the request id after a 3000-byte address");
    has_str(all, " many-quotes\n", "  and after a path of 700 quotes");
    has_str(all, "1.2.3.4\\x0a2000", "  the newline shows as \\x0a");
    unlink(logpath);

    if (harness_init(&h, "[server]\naccess_log = off\npath_prefix = /llm\n") < 0)
        return 1;
    run(&h, "GET", "/llm/health", &a);
    is_int(a.status, 200, "path_prefix: /llm/health is /health");
    fcgi_answer_free(&a);
    run(&h, "GET", "/health", &a);
    is_int(a.status, 404, "path_prefix: /health outside the prefix is 404");
    fcgi_answer_free(&a);
    run(&h, "GET", "/llmx/health", &a);
    is_int(a.status, 404, "path_prefix: /llmx is not /llm");
    fcgi_answer_free(&a);
    harness_free(&h);
    return tap_done();
}
