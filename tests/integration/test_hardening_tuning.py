"""[model] tuning through a real server (issue 25: F16 on the AMX tiles as a per-model setting), behind nginx.

One llmcgi with the same F16 file configured four ways: tuning = latency,
tuning = throughput, and auto at max_concurrent 16 and 32:
* each loads and answers; /health's device names the resolved tuning where it
  changes a kernel (a CPU with AMX: ", latency" / ", throughput"; auto is
  throughput at 32 sequences, latency at 16), and nothing elsewhere;
* greedy generation on the throughput and the latency model each equals
  llmcgi-generate's with the same --tuning on the same file;
* a reload (SIGHUP) with a changed tuning reloads the model onto the other kernel;
* tuning = fast stops the server at start with the file and line.
"""

import signal
import subprocess

import pytest

from servers import BUILDDIR, SRCDIR, Llmcgi, Nginx, local_models_ready, make_tmpdir, remove_tmpdir, request, wait_for

GEN = BUILDDIR / "tools" / "gen-gpt2"
GENERATE = BUILDDIR / "llmcgi-generate"
TOKENIZER = SRCDIR / "tests" / "fixtures" / "gpt2-tokenizer"
SMALL = ["--layers", "2", "--heads", "2", "--embd", "64", "--positions", "128", "--seed", "5"]
JSON = {"Content-Type": "application/json"}
NAMES = ("lat", "tp", "auto16", "auto32")


@pytest.fixture(scope="module")
def model():
    if not (TOKENIZER / "vocab.json").exists():
        pytest.skip(f"the GPT-2 tokenizer files are not at {TOKENIZER}")
    d = make_tmpdir("llmcgi-tuning-model-")
    subprocess.run([str(GEN), "--out", str(d / "f16"), *SMALL, "--dtype", "f16", "--tokenizer", str(TOKENIZER)],
                   check=True, capture_output=True, timeout=120)
    yield d / "f16"
    remove_tmpdir(d)


def section(name, path, extra=""):
    return f"[model {name}]\npath = {path}\ndevice = cpu\nkv_cache = 1M\n{extra}"


def sections(path, tp_tuning="throughput"):
    return (section("lat", path, "tuning = latency\n") + section("tp", path, f"tuning = {tp_tuning}\n") +
            section("auto16", path) + section("auto32", path, "max_concurrent = 32\n"))


@pytest.fixture(scope="module")
def site(model):
    d = make_tmpdir("llmcgi-tuning-")
    llmcgi = Llmcgi(d / "llmcgi.sock", dir=d, extra=sections(model))
    web = None
    try:
        llmcgi.start()
        web = Nginx(llmcgi.sock).start()
        yield web.port, llmcgi
    finally:
        if web:
            web.stop()
        llmcgi.cleanup()
        remove_tmpdir(d)


def local_models(port):
    return local_models_ready(port, NAMES)


def test_device_names_the_resolved_tuning(site):
    lm = local_models(site[0])
    amx = "+amx" in lm["lat"]["device"]
    want = {"lat": "latency", "tp": "throughput", "auto16": "latency", "auto32": "throughput"}
    for n, t in want.items():
        dev = lm[n]["device"]
        if amx:
            assert dev.endswith(", " + t), (n, dev)
        else:   # one kernel for both: the device string stays as it was
            assert "latency" not in dev and "throughput" not in dev, (n, dev)


def generate(*args):
    return subprocess.run([str(GENERATE), *map(str, args)], capture_output=True, timeout=120)


@pytest.mark.parametrize("name,tuning", [("tp", "throughput"), ("lat", "latency")])
def test_each_model_answers_what_llmcgi_generate_does_with_its_tuning(site, model, name, tuning):
    local_models(site[0])
    r = request(site[0], "POST", "/generate",
                b'{"model": "%s", "inputs": "The tiles", "parameters": {"max_new_tokens": 12}}' % name.encode(), JSON)
    assert r.status == 200, r.body
    g = generate("-m", model, "-t", "0", "-n", "12", "--device", "cpu", "--tuning", tuning, "The tiles")
    assert g.returncode == 0, g.stderr
    assert r.json()["generated_text"] == g.stdout.decode(), (r.json(), g.stdout)
    said = g.stderr.decode()
    assert (", " + tuning) in said if "+amx" in said else "latency" not in said, said


def test_reload_with_a_changed_tuning_reloads_the_model(site, model):
    port, llmcgi = site
    lm = local_models(port)
    if "+amx" not in lm["tp"]["device"]:
        pytest.skip("no AMX: both tunings are one kernel, the device string cannot show the reload")
    try:
        llmcgi.write_config(sections(model, "latency"))
        llmcgi.signal(signal.SIGHUP)
        wait_for(lambda: request(port, "GET", "/health").json()["local_models"].get("tp", {}).get("device", "")
                 .endswith(", latency"), "model tp reloaded tuned for latency")
        r = request(port, "POST", "/generate",
                    b'{"model": "tp", "inputs": "The tiles", "parameters": {"max_new_tokens": 4}}', JSON)
        assert r.status == 200, r.body
    finally:
        llmcgi.write_config(sections(model))
        llmcgi.signal(signal.SIGHUP)
        wait_for(lambda: request(port, "GET", "/health").json()["local_models"].get("tp", {}).get("device", "")
                 .endswith(", throughput"), "model tp back to throughput")


def test_bad_tuning_is_refused_at_start(model):
    d = make_tmpdir("llmcgi-tuning-bad-")
    try:
        llmcgi = Llmcgi(d / "llmcgi.sock", dir=d, extra=section("bad", model, "tuning = fast\n"))
        with pytest.raises(AssertionError, match="llmcgi exited"):
            llmcgi.start()
        said = (d / "stdout.log").read_text(errors="replace") + llmcgi.log()
        assert 'llmcgi.conf:' in said and 'tuning must be auto, latency or throughput, got "fast"' in said, said
        llmcgi.cleanup()
    finally:
        remove_tmpdir(d)
