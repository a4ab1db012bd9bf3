"""The model llmcgi ships (models/llmcgi-tiny): complete and small, named by the sample config, and
llmcgi's greedy tokens equal to transformers' -- live in the `ts` peer environment, else against the
committed goldens of tests/golden/make_gpt2_golden.py --model. Also served through nginx as the default
model, the way the sample config sets it up."""

import json
import os
import re
import subprocess

import pytest

from servers import BUILDDIR, SRCDIR, Llmcgi, Nginx, make_tmpdir, remove_tmpdir, request, require_peer, wait_for

MODEL = SRCDIR / "models" / "llmcgi-tiny"
CLI = BUILDDIR / "llmcgi-generate"
GOLDEN = SRCDIR / "tests" / "golden" / "llmcgi_tiny_golden.json"
FILES = ["config.json", "model.safetensors", "vocab.json", "merges.txt", "generation_config.json",
         "tokenizer.json", "tokenizer_config.json", "README.md"]


def golden():
    g = json.loads(GOLDEN.read_text())
    return g["models"][0]


def generate(*args, timeout=120):
    r = subprocess.run([str(CLI), *map(str, args)], capture_output=True, timeout=timeout)
    err = r.stderr.decode("utf-8", "replace")
    assert "Sanitizer" not in err and "runtime error" not in err, err
    assert r.returncode == 0, err
    return r.stdout.decode("utf-8", "replace"), err


def greedy(prompt, n):
    """llmcgi-generate's greedy ids (--logprobs prints one '[i] id ...' line per token) and text."""
    out, err = generate("-m", MODEL, "-t", 0, "-n", n, "--ignore-eos", "--logprobs", 0, prompt)
    ids = [int(m.group(1)) for m in re.finditer(r"^\[\d+\] (\d+) ", err, re.M)]
    prefill = int(re.search(r"prefill: (\d+) tokens", err).group(1))
    return ids, out, prefill


def test_directory_is_complete_small_and_described():
    for f in FILES:
        assert (MODEL / f).is_file(), f"{f} missing from {MODEL}"
    total = sum((MODEL / f).stat().st_size for f in FILES)
    assert total <= 16 * 1024 * 1024, f"{total} bytes: the shipped model must stay within 16 MB"
    cfg = json.loads((MODEL / "config.json").read_text())
    g = golden()
    assert cfg["model_type"] == "gpt2" and cfg["architectures"] == ["GPT2LMHeadModel"]
    assert (cfg["n_layer"], cfg["n_head"], cfg["n_embd"], cfg["n_positions"], cfg["vocab_size"]) == \
        (g["layers"], g["heads"], g["embd"], g["positions"], g["vocab"])
    vocab = json.loads((MODEL / "vocab.json").read_text())
    assert len(vocab) == cfg["vocab_size"] and vocab["<|endoftext|>"] == cfg["eos_token_id"] == 0
    card = (MODEL / "README.md").read_text()
    for needle in ("perplexity", "bible-kjv-text", "fortunes", "Licence", "Samples"):
        assert needle in card, f"the model card does not mention {needle!r}"


def test_greedy_tokens_match_transformers_goldens():
    """Every golden prompt (Bible and fortune text, code, Unicode, <|endoftext|>, long prompts): the same
    prompt length (so the same tokenization) and the same greedy tokens as far as transformers' own top
    two logits are clearly apart; where the whole path is certain, the same text."""
    g = golden()
    checked = 0
    for rec in g["prompts"]:
        ids, text, prefill = greedy(rec["prompt"], len(rec["greedy"]))
        assert prefill == len(rec["ids"]), rec["prompt"]
        k = rec["stable"]
        assert ids[:k] == rec["greedy"][:k], rec["prompt"]
        checked += k
        if k == len(rec["greedy"]) and "\ufffd" not in rec["text"]:
            assert text == rec["text"], rec["prompt"]
    assert checked >= len(g["prompts"]) * len(g["prompts"][0]["greedy"]) // 2, \
        "too few certain tokens in the goldens to mean anything"


LIVE_SCRIPT = r"""
import json, sys
import torch, transformers
model_dir, prompts = sys.argv[1], json.loads(sys.argv[2])
tok = transformers.AutoTokenizer.from_pretrained(model_dir)
model = transformers.GPT2LMHeadModel.from_pretrained(model_dir, dtype=torch.float32,
                                                     attn_implementation="eager").eval()
out = []
for prompt in prompts:
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        gen = model.generate(ids, max_new_tokens=32, do_sample=False, eos_token_id=None, pad_token_id=0)
    out.append({"n": ids.shape[1], "greedy": gen[0, ids.shape[1]:].tolist()})
print(json.dumps(out))
"""


def test_greedy_tokens_match_transformers_live():
    """The same comparison computed now by transformers itself, in the cached `ts` peer environment
    (tools/peer-env ts: torch and transformers pinned by tests/peers/ts.txt), so CI runs it."""
    py = require_peer("ts", "LLMCGI_TRANSFORMERS_PYTHON")
    prompts = ["In the beginning God created", "A computer is", "Q: Why?\nA:"]
    r = subprocess.run([py, "-c", LIVE_SCRIPT, str(MODEL), json.dumps(prompts)], capture_output=True, text=True,
                       timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-4000:]
    want = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(want) == len(prompts)
    for prompt, w in zip(prompts, want):
        got, _, prefill = greedy(prompt, 32)
        assert prefill == w["n"], prompt
        assert got == w["greedy"], prompt


def test_sample_config_serves_it_by_default():
    """The built sample config sets default_model = llmcgi-tiny and a [model llmcgi-tiny] whose path is
    where make install puts it; the same sections (path pointed at the source tree) serve TGI's
    /generate, which names no model, with the golden greedy text."""
    conf = (BUILDDIR / "etc" / "llmcgi.conf").read_text()
    assert re.search(r"^default_model = llmcgi-tiny$", conf, re.M)
    m = re.search(r"^\[model llmcgi-tiny\]\npath = (\S+)$", conf, re.M)
    assert m and m.group(1).endswith("/share/llmcgi/models/llmcgi-tiny"), conf
    # a prompt whose first 20 greedy tokens are certain and hold no <|endoftext|> (TGI stops there)
    rec = next(r for r in golden()["prompts"] if r["stable"] >= 20 and 0 not in r["greedy"][:20])

    d = make_tmpdir("llmcgi-shipped-")
    sock = d / "llmcgi.sock"
    llmcgi = Llmcgi(sock, dir=d, extra=f"default_model = llmcgi-tiny\n\n[model llmcgi-tiny]\npath = {MODEL}\n"
                                        "device = cpu\n").start()
    nginx = Nginx(sock).start()
    try:
        # the model loads in the background after start; /health is 503 "loading" until it is in
        wait_for(lambda: request(nginx.port, "GET", "/health").status == 200, "llmcgi-tiny to load")
        body = {"inputs": rec["prompt"], "parameters": {"max_new_tokens": 20}}
        r = request(nginx.port, "POST", "/generate", json.dumps(body), {"Content-Type": "application/json"})
        assert r.status == 200, r.body
        got = r.json()["generated_text"]
        ids20, text20, _ = greedy(rec["prompt"], 20)
        assert ids20 == rec["greedy"][:20]
        assert got == text20
        info = request(nginx.port, "GET", "/info").json()
        assert info["model_id"] == "llmcgi-tiny"
    finally:
        nginx.stop()
        report = llmcgi.cleanup()
        remove_tmpdir(d)
    assert not report, report
