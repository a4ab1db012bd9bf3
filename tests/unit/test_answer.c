/* test_answer.c -- the client answers and stream events front/answer.c builds for local and proxied
 * generations alike (exact JSON): OpenAI whole answers, chunks and usage, TGI answers, details, tokens
 * and stream events, the legacy shape, the finish words, system_fingerprint; the Responses API's response
 * object and typed stream events; embeddings as numbers and as base64. */
#include "config.h"
#include "answer.h"
#include "tap.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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

static void test_responses_and_embeddings(void)
{
    struct gen g = {.max_tokens = 8, .instructions = "Be brief."};
    struct answer_meta m = {.kind = CK_RESPONSES, .id = "abc", .created = 100, .model = "m", .g = &g};
    struct answer_usage u = {.prompt = 3, .completion = 8, .cached = 1};
    json_object *o = answer_response(&m, true, "Hi", 2, FIN_LENGTH, &u);
    const char *t = S(o);
    has_str(t, "\"id\":\"resp_abc\",\"object\":\"response\",\"created_at\":100,\"status\":\"incomplete\","
            "\"error\":null,\"incomplete_details\":{\"reason\":\"max_output_tokens\"},\"instructions\":\"Be brief.\","
            "\"max_output_tokens\":8,\"model\":\"m\",\"output\":[{\"id\":\"msg_abc\",\"type\":\"message\","
            "\"status\":\"incomplete\",\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\",\"text\":\"Hi\","
            "\"annotations\":[],\"logprobs\":[]}]}]", "a response cut by the length limit: incomplete, with why");
    has_str(t, "\"store\":false", "  stateless");
    has_str(t, "\"usage\":{\"input_tokens\":3,\"input_tokens_details\":{\"cached_tokens\":1},\"output_tokens\":8,"
            "\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":11}", "  usage");
    json_object_put(o);
    o = answer_response(&m, true, "Hi", 2, FIN_EOS, &u);
    has_str(S(o), "\"status\":\"completed\",\"error\":null,\"incomplete_details\":null", "a finished response: completed");
    json_object_put(o);
    long seq = 0;
    json_object *ev[4];
    is_int(answer_response_head(&m, &seq, ev), 4, "four opening events");
    is_str(answer_response_type(ev[0]), "response.created", "  response.created");
    has_str(S(ev[0]), "\"sequence_number\":0,\"response\":{\"id\":\"resp_abc\"", "  numbered from 0");
    has_str(S(ev[0]), "\"status\":\"in_progress\"", "  in progress");
    has_str(S(ev[0]), "\"output\":[]", "  no output yet");
    has_str(S(ev[0]), "\"usage\":null", "  no usage yet");
    is_str(answer_response_type(ev[1]), "response.in_progress", "  response.in_progress");
    is_str(S(ev[2]), "{\"type\":\"response.output_item.added\",\"sequence_number\":2,\"output_index\":0,\"item\":{"
           "\"id\":\"msg_abc\",\"type\":\"message\",\"status\":\"in_progress\",\"role\":\"assistant\",\"content\":[]}}",
           "  the message added");
    is_str(S(ev[3]), "{\"type\":\"response.content_part.added\",\"sequence_number\":3,\"item_id\":\"msg_abc\","
           "\"output_index\":0,\"content_index\":0,\"part\":{\"type\":\"output_text\",\"text\":\"\",\"annotations\":[],"
           "\"logprobs\":[]}}", "  its text part added");
    for (int i = 0; i < 4; i++)
        json_object_put(ev[i]);
    o = answer_response_delta(&m, &seq, "Hi", 2);
    is_str(S(o), "{\"type\":\"response.output_text.delta\",\"sequence_number\":4,\"item_id\":\"msg_abc\","
           "\"output_index\":0,\"content_index\":0,\"delta\":\"Hi\",\"logprobs\":[]}", "a text delta");
    json_object_put(o);
    answer_response_tail(&m, &seq, "Hi", 2, FIN_EOS, &u, ev);
    is_str(answer_response_type(ev[0]), "response.output_text.done", "closing: the text done");
    has_str(S(ev[0]), "\"text\":\"Hi\"", "  with the whole text");
    is_str(answer_response_type(ev[1]), "response.content_part.done", "  the part done");
    is_str(answer_response_type(ev[2]), "response.output_item.done", "  the message done");
    is_str(answer_response_type(ev[3]), "response.completed", "  response.completed");
    has_str(S(ev[3]), "\"sequence_number\":8,", "  numbered on");
    for (int i = 0; i < 4; i++)
        json_object_put(ev[i]);
    answer_response_tail(&m, &seq, "Hi", 2, FIN_LENGTH, &u, ev);
    is_str(answer_response_type(ev[3]), "response.incomplete", "the length limit ends it with response.incomplete");
    for (int i = 0; i < 4; i++)
        json_object_put(ev[i]);

    float v[] = {0.5f, -1.25f, 0.1f, 1.0f, 0.0f, 2.0f};
    o = answer_embeddings("e", v, 2, 3, false, 7);
    is_str(S(o), "{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":0,\"embedding\":[0.5,-1.25,"
           "0.100000001]},{\"object\":\"embedding\",\"index\":1,\"embedding\":[1,0,2]}],\"model\":\"e\",\"usage\":{"
           "\"prompt_tokens\":7,\"total_tokens\":7}}", "embeddings as float32's shortest exact numbers");
    json_object_put(o);
    o = answer_embeddings("e", v, 1, 2, true, 1);
    /* 0.5f = 00 00 00 3f, -1.25f = 00 00 a0 bf: little-endian bytes in base64 */
    has_str(S(o), "\"embedding\":\"AAAAPwAAoL8=\"", "base64: the little-endian float32 bytes");
    json_object_put(o);
}

