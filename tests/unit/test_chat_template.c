/* test_chat_template.c -- chat templates: exact prompts of both templates, AUTO resolution, every 400 message. */
#include "config.h"
#include "chat_template.h"
#include "tap.h"

#define EOS "<|endoftext|>"

struct rendered {
    int rc;
    char *text;
    const char *const *stops;
    size_t n_stops;
    size_t len;
    char err[256];
};

/* Renders the messages written as JSON text (the test aborts on bad JSON). */
static struct rendered render(enum chat_template t, const char *json)
{
    struct rendered r;
    json_object *m = json_tokener_parse(json);
    if (!m && strcmp(json, "null") != 0) {
        printf("Bail out! bad JSON in the test: %s\n", json);
        exit(1);
    }
    r.rc = chat_template_render(t, m, EOS, &r.text, &r.len, &r.stops, &r.n_stops, r.err, sizeof r.err);
    json_object_put(m);
    return r;
}

/* Checks that the messages render to want under template t (and the stop strings). */
static void check(enum chat_template t, const char *json, const char *want, const char *name)
{
    struct rendered r = render(t, json);
    is_int(r.rc, CHAT_TEMPLATE_OK, "%s %s: renders", chat_template_name(t), name);
    if (r.rc != CHAT_TEMPLATE_OK)
        tap_diag("err: %s", r.err);
    is_str(r.text, want, "%s %s: prompt", chat_template_name(t), name);
    if (t == CHAT_TEMPLATE_DIALOGPT)
        ok(r.n_stops == 0 && r.stops == NULL, "%s %s: no stop strings", chat_template_name(t), name);
    else
        ok(r.n_stops == 1 && r.stops && strcmp(r.stops[0], "\nUser:") == 0, "%s %s: stop \"\\nUser:\"",
           chat_template_name(t), name);
    free(r.text);
}

/* Checks that the messages are refused with exactly the message want (both templates). */
static void check_err(const char *json, const char *want)
{
    for (int t = CHAT_TEMPLATE_PLAIN; t <= CHAT_TEMPLATE_DIALOGPT; t++) {
        struct rendered r = render((enum chat_template)t, json);
        is_int(r.rc, CHAT_TEMPLATE_EINVAL, "%s refuses %s", chat_template_name(t), json);
        is_str(r.err, want, "%s: the message", chat_template_name(t));
        ok(r.text == NULL && r.stops == NULL && r.n_stops == 0, "%s: no output on error", chat_template_name(t));
        free(r.text);
    }
}

static void test_names(void)
{
    enum chat_template t = CHAT_TEMPLATE_PLAIN;
    is_int(chat_template_parse("auto", &t), 0, "parse auto");
    is_int(t, CHAT_TEMPLATE_AUTO, "auto -> AUTO");
    is_int(chat_template_parse("plain", &t), 0, "parse plain");
    is_int(t, CHAT_TEMPLATE_PLAIN, "plain -> PLAIN");
    is_int(chat_template_parse("dialogpt", &t), 0, "parse dialogpt");
    is_int(t, CHAT_TEMPLATE_DIALOGPT, "dialogpt -> DIALOGPT");
    is_int(chat_template_parse("chatml", &t), -1, "chatml is refused");
    is_int(chat_template_parse("", &t), -1, "empty is refused");
    is_int(chat_template_parse("plain ", &t), -1, "trailing space is refused");
    is_int(chat_template_parse(NULL, &t), -1, "NULL is refused");
    is_int(t, CHAT_TEMPLATE_DIALOGPT, "a refused name leaves the value alone");
    is_str(chat_template_name(CHAT_TEMPLATE_AUTO), "auto", "name of AUTO");
    is_str(chat_template_name(CHAT_TEMPLATE_PLAIN), "plain", "name of PLAIN");
    is_str(chat_template_name(CHAT_TEMPLATE_DIALOGPT), "dialogpt", "name of DIALOGPT");
    is_str(chat_template_name((enum chat_template)42), "?", "name of a stray value");
}

