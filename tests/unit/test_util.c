/* test_util.c -- unit parsers, URL decoding, log escaping and ids. */
#include "config.h"
#include "tap.h"
#include "util.h"

int main(void)
{
    int64_t ms;
    uint64_t sz;
    long l;
    bool b;
    unsigned mode;

    ok(util_parse_duration_ms("15s", &ms) == 0 && ms == 15000, "15s = 15000 ms");
    ok(util_parse_duration_ms("250ms", &ms) == 0 && ms == 250, "250ms");
    ok(util_parse_duration_ms("2m", &ms) == 0 && ms == 120000, "2m");
    ok(util_parse_duration_ms("1h", &ms) == 0 && ms == 3600000, "1h");
    ok(util_parse_duration_ms("30", &ms) == 0 && ms == 30000, "a bare number is seconds");
    ok(util_parse_duration_ms("", &ms) < 0, "empty duration refused");
    ok(util_parse_duration_ms("-1s", &ms) < 0, "negative duration refused");
    ok(util_parse_duration_ms("5 s", &ms) < 0, "space before unit refused");
    ok(util_parse_duration_ms("5d", &ms) < 0, "unknown unit refused");
    ok(util_parse_duration_ms("99999999999999999999s", &ms) < 0, "overflow refused");

    ok(util_parse_size("8M", &sz) == 0 && sz == 8u << 20, "8M");
    ok(util_parse_size("512k", &sz) == 0 && sz == 512u << 10, "512k");
    ok(util_parse_size("1G", &sz) == 0 && sz == 1u << 30, "1G");
    ok(util_parse_size("100", &sz) == 0 && sz == 100, "bytes");
    ok(util_parse_size("1.5M", &sz) < 0, "fractions refused");
    ok(util_parse_size("M", &sz) < 0, "unit alone refused");
    ok(util_parse_size("18446744073709551615G", &sz) < 0, "overflow refused");

    ok(util_parse_long("42", &l) == 0 && l == 42, "long");
    ok(util_parse_long("4x", &l) < 0 && util_parse_long(" 4", &l) < 0 && util_parse_long("", &l) < 0,
       "junk around numbers refused");
    ok(util_parse_bool("on", &b) == 0 && b && util_parse_bool("No", &b) == 0 && !b, "booleans");
    ok(util_parse_bool("maybe", &b) < 0, "bad boolean refused");
    ok(util_parse_octal("0660", &mode) == 0 && mode == 0660, "octal mode");
    ok(util_parse_octal("0698", &mode) < 0, "non-octal digit refused");

    char buf[64];
    util_format_duration(buf, sizeof buf, 15000);
    is_str(buf, "15s", "format 15000 ms");
    util_format_duration(buf, sizeof buf, 250);
    is_str(buf, "250ms", "format 250 ms");
    util_format_duration(buf, sizeof buf, 3600000);
    is_str(buf, "1h", "format an hour");

    is_int(util_url_decode(buf, "a%20b%2Fc", 9), 5, "decoded length");
    is_str(buf, "a b/c", "percent decoding");
    ok(util_url_decode(buf, "bad%2", 5) < 0, "truncated escape refused");
    ok(util_url_decode(buf, "bad%zz", 6) < 0, "non-hex escape refused");
    ok(util_url_decode(buf, "nul%00", 6) < 0, "decoded NUL refused");

    char id1[33], id2[33];
    util_random_hex(id1, 16);
    util_random_hex(id2, 16);
    ok(strlen(id1) == 32 && strspn(id1, "0123456789abcdef") == 32, "random id is 32 hex digits");
    ok(strcmp(id1, id2) != 0, "two ids differ");

    struct timespec ts = {.tv_sec = 0, .tv_nsec = 5000000};
    util_format_time(buf, sizeof buf, &ts);
    ok(strlen(buf) == 29 && buf[10] == 'T' && strstr(buf, ".005"), "ISO time with milliseconds: %s", buf);
    return tap_done();
}
