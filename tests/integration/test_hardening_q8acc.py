"""int8 weights' accuracy on the shipped trained model, through tests/bench/cpu_bench (issue 25).

* Perplexity: the held-out text of tests/golden/llmcgi_tiny_ppl.json (a quarter of llmcgi-tiny's
  own validation split, which training never read; tests/golden/make_ppl_golden.py) in consecutive
  256-token windows. llmcgi's F32 loss equals transformers' (the golden) to 1e-4 relative, and
  Q8_0 weights raise the perplexity by under 1% (measured -0.01%).
* Greedy agreement: with F32's 64 greedy tokens fed back (teacher forcing) on the golden prompts,
  Q8_0's argmax is F32's on at least 95% of the steps (measured 1274 of 1280, 99.5%).
"""

import json
import subprocess

from servers import BUILDDIR, SRCDIR

MODEL = SRCDIR / "models" / "llmcgi-tiny"
BENCH = BUILDDIR / "tests" / "bench" / "cpu_bench"


def bench(*args):
    r = subprocess.run([str(BENCH), *map(str, args)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_q8_perplexity_rises_under_one_percent_and_f32_is_transformers():
    r = bench("--ppl", MODEL, SRCDIR / "tests" / "golden" / "llmcgi_tiny_ppl.json", 2)
    assert r["windows"] >= 32, r
    assert abs(r["f32_nll"] - r["golden_nll"]) <= 1e-4 * r["golden_nll"], r
    assert abs(r["f16_nll"] - r["golden_nll"]) <= 1e-3 * r["golden_nll"], r
    assert abs(r["bf16_nll"] - r["golden_nll"]) <= 1e-2 * r["golden_nll"], r
    assert r["q8_rise_pct"] < 1.0, r
    assert abs(r["q8_rise_pct"] - 100 * (r["q8_ppl"] / r["f32_ppl"] - 1)) < 1e-2, r


def test_q8_keeps_f32s_argmax_teacher_forced():
    r = bench("--agree", MODEL, SRCDIR / "tests" / "golden" / "llmcgi_tiny_golden.json", "llmcgi-tiny", 2)
    assert r["steps"] == 64 * 20, r
    assert r["agree"] >= 0.95 * r["steps"], r
