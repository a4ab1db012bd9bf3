"""[model] kv_dtype through a real server (issue 25's F16 KV cache), behind nginx.

One llmcgi with the same half-precision (F16) file configured three ways and
an F32 file, each with kv_cache = 1M:
* kv_dtype auto on the F16 file keeps K and V in F16 (/health's kv_dtype),
  and its kv_cache holds twice the blocks of kv_dtype = f32 on the same file,
  for the same memory_bytes (the pool's bytes are what was configured);
* kv_dtype auto on the F32 file stays F32 (its goldens are transformers');
* greedy generation on the F16 KV model answers, and equals llmcgi-generate's
  on the same file (which loads with kv_dtype auto too);
* kv_dtype = bf16 stops the server at start with the file and line;
* llmcgi-generate --kv-dtype chooses the same thing and names it, and the
  server with kv_dtype = f32 answers what llmcgi-generate --kv-dtype f32 does.
"""

import subprocess

import pytest

from servers import BUILDDIR, SRCDIR, Llmcgi, Nginx, local_models_ready, make_tmpdir, remove_tmpdir, request

GEN = BUILDDIR / "tools" / "gen-gpt2"
GENERATE = BUILDDIR / "llmcgi-generate"
TOKENIZER = SRCDIR / "tests" / "fixtures" / "gpt2-tokenizer"
SMALL = ["--layers", "2", "--heads", "2", "--embd", "64", "--positions", "128", "--seed", "5"]
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def models():
    if not (TOKENIZER / "vocab.json").exists():
        pytest.skip(f"the GPT-2 tokenizer files are not at {TOKENIZER}")
    d = make_tmpdir("llmcgi-kvf16-models-")
    for dt in ("f16", "f32"):
        subprocess.run([str(GEN), "--out", str(d / dt), *SMALL, "--dtype", dt, "--tokenizer", str(TOKENIZER)],
                       check=True, capture_output=True, timeout=120)
    yield d
    remove_tmpdir(d)


def section(name, path, kv=None):
    return f"[model {name}]\npath = {path}\ndevice = cpu\nkv_cache = 1M\n" + (f"kv_dtype = {kv}\n" if kv else "")


@pytest.fixture(scope="module")
def site(models):
    d = make_tmpdir("llmcgi-kvf16-")
    sock = d / "llmcgi.sock"
    extra = (section("half", models / "f16") + section("half32", models / "f16", "f32") +
             section("full", models / "f32"))
    llmcgi = Llmcgi(sock, dir=d, extra=extra)
    web = None
    try:
        llmcgi.start()
        web = Nginx(sock).start()
        yield web.port
    finally:
        if web:
            web.stop()
        llmcgi.cleanup()
        remove_tmpdir(d)


def local_models(port):
    return local_models_ready(port, ("half", "half32", "full"))


def test_auto_is_f16_under_half_matrices_and_holds_twice_the_blocks(site):
    lm = local_models(site)
    assert (lm["half"]["dtype"], lm["half"]["kv_dtype"]) == ("F16", "F16"), lm["half"]
    assert (lm["half32"]["dtype"], lm["half32"]["kv_dtype"]) == ("F16", "F32"), lm["half32"]
    assert (lm["full"]["dtype"], lm["full"]["kv_dtype"]) == ("F32", "F32"), lm["full"]
    # 2 layers x K and V x 16 positions x 64 wide: 16 KiB a block in F32, 8 KiB in F16
    assert lm["half32"]["kv_blocks_total"] == (1 << 20) // (16 << 10), lm["half32"]
    assert lm["half"]["kv_blocks_total"] == 2 * lm["half32"]["kv_blocks_total"], lm
    assert lm["half"]["memory_bytes"] == lm["half32"]["memory_bytes"], lm


def test_f16_kv_generates_what_llmcgi_generate_does(site, models):
    r = request(site, "POST", "/generate",
                b'{"model": "half", "inputs": "The cache", "parameters": {"max_new_tokens": 12}}', JSON)
    assert r.status == 200, r.body
    want = subprocess.run([str(GENERATE), "-m", str(models / "f16"), "-t", "0", "-n", "12", "--device", "cpu",
                           "The cache"], check=True, capture_output=True, timeout=120).stdout.decode()
    assert r.json()["generated_text"] == want, (r.json(), want)


def test_kv_dtype_bf16_is_refused_at_start(models):
    d = make_tmpdir("llmcgi-kvf16-bad-")
    try:
        llmcgi = Llmcgi(d / "llmcgi.sock", dir=d, extra=section("bad", models / "f16", "bf16"))
        with pytest.raises(AssertionError, match="llmcgi exited"):
            llmcgi.start()
        said = (d / "stdout.log").read_text(errors="replace") + llmcgi.log()
        assert 'llmcgi.conf:' in said and 'kv_dtype must be auto, f32 or f16, got "bf16"' in said, said
        llmcgi.cleanup()
    finally:
        remove_tmpdir(d)


def generate(*args):
    return subprocess.run([str(GENERATE), *map(str, args)], capture_output=True, timeout=120)


def test_llmcgi_generate_kv_dtype_is_chosen_and_named(site, models):
    for kv, want in (("auto", "F16 KV"), ("f16", "F16 KV"), ("f32", "F32 KV")):
        r = generate("-m", models / "f16", "-t", "0", "-n", "4", "--device", "cpu", "--kv-dtype", kv, "The cache")
        assert r.returncode == 0 and want in r.stderr.decode(), (kv, r.stderr)
    r = generate("-m", models / "f32", "-t", "0", "-n", "4", "--device", "cpu", "The cache")
    assert r.returncode == 0 and "F32 KV" in r.stderr.decode(), r.stderr
    # the server's f32 model on the F16 file answers what the CLI's f32 KV does
    r = request(site, "POST", "/generate",
                b'{"model": "half32", "inputs": "The cache", "parameters": {"max_new_tokens": 12}}', JSON)
    assert r.status == 200, r.body
    want = generate("-m", models / "f16", "-t", "0", "-n", "12", "--device", "cpu", "--kv-dtype", "f32", "The cache")
    assert r.json()["generated_text"] == want.stdout.decode(), (r.json(), want.stdout)
    r = generate("-m", models / "f16", "--kv-dtype", "bf16", "x")
    assert r.returncode == 2 and "--kv-dtype wants auto, f32 or f16" in r.stderr.decode(), r.stderr
