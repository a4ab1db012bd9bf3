"""llmcgi-generate end to end: a generated tiny GPT-2 with the real GPT-2 tokenizer; greedy tokens against
transformers' golden ones, seeds, stop strings, limits, stdin, and a clear error for every bad input."""

import json
import re
import shutil
import subprocess

import pytest

from servers import BUILDDIR, SRCDIR, make_tmpdir

GEN = BUILDDIR / "tools" / "gen-gpt2"
CLI = BUILDDIR / "llmcgi-generate"
TOKENIZER = SRCDIR / "tests" / "fixtures" / "gpt2-tokenizer"
GOLDEN = SRCDIR / "tests" / "golden" / "gpt2_golden.json"


def tiny_golden():
    g = json.loads(GOLDEN.read_text())
    return next(m for m in g["models"] if m["name"] == "tiny" and m["dtype"] == "f32")


@pytest.fixture(scope="module")
def model():
    if not (TOKENIZER / "vocab.json").exists():
        pytest.skip(f"the GPT-2 tokenizer files are not at {TOKENIZER}")
    g = tiny_golden()
    d = make_tmpdir("llmcgi-gen-")
    subprocess.run([str(GEN), "--out", str(d / "tiny"), "--layers", str(g["layers"]), "--heads", str(g["heads"]),
                    "--embd", str(g["embd"]), "--positions", str(g["positions"]), "--seed", str(g["seed"]),
                    "--std", str(g["std"]), "--tokenizer", str(TOKENIZER)], check=True, capture_output=True)
    yield d / "tiny"
    shutil.rmtree(d, ignore_errors=True)


def gen(*args, stdin=None, timeout=60):
    r = subprocess.run([str(CLI), *map(str, args)], capture_output=True, input=stdin, timeout=timeout)
    err = r.stderr.decode("utf-8", "replace")
    assert "Sanitizer" not in err and "runtime error" not in err, err
    return r.returncode, r.stdout.decode("utf-8", "replace"), err


def token_ids(stderr):
    """The ids --logprobs prints, one line per generated token: [i] id "text" logprob ..."""
    return [int(m.group(1)) for m in re.finditer(r"^\[\d+\] (\d+) ", stderr, re.M)]


def test_greedy_tokens_match_transformers(model):
    g = tiny_golden()
    # Prompts 0 ("Hello") and 9 (a question): through the real tokenizer, the engine and the sampler.
    for idx, text in ((0, "Hello"), (9, "Q: What is the capital of France?\nA:")):
        rec = g["prompts"][idx]
        rc, out, err = gen("-m", model, "-t", "0", "-n", 64, "--ignore-eos", "--logprobs", 0, text)
        assert rc == 0, err
        assert token_ids(err) == rec["greedy"], err
        assert re.search(r"prefill: \d+ tokens in [\d.]+ ms \([\d.]+ tokens/s\)", err)
        assert re.search(r"decode:  64 tokens in [\d.]+ ms", err)
        assert "finish:  length, greedy" in err


def test_same_seed_same_text_other_seed_other_text(model):
    a = gen("-m", model, "--seed", 42, "-n", 24, "Once upon a time")
    b = gen("-m", model, "--seed", 42, "-n", 24, "Once upon a time")
    c = gen("-m", model, "--seed", 43, "-n", 24, "Once upon a time")
    assert a[0] == b[0] == c[0] == 0
    assert a[1] == b[1] and a[1] != c[1]
    assert "seed 42" in a[2]


def test_every_sampling_option_is_accepted_and_reproducible(model):
    args = ["-m", model, "--seed", 7, "-n", 16, "-t", "0.7", "--top-k", 20, "--top-p", "0.9", "--typical-p", "0.95",
            "--repetition-penalty", "1.3", "--frequency-penalty", "0.5", "--presence-penalty", "0.5", "The"]
    a, b = gen(*args), gen(*args)
    assert a[0] == 0, a[2]
    assert a[1] == b[1]


