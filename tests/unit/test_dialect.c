/* test_dialect.c -- translations between client and upstream APIs: reading requests, building upstream
 * requests (exact JSON), reading answers and stream events, error bodies (the client answers built from
 * them: test_answer.c). */
#include "config.h"
#include "dialect.h"
#include "gateway.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>

static json_object *J(const char *text)
{
    json_object *o = json_tokener_parse(text);
    if (!o && strcmp(text, "null") != 0)
        printf("# bad test JSON: %s\n", text);
    return o;
}

/* Plain JSON text of o, in a rotating static buffer ("(null)" for NULL). */
static const char *S(json_object *o)
{
    static char bufs[4][4096];
    static int next;
    char *b = bufs[next++ % 4];
    if (!o)
        return strcpy(b, "(null)");
    snprintf(b, 4096, "%s", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    return b;
}

static const char *kind_name(enum client_kind k)
{
    static const char *const n[] = {"chat", "completion", "tgi", "legacy", "responses", "embeddings"};
    return n[k];
}

/* The request `body` of kind k is refused with a message naming `field`. */
static void refused(enum client_kind k, const char *body, const char *field)
{
    json_object *b = J(body);
    struct gen g;
    char err[256];
    int rc = dialect_read_request(k, b, &g, err, sizeof err);
    char want[64];
    snprintf(want, sizeof want, "`%s", field);
    if (!ok(rc == -1 && strstr(err, want), "%s refuses %s", kind_name(k), body))
        printf("#   rc %d, err \"%s\"\n", rc, err);
    json_object_put(b);
}

static void accepted(enum client_kind k, const char *body)
{
    json_object *b = J(body);
    struct gen g;
    char err[256];
    int rc = dialect_read_request(k, b, &g, err, sizeof err);
    if (!ok(rc == 0, "%s accepts %s", kind_name(k), body))
        printf("#   err \"%s\"\n", err);
    json_object_put(b);
}

/* Reads `body` as client kind k, translates it for an upstream of type t and
 * checks the JSON that the upstream gets (NULL: refused with err containing `want_err`). */
static void upstream(enum client_kind k, enum upstream_type t, const char *body, const char *want,
                     const char *want_err, const char *what)
{
    json_object *b = J(body);
    struct gen g;
    char err[256];
    if (dialect_read_request(k, b, &g, err, sizeof err) < 0) {
        ok(0, "%s: the request reads (%s)", what, err);
        json_object_put(b);
        return;
    }
    enum upstream_call c = dialect_call_for(k, t);
    json_object *o = dialect_upstream_request(k, c, t, b, &g, "target", err, sizeof err);
    if (want) {
        is_str(S(o), want, "%s", what);
    } else {
        ok(o == NULL, "%s: refused", what);
        has_str(err, want_err, "  with a message");
    }
    json_object_put(o);
    gen_free(&g);                               /* the Responses API's chat request */
    json_object_put(b);
}

static void result_bad(enum upstream_call c, const char *answer, const char *want, const char *what)
{
    json_object *a = J(answer);
    struct gen_result r;
    char err[256] = "";
    int rc = dialect_read_result(c, a, &r, err, sizeof err);
    ok(rc == -1 && r.text == NULL, "malformed answer refused: %s", what);
    has_str(err, want, "  message for %s", what);
    gen_result_free(&r);
    json_object_put(a);
}

static void error_message(const char *body, const char *want)
{
    json_object *b = J(body);
    char buf[128] = "unset";
    bool found = dialect_error_message(b, buf, sizeof buf);
    if (want) {
        ok(found, "an error message in %s", body);
        is_str(buf, want, "  is \"%s\"", want);
    } else {
        ok(!found, "no error message in %s", body);
    }
    json_object_put(b);
}

/* A Responses API request refused by the reader with err holding `want`. */
static void rs_refused(const char *body, const char *want)
{
    json_object *b = J(body);
    struct gen g;
    char err[256] = "";
    int rc = dialect_read_request(CK_RESPONSES, b, &g, err, sizeof err);
    if (!ok(rc == -1 && strstr(err, want), "responses refuses %s", body))
        printf("#   rc %d, err \"%s\"\n", rc, err);
    gen_free(&g);
    json_object_put(b);
}

/* A Responses API request read, with what no chat request can carry (NULL: nothing). */
static void rs_untranslatable(const char *body, const char *want)
{
    json_object *b = J(body);
    struct gen g;
    char err[256] = "";
    int rc = dialect_read_request(CK_RESPONSES, b, &g, err, sizeof err);
    ok(rc == 0 && (want ? g.untranslatable && !strcmp(g.untranslatable, want) : !g.untranslatable),
       "responses reads %s, untranslatable %s (%s)", body, want ? want : "nothing",
       g.untranslatable ? g.untranslatable : err);
    gen_free(&g);
    json_object_put(b);
}

static void test_responses(void)
{
    struct gen g;
    char err[256];
    is_int(dialect_call_for(CK_RESPONSES, UPSTREAM_OPENAI), UK_RESPONSES, "responses on openai: passed through");
    is_int(dialect_call_for(CK_RESPONSES, UPSTREAM_TRANSFORMERS), UK_RESPONSES, "responses on transformers serve");
    is_int(dialect_call_for(CK_RESPONSES, UPSTREAM_TGI), UK_CHAT, "responses on TGI: its Messages API (chat)");
    is_int(dialect_call_for(CK_EMBEDDINGS, UPSTREAM_OPENAI), UK_EMBEDDINGS, "embeddings on openai");
    ok(dialect_same(CK_RESPONSES, UK_RESPONSES) && dialect_same(CK_EMBEDDINGS, UK_EMBEDDINGS) &&
       !dialect_same(CK_RESPONSES, UK_CHAT), "responses: pass-through or translation");

    json_object *b = J("{\"model\":\"m\",\"instructions\":\"Be brief.\",\"input\":["
                       "{\"role\":\"developer\",\"content\":\"D\"},"
                       "{\"type\":\"message\",\"role\":\"user\",\"content\":[{\"type\":\"input_text\",\"text\":\"a\"},"
                       "{\"type\":\"input_text\",\"text\":\"b\"}]},"
                       "{\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\",\"text\":\"c\"}]}],"
                       "\"max_output_tokens\":9,\"temperature\":0.5,\"top_p\":0.25,\"stream\":true,"
                       "\"text\":{\"format\":{\"type\":\"json_schema\",\"name\":\"x\",\"schema\":{\"type\":\"object\"},"
                       "\"strict\":true}},\"store\":true,\"metadata\":{\"k\":\"v\"}}");
    ok(dialect_read_request(CK_RESPONSES, b, &g, err, sizeof err) == 0, "a full Responses API request reads");
    is_str(S(g.owned), "{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"system\",\"content\":"
           "\"D\"},{\"role\":\"user\",\"content\":\"a\\nb\"},{\"role\":\"assistant\",\"content\":\"c\"}],"
           "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\",\"schema\":{\"type\":"
           "\"object\"},\"strict\":true}}}",
           "the chat it means: instructions and developer messages as system, parts joined, text.format as "
           "response_format");
    ok(g.messages == json_object_object_get(g.owned, "messages") && g.max_tokens == 9 && g.has_temperature &&
       g.temperature == 0.5 && g.has_top_p && g.top_p == 0.25 && g.stream && g.include_usage && g.n == 1 &&
       !strcmp(g.instructions, "Be brief.") && !g.untranslatable,
       "max_output_tokens, temperature, top_p, stream; usage always; store asks for nothing untranslatable");
    json_object *o = dialect_upstream_request(CK_RESPONSES, UK_CHAT, UPSTREAM_TGI, b, &g, "target", err, sizeof err);
    has_str(S(o), "\"model\":\"tgi\"", "TGI gets the chat, with the model name its Messages API documents");
    has_str(S(o), "\"max_tokens\":9", "  max_output_tokens as max_tokens");
    has_str(S(o), "\"stream_options\":{\"include_usage\":true}", "  and the usage of its stream");
    json_object_put(o);
    o = dialect_upstream_request(CK_RESPONSES, UK_RESPONSES, UPSTREAM_TRANSFORMERS, b, &g, "target", err, sizeof err);
    ok(o == NULL && strstr(err, "`text.format`"), "transformers serve takes no text.format: refused (%s)", err);
    gen_free(&g);
    json_object_put(b);
    b = J("{\"model\":\"m\",\"input\":[{\"role\":\"user\",\"content\":\"a\"}],\"store\":true}");
    dialect_read_request(CK_RESPONSES, b, &g, err, sizeof err);
    o = dialect_upstream_request(CK_RESPONSES, UK_RESPONSES, UPSTREAM_TRANSFORMERS, b, &g, "target", err, sizeof err);
    has_str(S(o), "\"input\":[", "transformers serve gets the client's body (not cut to chat fields)");
    has_str(S(o), "\"model\":\"target\"", "  with its name for the model");
    json_object_put(o);
    gen_free(&g);
    ok(g.owned == NULL && g.messages == NULL, "gen_free");
    json_object_put(b);

    b = J("{\"input\":\"Hello\"}");
    ok(dialect_read_request(CK_RESPONSES, b, &g, err, sizeof err) == 0 &&
       !strcmp(S(g.owned), "{\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}") && g.max_tokens == -1 &&
       !g.stream && !g.instructions, "a string input is one user message");
    gen_free(&g);
    json_object_put(b);
    b = J("{\"input\":\"x\",\"previous_response_id\":\"resp_1\"}");
    dialect_read_request(CK_RESPONSES, b, &g, err, sizeof err);
    o = dialect_upstream_request(CK_RESPONSES, UK_CHAT, UPSTREAM_TGI, b, &g, "target", err, sizeof err);
    ok(o == NULL && strstr(err, "`previous_response_id`") && strstr(err, "no Responses API"),
       "previous_response_id cannot become chat: refused for TGI (%s)", err);
    o = dialect_upstream_request(CK_RESPONSES, UK_RESPONSES, UPSTREAM_OPENAI, b, &g, "target", err, sizeof err);
    has_str(S(o), "\"previous_response_id\":\"resp_1\"", "an openai upstream gets it as it is");
    json_object_put(o);
    gen_free(&g);
    json_object_put(b);

    rs_untranslatable("{\"input\":\"x\",\"previous_response_id\":\"r\"}", "previous_response_id");
    rs_untranslatable("{\"input\":\"x\",\"conversation\":\"c\"}", "conversation");
    rs_untranslatable("{\"input\":\"x\",\"tools\":[{\"type\":\"web_search\"}]}", "tools");
    rs_untranslatable("{\"input\":\"x\",\"tools\":[]}", NULL);
    rs_untranslatable("{\"input\":\"x\",\"background\":true}", "background");
    rs_untranslatable("{\"input\":[{\"type\":\"function_call_output\",\"call_id\":\"c\",\"output\":\"o\"}]}", "input");
    rs_untranslatable("{\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_image\",\"image_url\":\"u\"}]}]}",
                      "input");
    rs_untranslatable("{\"input\":\"x\",\"text\":{\"format\":{\"type\":\"text\"}},\"store\":false}", NULL);
    rs_refused("{}", "`input` must be a string or a list of messages");
    rs_refused("{\"input\":5}", "`input` must be");
    rs_refused("{\"input\":[]}", "`input` must not be empty");
    rs_refused("{\"input\":[\"x\"]}", "`input[0]` must be a message object");
    rs_refused("{\"input\":[{\"role\":\"wizard\",\"content\":\"x\"}]}", "`input[0].role` must be");
    rs_refused("{\"input\":[{\"role\":\"user\",\"content\":7}]}", "`input[0].content` must be");
    rs_refused("{\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_text\"}]}]}", "`input[0].content[0]`");
    rs_refused("{\"input\":\"x\",\"instructions\":3}", "`instructions` must be a string");
    rs_refused("{\"input\":\"x\",\"max_output_tokens\":0}", "`max_output_tokens`");
    rs_refused("{\"input\":\"x\",\"temperature\":3}", "`temperature`");
    rs_refused("{\"input\":\"x\",\"text\":{\"format\":{\"type\":\"yaml\"}}}", "`text.format.type` must be");
    rs_refused("{\"input\":\"x\",\"text\":3}", "`text` must be an object");

    /* answers from upstreams with the API */
    json_object *a = J("{\"id\":\"r\",\"status\":\"incomplete\",\"output\":[{\"type\":\"reasoning\"},{\"type\":"
                       "\"message\",\"content\":[{\"type\":\"output_text\",\"text\":\"Hel\"},{\"type\":\"refusal\"},"
                       "{\"type\":\"output_text\",\"text\":\"lo\"}]}],\"usage\":{\"input_tokens\":4,\"output_tokens\":"
                       "2}}");
    struct gen_result r;
    ok(dialect_read_result(UK_RESPONSES, a, &r, err, sizeof err) == 0 && !strcmp(r.text, "Hello") &&
       r.text_len == 5 && r.finish == FIN_LENGTH && r.prompt_tokens == 4 && r.completion_tokens == 2,
       "a whole response: its output_text parts, usage, incomplete as the length limit");
    gen_result_free(&r);
    json_object_put(a);
    result_bad(UK_RESPONSES, "{\"output\":3}", "`output` must be a list", "output not a list");
    result_bad(UK_RESPONSES, "{\"output\":[{\"type\":\"message\",\"content\":[{\"type\":\"output_text\","
               "\"text\":5}]}]}", "`output[0].content[0].text` must be a string", "text not a string");
    result_bad(UK_RESPONSES, "{\"output\":[],\"usage\":{\"input_tokens\":-1}}", "`usage.input_tokens`",
               "a negative count");
    result_bad(UK_EMBEDDINGS, "{\"data\":{}}", "`data` must be a list", "embeddings without a list");
    struct gen_delta d;
    a = J("{\"type\":\"response.output_text.delta\",\"delta\":\"H\\u0000i\"}");
    ok(dialect_read_delta(UK_RESPONSES, a, &d) == 0 && d.text_len == 3 && !memcmp(d.text, "H\0i", 3) &&
       d.finish == FIN_NONE, "a delta event, its text with its length (it may hold NUL)");
    json_object_put(a);
    a = J("{\"type\":\"response.completed\",\"response\":{\"status\":\"completed\",\"usage\":{\"input_tokens\":3,"
          "\"output_tokens\":5}}}");
    ok(dialect_read_delta(UK_RESPONSES, a, &d) == 0 && d.finish == FIN_EOS && d.prompt_tokens == 3 &&
       d.completion_tokens == 5 && !d.text, "response.completed: the end, with usage");
    json_object_put(a);
    a = J("{\"type\":\"response.failed\",\"response\":{\"error\":{\"message\":\"boom\"}}}");
    ok(dialect_read_delta(UK_RESPONSES, a, &d) == 0 && d.error && !strcmp(d.error, "boom"), "response.failed: an error");
    json_object_put(a);
    a = J("{\"type\":\"error\",\"message\":\"bad\"}");
    ok(dialect_read_delta(UK_RESPONSES, a, &d) == 0 && d.error && !strcmp(d.error, "bad"), "an error event");
    json_object_put(a);
    a = J("{\"delta\":\"x\"}");
    ok(dialect_read_delta(UK_RESPONSES, a, &d) == -1 && strstr(d.bad, "no `type`"), "an event without a type");
    json_object_put(a);
    a = J("{\"type\":\"response.output_text.delta\",\"delta\":1}");
    ok(dialect_read_delta(UK_RESPONSES, a, &d) == -1 && strstr(d.bad, "`delta`"), "a delta that is not text");
    json_object_put(a);

    /* embeddings: passed through to openai upstreams only */
    b = J("{\"model\":\"m\",\"input\":[\"a\"],\"encoding_format\":\"float\"}");
    ok(dialect_read_request(CK_EMBEDDINGS, b, &g, err, sizeof err) == 0, "an embeddings request reads");
    o = dialect_upstream_request(CK_EMBEDDINGS, UK_EMBEDDINGS, UPSTREAM_OPENAI, b, &g, "target", err, sizeof err);
    is_str(S(o), "{\"model\":\"target\",\"input\":[\"a\"],\"encoding_format\":\"float\"}", "openai: as it is");
    json_object_put(o);
    o = dialect_upstream_request(CK_EMBEDDINGS, UK_EMBEDDINGS, UPSTREAM_TGI, b, &g, "target", err, sizeof err);
    ok(o == NULL && strstr(err, "no embeddings API"), "TGI: refused (%s)", err);
    json_object_put(b);
    rs_refused("{\"model\":\"m\"}", "`input` must be");
    b = J("{\"model\":\"m\"}");
    ok(dialect_read_request(CK_EMBEDDINGS, b, &g, err, sizeof err) == -1 && strstr(err, "`input` is required"),
       "embeddings without input refused");
    json_object_put(b);
}

/* Structured output across dialects: the constraint a translated request
 * carries in the upstream's form, or the refusal naming why. */
static void test_constraints(void)
{
    const char *chat = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],";
    char body[1024];
    /* a completion on TGI's /generate: parameters.grammar */
    const char *gen_tail = "\"details\":true,\"return_full_text\":false,\"decoder_input_details\":true,";
    char want[1024];
    snprintf(want, sizeof want, "{\"inputs\":\"x\",\"parameters\":{\"max_new_tokens\":16,\"do_sample\":true,%s"
             "\"grammar\":{\"type\":\"json\",\"value\":{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}}}}}}",
             gen_tail);
    upstream(CK_COMPLETION, UPSTREAM_TGI,
             "{\"model\":\"m\",\"prompt\":\"x\",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"n\","
             "\"schema\":{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}}}}}}",
             want, NULL, "completion on TGI: response_format json_schema as grammar json");
    snprintf(want, sizeof want, "{\"inputs\":\"x\",\"parameters\":{\"max_new_tokens\":16,\"do_sample\":true,%s"
             "\"grammar\":{\"type\":\"json\",\"value\":{\"type\":\"object\"}}}}", gen_tail);
    upstream(CK_COMPLETION, UPSTREAM_TGI, "{\"prompt\":\"x\",\"response_format\":{\"type\":\"json_object\"}}", want, NULL,
             "  json_object as grammar json {\"type\":\"object\"}");
    upstream(CK_COMPLETION, UPSTREAM_TGI, "{\"prompt\":\"x\",\"guided_json\":{\"type\":\"object\"}}", want, NULL,
             "  guided_json (an object) as grammar json");
    upstream(CK_COMPLETION, UPSTREAM_TGI, "{\"prompt\":\"x\",\"guided_json\":\"{\\\"type\\\": \\\"object\\\"}\"}", want,
             NULL, "  guided_json (JSON text) as grammar json, parsed");
    snprintf(want, sizeof want, "{\"inputs\":\"x\",\"parameters\":{\"max_new_tokens\":16,\"do_sample\":true,%s"
             "\"grammar\":{\"type\":\"regex\",\"value\":\"[0-9]+\"}}}", gen_tail);
    upstream(CK_COMPLETION, UPSTREAM_TGI, "{\"prompt\":\"x\",\"guided_regex\":\"[0-9]+\"}", want, NULL,
             "  guided_regex as grammar regex");
    snprintf(want, sizeof want, "{\"inputs\":\"x\",\"parameters\":{\"max_new_tokens\":16,\"do_sample\":true,%s"
             "\"grammar\":{\"type\":\"regex\",\"value\":\"(yes|a\\\\.b\\\\(c\\\\)\\\\|d\\\\\\\\|\\\\[e\\\\]\\\\*)\"}}}",
             gen_tail);
    upstream(CK_COMPLETION, UPSTREAM_TGI,
             "{\"prompt\":\"x\",\"guided_choice\":[\"yes\",\"a.b(c)|d\\\\\",\"[e]*\"]}", want, NULL,
             "  guided_choice as a regex of the escaped choices joined with |");
    upstream(CK_COMPLETION, UPSTREAM_TGI, "{\"prompt\":\"x\",\"guided_json\":\"{not json\"}", NULL,
             "`guided_json` is not a JSON schema", "  guided_json text that is no JSON");
    upstream(CK_COMPLETION, UPSTREAM_TGI, "{\"prompt\":\"x\",\"guided_choice\":[]}", NULL,
             "`guided_choice` must be a list of 1 to 256 strings", "  an empty guided_choice");
    upstream(CK_COMPLETION, UPSTREAM_TGI, "{\"prompt\":\"x\",\"guided_regex\":\"a\",\"guided_choice\":[\"b\"]}", NULL,
             "cannot be used together", "  two constraints: refused, as local models refuse them");
    upstream(CK_COMPLETION, UPSTREAM_TGI, "{\"prompt\":\"x\",\"response_format\":{\"type\":\"yaml\"}}", NULL,
             "`response_format` type must be", "  an unknown response_format type");
    upstream(CK_COMPLETION, UPSTREAM_TGI,
             "{\"prompt\":\"x\",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],\"tool_choice\":\"required\"}",
             NULL, "`tools` cannot be sent to this model's upstream (type tgi)", "  tools on /generate");
    /* chat on TGI's Messages API: response_format in TGI's grammar form */
    snprintf(body, sizeof body, "%s\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"n\","
             "\"schema\":{\"type\":\"array\"}}}}", chat);
    upstream(CK_CHAT, UPSTREAM_TGI, body,
             "{\"model\":\"tgi\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
             "\"response_format\":{\"type\":\"json\",\"value\":{\"type\":\"array\"}}}", NULL,
             "chat on TGI: response_format json_schema as TGI's {\"type\":\"json\",\"value\":SCHEMA}");
    snprintf(body, sizeof body, "%s\"guided_choice\":[\"a\",\"b\"]}", chat);
    upstream(CK_CHAT, UPSTREAM_TGI, body,
             "{\"model\":\"tgi\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
             "\"response_format\":{\"type\":\"regex\",\"value\":\"(a|b)\"}}", NULL,
             "  guided_choice as response_format regex (TGI would ignore guided_choice)");
    snprintf(body, sizeof body, "%s\"response_format\":{\"type\":\"regex\",\"value\":\"a+\"}}", chat);
    upstream(CK_CHAT, UPSTREAM_TGI, body,
             "{\"model\":\"tgi\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
             "\"response_format\":{\"type\":\"regex\",\"value\":\"a+\"}}", NULL,
             "  response_format already in TGI's form: as it is");
    snprintf(body, sizeof body, "%s\"response_format\":{\"type\":\"text\"}}", chat);
    upstream(CK_CHAT, UPSTREAM_TGI, body, "{\"model\":\"tgi\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
             NULL, "  response_format text (no such TGI grammar) asks for nothing: left out");
    snprintf(body, sizeof body, "%s\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],"
             "\"tool_choice\":\"required\"}", chat);
    upstream(CK_CHAT, UPSTREAM_TGI, body,
             "{\"model\":\"tgi\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
             "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],\"tool_choice\":\"required\"}", NULL,
             "  tools: TGI's Messages API takes them in OpenAI's shape, passed through");
    /* a TGI client on an OpenAI upstream: grammar json as response_format json_schema, regex refused */
    upstream(CK_TGI, UPSTREAM_OPENAI,
             "{\"inputs\":\"x\",\"parameters\":{\"grammar\":{\"type\":\"json\",\"value\":{\"type\":\"object\"}}}}",
             "{\"model\":\"target\",\"prompt\":\"x\",\"max_tokens\":20,\"temperature\":0.0,\"response_format\":"
             "{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"grammar\",\"schema\":{\"type\":\"object\"}}}}", NULL,
             "TGI on openai: grammar json as response_format json_schema");
    upstream(CK_TGI, UPSTREAM_OPENAI,
             "{\"inputs\":\"x\",\"parameters\":{\"grammar\":{\"type\":\"json\",\"value\":\"{\\\"type\\\":\\\"string\\\"}\"}}}",
             "{\"model\":\"target\",\"prompt\":\"x\",\"max_tokens\":20,\"temperature\":0.0,\"response_format\":"
             "{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"grammar\",\"schema\":{\"type\":\"string\"}}}}", NULL,
             "  a schema sent as JSON text: parsed into the schema");
    upstream(CK_TGI, UPSTREAM_OPENAI,
             "{\"inputs\":\"x\",\"parameters\":{\"grammar\":{\"type\":\"regex\",\"value\":\"a+\"}}}", NULL,
             "`grammar` of type regex cannot be sent to this model's upstream (type openai)", "  grammar regex");
    upstream(CK_TGI, UPSTREAM_OPENAI,
             "{\"inputs\":\"x\",\"parameters\":{\"grammar\":{\"type\":\"ebnf\",\"value\":\"a\"}}}", NULL,
             "`grammar` type must be \"json\" or \"regex\"", "  an unknown grammar type");
    /* transformers serve constrains nothing: refused, whatever the client's dialect */
    upstream(CK_TGI, UPSTREAM_TRANSFORMERS,
             "{\"inputs\":\"x\",\"parameters\":{\"grammar\":{\"type\":\"json\",\"value\":{\"type\":\"object\"}}}}", NULL,
             "`grammar` cannot be sent to this model's upstream (type transformers-serve)",
             "TGI grammar on transformers serve");
    snprintf(body, sizeof body, "%s\"response_format\":{\"type\":\"json_object\"}}", chat);
    upstream(CK_CHAT, UPSTREAM_TRANSFORMERS, body, NULL,
             "`response_format` cannot be sent to this model's upstream (type transformers-serve)",
             "  chat response_format on transformers serve");
    snprintf(body, sizeof body, "%s\"guided_regex\":\"a\"}", chat);
    upstream(CK_CHAT, UPSTREAM_TRANSFORMERS, body, NULL, "`guided_regex` cannot be sent",
             "  guided_regex (which keep_only would drop)");
    upstream(CK_COMPLETION, UPSTREAM_TRANSFORMERS, "{\"prompt\":\"x\",\"guided_choice\":[\"a\"]}", NULL,
             "`guided_choice` cannot be sent", "  a completion's guided_choice");
    snprintf(body, sizeof body, "%s\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],"
             "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"f\"}}}", chat);
    upstream(CK_CHAT, UPSTREAM_TRANSFORMERS, body, NULL, "`tool_choice` cannot be sent",
             "  a named tool_choice");
    upstream(CK_RESPONSES, UPSTREAM_TRANSFORMERS,
             "{\"input\":\"x\",\"text\":{\"format\":{\"type\":\"json_object\"}}}", NULL, "`text.format` cannot be sent",
             "  a Responses API text.format");
    snprintf(body, sizeof body, "%s\"response_format\":{\"type\":\"text\"}}", chat);
    upstream(CK_CHAT, UPSTREAM_TRANSFORMERS, body,
             "{\"model\":\"target\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream\":true}", NULL,
             "  response_format text asks for nothing: left out (its --input_validation refuses the field)");
    /* the Responses API on TGI: text.format as TGI's response_format */
    upstream(CK_RESPONSES, UPSTREAM_TGI,
             "{\"input\":\"x\",\"text\":{\"format\":{\"type\":\"json_schema\",\"name\":\"n\",\"schema\":{\"type\":\"null\"}}}}",
             "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"model\":\"tgi\","
             "\"response_format\":{\"type\":\"json\",\"value\":{\"type\":\"null\"}}}", NULL,
             "responses on TGI: text.format as TGI's response_format");
    /* an OpenAI upstream of the client's dialect: as it is */
    snprintf(body, sizeof body, "%s\"guided_regex\":\"a\",\"guided_choice\":[\"b\"]}", chat);
    upstream(CK_CHAT, UPSTREAM_OPENAI, body,
             "{\"model\":\"target\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"guided_regex\":\"a\","
             "\"guided_choice\":[\"b\"]}", NULL, "chat on openai: the constraint as it is, the upstream judges it");
}