static void test_resolve(void)
{
    static const struct {
        const char *dir;
        enum chat_template want;
    } cases[] = {
        {"/m/microsoft/DialoGPT-small", CHAT_TEMPLATE_DIALOGPT},
        {"/m/microsoft/DialoGPT-medium/", CHAT_TEMPLATE_DIALOGPT},
        {"/m/my-dialogpt-finetune//", CHAT_TEMPLATE_DIALOGPT},
        {"DIALOGPT", CHAT_TEMPLATE_DIALOGPT},
        {"models/x-DialoGpt", CHAT_TEMPLATE_DIALOGPT},
        {"/m/gpt2", CHAT_TEMPLATE_PLAIN},
        {"/m/dialogpt/gpt2", CHAT_TEMPLATE_PLAIN},
        {"/m/DialoGPT-small/checkpoint-500", CHAT_TEMPLATE_PLAIN},
        {"/m/dialo-gpt", CHAT_TEMPLATE_PLAIN},
        {"/m/dialogp", CHAT_TEMPLATE_PLAIN},
        {"/", CHAT_TEMPLATE_PLAIN},
        {"", CHAT_TEMPLATE_PLAIN},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        is_int(chat_template_resolve(CHAT_TEMPLATE_AUTO, cases[i].dir), cases[i].want, "auto for \"%s\" is %s",
               cases[i].dir, chat_template_name(cases[i].want));
    is_int(chat_template_resolve(CHAT_TEMPLATE_AUTO, NULL), CHAT_TEMPLATE_PLAIN, "auto without a directory is plain");
    is_int(chat_template_resolve(CHAT_TEMPLATE_PLAIN, "/m/DialoGPT-small"), CHAT_TEMPLATE_PLAIN,
           "an explicit plain stays plain");
    is_int(chat_template_resolve(CHAT_TEMPLATE_DIALOGPT, "/m/gpt2"), CHAT_TEMPLATE_DIALOGPT,
           "an explicit dialogpt stays dialogpt");
}

static const char single[] = "[{\"role\":\"user\",\"content\":\"Hello, how are you?\"}]";
static const char multi[] = "[{\"role\":\"system\",\"content\":\"You are terse.\"},"
                            "{\"role\":\"user\",\"content\":\"Hi\"},"
                            "{\"role\":\"assistant\",\"content\":\"Hello.\"},"
                            "{\"role\":\"developer\",\"content\":\"Answer in English.\"},"
                            "{\"role\":\"user\",\"content\":\"What is 2+2?\"}]";
static const char parts[] = "[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hello \"},"
                            "{\"type\":\"text\",\"text\":\"world\"}]},"
                            "{\"role\":\"assistant\",\"content\":[]},"
                            "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"again\"}]}]";
static const char null_assistant[] = "[{\"role\":\"user\",\"content\":\"Weather?\"},"
                                     "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[]},"
                                     "{\"role\":\"tool\",\"content\":\"sunny\",\"tool_call_id\":\"c1\"},"
                                     "{\"role\":\"assistant\"},"
                                     "{\"role\":\"user\",\"content\":\"Thanks\"}]";
static const char multiline[] = "[{\"role\":\"user\",\"content\":\"line 1\\nline 2\\n\\n  indented \"}]";
static const char only_system[] = "[{\"role\":\"system\",\"content\":\"A\"},{\"role\":\"system\",\"content\":\"\"},"
                                  "{\"role\":\"developer\",\"content\":\"B\"}]";

static void test_dialogpt(void)
{
    enum chat_template d = CHAT_TEMPLATE_DIALOGPT;
    check(d, single, "Hello, how are you?" EOS, "single turn");
    check(d, multi, "You are terse." EOS "Hi" EOS "Hello." EOS "Answer in English." EOS "What is 2+2?" EOS,
          "multi-turn with system");
    check(d, parts, "Hello world" EOS EOS "again" EOS, "content parts");
    check(d, null_assistant, "Weather?" EOS EOS "sunny" EOS EOS "Thanks" EOS, "null assistant content");
    check(d, multiline, "line 1\nline 2\n\n  indented " EOS, "multi-line content");
    check(d, only_system, "A" EOS EOS "B" EOS, "system only");

    /* The eos text is whatever the model says. */
    json_object *m = json_tokener_parse(single);
    char *text = NULL, err[128];
    const char *const *stops;
    size_t n, len;
    is_int(chat_template_render(d, m, "</s>", &text, &len, &stops, &n, err, sizeof err), 0, "another eos");
    is_str(text, "Hello, how are you?</s>", "another eos: prompt");
    free(text);
    is_int(chat_template_render(d, m, NULL, &text, &len, &stops, &n, err, sizeof err), CHAT_TEMPLATE_EINVAL,
           "dialogpt without eos is refused");
    ok(text == NULL && err[0], "dialogpt without eos: no output, a message");
    is_int(chat_template_render(CHAT_TEMPLATE_PLAIN, m, NULL, &text, &len, &stops, &n, NULL, 0), 0,
           "plain needs no eos (and takes a NULL err)");
    free(text);
    json_object_put(m);
}

static void test_plain(void)
{
    enum chat_template p = CHAT_TEMPLATE_PLAIN;
    check(p, single, "User: Hello, how are you?\nAssistant:", "single turn");
    check(p, multi,
          "You are terse.\nAnswer in English.\n\n"
          "User: Hi\nAssistant: Hello.\nUser: What is 2+2?\nAssistant:",
          "multi-turn with system");
    check(p, parts, "User: Hello world\nAssistant:\nUser: again\nAssistant:", "content parts");
    check(p, null_assistant, "User: Weather?\nAssistant:\nTool: sunny\nAssistant:\nUser: Thanks\nAssistant:",
          "null assistant content");
    check(p, multiline, "User: line 1\nline 2\n\n  indented \nAssistant:", "multi-line content");
    check(p, only_system, "A\n\nB\n\nAssistant:", "system only");
    check(CHAT_TEMPLATE_AUTO, single, "User: Hello, how are you?\nAssistant:", "renders as plain");
}

static void test_errors(void)
{
    check_err("[]", "`messages` must be a non-empty list of messages");
    check_err("null", "`messages` must be a non-empty list of messages");
    check_err("{\"role\":\"user\",\"content\":\"x\"}", "`messages` must be a non-empty list of messages");
    check_err("[{\"role\":\"user\",\"content\":\"x\"},\"hi\"]",
              "`messages[1]` must be an object with a role and content");
    check_err("[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"user\",\"content\":\"y\"},"
              "{\"role\":\"user\",\"content\":42}]",
              "`messages[2].content` must be a string or a list of text parts");
    check_err("[{\"role\":\"user\",\"content\":{\"type\":\"text\",\"text\":\"x\"}}]",
              "`messages[0].content` must be a string or a list of text parts");
    check_err("[{\"role\":\"user\",\"content\":null}]",
              "`messages[0].content` must be a string or a list of text parts");
    check_err("[{\"role\":\"system\"}]", "`messages[0].content` must be a string or a list of text parts");
    check_err("[{\"role\":\"tool\",\"content\":null}]",
              "`messages[0].content` must be a string or a list of text parts");
    check_err("[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"bot\",\"content\":\"y\"}]",
              "`messages[1].role` must be one of system, developer, user, assistant, tool (got \"bot\")");
    check_err("[{\"role\":\"User\",\"content\":\"y\"}]",
              "`messages[0].role` must be one of system, developer, user, assistant, tool (got \"User\")");
    check_err("[{\"content\":\"y\"}]", "`messages[0].role` must be one of system, developer, user, assistant, tool");
    check_err("[{\"role\":7,\"content\":\"y\"}]",
              "`messages[0].role` must be one of system, developer, user, assistant, tool");
    check_err("[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
              "{\"type\":\"image_url\",\"image_url\":{\"url\":\"http://x/y.png\"}}]}]",
              "`messages[0].content[1]`: only text parts are supported (got image_url)");
    check_err("[{\"role\":\"user\",\"content\":[\"a\"]}]",
              "`messages[0].content[0]` must be an object with a type and text");
    check_err("[{\"role\":\"user\",\"content\":[{\"text\":\"a\"}]}]", "`messages[0].content[0].type` must be a string");
    check_err("[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":null}]}]",
              "`messages[0].content[0].text` must be a string");

    /* NUL (\u0000) in content, a string or a text part, is carried: the length counts past it. */
    struct rendered r = render(CHAT_TEMPLATE_PLAIN, "[{\"role\":\"user\",\"content\":\"a\\u0000b\"},"
                               "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"\\u0000\"}]}]");
    static const char want_nul[] = "User: a\0b\nUser: \0\nAssistant:";
    ok(r.rc == CHAT_TEMPLATE_OK && r.len == sizeof want_nul - 1 && memcmp(r.text, want_nul, r.len) == 0,
       "NUL in content is carried into the prompt (%zu bytes)", r.len);
    free(r.text);

    /* A long bad value is cut short in the message, and a small err buffer is cut safely. */
    char err[24];
    json_object *m = json_tokener_parse("[{\"role\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\","
                                        "\"content\":\"x\"}]");
    char *text;
    const char *const *stops;
    size_t n, len;
    is_int(chat_template_render(CHAT_TEMPLATE_PLAIN, m, EOS, &text, &len, &stops, &n, err, sizeof err),
           CHAT_TEMPLATE_EINVAL, "a long role is refused");
    is_int(strlen(err), sizeof err - 1, "the message is cut to the buffer");
    json_object_put(m);
}

int main(void)
{
    test_names();
    test_resolve();
    test_dialogpt();
    test_plain();
    test_errors();
    return tap_done();
}