def test_max_tokens_and_logprobs(model):
    rc, out, err = gen("-m", model, "-t", 0, "-n", 5, "--ignore-eos", "--logprobs", 3, "Hi")
    assert rc == 0, err
    lines = re.findall(r"^\[\d+\] .*$", err, re.M)
    assert len(lines) == 5
    for line in lines:
        # greedy: the chosen token is the first alternative, and logprobs are <= 0
        m = re.match(r"\[\d+\] \d+ (\".*?\") (-?[\d.]+)  top: (\".*?\") (-?[\d.]+), .*, .*$", line)
        assert m, line
        assert m.group(1) == m.group(3) and m.group(2) == m.group(4)
        assert float(m.group(2)) <= 0


def test_stop_string_cuts_the_text(model):
    rc, full, err = gen("-m", model, "-t", 0, "-n", 40, "--ignore-eos", "Hello")
    assert rc == 0, err
    stop = full[10:14]
    assert stop.strip(), full
    rc, cut, err = gen("-m", model, "-t", 0, "-n", 40, "--ignore-eos", "--stop", stop, "Hello")
    assert rc == 0, err
    assert cut == full[:full.index(stop)]
    assert "finish:  stop_sequence" in err


def test_prompt_from_stdin_and_echo(model):
    rc, a, _ = gen("-m", model, "-t", 0, "-n", 8, "A prompt")
    rc2, b, err = gen("-m", model, "-t", 0, "-n", 8, "--echo", "-", stdin=b"A prompt")
    assert rc == rc2 == 0, err
    assert b == "A prompt" + a


def test_context_limit(model):
    positions = tiny_golden()["positions"]
    long_prompt = " word" * (positions + 10)
    rc, _, err = gen("-m", model, long_prompt)
    assert rc == 1 and f"the model's context is {positions}" in err
    rc, _, err = gen("-m", model, "-n", positions, "Hello")
    assert rc == 1 and "more than the model's context" in err
    # without -n, a long prompt just gets fewer new tokens
    rc, _, err = gen("-m", model, "-t", 0, "--ignore-eos", " word" * (positions - 20))
    assert rc == 0, err
    assert re.search(r"decode:  \d+ tokens", err)


@pytest.mark.parametrize("args,code,message", [
    (["-m", "/nonexistent/model", "Hello"], 1, "/nonexistent/model"),
    (["-m", "{model}"], 2, "no prompt given"),
    (["-m", "{model}", "--top-p", "1.5", "x"], 2, "top_p"),
    (["-m", "{model}", "-t", "-1", "x"], 2, "temperature"),
    (["-m", "{model}", "--top-k", "many", "x"], 2, "--top-k wants a whole number"),
    (["-m", "{model}", "-n", "0", "x"], 2, "--max-tokens wants a whole number"),
    (["-m", "{model}", "--seed", "-3", "x"], 2, "--seed wants a whole number"),
    (["-m", "{model}", "--stop", "a", "--stop", "b", "--stop", "c", "--stop", "d", "--stop", "e", "x"], 2,
     "at most 4 --stop strings"),
    (["-m", "{model}", "--stop", "", "x"], 2, "stop"),
    (["-m", "{model}", "--device", "tpu", "x"], 2, "--device wants"),
    (["-m", "{model}", "--frequency-penalty", "3", "x"], 2, "frequency_penalty"),
    (["-m", "/nonexistent/model", "x"], 1, "/nonexistent/model"),
    (["--bogus"], 2, "usage:"),
])
def test_bad_input_is_a_clear_error(model, args, code, message):
    rc, out, err = gen(*[a.replace("{model}", str(model)) for a in args])
    assert rc == code, err
    assert message in err
    assert out == ""


def test_unsupported_architecture_is_named(model, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(TOKENIZER / f, tmp_path / f)
    rc, _, err = gen("-m", tmp_path, "x")
    assert rc == 1
    assert "LlamaForCausalLM" in err and "config.json" in err


def test_help():
    rc, out, _ = gen("--help")
    assert rc == 0 and "--repetition-penalty" in out and "--typical-p" in out
