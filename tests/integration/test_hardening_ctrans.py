"""Structured output through the gateway when it translates (issue 26): the constraint reaches the upstream in
the upstream's form, or the request is refused in the client's error shape, naming the upstream type.

Through real nginx and llmcgi to stand-in upstreams, which record the body they were sent:
* an OpenAI completion on a TGI upstream (its /generate): response_format json_schema and json_object,
  guided_json, guided_regex and guided_choice become parameters.grammar; tools are refused;
* an OpenAI chat on a TGI upstream (its Messages API): response_format and guided_* become TGI's
  response_format {"type": "json" | "regex", "value": ...};
* a TGI client on an OpenAI upstream (its /v1/completions): grammar json becomes response_format
  json_schema, grammar regex a 422 (the OpenAI API has no regex);
* transformers serve (4.57 refuses response_format and tool_choice): refused, nothing sent.
"""

import json

import pytest

from servers import WEB_SERVERS, Llmcgi, make_tmpdir, remove_tmpdir, request
from standin import Standin

JSON_CT = {"Content-Type": "application/json"}
UP = {}


@pytest.fixture(scope="module")
def port():
    d = make_tmpdir("llmcgi-ctrans-")
    UP.update(oai=Standin("openai", model_ids=["remote-oai"]).start(),
              tgi=Standin("tgi", model_ids=["remote-tgi"]).start(),
              ts=Standin("transformers-serve", model_ids=["remote-ts"]).start())
    extra = (f"default_model = remote-oai\n\n"
             f"[upstream oai]\ntype = openai\nurl = {UP['oai'].url}\nmodels = remote-oai\n\n"
             f"[upstream tgi]\ntype = tgi\nurl = {UP['tgi'].url}\nmodels = remote-tgi\n\n"
             f"[upstream ts]\ntype = transformers-serve\nurl = {UP['ts'].url}\nmodels = remote-ts\n")
    llmcgi = Llmcgi(d / "llmcgi.sock", dir=d, extra=extra)
    web = None
    try:
        llmcgi.start()
        web = WEB_SERVERS["nginx"](d / "llmcgi.sock").start()
        yield web.port
    finally:
        if web:
            web.stop()
        report = llmcgi.cleanup()
        for s in UP.values():
            s.stop()
        remove_tmpdir(d)
    assert not report, f"sanitizer report from llmcgi:\n{report}"


def post(port, path, body):
    r = request(port, "POST", path, json.dumps(body), JSON_CT, timeout=30)
    return r, json.loads(r.body) if r.body else None


def sent(name, path):
    """The bodies the stand-in `name` received on `path`, and forgets them."""
    s = UP[name]
    got = [q["json"] for q in s.requests if q["path"] == path]
    s.clear_requests()
    return got


SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize("field, value, grammar", [
    ("response_format", {"type": "json_schema", "json_schema": {"name": "n", "schema": SCHEMA}},
     {"type": "json", "value": SCHEMA}),
    ("response_format", {"type": "json_object"}, {"type": "json", "value": {"type": "object"}}),
    ("guided_json", json.dumps(SCHEMA), {"type": "json", "value": SCHEMA}),
    ("guided_regex", "[0-9]{3}", {"type": "regex", "value": "[0-9]{3}"}),
    ("guided_choice", ["yes", "no.", "a|b"], {"type": "regex", "value": r"(yes|no\.|a\|b)"}),
])
def test_openai_completion_on_tgi_gets_parameters_grammar(port, field, value, grammar):
    sent("tgi", "/generate")
    r, body = post(port, "/v1/completions", {"model": "remote-tgi", "prompt": "x", "max_tokens": 3, field: value})
    assert r.status == 200, r.body
    got = sent("tgi", "/generate")
    assert len(got) == 1 and got[0]["parameters"]["grammar"] == grammar
    assert field not in got[0]