int main(void)
{
    json_object *o;
    struct answer_meta m = {.kind = CK_COMPLETION, .id = "abc", .created = 100, .model = "m"};
    struct answer_usage u = {.prompt = 3, .completion = 2, .cached = -1};

    /* ------------------------------------------------------------ whole OpenAI answers */
    struct answer_choice c = {.text = "t", .text_len = 1, .finish = FIN_LENGTH};
    o = answer_openai(&m, &c, 1, &u);
    is_str(S(o),
           "{\"id\":\"cmpl-abc\",\"object\":\"text_completion\",\"created\":100,\"model\":\"m\",\"choices\":[{\"index\":0,"
           "\"text\":\"t\",\"logprobs\":null,\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":3,"
           "\"completion_tokens\":2,\"total_tokens\":5}}",
           "a completion answer");
    json_object_put(o);
    c.finish = FIN_NONE;
    u.prompt = u.completion = -1;
    o = answer_openai(&m, &c, 1, &u);
    has_str(S(o), "\"finish_reason\":\"stop\"", "no finish reason known: stop");
    has_str(S(o), "\"usage\":{\"prompt_tokens\":0,\"completion_tokens\":0,\"total_tokens\":0}", "unknown usage: zeros");
    json_object_put(o);

    /* local answers: the fingerprint, the prefix cache's count, several choices */
    char fp[64];
    answer_fingerprint(fp, sizeof fp, "cpu");
    is_str(fp, "fp_llmcgi_" PACKAGE_VERSION "_cpu", "the fingerprint names version and backend");
    m.fingerprint = fp;
    m.kind = CK_CHAT;
    u = (struct answer_usage){.prompt = 7, .completion = 2, .cached = 4};
    struct answer_choice two[2] = {{.text = "a", .text_len = 1, .finish = FIN_EOS}, {.text = NULL, .finish = FIN_STOP_SEQUENCE}};
    o = answer_openai(&m, two, 2, &u);
    char want[1024];
    snprintf(want, sizeof want,
             "{\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion\",\"created\":100,\"model\":\"m\","
             "\"system_fingerprint\":\"%s\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"a\"},"
             "\"logprobs\":null,\"finish_reason\":\"stop\"},{\"index\":1,\"message\":{\"role\":\"assistant\",\"content\":\"\"},"
             "\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2,"
             "\"total_tokens\":9,\"prompt_tokens_details\":{\"cached_tokens\":4}}}",
             fp);
    is_str(S(o), want, "a chat answer of two choices, with cached_tokens and system_fingerprint");
    json_object_put(o);

    /* tool calls: content null, finish "tool_calls" unless it ran out of length */
    c = (struct answer_choice){.text = "{}", .text_len = 2, .tool_calls = json_tokener_parse("[{\"id\":\"call_1\"}]"), .finish = FIN_EOS};
    o = answer_openai(&m, &c, 1, &u);
    has_str(S(o), "\"message\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_1\"}]},"
                  "\"logprobs\":null,\"finish_reason\":\"tool_calls\"", "a tool call");
    json_object_put(o);
    c = (struct answer_choice){.text = "{", .text_len = 1, .tool_calls = json_tokener_parse("[]"), .finish = FIN_LENGTH,
                               .logprobs = json_tokener_parse("{\"content\":[]}")};
    o = answer_openai(&m, &c, 1, &u);
    has_str(S(o), "\"logprobs\":{\"content\":[]},\"finish_reason\":\"length\"", "a cut tool call finishes on length");
    json_object_put(o);

    /* ------------------------------------------------------------ stream pieces */
    m = (struct answer_meta){.kind = CK_COMPLETION, .id = "abc", .created = 7, .model = "m"};
    o = answer_chunk(&m, 0, NULL, NULL, 0, NULL, FIN_NONE, false);
    is_str(S(o),
           "{\"id\":\"cmpl-abc\",\"object\":\"text_completion\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,"
           "\"text\":\"\",\"logprobs\":null,\"finish_reason\":null}]}",
           "a completion chunk");
    json_object_put(o);
    o = answer_chunk(&m, 0, NULL, "x", 1, NULL, FIN_LENGTH, false);
    has_str(S(o), "\"text\":\"x\",\"logprobs\":null,\"finish_reason\":\"length\"", "the last completion chunk");
    json_object_put(o);
    m.kind = CK_CHAT;
    m.fingerprint = "fp";
    o = answer_chunk(&m, 1, answer_delta("assistant", "", 0, NULL), NULL, 0, NULL, FIN_NONE, false);
    is_str(S(o),
           "{\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\","
           "\"system_fingerprint\":\"fp\",\"choices\":[{\"index\":1,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
           "\"logprobs\":null,\"finish_reason\":null}]}",
           "a chat chunk's first delta");
    json_object_put(o);
    o = answer_chunk(&m, 0, NULL, NULL, 0, NULL, FIN_EOS, true);
    has_str(S(o), "\"delta\":{},\"logprobs\":null,\"finish_reason\":\"tool_calls\"", "a tool call's last chunk");
    json_object_put(o);
    o = answer_chunk(&m, 0, answer_delta(NULL, NULL, 0, json_tokener_parse("[]")), NULL, 0, NULL, FIN_NONE, false);
    has_str(S(o), "\"delta\":{\"tool_calls\":[]}", "a delta of tool calls");
    json_object_put(o);
    m.fingerprint = NULL;
    u = (struct answer_usage){.prompt = 2, .completion = 3, .cached = -1};
    o = answer_usage_chunk(&m, &u);
    is_str(S(o),
           "{\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[],"
           "\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":3,\"total_tokens\":5}}",
           "a chat usage chunk");
    json_object_put(o);
    m.kind = CK_COMPLETION;
    u.prompt = -1;
    u.cached = 0;
    o = answer_usage_chunk(&m, &u);
    has_str(S(o), "\"id\":\"cmpl-abc\",\"object\":\"text_completion\"", "a completion usage chunk");
    has_str(S(o), "\"prompt_tokens_details\":{\"cached_tokens\":0}", "a known cache count of 0 is shown");
    json_object_put(o);

    /* ------------------------------------------------------------ TGI */
    m = (struct answer_meta){.kind = CK_TGI, .id = "abc", .created = 100, .model = "m"};
    o = answer_tgi(&m, "t", 1, NULL, false);
    is_str(S(o), "{\"generated_text\":\"t\"}", "a TGI answer");
    json_object_put(o);
    struct answer_tgi_details d = {.finish = FIN_STOP_SEQUENCE, .generated = 2};
    o = answer_tgi(&m, "p: t", 4, answer_tgi_details(&d), false);
    is_str(S(o),
           "{\"generated_text\":\"p: t\",\"details\":{\"finish_reason\":\"stop_sequence\",\"generated_tokens\":2,"
           "\"seed\":null,\"prefill\":[],\"tokens\":[]}}",
           "a TGI answer with details");
    json_object_put(o);
    d.has_seed = true;
    d.seed = 42;
    o = answer_tgi(&m, "t", 1, answer_tgi_details(&d), true);
    is_str(S(o),
           "[{\"generated_text\":\"t\",\"details\":{\"finish_reason\":\"stop_sequence\",\"generated_tokens\":2,"
           "\"seed\":42,\"prefill\":[],\"tokens\":[]}}]",
           "TGI's POST / answers a list");
    json_object_put(o);
    d.seed = UINT64_MAX - 1;
    d.top_tokens = json_object_new_array();
    d.generated = -1;
    o = answer_tgi_details(&d);
    has_str(S(o), "\"generated_tokens\":0,\"seed\":18446744073709551614,\"prefill\":[],\"tokens\":[],\"top_tokens\":[]",
            "a u64 seed, top_tokens, unknown counts as 0");
    json_object_put(o);
    d = (struct answer_tgi_details){.finish = FIN_LENGTH, .generated = 1, .stream = true, .input_length = 5,
                                    .prefill = json_object_new_array()};
    o = answer_tgi_details(&d);
    is_str(S(o), "{\"finish_reason\":\"length\",\"generated_tokens\":1,\"seed\":null,\"input_length\":5}",
           "a stream's details: input_length, no token lists");
    json_object_put(o);
    m.kind = CK_LEGACY;
    d = (struct answer_tgi_details){.finish = FIN_LENGTH, .generated = 1};
    o = answer_tgi(&m, "t", 1, answer_tgi_details(&d), false);
    is_str(S(o), "{\"generated_text\":\"t\",\"model_id\":\"m\"}", "a legacy answer");
    json_object_put(o);
    m.kind = CK_CHAT;
    ok(answer_tgi(&m, "t", 1, NULL, false) == NULL, "no TGI answer for an OpenAI kind");

    o = answer_tgi_event(0, answer_tgi_token(5, "a", 1, true, -0.5, false), false, NULL, NULL, 0, NULL);
    is_str(S(o),
           "{\"index\":0,\"token\":{\"id\":5,\"text\":\"a\",\"logprob\":-0.5,\"special\":false},\"generated_text\":null,"
           "\"details\":null}",
           "a TGI token event");
    json_object_put(o);
    d = (struct answer_tgi_details){.finish = FIN_EOS, .generated = 2, .has_seed = true, .seed = 42, .stream = true,
                                    .input_length = -1};
    o = answer_tgi_event(3, answer_tgi_token(5, "a", 1, true, -0.5, false), false, NULL, "abc", 3, answer_tgi_details(&d));
    is_str(S(o),
           "{\"index\":3,\"token\":{\"id\":5,\"text\":\"a\",\"logprob\":-0.5,\"special\":false},\"generated_text\":\"abc\","
           "\"details\":{\"finish_reason\":\"eos_token\",\"generated_tokens\":2,\"seed\":42}}",
           "the last TGI event");
    json_object_put(o);
    o = answer_tgi_event(1, answer_tgi_token(0, NULL, 0, true, -INFINITY, true), true, NULL, NULL, 0, NULL);
    is_str(S(o),
           "{\"index\":1,\"token\":{\"id\":0,\"text\":\"\",\"logprob\":-9999.0,\"special\":true},\"top_tokens\":null,"
           "\"generated_text\":null,\"details\":null}",
           "a local TGI event: top_tokens, -inf as -9999");
    json_object_put(o);
    o = answer_tgi_token(1, "x", 1, true, NAN, false);
    has_str(S(o), "\"logprob\":null", "a NaN logprob is null");
    json_object_put(o);

    /* ------------------------------------------------------------ finish words */
    ok(answer_finish_openai(FIN_NONE) == NULL, "openai: no finish is null");
    is_str(answer_finish_openai(FIN_LENGTH), "length", "openai: length");
    is_str(answer_finish_openai(FIN_EOS), "stop", "openai: eos is stop");
    is_str(answer_finish_openai(FIN_STOP_SEQUENCE), "stop", "openai: stop sequence is stop");
    is_str(answer_finish_openai(FIN_OTHER), "stop", "openai: other is stop");
    is_str(answer_finish_tgi(FIN_LENGTH), "length", "tgi: length");
    is_str(answer_finish_tgi(FIN_EOS), "eos_token", "tgi: eos_token");
    is_str(answer_finish_tgi(FIN_STOP_SEQUENCE), "stop_sequence", "tgi: stop_sequence");
    is_str(answer_finish_tgi(FIN_OTHER), "eos_token", "tgi: other is eos_token");
    is_str(answer_finish_tgi(FIN_NONE), "eos_token", "tgi: none is eos_token");
    is_str(finish_name(FIN_STOP_SEQUENCE), "stop_sequence", "the finish's own name");
    is_str(finish_name(FIN_NONE), "", "no finish has no name");
    /* ------------------------------------------------------------ NUL in texts: written back as \u0000 */
    m.kind = CK_COMPLETION;
    c = (struct answer_choice){.text = "a\0b", .text_len = 3, .finish = FIN_EOS};
    o = answer_openai(&m, &c, 1, &u);
    has_str(S(o), "\"text\":\"a\\u0000b\"", "a completion's NUL is \\u0000");
    json_object_put(o);
    o = answer_chunk(&m, 0, NULL, "\0", 1, NULL, FIN_NONE, false);
    has_str(S(o), "\"text\":\"\\u0000\"", "a completion chunk's NUL");
    json_object_put(o);
    m.kind = CK_CHAT;
    o = answer_chunk(&m, 0, answer_delta(NULL, "x\0", 2, NULL), NULL, 0, NULL, FIN_NONE, false);
    has_str(S(o), "\"content\":\"x\\u0000\"", "a chat delta's NUL");
    json_object_put(o);
    m.kind = CK_TGI;
    o = answer_tgi(&m, "\0\0", 2, NULL, false);
    has_str(S(o), "\"generated_text\":\"\\u0000\\u0000\"", "TGI's generated_text with NUL");
    json_object_put(o);
    o = answer_tgi_event(0, answer_tgi_token(188, "\0", 1, true, -0.5, false), false, NULL, "a\0", 2, NULL);
    has_str(S(o), "\"text\":\"\\u0000\"", "TGI token 188's text is \\u0000");
    has_str(S(o), "\"generated_text\":\"a\\u0000\"", "and the final text keeps it");
    json_object_put(o);
    test_responses_and_embeddings();
    return tap_done();
}
