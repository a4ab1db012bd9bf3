"""llmcgi's health probes leave a replica alone while it serves a request.

llama-cpp-python's server (0.3.36, llama_cpp/server/app.py, get_event_publisher; its
default interrupt_requests = True, abetlen/llama-cpp-python#867) ends a stream it is
sending with a bare "data: [DONE]" as soon as another request waits for its model, and
GET /v1/models -- llmcgi's health probe of an `openai` upstream, every health_interval --
is one. Measured against the server directly: 19 of 100 eight-token streams cut with a
GET /v1/models every 200 ms. llmcgi now counts the requests in flight on each replica
(upstream_replica_enter/leave) and probes an up replica, or asks it for its model list,
only once none has been in flight for health_interval: the requests' own outcomes are
its health meanwhile (health_fall counts them). Down replicas are probed as before.

* a stand-in whose stream trickles for seconds gets no probe while it streams, and is
  probed again after; /status shows the replica's in_flight meanwhile;
* a real llama-cpp-python server with its default settings behind nginx + llmcgi
  (health_interval 200 ms): 30 sequential streamed completions, none cut, each the
  server's own non-streamed answer.
"""

import json
import os
import time

import pytest

from servers import Llmcgi, Nginx, Stream, make_tmpdir, remove_tmpdir, request, wait_for
from standin import Standin
import test_llamacpp_upstream as llu       # a module, not its names: its tests are not collected here

JSON = {"Content-Type": "application/json"}

for _var in ("NO_PROXY", "no_proxy"):
    os.environ[_var] = ",".join(x for x in (os.environ.get(_var), "127.0.0.1", "localhost") if x)


def sse_stream(port, path, body):
    """POSTs a streamed request; returns [(monotonic time received, data)] of its events."""
    s = Stream(port, path, headers=JSON, method="POST", timeout=60, body=json.dumps(body))
    try:
        assert s.status == 200, s.read_rest()
        out = []
        while (ev := s.read_event()) is not None:
            if "data" in ev[0]:
                out.append((time.monotonic(), ev[0]["data"]))
        return out
    finally:
        s.close()


# ------------------------------------------------------------------ a stand-in: no probe while busy

@pytest.fixture(scope="module")
def busy():
    oai = Standin("openai", model_ids=["slowpoke"]).start()
    d = make_tmpdir("probebusy-")
    l = Llmcgi(d / "llmcgi.sock", dir=d, extra=f"""
[upstream slow]
type = openai
url = {oai.url}
models = slowpoke
health_interval = 200ms
health_fall = 100
retries = 0
""").start()
    web = Nginx(l.sock).start()
    try:
        assert oai.wait_count(2, "/v1/models"), "llmcgi never probed the stand-in"
        yield {"oai": oai, "web": web}
    finally:
        web.stop()
        report = l.cleanup()
        oai.stop()
        remove_tmpdir(d)
        assert not report, report


def test_no_probe_while_a_stream_is_in_flight_then_probed_again(busy):
    oai, web = busy["oai"], busy["web"]
    # 8 tokens, each 0.3 s after the last: about 3 s of stream, 15 health intervals
    oai.set_fault("trickle", seconds=0.3)
    seen_in_flight = []

    def status_during():
        r = request(web.port, "GET", "/health")
        seen_in_flight.append(r.json()["upstreams"]["slow"]["replicas"][0].get("in_flight"))

    s = Stream(web.port, "/v1/completions", headers=JSON, method="POST", timeout=60, body=json.dumps(
        {"model": "slowpoke", "prompt": "p", "max_tokens": 8, "stream": True}))
    events = []
    try:
        assert s.status == 200
        while (ev := s.read_event()) is not None:
            events.append((time.monotonic(), ev[0].get("data")))
            if len(events) == 2:
                status_during()
    finally:
        s.close()
        oai.set_fault("ok")
    texts = [(t, d) for t, d in events if d and d != "[DONE]" and json.loads(d)["choices"][0]["text"]]
    assert len(texts) == 8 and events[-1][1] == "[DONE]", events
    gen = [q for q in oai.requests if q["path"] == "/v1/completions"]
    assert len(gen) == 1, gen
    # from the stand-in's receipt of the request to the client's receipt of the last
    # token, the stream was in flight in llmcgi: no probe may have reached the stand-in
    start, last_token = gen[0]["at"], texts[-1][0]
    probes = [q["at"] - start for q in oai.requests if q["path"] == "/v1/models" and start < q["at"] < last_token]
    assert probes == [], f"{len(probes)} probes during a {last_token - start:.1f} s stream, at {probes}"
    assert seen_in_flight == [1], seen_in_flight
    # and once it is over, the replica is probed again (health_interval after it ended)
    done = time.monotonic()
    wait_for(lambda: any(q["path"] == "/v1/models" and q["at"] > done for q in oai.requests),
             "a health probe after the stream ended", timeout=20, interval=0.05)
    assert request(web.port, "GET", "/health").json()["upstreams"]["slow"]["replicas"][0]["in_flight"] == 0


# ------------------------------------------------------------------ a real llama.cpp server, default settings

@pytest.fixture(scope="module")
def llama():
    with llu.behind_llmcgi("probebusy-llama-", interrupt_requests=True) as s:
        yield s


N_STREAMS = int(os.environ.get("LLMCGI_PROBEBUSY_STREAMS", "30"))


def test_llamacpp_default_settings_streams_are_not_cut_by_probes(llama):
    body = {"model": "tiny", "prompt": llu.PROMPT, "max_tokens": 8, "temperature": 0, "logit_bias": llu.NO_EOS}
    r = request(llama["direct"], "POST", "/v1/completions", json.dumps(body), JSON, timeout=120)
    assert r.status == 200, r.body
    want = r.json()["choices"][0]["text"]
    assert want
    cut = []
    for i in range(N_STREAMS):
        events = [d for _, d in sse_stream(llama["web"].port, "/v1/completions", dict(body, stream=True))]
        chunks = [json.loads(d) for d in events if d != "[DONE]"]
        text = "".join(c["choices"][0]["text"] for c in chunks if c.get("choices"))
        finish = [c["choices"][0]["finish_reason"] for c in chunks
                  if c.get("choices") and c["choices"][0].get("finish_reason")]
        errors = [c["error"] for c in chunks if "error" in c]
        if text != want or finish != ["length"] or errors or events[-1:] != ["[DONE]"]:
            cut.append((i, text, finish, errors))
    assert cut == [], f"{len(cut)} of {N_STREAMS} streams cut short (want {want!r}): {cut}"