int main(void)
{
    struct gen g;
    char err[256];
    json_object *b, *o;

    /* ------------------------------------------------------------ calls */
    is_int(dialect_call_for(CK_CHAT, UPSTREAM_TGI), UK_CHAT, "chat on TGI: TGI's Messages API");
    is_int(dialect_call_for(CK_CHAT, UPSTREAM_OPENAI), UK_CHAT, "chat on openai");
    is_int(dialect_call_for(CK_COMPLETION, UPSTREAM_TRANSFORMERS), UK_CHAT, "completion on transformers: chat");
    is_int(dialect_call_for(CK_COMPLETION, UPSTREAM_TGI), UK_TGI, "completion on TGI: generate");
    is_int(dialect_call_for(CK_COMPLETION, UPSTREAM_OPENAI), UK_COMPLETION, "completion on openai");
    is_int(dialect_call_for(CK_TGI, UPSTREAM_TGI), UK_TGI, "TGI on TGI");
    is_int(dialect_call_for(CK_TGI, UPSTREAM_OPENAI), UK_COMPLETION, "TGI on openai: completions");
    is_int(dialect_call_for(CK_LEGACY, UPSTREAM_TRANSFORMERS), UK_CHAT, "legacy on transformers: chat");
    ok(dialect_same(CK_CHAT, UK_CHAT) && dialect_same(CK_COMPLETION, UK_COMPLETION) && dialect_same(CK_TGI, UK_TGI),
       "same API: pass-through");
    ok(!dialect_same(CK_LEGACY, UK_TGI) && !dialect_same(CK_COMPLETION, UK_CHAT) && !dialect_same(CK_TGI, UK_COMPLETION),
       "different APIs: translation");

    /* ------------------------------------------------------------ reading requests: chat */
    b = J("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":5,"
          "\"temperature\":0.5,\"top_p\":0.25,\"frequency_penalty\":0.5,\"presence_penalty\":-1,\"seed\":-3,"
          "\"stream\":true,\"stop\":[\"a\",\"b\"],\"stream_options\":{\"include_usage\":true},\"n\":2}");
    ok(dialect_read_request(CK_CHAT, b, &g, err, sizeof err) == 0, "a full chat request reads");
    ok(g.messages && json_object_array_length(g.messages) == 1, "messages");
    ok(g.max_tokens == 5 && g.n == 2 && g.stream && g.include_usage, "max_tokens, n, stream, include_usage");
    ok(g.has_temperature && g.temperature == 0.5 && g.has_top_p && g.top_p == 0.25, "temperature, top_p");
    ok(g.has_freq && g.freq == 0.5 && g.has_pres && g.pres == -1, "penalties");
    ok(g.has_seed && g.seed == -3, "seed (any integer)");
    is_str(S(g.stop), "[\"a\",\"b\"]", "stop list");
    ok(g.prompt == NULL, "no prompt for chat");
    json_object_put(b);

    b = J("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
    ok(dialect_read_request(CK_CHAT, b, &g, err, sizeof err) == 0 && g.max_tokens == -1 && g.n == 1 && !g.stream &&
           !g.has_temperature && !g.has_seed && g.stop == NULL,
       "chat defaults");
    json_object_put(b);
    b = J("{\"messages\":[{}],\"max_tokens\":5,\"max_completion_tokens\":7,\"stop\":\"x\"}");
    ok(dialect_read_request(CK_CHAT, b, &g, err, sizeof err) == 0 && g.max_tokens == 7,
       "max_completion_tokens wins over max_tokens");
    is_str(S(g.stop), "[\"x\"]", "a stop string becomes a list");
    json_object_put(b);
    accepted(CK_CHAT, "{\"messages\":[{}],\"temperature\":null,\"stop\":null,\"seed\":null}");
    accepted(CK_CHAT, "{\"messages\":[{}],\"temperature\":0,\"top_p\":1,\"stop\":[]}");
    accepted(CK_CHAT, "{\"messages\":[{}],\"temperature\":2,\"frequency_penalty\":-2,\"presence_penalty\":2}");

    refused(CK_CHAT, "{\"messages\":[{}],\"functions\":{}}", "functions");
    refused(CK_CHAT, "{\"messages\":[{}],\"function_call\":5}", "function_call");
    refused(CK_CHAT, "{\"messages\":[{}],\"tool_choice\":[]}", "tool_choice");
    accepted(CK_CHAT, "{\"messages\":[{}],\"tool_choice\":\"auto\",\"function_call\":{\"name\":\"f\"},\"functions\":[]}");
    refused(CK_CHAT, "{}", "messages");
    refused(CK_CHAT, "{\"messages\":[]}", "messages");
    refused(CK_CHAT, "{\"messages\":\"hi\"}", "messages");
    refused(CK_CHAT, "{\"messages\":[{},1]}", "messages[1]");
    refused(CK_CHAT, "{\"messages\":[{}],\"max_tokens\":0}", "max_tokens");
    refused(CK_CHAT, "{\"messages\":[{}],\"max_tokens\":1.5}", "max_tokens");
    refused(CK_CHAT, "{\"messages\":[{}],\"max_tokens\":\"5\"}", "max_tokens");
    refused(CK_CHAT, "{\"messages\":[{}],\"max_tokens\":2000000000}", "max_tokens");
    refused(CK_CHAT, "{\"messages\":[{}],\"max_completion_tokens\":-1}", "max_completion_tokens");
    refused(CK_CHAT, "{\"messages\":[{}],\"n\":0}", "n");
    refused(CK_CHAT, "{\"messages\":[{}],\"n\":129}", "n");
    refused(CK_CHAT, "{\"messages\":[{}],\"temperature\":2.5}", "temperature");
    refused(CK_CHAT, "{\"messages\":[{}],\"temperature\":-0.5}", "temperature");
    refused(CK_CHAT, "{\"messages\":[{}],\"temperature\":\"hot\"}", "temperature");
    refused(CK_CHAT, "{\"messages\":[{}],\"top_p\":1.5}", "top_p");
    refused(CK_CHAT, "{\"messages\":[{}],\"frequency_penalty\":3}", "frequency_penalty");
    refused(CK_CHAT, "{\"messages\":[{}],\"presence_penalty\":-2.5}", "presence_penalty");
    refused(CK_CHAT, "{\"messages\":[{}],\"seed\":1.5}", "seed");
    refused(CK_CHAT, "{\"messages\":[{}],\"stream\":\"yes\"}", "stream");
    refused(CK_CHAT, "{\"messages\":[{}],\"stream\":1}", "stream");
    refused(CK_CHAT, "{\"messages\":[{}],\"stop\":5}", "stop");
    refused(CK_CHAT, "{\"messages\":[{}],\"stop\":[1]}", "stop");
    refused(CK_CHAT, "{\"messages\":[{}],\"stop\":[\"\"]}", "stop");
    refused(CK_CHAT, "{\"messages\":[{}],\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", "stop");
    refused(CK_CHAT, "{\"messages\":[{}],\"stream_options\":true}", "stream_options");
    refused(CK_CHAT, "{\"messages\":[{}],\"stream_options\":{\"include_usage\":\"y\"}}", "include_usage");
    b = J("{\"messages\":[{}],\"temperature\":3}");
    dialect_read_request(CK_CHAT, b, &g, err, sizeof err);
    is_str(err, "`temperature` must be a number from 0 to 2 (inclusive)", "a range message reads well");
    json_object_put(b);

    /* ------------------------------------------------------------ completion */
    b = J("{\"model\":\"m\",\"prompt\":\"Once\",\"max_tokens\":3}");
    ok(dialect_read_request(CK_COMPLETION, b, &g, err, sizeof err) == 0 && g.prompt && strcmp(g.prompt, "Once") == 0 &&
           g.max_tokens == 3,
       "a completion request reads");
    json_object_put(b);
    b = J("{\"prompt\":[\"One\"]}");
    ok(dialect_read_request(CK_COMPLETION, b, &g, err, sizeof err) == 0 && g.prompt && strcmp(g.prompt, "One") == 0,
       "a list of one prompt is that prompt");
    json_object_put(b);
    b = J("{\"prompt\":[1,2,3]}");
    ok(dialect_read_request(CK_COMPLETION, b, &g, err, sizeof err) == 0 && g.prompt == NULL,
       "a token list is read (for pass-through) with no prompt");
    json_object_put(b);
    refused(CK_COMPLETION, "{}", "prompt");
    refused(CK_COMPLETION, "{\"prompt\":5}", "prompt");
    refused(CK_COMPLETION, "{\"prompt\":{}}", "prompt");
    refused(CK_COMPLETION, "{\"prompt\":\"x\",\"max_tokens\":-1}", "max_tokens");
    refused(CK_COMPLETION, "{\"prompt\":\"x\",\"top_p\":-0.1}", "top_p");
    refused(CK_COMPLETION, "{\"prompt\":\"x\",\"stop\":{}}", "stop");
    refused(CK_COMPLETION, "{\"prompt\":\"x\",\"seed\":\"1\"}", "seed");

    /* ------------------------------------------------------------ TGI */
    b = J("{\"inputs\":\"Hello\",\"stream\":true,\"parameters\":{\"max_new_tokens\":20,\"top_k\":10,"
          "\"temperature\":0.5,\"top_p\":0.75,\"repetition_penalty\":1.25,\"frequency_penalty\":0.5,\"seed\":7,"
          "\"do_sample\":true,\"details\":true,\"return_full_text\":true,\"stop\":[\"\\n\"]}}");
    ok(dialect_read_request(CK_TGI, b, &g, err, sizeof err) == 0, "a full TGI request reads");
    ok(g.prompt && strcmp(g.prompt, "Hello") == 0 && g.stream && g.max_tokens == 20, "inputs, stream, max_new_tokens");
    ok(g.has_top_k && g.top_k == 10 && g.temperature == 0.5 && g.top_p == 0.75 && g.has_rep && g.rep == 1.25 &&
           g.has_freq && g.has_seed && g.seed == 7,
       "sampling parameters");
    ok(g.do_sample_given && g.do_sample && g.details && g.return_full_text, "do_sample, details, return_full_text");
    json_object_put(b);
    b = J("{\"inputs\":\"Hello\"}");
    ok(dialect_read_request(CK_TGI, b, &g, err, sizeof err) == 0 && !g.do_sample_given && !g.details &&
           g.max_tokens == -1,
       "TGI defaults: no parameters");
    json_object_put(b);
    accepted(CK_TGI, "{\"inputs\":\"x\",\"parameters\":null}");
    accepted(CK_TGI, "{\"inputs\":\"x\",\"parameters\":{\"stop\":\"x\",\"seed\":null}}");
    refused(CK_TGI, "{}", "inputs");
    refused(CK_TGI, "{\"inputs\":5}", "inputs");
    refused(CK_TGI, "{\"inputs\":[\"x\"]}", "inputs");
    refused(CK_TGI, "{\"inputs\":\"x\",\"stream\":\"y\"}", "stream");
    refused(CK_TGI, "{\"inputs\":\"x\",\"parameters\":[]}", "parameters");
    refused(CK_TGI, "{\"inputs\":\"x\",\"parameters\":{\"max_new_tokens\":0}}", "max_new_tokens");
    refused(CK_TGI, "{\"inputs\":\"x\",\"parameters\":{\"top_k\":0}}", "top_k");
    refused(CK_TGI, "{\"inputs\":\"x\",\"parameters\":{\"temperature\":0}}", "temperature");
    refused(CK_TGI, "{\"inputs\":\"x\",\"parameters\":{\"top_p\":1}}", "top_p");
    refused(CK_TGI, "{\"inputs\":\"x\",\"parameters\":{\"top_p\":0}}", "top_p");
    refused(CK_TGI, "{\"inputs\":\"x\",\"parameters\":{\"repetition_penalty\":0}}", "repetition_penalty");
    refused(CK_TGI, "{\"inputs\":\"x\",\"parameters\":{\"frequency_penalty\":9}}", "frequency_penalty");
    refused(CK_TGI, "{\"inputs\":\"x\",\"parameters\":{\"seed\":-1}}", "seed");
    refused(CK_TGI, "{\"inputs\":\"x\",\"parameters\":{\"do_sample\":1}}", "do_sample");
    refused(CK_TGI, "{\"inputs\":\"x\",\"parameters\":{\"details\":\"yes\"}}", "details");
    refused(CK_TGI, "{\"inputs\":\"x\",\"parameters\":{\"return_full_text\":0}}", "return_full_text");
    refused(CK_TGI, "{\"inputs\":\"x\",\"parameters\":{\"stop\":[\"a\",2]}}", "stop");
    b = J("{\"inputs\":\"x\",\"parameters\":{\"temperature\":0}}");
    dialect_read_request(CK_TGI, b, &g, err, sizeof err);
    is_str(err, "`temperature` must be a number strictly between 0 and 1e+06", "an open range message");
    json_object_put(b);

    /* ------------------------------------------------------------ legacy */
    b = J("{\"model_id\":\"m\",\"prompt\":\"Hi\",\"max_new_tokens\":8,\"temperature\":0,\"top_p\":1}");
    ok(dialect_read_request(CK_LEGACY, b, &g, err, sizeof err) == 0 && strcmp(g.prompt, "Hi") == 0 && g.max_tokens == 8,
       "a legacy request reads");
    ok(!g.has_temperature && g.do_sample_given && !g.do_sample, "legacy temperature 0 is greedy");
    ok(!g.has_top_p, "legacy top_p 1 is no top_p");
    json_object_put(b);
    b = J("{\"prompt\":\"Hi\",\"temperature\":0.5,\"top_p\":0.5}");
    ok(dialect_read_request(CK_LEGACY, b, &g, err, sizeof err) == 0 && g.has_temperature && g.temperature == 0.5 &&
           g.has_top_p && !g.do_sample_given,
       "legacy sampling");
    json_object_put(b);
    refused(CK_LEGACY, "{\"model_id\":\"m\"}", "prompt");
    refused(CK_LEGACY, "{\"prompt\":1}", "prompt");
    refused(CK_LEGACY, "{\"prompt\":\"x\",\"max_new_tokens\":0}", "max_new_tokens");
    refused(CK_LEGACY, "{\"prompt\":\"x\",\"temperature\":-1}", "temperature");
    refused(CK_LEGACY, "{\"prompt\":\"x\",\"top_p\":2}", "top_p");
    refused(CK_LEGACY, "{\"prompt\":\"x\",\"repetition_penalty\":0}", "repetition_penalty");

    /* ------------------------------------------------------------ upstream requests: chat clients */
    upstream(CK_CHAT, UPSTREAM_OPENAI,
             "{\"model\":\"alias\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stop\":\"x\",\"foo\":1}",
             "{\"model\":\"target\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stop\":\"x\",\"foo\":1}",
             NULL, "chat -> openai: passed through, model rewritten, unknown fields kept");
    upstream(CK_CHAT, UPSTREAM_TGI, "{\"model\":\"alias\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"n\":3}",
             "{\"model\":\"tgi\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"n\":3}", NULL,
             "chat -> tgi: passed through with model \"tgi\"");
    upstream(CK_CHAT, UPSTREAM_TGI, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
             "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"model\":\"tgi\"}", NULL,
             "chat -> tgi: a model added when the client named none");
    upstream(CK_CHAT, UPSTREAM_TRANSFORMERS,
             "{\"model\":\"a\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"top_k\":5,\"stream\":true,"
             "\"stream_options\":{\"include_usage\":true},\"repetition_penalty\":1.5,\"max_tokens\":4}",
             "{\"model\":\"target\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":true,"
             "\"max_tokens\":4}",
             NULL, "chat -> transformers-serve: unknown keys and stream_options (refused there) dropped");
    upstream(CK_CHAT, UPSTREAM_TRANSFORMERS,
             "{\"messages\":[{}],\"max_completion_tokens\":3,\"n\":1,\"logprobs\":false,\"user\":\"u\"}",
             "{\"messages\":[{}],\"model\":\"target\",\"stream\":true,\"max_tokens\":3}", NULL,
             "chat -> transformers-serve: max_completion_tokens as max_tokens; n 1, logprobs false, user dropped");
    upstream(CK_CHAT, UPSTREAM_TRANSFORMERS,
             "{\"messages\":[{}],\"n\":2,\"logprobs\":true,\"presence_penalty\":1}",
             "{\"messages\":[{}],\"n\":2,\"logprobs\":true,\"presence_penalty\":1,\"model\":\"target\",\"stream\":true}", NULL,
             "chat -> transformers-serve: what asks for something it does not do stays (its 422 answers)");
    upstream(CK_CHAT, UPSTREAM_TRANSFORMERS, "{\"messages\":[{}],\"stop\":\"x\"}", NULL, "`stop`",
             "chat -> transformers-serve: stop refused (it leaves the stream hanging)");
    {
        char big[8192];
        size_t n = (size_t)snprintf(big, sizeof big, "{\"messages\":[{}]");
        for (int i = 0; i < 150; i++)
            n += (size_t)snprintf(big + n, sizeof big - n, ",\"x%d\":%d", i, i);
        snprintf(big + n, sizeof big - n, ",\"seed\":1}");
        upstream(CK_CHAT, UPSTREAM_TRANSFORMERS, big, "{\"messages\":[{}],\"seed\":1,\"model\":\"target\",\"stream\":true}", NULL,
                 "chat -> transformers-serve: 150 unknown keys all dropped");
    }

    /* completion clients */
    upstream(CK_COMPLETION, UPSTREAM_OPENAI, "{\"model\":\"a\",\"prompt\":[1,2],\"echo\":true,\"stop\":\"s\"}",
             "{\"model\":\"target\",\"prompt\":[1,2],\"echo\":true,\"stop\":\"s\"}", NULL,
             "completion -> openai: passed through (token lists too)");
    upstream(CK_COMPLETION, UPSTREAM_TGI, "{\"model\":\"a\",\"prompt\":\"p\"}",
             "{\"inputs\":\"p\",\"parameters\":{\"max_new_tokens\":16,\"do_sample\":true,\"details\":true,"
             "\"return_full_text\":false,\"decoder_input_details\":true}}",
             NULL, "completion -> tgi: OpenAI's default samples, max_tokens defaults to 16");
    upstream(CK_COMPLETION, UPSTREAM_TGI, "{\"prompt\":\"p\",\"temperature\":0,\"top_p\":0.5,\"max_tokens\":3}",
             "{\"inputs\":\"p\",\"parameters\":{\"max_new_tokens\":3,\"do_sample\":false,\"details\":true,"
             "\"return_full_text\":false,\"decoder_input_details\":true}}",
             NULL, "completion -> tgi: temperature 0 is do_sample false, no warpers");
    upstream(CK_COMPLETION, UPSTREAM_TGI,
             "{\"prompt\":\"p\",\"temperature\":0.5,\"top_p\":0.25,\"max_tokens\":5,\"stop\":[\"x\",\"y\"],\"seed\":3,"
             "\"frequency_penalty\":0.5,\"presence_penalty\":1,\"stream\":true}",
             "{\"inputs\":\"p\",\"parameters\":{\"max_new_tokens\":5,\"do_sample\":true,\"temperature\":0.5,"
             "\"top_p\":0.25,\"frequency_penalty\":0.5,\"stop\":[\"x\",\"y\"],\"seed\":3,\"details\":true,"
             "\"return_full_text\":false}}",
             NULL, "completion -> tgi: sampling, stop list, seed; no decoder_input_details when streaming");
    upstream(CK_COMPLETION, UPSTREAM_TGI, "{\"prompt\":\"p\",\"stop\":\"end\",\"seed\":-1,\"top_p\":1}",
             "{\"inputs\":\"p\",\"parameters\":{\"max_new_tokens\":16,\"do_sample\":true,\"stop\":[\"end\"],"
             "\"details\":true,\"return_full_text\":false,\"decoder_input_details\":true}}",
             NULL, "completion -> tgi: a stop string as a list, no negative seed, top_p 1 dropped");
    upstream(CK_COMPLETION, UPSTREAM_TGI, "{\"prompt\":\"p\",\"n\":2}", NULL, "`n`", "completion -> tgi: n > 1 refused");
    upstream(CK_COMPLETION, UPSTREAM_TGI, "{\"prompt\":[1,2]}", NULL, "`prompt`",
             "completion -> tgi: a token list refused");
    upstream(CK_COMPLETION, UPSTREAM_TRANSFORMERS, "{\"prompt\":[\"a\",\"b\"]}", NULL, "`prompt`",
             "completion -> transformers-serve: a list of prompts refused");
    upstream(CK_COMPLETION, UPSTREAM_TRANSFORMERS,
             "{\"model\":\"a\",\"prompt\":\"p\",\"max_tokens\":4,\"temperature\":0.5,\"top_p\":0.5,\"n\":2,"
             "\"presence_penalty\":0.5,\"frequency_penalty\":0.25,\"seed\":9,\"stream\":true,"
             "\"echo\":true}",
             "{\"model\":\"target\",\"messages\":[{\"role\":\"user\",\"content\":\"p\"}],\"max_tokens\":4,"
             "\"temperature\":0.5,\"top_p\":0.5,\"n\":2,\"presence_penalty\":0.5,\"frequency_penalty\":0.25,"
             "\"seed\":9,\"stream\":true}",
             NULL, "completion -> transformers-serve: the prompt as a user message, no stream_options (refused there)");
    upstream(CK_COMPLETION, UPSTREAM_TRANSFORMERS, "{\"prompt\":\"p\",\"stop\":[\"s\"]}", NULL, "`stop`",
             "completion -> transformers-serve: stop refused");
    upstream(CK_COMPLETION, UPSTREAM_TRANSFORMERS, "{\"prompt\":\"p\"}",
             "{\"model\":\"target\",\"messages\":[{\"role\":\"user\",\"content\":\"p\"}],\"stream\":true}", NULL,
             "completion -> transformers-serve: defaults left to the upstream; always a stream (it answers one)");

    /* TGI clients */
    upstream(CK_TGI, UPSTREAM_TGI,
             "{\"inputs\":\"x\",\"model\":\"m\",\"stream\":true,\"parameters\":{\"max_new_tokens\":5,\"top_n_tokens\":2}}",
             "{\"inputs\":\"x\",\"parameters\":{\"max_new_tokens\":5,\"top_n_tokens\":2}}", NULL,
             "tgi -> tgi: passed through without model and stream");
    upstream(CK_TGI, UPSTREAM_TGI, "{\"inputs\":\"x\",\"parameters\":{\"stop\":\"s\"}}",
             "{\"inputs\":\"x\",\"parameters\":{\"stop\":[\"s\"]}}", NULL,
             "tgi -> tgi: a string stop goes as the list TGI takes, no internal key leaks");
    upstream(CK_TGI, UPSTREAM_OPENAI, "{\"inputs\":\"x\"}",
             "{\"model\":\"target\",\"prompt\":\"x\",\"max_tokens\":20,\"temperature\":0.0}", NULL,
             "tgi -> openai: TGI's defaults: greedy (temperature 0), 20 new tokens");
    upstream(CK_TGI, UPSTREAM_OPENAI,
             "{\"inputs\":\"x\",\"stream\":true,\"parameters\":{\"max_new_tokens\":20,\"temperature\":0.5,"
             "\"top_p\":0.5,\"top_k\":4,\"seed\":3,\"stop\":[\"s\"],\"repetition_penalty\":1.5,"
             "\"frequency_penalty\":0.25}}",
             "{\"model\":\"target\",\"prompt\":\"x\",\"max_tokens\":20,\"temperature\":0.5,\"top_p\":0.5,"
             "\"frequency_penalty\":0.25,\"stop\":[\"s\"],\"seed\":3,\"stream\":true,"
             "\"stream_options\":{\"include_usage\":true}}",
             NULL, "tgi -> openai: warpers sample; stream asks for usage");
    upstream(CK_TGI, UPSTREAM_OPENAI, "{\"inputs\":\"x\",\"parameters\":{\"do_sample\":true}}",
             "{\"model\":\"target\",\"prompt\":\"x\",\"max_tokens\":20,\"temperature\":1.0}", NULL,
             "tgi -> openai: do_sample alone is temperature 1");
    /* TGI samples when do_sample is set OR a warper changes anything (its NextTokenChooser), and the
     * text-generation client always sends do_sample false. */
    upstream(CK_TGI, UPSTREAM_OPENAI, "{\"inputs\":\"x\",\"parameters\":{\"do_sample\":false,\"temperature\":0.5}}",
             "{\"model\":\"target\",\"prompt\":\"x\",\"max_tokens\":20,\"temperature\":0.5}", NULL,
             "tgi -> openai: a temperature samples even with do_sample false (as TGI does)");
    upstream(CK_TGI, UPSTREAM_OPENAI, "{\"inputs\":\"x\",\"parameters\":{\"do_sample\":false,\"temperature\":1.0}}",
             "{\"model\":\"target\",\"prompt\":\"x\",\"max_tokens\":20,\"temperature\":0.0}", NULL,
             "tgi -> openai: temperature 1 changes nothing: still greedy");
    upstream(CK_TGI, UPSTREAM_TRANSFORMERS, "{\"inputs\":\"x\",\"parameters\":{\"max_new_tokens\":2}}",
             "{\"model\":\"target\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":2,"
             "\"temperature\":0.0,\"stream\":true}",
             NULL, "tgi -> transformers-serve: chat");

    /* legacy clients */
    upstream(CK_LEGACY, UPSTREAM_TGI, "{\"model_id\":\"m\",\"prompt\":\"hi\",\"max_new_tokens\":8,\"temperature\":0}",
             "{\"inputs\":\"hi\",\"parameters\":{\"max_new_tokens\":8,\"do_sample\":false,\"details\":true,"
             "\"return_full_text\":false,\"decoder_input_details\":true}}",
             NULL, "legacy -> tgi: greedy");
    upstream(CK_LEGACY, UPSTREAM_TGI, "{\"prompt\":\"hi\",\"temperature\":0.5,\"repetition_penalty\":1.5}",
             "{\"inputs\":\"hi\",\"parameters\":{\"do_sample\":true,\"temperature\":0.5,\"repetition_penalty\":1.5,"
             "\"details\":true,\"return_full_text\":false,\"decoder_input_details\":true}}",
             NULL, "legacy -> tgi: sampling, no max_new_tokens default");
    upstream(CK_LEGACY, UPSTREAM_OPENAI, "{\"prompt\":\"hi\",\"max_new_tokens\":8}",
             "{\"model\":\"target\",\"prompt\":\"hi\",\"max_tokens\":8,\"temperature\":0.0}", NULL,
             "legacy -> openai: completions, greedy");
    upstream(CK_LEGACY, UPSTREAM_TRANSFORMERS, "{\"prompt\":\"hi\",\"temperature\":0.5}",
             "{\"model\":\"target\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":20,"
             "\"temperature\":0.5,\"stream\":true}",
             NULL, "legacy -> transformers-serve: chat, sampling, 20 new tokens by default");

    /* The client's body is left as it was (pass-through copies it). */
    b = J("{\"model\":\"a\",\"messages\":[{}],\"stop\":\"x\"}");
    dialect_read_request(CK_CHAT, b, &g, err, sizeof err);
    o = dialect_upstream_request(CK_CHAT, UK_CHAT, UPSTREAM_OPENAI, b, &g, "t", err, sizeof err);
    json_object *m = NULL;
    ok(json_object_object_get_ex(b, "model", &m) && strcmp(json_object_get_string(m), "a") == 0,
       "pass-through leaves the client's body alone");
    json_object_put(o);
    json_object_put(b);

    /* ------------------------------------------------------------ whole answers */
    struct gen_result r;
    b = J("{\"id\":\"x\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"hi\"},"
          "\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}");
    ok(dialect_read_result(UK_CHAT, b, &r, err, sizeof err) == 0, "a chat answer reads");
    ok(r.text && strcmp(r.text, "hi") == 0 && r.finish == FIN_LENGTH && r.prompt_tokens == 3 && r.completion_tokens == 2,
       "  text, finish, usage");
    gen_result_free(&r);
    ok(r.text == NULL, "gen_result_free clears the text");
    json_object_put(b);
    b = J("{\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[]},"
          "\"finish_reason\":\"tool_calls\"}]}");
    ok(dialect_read_result(UK_CHAT, b, &r, err, sizeof err) == 0 && strcmp(r.text, "") == 0 && r.finish == FIN_OTHER &&
           r.prompt_tokens == -1 && r.completion_tokens == -1,
       "a chat answer with null content: empty text, unknown finish, no usage");
    gen_result_free(&r);
    json_object_put(b);
    result_bad(UK_CHAT, "[]", "not a JSON object", "chat: a list");
    result_bad(UK_CHAT, "null", "not a JSON object", "chat: null");
    result_bad(UK_CHAT, "{}", "`choices` is missing", "chat: no choices");
    result_bad(UK_CHAT, "{\"choices\":[]}", "`choices` is empty", "chat: empty choices");
    result_bad(UK_CHAT, "{\"choices\":[1]}", "`choices[0]` must be an object", "chat: a choice that is no object");
    result_bad(UK_CHAT, "{\"choices\":{}}", "`choices` must be a list", "chat: choices not a list");
    result_bad(UK_CHAT, "{\"choices\":[{\"text\":\"t\"}]}", "`choices[0].message` is missing", "chat: no message");
    result_bad(UK_CHAT, "{\"choices\":[{\"message\":{\"content\":5}}]}", "`choices[0].message.content` must be a string or null",
               "chat: content a number");

    b = J("{\"choices\":[{\"text\":\"t\",\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":4,"
          "\"completion_tokens\":2147483647,\"total_tokens\":0}}");
    ok(dialect_read_result(UK_COMPLETION, b, &r, err, sizeof err) == 0 && strcmp(r.text, "t") == 0 &&
           r.finish == FIN_EOS && r.prompt_tokens == 4 && r.completion_tokens == 2147483647,
       "a completion answer reads; counts from 0 to INT32_MAX");
    gen_result_free(&r);
    json_object_put(b);
    /* usage counts: anything but a whole number from 0 to INT32_MAX is a bad answer, named */
    result_bad(UK_COMPLETION, "{\"choices\":[{\"text\":\"t\"}],\"usage\":{\"prompt_tokens\":\"3\"}}",
               "`usage.prompt_tokens` must be a whole number from 0 to 2147483647", "a count that is a string");
    result_bad(UK_COMPLETION, "{\"choices\":[{\"text\":\"t\"}],\"usage\":{\"completion_tokens\":9223372036854775807}}",
               "`usage.completion_tokens` must be", "2^63-1 tokens (fuzz_upstream: the usage sum overflowed)");
    result_bad(UK_CHAT, "{\"choices\":[{\"message\":{}}],\"usage\":{\"prompt_tokens\":-4}}",
               "`usage.prompt_tokens` must be", "a negative count");
    result_bad(UK_CHAT, "{\"choices\":[{\"message\":{}}],\"usage\":{\"total_tokens\":1.5}}",
               "`usage.total_tokens` must be", "a count that is no integer");
    result_bad(UK_CHAT, "{\"choices\":[{\"message\":{}}],\"usage\":{\"total_tokens\":2147483648}}",
               "`usage.total_tokens` must be", "a count above INT32_MAX");
    result_bad(UK_CHAT, "{\"choices\":[{\"message\":{}}],\"usage\":[]}", "`usage` must be an object", "usage a list");
    /* every OpenAI answer's choices, messages and fields the API defines */
    result_bad(UK_CHAT, "{\"choices\":[{\"message\":\"not-an-object\"}]}", "`choices[0].message` must be an object",
               "a message that is a string");
    result_bad(UK_CHAT, "{\"choices\":[{\"message\":{}},{\"message\":5}]}", "`choices[1].message` must be",
               "the second choice checked too");
    result_bad(UK_CHAT, "{\"choices\":[{\"message\":{\"role\":1}}]}", "`choices[0].message.role`", "a role number");
    result_bad(UK_CHAT, "{\"choices\":[{\"message\":{\"tool_calls\":{}}}]}", "`choices[0].message.tool_calls`",
               "tool_calls not a list");
    result_bad(UK_CHAT, "{\"choices\":[{\"message\":{},\"finish_reason\":123}]}", "`choices[0].finish_reason`",
               "a finish_reason number");
    result_bad(UK_CHAT, "{\"choices\":[{\"message\":{},\"index\":-1}]}", "`choices[0].index`", "a negative index");
    result_bad(UK_CHAT, "{\"id\":5,\"choices\":[{\"message\":{}}]}", "`id` must be a string", "an id number");
    result_bad(UK_CHAT, "{\"created\":\"now\",\"choices\":[{\"message\":{}}]}", "`created` must be", "created a string");
    result_bad(UK_CHAT, "{\"model\":[],\"choices\":[{\"message\":{}}]}", "`model` must be a string", "model a list");
    result_bad(UK_COMPLETION, "{\"choices\":[{\"text\":\"t\",\"logprobs\":7}]}", "`choices[0].logprobs`",
               "logprobs a number");
    result_bad(UK_COMPLETION, "{\"choices\":[{\"text\":5}]}", "`choices[0].text` must be a string", "completion: text a number");
    result_bad(UK_COMPLETION, "{\"choices\":[{\"message\":{\"content\":\"x\"}}]}", "`choices[0].text` is missing", "completion: a chat answer");
    result_bad(UK_COMPLETION, "\"text\"", "not a JSON object", "completion: a string");

    b = J("{\"generated_text\":\"g\",\"details\":{\"finish_reason\":\"eos_token\",\"generated_tokens\":4,\"seed\":9,"
          "\"prefill\":[{\"id\":1},{\"id\":2}],\"tokens\":[]}}");
    ok(dialect_read_result(UK_TGI, b, &r, err, sizeof err) == 0 && strcmp(r.text, "g") == 0 && r.finish == FIN_EOS &&
           r.completion_tokens == 4 && r.prompt_tokens == 2 && r.has_seed && r.seed == 9,
       "a TGI answer with details: prompt tokens from prefill, seed");
    gen_result_free(&r);
    json_object_put(b);
    b = J("[{\"generated_text\":\"g\",\"details\":{\"finish_reason\":\"stop_sequence\",\"input_length\":6,"
          "\"prefill\":[],\"seed\":null}}]");
    ok(dialect_read_result(UK_TGI, b, &r, err, sizeof err) == 0 && r.finish == FIN_STOP_SEQUENCE &&
           r.prompt_tokens == 6 && r.completion_tokens == -1 && !r.has_seed,
       "a TGI list of one answer; input_length when prefill is empty");
    gen_result_free(&r);
    json_object_put(b);
    b = J("{\"generated_text\":\"\"}");
    ok(dialect_read_result(UK_TGI, b, &r, err, sizeof err) == 0 && strcmp(r.text, "") == 0 && r.finish == FIN_NONE &&
           r.prompt_tokens == -1,
       "a TGI answer without details");
    gen_result_free(&r);
    json_object_put(b);
    result_bad(UK_TGI, "{}", "`generated_text` is missing", "tgi: no generated_text");
    result_bad(UK_TGI, "{\"generated_text\":5}", "`generated_text` must be a string", "tgi: generated_text a number");
    result_bad(UK_TGI, "[]", "not a JSON object", "tgi: an empty list");
    result_bad(UK_TGI, "[{\"generated_text\":\"a\"},{\"generated_text\":\"b\"}]", "not a JSON object",
               "tgi: a list of two");
    result_bad(UK_TGI, "[5]", "not a JSON object", "tgi: a list of a number");
    result_bad(UK_TGI, "{\"choices\":[{\"text\":\"x\"}]}", "`generated_text` is missing", "tgi: an OpenAI answer");
    /* TGI's details: types and ranges, named */
    result_bad(UK_TGI, "{\"generated_text\":\"g\",\"details\":{\"finish_reason\":123}}",
               "`details.finish_reason` must be a string", "tgi: finish_reason 123");
    result_bad(UK_TGI, "{\"generated_text\":\"g\",\"details\":{\"seed\":\"abc\"}}", "`details.seed` must be a whole number",
               "tgi: seed \"abc\"");
    result_bad(UK_TGI, "{\"generated_text\":\"g\",\"details\":{\"seed\":-1}}", "`details.seed`", "tgi: a negative seed");
    result_bad(UK_TGI, "{\"generated_text\":\"g\",\"details\":{\"prefill\":\"x\"}}", "`details.prefill` must be a list",
               "tgi: prefill \"x\"");
    result_bad(UK_TGI, "{\"generated_text\":\"g\",\"details\":{\"prefill\":[{\"id\":1},5]}}",
               "`details.prefill[1]` must be an object", "tgi: a prefill token that is no object");
    result_bad(UK_TGI, "{\"generated_text\":\"g\",\"details\":{\"tokens\":[{\"id\":4294967296}]}}",
               "`details.tokens[0].id` must be a whole number from 0 to 4294967295", "tgi: a token id beyond u32");
    result_bad(UK_TGI, "{\"generated_text\":\"g\",\"details\":{\"tokens\":[{\"id\":1,\"logprob\":\"x\"}]}}",
               "`details.tokens[0].logprob`", "tgi: a logprob string");
    result_bad(UK_TGI, "{\"generated_text\":\"g\",\"details\":{\"generated_tokens\":-3}}",
               "`details.generated_tokens`", "tgi: negative generated_tokens");
    result_bad(UK_TGI, "{\"generated_text\":\"g\",\"details\":\"full\"}", "`details` must be an object", "tgi: details a string");
    b = J("{\"generated_text\":\"g\",\"details\":{\"finish_reason\":\"length\",\"seed\":13418395476843003924}}");
    ok(dialect_read_result(UK_TGI, b, &r, err, sizeof err) == 0 && r.has_seed &&
           (uint64_t)r.seed == 13418395476843003924ULL,
       "a TGI seed above INT64_MAX (TGI's seeds are u64) is taken");
    gen_result_free(&r);
    json_object_put(b);

    /* ------------------------------------------------------------ stream events */
    struct gen_delta d;
    b = J("{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"he\"},"
          "\"finish_reason\":null}]}");
    ok(dialect_read_delta(UK_CHAT, b, &d) == 0 && d.text && strcmp(d.text, "he") == 0 && d.finish == FIN_NONE &&
           d.prompt_tokens == -1 && !d.error && d.token_id == -1,
       "an OpenAI chat chunk");
    json_object_put(b);
    b = J("{\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}");
    ok(dialect_read_delta(UK_CHAT, b, &d) == 0 && d.text == NULL && d.finish == FIN_EOS, "the last chat chunk");
    json_object_put(b);
    b = J("{\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null}}]}");
    ok(dialect_read_delta(UK_CHAT, b, &d) == 0 && d.text == NULL, "the first chat chunk (role only)");
    json_object_put(b);
    b = J("{\"choices\":[{\"text\":\"lo\",\"finish_reason\":\"length\"}]}");
    ok(dialect_read_delta(UK_COMPLETION, b, &d) == 0 && strcmp(d.text, "lo") == 0 && d.finish == FIN_LENGTH,
       "a completion chunk");
    json_object_put(b);
    b = J("{\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":9}}");
    ok(dialect_read_delta(UK_CHAT, b, &d) == 0 && d.text == NULL && d.prompt_tokens == 4 && d.completion_tokens == 9 &&
           d.finish == FIN_NONE,
       "a usage-only chunk (chat)");
    ok(dialect_read_delta(UK_COMPLETION, b, &d) == 0 && d.prompt_tokens == 4, "a usage-only chunk (completion)");
    json_object_put(b);
    b = J("{\"object\":\"x\"}");
    ok(dialect_read_delta(UK_CHAT, b, &d) == -1 && dialect_read_delta(UK_COMPLETION, b, &d) == -1,
       "an object that is no chunk");
    json_object_put(b);
    b = J("[1]");
    ok(dialect_read_delta(UK_CHAT, b, &d) == -1 && dialect_read_delta(UK_TGI, b, &d) == -1 &&
           dialect_read_delta(UK_TGI, NULL, &d) == -1,
       "a list or nothing is no event");
    json_object_put(b);
    b = J("{\"index\":1,\"token\":{\"id\":5,\"text\":\"a\",\"logprob\":-0.5,\"special\":false},"
          "\"generated_text\":null,\"details\":null}");
    ok(dialect_read_delta(UK_TGI, b, &d) == 0 && strcmp(d.text, "a") == 0 && d.token_id == 5 && d.has_logprob &&
           d.logprob == -0.5 && !d.special && d.finish == FIN_NONE,
       "a TGI token event");
    json_object_put(b);
    b = J("{\"index\":2,\"token\":{\"id\":2,\"text\":\"</s>\",\"logprob\":null,\"special\":true},"
          "\"generated_text\":\"abc\",\"details\":{\"finish_reason\":\"length\",\"generated_tokens\":3,\"seed\":11,"
          "\"input_length\":4}}");
    ok(dialect_read_delta(UK_TGI, b, &d) == 0 && d.special && !d.has_logprob && d.finish == FIN_LENGTH &&
           d.completion_tokens == 3 && d.prompt_tokens == 4 && d.has_seed && d.seed == 11,
       "the TGI final event with details");
    json_object_put(b);
    b = J("{\"token\":{\"id\":2,\"text\":\"\",\"special\":true},\"generated_text\":\"abc\",\"details\":null}");
    ok(dialect_read_delta(UK_TGI, b, &d) == 0 && d.finish == FIN_OTHER && d.completion_tokens == -1,
       "the TGI final event without details still finishes");
    json_object_put(b);
    b = J("{\"token\":{\"id\":2,\"text\":\"x\"},\"details\":{\"generated_tokens\":1}}");
    ok(dialect_read_delta(UK_TGI, b, &d) == 0 && d.finish == FIN_OTHER, "TGI details without a finish reason finish");
    json_object_put(b);
    b = J("{\"generated_text\":\"abc\"}");
    ok(dialect_read_delta(UK_TGI, b, &d) == -1, "a TGI event without a token");
    json_object_put(b);
    b = J("{\"token\":\"x\"}");
    ok(dialect_read_delta(UK_TGI, b, &d) == -1, "a TGI token that is no object");
    json_object_put(b);
    {
        static const struct { enum upstream_call c; const char *event, *want; } bad_events[] = {
            {UK_TGI, "{\"index\":1,\"token\":{\"id\":-5,\"text\":\"a\"}}", "`token.id` must be a whole number"},
            {UK_TGI, "{\"token\":{\"id\":5,\"text\":7}}", "`token.text` must be a string"},
            {UK_TGI, "{\"token\":{\"id\":5,\"special\":\"no\"}}", "`token.special` must be true or false"},
            {UK_TGI, "{\"index\":\"1\",\"token\":{\"id\":5}}", "`index` must be"},
            {UK_TGI, "{\"token\":{\"id\":5},\"generated_text\":5}", "`generated_text` must be a string or null"},
            {UK_TGI, "{\"token\":{\"id\":5},\"details\":{\"finish_reason\":123}}", "`details.finish_reason`"},
            {UK_TGI, "{\"token\":{\"id\":5},\"details\":{\"generated_tokens\":18446744073709551614}}",
             "`details.generated_tokens`"},
            {UK_CHAT, "{\"choices\":[{\"delta\":\"x\"}]}", "`choices[0].delta` must be an object"},
            {UK_CHAT, "{\"choices\":[{\"delta\":{\"content\":5}}]}", "`choices[0].delta.content`"},
            {UK_CHAT, "{\"choices\":{}}", "`choices` must be a list"},
            {UK_CHAT, "{\"choices\":[],\"usage\":{\"prompt_tokens\":-1}}", "`usage.prompt_tokens` must be"},
            {UK_COMPLETION, "{\"choices\":[{\"text\":[]}]}", "`choices[0].text` must be a string"},
            {UK_COMPLETION, "{\"choices\":[5]}", "`choices[0]` must be an object"},
        };
        for (size_t i = 0; i < sizeof bad_events / sizeof *bad_events; i++) {
            b = J(bad_events[i].event);
            ok(dialect_read_delta(bad_events[i].c, b, &d) == -1 && strstr(d.bad, bad_events[i].want),
               "a bad event is refused, naming the field: %s", bad_events[i].event);
            if (!strstr(d.bad, bad_events[i].want))
                printf("#   got \"%s\"\n", d.bad);
            json_object_put(b);
        }
    }
    {
        static const enum upstream_call calls[] = {UK_CHAT, UK_COMPLETION, UK_TGI};
        for (int i = 0; i < 3; i++) {
            b = J("{\"error\":\"Request failed during generation: out of memory\",\"error_type\":\"generation\"}");
            ok(dialect_read_delta(calls[i], b, &d) == 0 && d.error &&
                   strcmp(d.error, "Request failed during generation: out of memory") == 0,
               "a TGI error event (call %d)", i);
            json_object_put(b);
            b = J("{\"error\":{\"message\":\"bad\",\"type\":\"x\"}}");
            ok(dialect_read_delta(calls[i], b, &d) == 0 && d.error && strcmp(d.error, "bad") == 0,
               "an OpenAI error event (call %d)", i);
            json_object_put(b);
            b = J("{\"error\":{\"code\":500}}");
            ok(dialect_read_delta(calls[i], b, &d) == 0 && d.error && strstr(d.error, "reported an error"),
               "an error event without a message (call %d)", i);
            json_object_put(b);
        }
        b = J("{\"error\":null,\"choices\":[{\"text\":\"x\"}]}");
        ok(dialect_read_delta(UK_COMPLETION, b, &d) == 0 && !d.error && strcmp(d.text, "x") == 0,
           "\"error\": null is no error");
        json_object_put(b);
    }

    /* ------------------------------------------------------------ error bodies */
    error_message("{\"error\":{\"message\":\"model not found\",\"type\":\"invalid_request_error\"}}", "model not found");
    error_message("{\"error\":\"Input validation error: max_new_tokens\",\"error_type\":\"validation\"}",
                  "Input validation error: max_new_tokens");
    error_message("{\"detail\":\"Not Found\"}", "Not Found");
    error_message("{\"detail\":[{\"loc\":[\"body\",\"x\"],\"msg\":\"Extra inputs are not permitted\",\"type\":\"x\"}]}",
                  "`x`: Extra inputs are not permitted");     /* FastAPI's: the field named */
    error_message("{\"message\":\"plain\"}", "plain");
    error_message("{\"error\":{\"code\":1},\"message\":\"fallback\"}", "fallback");
    error_message("{\"error\":{\"message\":\"first\"},\"message\":\"second\"}", "first");
    error_message("{\"detail\":[]}", NULL);
    error_message("{\"detail\":[5]}", NULL);
    error_message("{\"error\":5}", NULL);
    error_message("{}", NULL);
    error_message("[\"error\"]", NULL);
    error_message("\"error\"", NULL);
    ok(!dialect_error_message(NULL, err, sizeof err), "no body, no message");
    {
        char small[8];
        b = J("{\"error\":\"a long message indeed\"}");
        ok(dialect_error_message(b, small, sizeof small) && strcmp(small, "a long ") == 0,
           "a long message is cut to the buffer");
        json_object_put(b);
    }

    /* ------------------------------------------------------------ headers sent upstream */
    {
        /* the operator's api_key and header = lines replace every header of the same name,
         * whatever its case and whether it spells - or _ (both are HTTP_X_Y to CGI) */
        char *conf_headers[] = {"X-Extra: one", "X-Empty: "};
        struct config_upstream c = {.api_key = "sk-op", .headers = conf_headers, .n_headers = 2};
        struct curl_slist *h = NULL;
        const char *client[] = {"authorization: Bearer client-key", "x-extra: client", "X_EXTRA: client2",
                                "X-Extra-More: kept", "X-Empty;", "Accept-Language: fr", "Expect:"};
        for (size_t i = 0; i < sizeof client / sizeof *client; i++)
            gateway_slist_add(&h, client[i]);
        h = upstream_credentials(&c, h);
        char got[512] = "";
        for (struct curl_slist *l = h; l; l = l->next)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s|", l->data);
        is_str(got, "X-Extra-More: kept|Accept-Language: fr|Expect:|Authorization: Bearer sk-op|X-Extra: one|X-Empty: |",
               "configured headers replace the client's of the same name, never sit beside them");
        curl_slist_free_all(h);

        struct config_upstream bare = {0};
        h = NULL;
        gateway_slist_add(&h, "Authorization: Bearer client-key");
        h = upstream_credentials(&bare, h);
        ok(h && !h->next && strcmp(h->data, "Authorization: Bearer client-key") == 0,
           "without api_key or header lines the list is left as it was");
        curl_slist_free_all(h);
        h = upstream_credentials(&c, NULL);
        ok(h && h->next && h->next->next && !h->next->next->next, "three lines: api_key and two header lines");
        curl_slist_free_all(h);
        size_t dropped = 99;
        char long_id[300], info[1024];
        memset(long_id, 'a', 257);
        long_id[257] = '\0';
        snprintf(info, sizeof info, "{\"data\":[{\"id\":\"org/model-1.5B:q4\"},{\"id\":\"a\\nb\"},{\"id\":\"%s\"},"
                 "{\"id\":\"with space\"},{\"id\":\"q\\\"uote\"},{\"id\":5},{\"id\":\"%.256s\"}]}", long_id, long_id);
        char **names = gateway_parse_model_list(info, strlen(info), false, &dropped);
        ok(names && names[0] && strcmp(names[0], "org/model-1.5B:q4") == 0 && names[1] && strlen(names[1]) == 256 &&
               !names[2] && dropped == 5,
           "model lists: ids of safe characters up to 256 bytes are kept, the rest counted as dropped");
        gateway_free_names(names);
        snprintf(info, sizeof info, "{\"model_id\":\"%.250s\\n2026-01-01 [error] forged\"}", long_id);
        names = gateway_parse_model_list(info, strlen(info), true, &dropped);
        ok(names && !names[0] && dropped == 1,
           "TGI's /info: a model_id with a newline or over 256 bytes is not taken (an empty list, not the last one)");
        gateway_free_names(names);
        {
            const char *good = "{\"model_id\":\"bigscience/bloom-560m\"}";
            names = gateway_parse_model_list(good, strlen(good), true, &dropped);
        }
        ok(names && strcmp(names[0], "bigscience/bloom-560m") == 0 && !names[1] && dropped == 0, "TGI's /info: a good id");
        gateway_free_names(names);
        {
            const char *twice = "{\"data\":[{\"id\":\"a\"},{\"id\":\"a\"}],\"data\":[]}";
            names = gateway_parse_model_list(twice, strlen(twice), false, &dropped);
        }
        ok(!names, "a model list with a key twice is no model list");
        ok(!gateway_model_id_ok("a\x80", 2) && !gateway_model_id_ok("", 0) && !gateway_model_id_ok("a<b", 3) &&
               !gateway_model_id_ok("a`", 2) && !gateway_model_id_ok("a\\b", 3) && gateway_model_id_ok("~a_b.c+d@e=f,g", 14),
           "model ids: printable ASCII without space, quotes, backslash, <>");
        ok(gateway_header_name_eq("X-Api_KEY", 9, "x_api-key", 9) && !gateway_header_name_eq("X-Api", 5, "X-Apix", 6) &&
               !gateway_header_name_eq("ab", 2, "ac", 2),
           "header names: case and -/_ alike, nothing else");
    }
    test_responses();
    test_constraints();
    return tap_done();
}
