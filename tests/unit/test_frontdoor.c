/* test_frontdoor.c -- SHA-256 vectors, the API keys file (every bad line named by file:line), token-bucket arithmetic, CIDRs, X-Forwarded-For, CORS origins. */
#include "config.h"
#include "auth.h"
#include "conf.h"
#include "cors.h"
#include "ratelimit.h"
#include "sha256.h"
#include "tap.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void hex_of(const char *s, size_t len, char out[65])
{
    unsigned char d[SHA256_LEN];
    sha256(s, len, d);
    sha256_hex(d, out);
}

static void test_sha256(void)
{
    char h[65];
    hex_of("", 0, h);
    is_str(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "sha256(\"\")");
    hex_of("abc", 3, h);
    is_str(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "sha256(\"abc\")");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    hex_of(two, strlen(two), h);
    is_str(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1", "sha256 of the 448-bit vector");
    char *million = malloc(1000000);
    memset(million, 'a', 1000000);
    hex_of(million, 1000000, h);
    free(million);
    is_str(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0", "sha256 of a million 'a'");

    unsigned char a[SHA256_LEN], b[SHA256_LEN];
    ok(sha256_from_hex("BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD", a) == 0, "upper-case hex parses");
    sha256("abc", 3, b);
    ok(sha256_equal(a, b), "equal digests compare equal");
    b[31] ^= 1;
    ok(!sha256_equal(a, b), "a one-bit difference in the last byte is seen");
    ok(sha256_from_hex("abc", a) < 0, "short hex refused");
    ok(sha256_from_hex("zz7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", a) < 0, "non-hex refused");
}

#define H1 "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"   /* sha256("abc") */
#define H2 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static void test_key_lines(void)
{
    struct auth_key k;
    char err[300], line[512];
    snprintf(line, sizeof line, "  # a comment\n");
    is_int(auth_key_parse_line(line, &k, err, sizeof err), 0, "comment line");
    snprintf(line, sizeof line, "   \n");
    is_int(auth_key_parse_line(line, &k, err, sizeof err), 0, "blank line");
    snprintf(line, sizeof line, "%s alice\n", H1);
    ok(auth_key_parse_line(line, &k, err, sizeof err) == 1 && strcmp(k.name, "alice") == 0 && k.n_models == 0 &&
           k.requests_per_minute == -1 && k.tokens_per_minute == -1, "hash and name; limits default to [limits]");
    auth_key_clear(&k);
    snprintf(line, sizeof line, "%s bob models=gpt-x,org/m requests_per_minute=5 tokens_per_minute=0 # note\n", H1);
    ok(auth_key_parse_line(line, &k, err, sizeof err) == 1 && k.n_models == 2 && strcmp(k.models[1], "org/m") == 0 &&
           k.requests_per_minute == 5 && k.tokens_per_minute == 0, "models and limits");
    ok(auth_key_allows(&k, "gpt-x") && !auth_key_allows(&k, "other"), "allowed models");
    ok(!k.ops, "not an operator unless marked");
    auth_key_clear(&k);
    snprintf(line, sizeof line, "%s carol ops models=m\n", H1);
    ok(auth_key_parse_line(line, &k, err, sizeof err) == 1 && k.ops && k.n_models == 1, "ops marks an operator key");
    auth_key_clear(&k);

    static const char *const bad[] = {
        "abc alice", H1, H1 " al/ice", H1 " alice models=", H1 " alice models=a,,b", H1 " alice rpm=3",
        H1 " alice requests_per_minute=-1", H1 " alice tokens_per_minute=x", H1 " alice stray",
        H1 " alice models=a models=b", H1 " alice models=*", H1 " alice requests_per_minute=1 requests_per_minute=2",
        H1 " alice ops ops", H1 " alice ops=1",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(line, sizeof line, "%s", bad[i]);
        err[0] = '\0';
        ok(auth_key_parse_line(line, &k, err, sizeof err) == -1 && err[0], "bad line %zu refused: %s", i, err);
    }
}

static void test_keys_file(void)
{
    char path[] = "/tmp/llmcgi-keys-XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    fprintf(f, "# keys\n%s alice\n\nnot-a-hash bob\n%s carol frobs=1\n%s alice\n%s dave\n", H1, H2, H2, H1);
    fclose(f);
    struct config_errors errs = {0};
    struct auth_keys *ks = (struct auth_keys *)1;
    ok(auth_keys_load(path, &ks, &errs) < 0 && ks == NULL, "a file with bad lines is refused");
    is_int(errs.n, 4, "one error per bad line");
    char want[128];
    const int lines[] = {4, 5, 6, 7};
    for (size_t i = 0; i < 4 && i < errs.n; i++) {
        snprintf(want, sizeof want, "%s:%d: ", path, lines[i]);
        ok(strncmp(errs.msg[i], want, strlen(want)) == 0, "error %zu names file:line: %s", i, errs.msg[i]);
    }
    config_errors_free(&errs);

    f = fopen(path, "w");
    fprintf(f, "%s alice models=gpt-x\n%s bob tokens_per_minute=100\n", H1, H2);
    fclose(f);
    ok(auth_keys_load(path, &ks, &errs) == 0 && ks && ks->n == 2 && errs.n == 0, "a good file loads");
    const struct auth_key *k = auth_keys_find(ks, "abc");
    ok(k && strcmp(k->name, "alice") == 0, "the key \"abc\" is alice's");
    k = auth_keys_find(ks, "");
    ok(k && strcmp(k->name, "bob") == 0, "the empty key hashes to bob's entry");
    ok(auth_keys_find(ks, "abd") == NULL, "an unknown key is found nowhere");
    auth_keys_free(ks);
    config_errors_free(&errs);
    unlink(path);
    ok(auth_keys_load(path, &ks, &errs) < 0 && errs.n == 1 && strstr(errs.msg[0], "cannot open"), "missing file");
    config_errors_free(&errs);
}

static void test_buckets(void)
{
    const int64_t S = 1000000000LL;
    struct bucket b;
    double wait;
    bucket_init(&b, 60, 0);
    ok(fabs(b.level - 60) < 1e-9, "a new bucket is full");
    int taken = 0;
    while (bucket_take(&b, 60, 1, 0, &wait))
        taken++;
    is_int(taken, 60, "60 requests fit in a 60/min bucket at once");
    ok(fabs(wait - 1.0) < 1e-6, "then the next one waits 1 s (got %f)", wait);
    ok(bucket_take(&b, 60, 1, S, &wait), "one second later one more fits");
    ok(!bucket_take(&b, 60, 1, S, &wait), "but not two");
    ok(fabs(bucket_reset_s(&b, 60, S) - 60.0) < 1e-6, "an empty bucket is full again in 60 s");
    bucket_refill(&b, 60, 1000 * S);
    ok(fabs(b.level - 60) < 1e-9, "refilling stops at the limit");

    bucket_init(&b, 1000, 0);
    ok(bucket_take(&b, 1000, 700, 0, &wait), "700 of 1000 tokens reserved");
    ok(!bucket_take(&b, 1000, 400, 0, &wait) && fabs(wait - 6.0) < 1e-6, "400 more wait 6 s (got %f)", wait);
    bucket_give(&b, 1000, 600, 0);
    ok(fabs(b.level - 900) < 1e-9, "a correction gives back what was not used");
    bucket_give(&b, 1000, 600, 0);
    ok(fabs(b.level - 1000) < 1e-9, "never above the limit");
    ok(bucket_take(&b, 1000, 5000, 0, &wait) && b.level < 0, "a request larger than the limit goes with a full bucket, into debt");
    ok(!bucket_take(&b, 1000, 1, 30 * S, &wait), "and the debt holds the next ones back");
    bucket_give(&b, 1000, -100, 0);
    ok(b.level < -3500, "a charge beyond the reservation deepens the debt");
    bucket_init(&b, 100, 0);
    bucket_take(&b, 100, 100, 0, &wait);
    bucket_refill(&b, 10, 0);
    ok(b.level <= 10, "a smaller limit after a reload clamps the level");

    char s[32];
    ratelimit_format_reset(0.02, s, sizeof s);
    is_str(s, "20ms", "reset 20ms");
    ratelimit_format_reset(1.0, s, sizeof s);
    is_str(s, "1s", "reset 1s");
    ratelimit_format_reset(360, s, sizeof s);
    is_str(s, "6m0s", "reset 6m0s");
    ratelimit_format_reset(59.2, s, sizeof s);
    is_str(s, "1m0s", "reset rounds up to whole seconds");
}

static void test_addresses(void)
{
    struct cidr *v;
    size_t n;
    char err[200];
    ok(cidr_parse_list("127.0.0.1 10.0.0.0/8, fd00::/8 ::1", &v, &n, err, sizeof err) == 0 && n == 4, "CIDR list");
    ok(cidr_list_contains(v, n, "10.1.2.3") && cidr_list_contains(v, n, "127.0.0.1") &&
           !cidr_list_contains(v, n, "127.0.0.2") && !cidr_list_contains(v, n, "11.0.0.1"), "IPv4 blocks");
    ok(cidr_list_contains(v, n, "fd12::1") && cidr_list_contains(v, n, "::1") && !cidr_list_contains(v, n, "fe80::1"),
       "IPv6 blocks");
    ok(cidr_list_contains(v, n, "::ffff:10.9.9.9"), "IPv4-mapped IPv6 counts as IPv4");
    ok(!cidr_list_contains(v, n, "garbage") && !cidr_list_contains(v, n, NULL), "garbage is in no block");

    struct config cfg = {0};
    cfg.trusted_proxies = v;
    cfg.n_trusted_proxies = n;
    char out[64];
    ratelimit_client_addr(&cfg, "127.0.0.1", "203.0.113.9", out, sizeof out);
    is_str(out, "203.0.113.9", "X-Forwarded-For from a trusted proxy");
    ratelimit_client_addr(&cfg, "192.0.2.1", "203.0.113.9", out, sizeof out);
    is_str(out, "192.0.2.1", "X-Forwarded-For from anyone else is ignored");
    ratelimit_client_addr(&cfg, "127.0.0.1", "1.1.1.1, 203.0.113.9, 10.0.0.5", out, sizeof out);
    is_str(out, "203.0.113.9", "the right-most untrusted hop, not what the client wrote first");
    ratelimit_client_addr(&cfg, "127.0.0.1", "junk", out, sizeof out);
    is_str(out, "127.0.0.1", "an unparsable hop stops the walk");
    ratelimit_client_addr(&cfg, "127.0.0.1", NULL, out, sizeof out);
    is_str(out, "127.0.0.1", "no header: REMOTE_ADDR");
    ratelimit_client_addr(&cfg, "2001:db8:1:2:aaaa:bbbb:cccc:dddd", NULL, out, sizeof out);
    is_str(out, "2001:db8:1:2::/64", "an IPv6 client is counted by its /64");
    ratelimit_client_addr(&cfg, "127.0.0.1", "2001:db8:1:2::9", out, sizeof out);
    is_str(out, "2001:db8:1:2::/64", "  also when it comes through a trusted proxy");
    ratelimit_client_addr(&cfg, "::ffff:192.0.2.7", NULL, out, sizeof out);
    is_str(out, "::ffff:192.0.2.7", "an IPv4-mapped address stays itself");
    free(v);

    ok(cidr_parse_list("10.0.0.0/33", &v, &n, err, sizeof err) < 0 && strstr(err, "prefix"), "/33 refused: %s", err);
    ok(cidr_parse_list("example.com", &v, &n, err, sizeof err) < 0, "host names refused");
}

static void test_origins(void)
{
    char **v;
    size_t n;
    bool any;
    char err[300];
    ok(cors_parse_origins("https://a.example http://localhost:8080", &v, &n, &any, err, sizeof err) == 0 && n == 2 && !any,
       "two origins");
    struct config cfg = {0};
    cfg.cors_origins = v;
    cfg.n_cors_origins = n;
    ok(cors_origin_allowed(&cfg, "https://a.example") && cors_origin_allowed(&cfg, "http://localhost:8080"), "listed");
    ok(!cors_origin_allowed(&cfg, "https://a.example.evil") && !cors_origin_allowed(&cfg, "http://a.example") &&
           !cors_origin_allowed(&cfg, "null"), "exact match only");
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
    ok(cors_parse_origins("*", &v, &n, &any, err, sizeof err) == 0 && any && n == 0, "*");
    free(v);
    ok(cors_parse_origins("https://a.example/path", &v, &n, &any, err, sizeof err) < 0, "a path is refused");
    ok(cors_parse_origins("* https://a.example", &v, &n, &any, err, sizeof err) < 0, "* with a list is refused");
}

static void test_config(void)
{
    char dir[] = "/tmp/llmcgi-fdconf-XXXXXX";
    ok(mkdtemp(dir) != NULL, "temp dir");
    char conf[256], keys[256];
    snprintf(conf, sizeof conf, "%s/llmcgi.conf", dir);
    snprintf(keys, sizeof keys, "%s/keys", dir);
    FILE *f = fopen(keys, "w");
    fprintf(f, "%s alice\n", H1);
    fclose(f);
    f = fopen(conf, "w");
    fprintf(f, "[server]\nlisten = unix:/tmp/x.sock\n[auth]\nkeys_file = keys\nprotect_health = on\n"
               "[limits]\nrequests_per_minute = 10\ntrusted_proxies = 127.0.0.1\n"
               "[cors]\nallow_origins = https://a.example\nallow_credentials = on\n");
    fclose(f);
    struct config *c;
    struct config_errors errs = {0};
    ok(config_load(conf, &c, &errs) == 0, "a config with [auth], [limits] and [cors] loads%s%s", errs.n ? ": " : "",
       errs.n ? errs.msg[0] : "");
    if (c) {
        ok(c->keys && c->keys->n == 1 && c->protect_health && c->protect_metrics, "[auth] read, keys file relative to the config");
        ok(c->requests_per_minute == 10 && c->tokens_per_minute == 0 && c->n_trusted_proxies == 1, "[limits] read");
        ok(c->n_cors_origins == 1 && c->cors_credentials && c->cors_max_age_ms == 600000, "[cors] read");
        config_unref(c);
    }
    config_errors_free(&errs);

    f = fopen(keys, "w");
    fprintf(f, "%s alice\nbroken\n", H1);
    fclose(f);
    ok(config_load(conf, &c, &errs) < 0 && errs.n == 1 && strstr(errs.msg[0], "/keys:2: "),
       "a bad keys file fails the config with keys:line: %s", errs.n ? errs.msg[0] : "");
    config_errors_free(&errs);

    f = fopen(conf, "w");
    fprintf(f, "[server]\nlisten = unix:/tmp/x.sock\n[cors]\nallow_origins = *\nallow_credentials = on\n"
               "[limits]\ntrusted_proxies = 300.1.1.1\nrequests_per_minute = -1\n[limits]\n");
    fclose(f);
    ok(config_load(conf, &c, &errs) < 0 && errs.n == 4, "* with credentials, a bad proxy, a bad limit, a second "
       "[limits]: %zu errors", errs.n);
    for (size_t i = 0; i < errs.n; i++)
        tap_diag("%s", errs.msg[i]);
    config_errors_free(&errs);
    unlink(keys);
    unlink(conf);
    rmdir(dir);
}

int main(void)
{
    test_sha256();
    test_key_lines();
    test_keys_file();
    test_buckets();
    test_addresses();
    test_origins();
    test_config();
    return tap_done();
}
