"""A non-streamed request that an upstream answers with an event stream (issue 21).

transformers serve answers `text/event-stream` even to `"stream": false`; the
gateway reads the events into the one JSON answer the client asked for, in the
client's dialect. test_transformers_serve.py proves it against the real server;
the edge cases a real server will not show on demand are here, against a
stand-in (standin.py, mode "body" with `events`) behind real nginx: usage only
in the stream's last chunk, no [DONE], no finish reason (a cut answer is an
error, not a shorter one), an error event, an answer past max_response.
"""

import json
import os

import pytest

from servers import Llmcgi, Nginx, make_tmpdir, remove_tmpdir, request
from standin import Standin

JSON = {"Content-Type": "application/json"}

for _var in ("NO_PROXY", "no_proxy"):
    os.environ[_var] = ",".join(x for x in (os.environ.get(_var), "127.0.0.1", "localhost") if x)


@pytest.fixture(scope="module")
def gw():
    d = make_tmpdir("llmcgi-realpeers-")
    oai = Standin("openai", model_ids=["oai-m"]).start()
    l = Llmcgi(d / "llmcgi.sock", dir=d, extra=f"""
[upstream oai]
type = openai
url = {oai.url}
models = oai-m
health_interval = 200ms
max_response = 4096
""").start()
    web = Nginx(l.sock).start()
    try:
        yield {"port": web.port, "oai": oai}
    finally:
        web.stop()
        report = l.cleanup()
        oai.stop()
        remove_tmpdir(d)
        assert not report, report


@pytest.fixture(autouse=True)
def clear_faults(request):
    yield
    if "gw" in request.fixturenames:
        request.getfixturevalue("gw")["oai"].set_fault("ok")


def post(port, path, body):
    return request(port, "POST", path, json.dumps(body), JSON)


def chat_chunk(content=None, finish=None, **kw):
    delta = {} if content is None else {"content": content}
    return dict({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "oai-m@main",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}, **kw)


def text_chunk(text, finish=None):
    return {"id": "c", "object": "text_completion", "created": 1, "model": "oai-m",
            "choices": [{"index": 0, "text": text, "finish_reason": finish}]}


USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
CHAT = {"model": "oai-m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}


def test_a_chat_answered_as_events_is_one_chat_completion(gw):
    gw["oai"].set_fault("body", events=[chat_chunk(role="assistant"), chat_chunk("Hello"),
                                        chat_chunk(" there", "length"),
                                        dict(chat_chunk(), choices=[], usage=USAGE)])    # no [DONE]
    r = post(gw["port"], "/v1/chat/completions", CHAT)
    assert r.status == 200, r.body
    a = r.json()
    assert a["object"] == "chat.completion" and a["model"] == "oai-m", a
    assert a["choices"][0]["message"] == {"role": "assistant", "content": "Hello there"}, a
    assert a["choices"][0]["finish_reason"] == "length", a
    assert a["usage"]["prompt_tokens"] == 3 and a["usage"]["completion_tokens"] == 2, a


def test_completion_and_tgi_clients_get_their_own_shape(gw):
    gw["oai"].set_fault("body", events=[text_chunk("Hello"), text_chunk(" there", "stop"), "[DONE]"])
    r = post(gw["port"], "/v1/completions", {"model": "oai-m", "prompt": "x", "max_tokens": 2})
    assert r.status == 200, r.body
    assert r.json()["object"] == "text_completion" and r.json()["choices"][0]["text"] == "Hello there", r.body
    r = post(gw["port"], "/generate", {"model": "oai-m", "inputs": "x",
                                      "parameters": {"max_new_tokens": 2, "details": True}})
    assert r.status == 200, r.body
    assert r.json()["generated_text"] == "Hello there", r.body
    assert r.json()["details"]["finish_reason"] == "eos_token", r.body


def test_events_that_end_before_the_finish_are_an_error_not_a_shorter_answer(gw):
    gw["oai"].set_fault("body", events=[chat_chunk("Hello")])
    r = post(gw["port"], "/v1/chat/completions", CHAT)
    assert r.status == 502 and "before the generation finished" in r.json()["error"]["message"], r.body
    r = post(gw["port"], "/generate", {"model": "oai-m", "inputs": "x"})
    assert r.status == 502 and "before the generation finished" in r.json()["error"], r.body    # TGI's shape


def test_an_error_event_is_an_error_answer(gw):
    gw["oai"].set_fault("body", events=[chat_chunk("Hello"), {"error": {"message": "the model fell over"}}])
    r = post(gw["port"], "/v1/chat/completions", CHAT)
    assert r.status == 502 and "the model fell over" in r.json()["error"]["message"], r.body


def test_events_past_max_response_are_refused(gw):
    gw["oai"].set_fault("body", events=[chat_chunk("x" * 1000) for _ in range(6)] + [chat_chunk("", "stop")])
    r = post(gw["port"], "/v1/chat/completions", CHAT)
    assert r.status == 502 and "max_response" in r.json()["error"]["message"], r.body


def test_a_translated_stream_past_max_response_ends_with_an_error(gw):
    """A stream translated for another dialect keeps its text (TGI's final generated_text, the
    Responses API's closing events): bounded by max_response like a whole answer, or a hostile
    upstream's endless stream grows the process without bound."""
    gw["oai"].set_fault("body", events=[text_chunk("x" * 1000) for _ in range(6)] + [text_chunk("", "stop")])
    r = post(gw["port"], "/generate_stream", {"model": "oai-m", "inputs": "x", "parameters": {"max_new_tokens": 9}})
    assert r.status == 200, r.body
    events = [json.loads(line[5:]) for line in r.body.decode().splitlines() if line.startswith("data:")]
    assert sum(1 for e in events if "token" in e) < 6, events      # cut before the text passed 4096 bytes
    assert "max_response" in events[-1].get("error", "") and events[-1]["error_type"] == "generation", r.body[-600:]