def test_openai_completion_with_tools_on_tgi_is_refused(port):
    sent("tgi", "/generate")
    r, body = post(port, "/v1/completions", {"model": "remote-tgi", "prompt": "x", "tools": TOOLS,
                                             "tool_choice": "required"})
    assert r.status == 400, r.body
    assert "`tools`" in body["error"]["message"] and "type tgi" in body["error"]["message"]
    assert body["error"]["type"] == "invalid_request_error"
    assert sent("tgi", "/generate") == []


@pytest.mark.parametrize("field, value, want", [
    ("response_format", {"type": "json_schema", "json_schema": {"name": "n", "schema": SCHEMA}},
     {"type": "json", "value": SCHEMA}),
    ("response_format", {"type": "json_object"}, {"type": "json", "value": {"type": "object"}}),
    ("guided_choice", ["up", "down"], {"type": "regex", "value": "(up|down)"}),
])
def test_openai_chat_on_tgi_gets_tgi_response_format(port, field, value, want):
    sent("tgi", "/v1/chat/completions")
    r, body = post(port, "/v1/chat/completions", {"model": "remote-tgi", "max_tokens": 3, field: value,
                                                  "messages": [{"role": "user", "content": "x"}]})
    assert r.status == 200, r.body
    got = sent("tgi", "/v1/chat/completions")
    assert len(got) == 1 and got[0]["response_format"] == want
    assert "guided_choice" not in got[0]


def test_tgi_grammar_json_on_openai_gets_response_format(port):
    sent("oai", "/v1/completions")
    for value in (SCHEMA, json.dumps(SCHEMA)):          # an object, or the schema as JSON text
        r, body = post(port, "/generate", {"inputs": "x", "model": "remote-oai",
                                           "parameters": {"max_new_tokens": 3,
                                                          "grammar": {"type": "json", "value": value}}})
        assert r.status == 200, r.body
        got = sent("oai", "/v1/completions")
        assert len(got) == 1 and got[0]["response_format"] == {
            "type": "json_schema", "json_schema": {"name": "grammar", "schema": SCHEMA}}
        assert "grammar" not in got[0] and "parameters" not in got[0]


def test_tgi_grammar_regex_on_openai_is_a_422(port):
    sent("oai", "/v1/completions")
    r, body = post(port, "/generate", {"inputs": "x", "model": "remote-oai",
                                       "parameters": {"grammar": {"type": "regex", "value": "a+"}}})
    assert r.status == 422, r.body
    assert set(body) == {"error", "error_type"}, body
    assert "regex" in body["error"] and "type openai" in body["error"]
    assert sent("oai", "/v1/completions") == []


@pytest.mark.parametrize("path, body, field, status", [
    ("/v1/chat/completions", {"response_format": {"type": "json_object"}}, "response_format", 400),
    ("/v1/chat/completions", {"guided_regex": "a+"}, "guided_regex", 400),
    ("/v1/chat/completions", {"tools": TOOLS, "tool_choice": "required"}, "tool_choice", 400),
    ("/v1/completions", {"guided_choice": ["a", "b"]}, "guided_choice", 400),
    ("/generate", {"parameters": {"grammar": {"type": "json", "value": SCHEMA}}}, "grammar", 422),
])
def test_transformers_serve_takes_no_constraint(port, path, body, field, status):
    UP["ts"].clear_requests()
    base = {"/v1/chat/completions": {"messages": [{"role": "user", "content": "x"}]},
            "/v1/completions": {"prompt": "x"}, "/generate": {"inputs": "x"}}[path]
    r, answer = post(port, path, {"model": "remote-ts", **base, **body})
    assert r.status == status, r.body
    message = answer["error"]["message"] if status == 400 else answer["error"]
    assert f"`{field}`" in message and "type transformers-serve" in message
    assert [q for q in UP["ts"].requests if q["method"] == "POST"] == []


def test_openai_upstream_of_the_same_dialect_gets_it_unchanged(port):
    sent("oai", "/v1/chat/completions")
    r, body = post(port, "/v1/chat/completions", {"model": "remote-oai", "max_tokens": 3, "guided_regex": "a+",
                                                  "messages": [{"role": "user", "content": "x"}]})
    assert r.status == 200, r.body
    assert sent("oai", "/v1/chat/completions")[0]["guided_regex"] == "a+"
