"""The real `transformers serve` as an upstream, started by llmcgi as a managed child.

Needs a Python with torch and transformers[serving] (PyPI). The test uses the
first of: $LLMCGI_TRANSFORMERS_PYTHON, the Python running the tests. When
neither can import them, every test here says SKIP. To run it:

    python3 -m venv /opt/ts && /opt/ts/bin/pip install torch "transformers[serving]"
    LLMCGI_TRANSFORMERS_PYTHON=/opt/ts/bin/python make check TESTS=tests/integration/test_transformers_serve.py

A tiny GPT-2 directory is generated locally (make_tiny_gpt2.py, random
weights, the real GPT-2 tokenizer from tests/fixtures); no network is used.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from servers import SRCDIR, WEB_SERVERS, Llmcgi, Stream, free_port, make_tmpdir, remove_tmpdir, request, wait_for

HERE = Path(__file__).resolve().parent
TOKENIZER = SRCDIR / "tests" / "fixtures" / "gpt2-tokenizer"
JSON = {"Content-Type": "application/json"}


def transformers_python():
    for py in (os.environ.get("LLMCGI_TRANSFORMERS_PYTHON"), sys.executable):
        if not py or not Path(py).exists():
            continue
        probe = subprocess.run([py, "-c", "import torch, transformers, fastapi, uvicorn, safetensors"],
                               capture_output=True)
        cli = Path(py).parent / "transformers"
        if probe.returncode == 0 and cli.exists():
            return py, cli
    return None, None


PY, CLI = transformers_python()
pytestmark = pytest.mark.skipif(PY is None, reason="transformers serve not installable here "
                                "(set LLMCGI_TRANSFORMERS_PYTHON to a Python with torch and transformers[serving])")


@pytest.fixture(scope="module")
def setup():
    if not TOKENIZER.exists():
        pytest.skip(f"no GPT-2 tokenizer at {TOKENIZER}")
    d = make_tmpdir("tserve-")
    subprocess.run([PY, str(HERE / "make_tiny_gpt2.py"), str(d / "tiny"), "--tokenizer", str(TOKENIZER)],
                   check=True, capture_output=True, timeout=300)
    (d / "hf-home" / "hub").mkdir(parents=True)
    port = free_port()
    launch = (f"cd {d} && HF_HUB_OFFLINE=1 HF_HOME={d}/hf-home exec {CLI} serve --host 127.0.0.1 "
              f"--port {port} --model-timeout -1")
    l = Llmcgi(d / "llmcgi.sock", dir=d, extra=f"""
[upstream ts]
type = transformers-serve
url = http://127.0.0.1:{port}
models = tiny
launch = {launch}
launch_stop_timeout = 10s
first_byte_timeout = 120s
health_interval = 1s
""").start()
    web = WEB_SERVERS["nginx"](l.sock).start()
    try:
        wait_for(lambda: request(web.port, "GET", "/health").status == 200, "transformers serve to be ready",
                 timeout=180, interval=0.5)
        yield {"web": web, "llmcgi": l, "direct": port}
    finally:
        web.stop()
        report = l.cleanup()
        remove_tmpdir(d)
        assert not report, report


def chat(model="tiny", **kw):
    return dict({"model": model, "messages": [{"role": "user", "content": "The quick brown fox"}],
                 "max_tokens": 8, "temperature": 0}, **kw)


def test_chat_through_llmcgi_equals_transformers_serve_directly(setup):
    direct = request(setup["direct"], "POST", "/v1/chat/completions", json.dumps(chat()), JSON, timeout=120)
    assert direct.status == 200, direct.body
    r = request(setup["web"].port, "POST", "/v1/chat/completions", json.dumps(chat()), JSON, timeout=120)
    assert r.status == 200, r.body
    a = r.json()
    assert a["model"] == "tiny"                           # transformers serve says "tiny@main"
    assert a["choices"][0]["message"]["content"] == direct.json()["choices"][0]["message"]["content"]
    assert a["usage"]["completion_tokens"] == 8


def test_unknown_fields_are_dropped_instead_of_refused(setup):
    body = chat(top_k=5, repetition_penalty=1.1, best_of=2)
    direct = request(setup["direct"], "POST", "/v1/chat/completions", json.dumps(body), JSON, timeout=120)
    assert direct.status == 422                           # what transformers serve does on its own
    r = request(setup["web"].port, "POST", "/v1/chat/completions", json.dumps(body), JSON, timeout=120)
    assert r.status == 200, r.body


def test_stream_gets_the_done_transformers_serve_leaves_out(setup):
    s = Stream(setup["web"].port, "/v1/chat/completions", headers=JSON, method="POST",
               body=json.dumps(chat(stream=True)), timeout=120)
    try:
        assert s.status == 200
        data = []
        while (ev := s.read_event()) is not None:
            data.append(ev[0]["data"])
    finally:
        s.close()
    assert data[-1] == "[DONE]"
    text = "".join(c["delta"].get("content") or "" for d in data[:-1] for c in json.loads(d)["choices"])
    direct = request(setup["direct"], "POST", "/v1/chat/completions", json.dumps(chat()), JSON, timeout=120)
    assert text == direct.json()["choices"][0]["message"]["content"]


def test_tgi_and_legacy_clients_reach_transformers_serve(setup):
    port = setup["web"].port
    r = request(port, "POST", "/generate", json.dumps({"model": "tiny", "inputs": "The quick brown fox",
                                                        "parameters": {"max_new_tokens": 8}}), JSON, timeout=120)
    assert r.status == 200, r.body
    direct = request(setup["direct"], "POST", "/v1/chat/completions", json.dumps(chat()), JSON, timeout=120)
    assert r.json()["generated_text"] == direct.json()["choices"][0]["message"]["content"]
    r = request(port, "POST", "/generate", json.dumps({"model_id": "tiny", "prompt": "The quick brown fox",
                                                        "max_new_tokens": 8}), JSON, timeout=120)
    assert r.status == 200 and r.json()["model_id"] == "tiny"
