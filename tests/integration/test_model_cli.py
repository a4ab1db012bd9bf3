"""llmcgi-model against a local stand-in of the Hugging Face hub: pull (sha256 and size checks, redirects to a CDN,
resume after a cut, tokens, errors), skip what is present, list and rm; the pulled directory loads with llmcgi-generate."""

import hashlib
import http.server
import json
import os
import re
import shutil
import socketserver
import subprocess
import threading
from pathlib import Path

import pytest

from servers import BUILDDIR, SRCDIR, free_port, make_tmpdir

GEN = BUILDDIR / "tools" / "gen-gpt2"
CLI = BUILDDIR / "llmcgi-model"
GENERATE = BUILDDIR / "llmcgi-generate"
TOKENIZER = SRCDIR / "tests" / "fixtures" / "gpt2-tokenizer"
# Files a hub repository has that llmcgi must never fetch.
NEVER = ["pytorch_model.bin", "tf_model.h5", "flax_model.msgpack", "onnx/decoder_model.onnx", "rust_model.ot"]


def git_blob_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Hub:
    """The hub's API for one or more repositories, each {file: bytes}: /api/models/NAME/revision/REV,
    /NAME/resolve/REV/FILE (a 302 to /cdn/SHA256 for *.safetensors, the LFS files) and /cdn/ with Range."""

    def __init__(self):
        self.repos = {}
        self.sha = "0123456789abcdef0123456789abcdef01234567"
        self.token = None           # required Bearer token, or None
        self.cut_after = None       # bytes of one CDN answer before the connection is dropped (once)
        self.wrong_hash = False     # X-Linked-Etag names another sha256
        self.no_range = False       # ignore Range (answer 200 with the whole file)
        self.requests = []          # (method, path, headers)
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_HEAD(self):
                self.answer(head=True)

            def do_GET(self):
                self.answer(head=False)

            def send(self, status, body=b"", headers=(), head=False, length=None):
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def error(self, status, code, head):
                body = json.dumps({"error": code}).encode()
                self.send(status, body, [("X-Error-Code", code), ("Content-Type", "application/json")], head)

            def answer(self, head):
                hub.requests.append((self.command, self.path, dict(self.headers)))
                if hub.token and self.headers.get("Authorization") != f"Bearer {hub.token}":
                    return self.error(401, "GatedRepo", head)
                m = re.match(r"^/api/models/(.+)/revision/([^/]+)$", self.path)
                if m:
                    files = hub.repos.get(m.group(1))
                    if files is None:
                        return self.error(404, "RepoNotFound", head)
                    if m.group(2) not in ("main", hub.sha):
                        return self.error(404, "RevisionNotFound", head)
                    body = json.dumps({"id": m.group(1), "sha": hub.sha,
                                       "siblings": [{"rfilename": f} for f in [*files, *NEVER]]}).encode()
                    return self.send(200, body, [("Content-Type", "application/json")], head)
                m = re.match(r"^/(.+)/resolve/([^/]+)/(.+)$", self.path)
                if m:
                    files = hub.repos.get(m.group(1))
                    if files is None:
                        return self.error(404, "RepoNotFound", head)
                    if m.group(2) not in ("main", hub.sha):
                        return self.error(404, "RevisionNotFound", head)
                    data = files.get(m.group(3))
                    if data is None:
                        return self.error(404, "EntryNotFound", head)
                    if m.group(3).endswith(".safetensors"):
                        sha = hashlib.sha256(data).hexdigest()
                        etag = hashlib.sha256(b"not" + data).hexdigest() if hub.wrong_hash else sha
                        return self.send(302, b"", [("Location", f"/cdn/{sha}"), ("X-Linked-Etag", f'"{etag}"'),
                                                    ("X-Linked-Size", str(len(data))), ("ETag", f'"{etag}"'),
                                                    ("X-Repo-Commit", hub.sha)], head)
                    return self.send(200, data, [("ETag", f'"{git_blob_sha1(data)}"'), ("X-Repo-Commit", hub.sha)],
                                     head)
                m = re.match(r"^/cdn/([0-9a-f]{64})$", self.path)
                if m:
                    data = next((d for files in hub.repos.values() for d in files.values()
                                 if hashlib.sha256(d).hexdigest() == m.group(1)), None)
                    if data is None:
                        return self.send(404, b"no such blob", head=head)
                    start = 0
                    rng = re.match(r"^bytes=(\d+)-$", self.headers.get("Range", ""))
                    if rng and not hub.no_range:
                        start = int(rng.group(1))
                    body = data[start:]
                    headers = [("Content-Type", "application/octet-stream")]
                    status = 200
                    if start:
                        status = 206
                        headers.append(("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}"))
                    if hub.cut_after is not None and not head:
                        cut, hub.cut_after = hub.cut_after, None
                        self.send_response(status)
                        for k, v in headers:
                            self.send_header(k, v)
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body[:cut])
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    return self.send(status, body, headers, head)
                self.send(404, b"not found", head=head)

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.port = free_port()
        self.server = Server(("127.0.0.1", self.port), Handler)
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def reset(self):
        self.token = self.cut_after = None
        self.wrong_hash = self.no_range = False
        self.requests.clear()

    def paths(self, method=None):
        return [p for m, p, _ in self.requests if method is None or m == method]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def read_dir(d):
    return {p.name: p.read_bytes() for p in Path(d).iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def sources():
    """Two generated tiny GPT-2 directories: one file of weights, and three shards with an index."""
    if not (TOKENIZER / "vocab.json").exists():
        pytest.skip(f"the GPT-2 tokenizer files are not at {TOKENIZER}")
    d = make_tmpdir("llmcgi-model-src-")
    for name, extra in (("tiny", []), ("sharded", ["--shards", "3"])):
        subprocess.run([str(GEN), "--out", str(d / name), "--layers", "2", "--heads", "2", "--embd", "64",
                        "--positions", "64", "--seed", "5", "--tokenizer", str(TOKENIZER), *extra],
                       check=True, capture_output=True)
        (d / name / "tokenizer_config.json").write_text('{"model_max_length": 64}')
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def hub(sources):
    h = Hub()
    h.repos["org/tiny"] = read_dir(sources / "tiny")
    h.repos["tiny"] = h.repos["org/tiny"]
    h.repos["org/sharded"] = read_dir(sources / "sharded")
    h.repos["org/pytorch-only"] = {"config.json": b"{}", "vocab.json": b"{}", "merges.txt": b"#",
                                   "pytorch_model.bin": b"x"}
    yield h
    h.stop()


@pytest.fixture
def models(hub):
    hub.reset()
    d = make_tmpdir("llmcgi-models-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def cli(*args, env=None, endpoint=None, hub=None, timeout=60):
    e = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_ENDPOINT")}
    if endpoint or hub:
        e["HF_ENDPOINT"] = endpoint or hub.url
    e.update(env or {})
    r = subprocess.run([str(CLI), *map(str, args)], capture_output=True, timeout=timeout, env=e,
                       stdin=subprocess.DEVNULL)
    out, err = r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")
    assert "Sanitizer" not in err and "runtime error" not in err, err
    return r.returncode, out, err


def test_pull_fetches_what_a_gpt2_directory_needs(hub, models, sources):
    rc, out, err = cli("pull", "org/tiny", "--dir", models, hub=hub)
    assert rc == 0, err
    got = models / "org" / "tiny"
    assert read_dir(got) == read_dir(sources / "tiny")
    assert sorted(os.listdir(models / "org")) == ["tiny"]       # no partial-pull directory left
    assert "pulled org/tiny" in out and str(got) in out
    # stderr is not a terminal: one line per file, no progress bar
    assert "\r" not in err
    assert re.search(r"model\.safetensors .* downloaded, sha256 ok", err), err
    assert re.search(r"vocab\.json .* downloaded, size ok", err), err
    # the weights came through the CDN redirect, from the commit the API named; nothing else was fetched
    gets = hub.paths("GET")
    assert any(p.startswith("/cdn/") for p in gets)
    assert all(hub.sha in p for p in gets if "/resolve/" in p), gets
    assert not [p for p in hub.paths() if any(p.endswith(n) for n in NEVER)]


def test_pulled_model_runs_with_llmcgi_generate(hub, models):
    assert cli("pull", "tiny", "--dir", models, hub=hub)[0] == 0
    r = subprocess.run([str(GENERATE), "-m", str(models / "tiny"), "-t", "0", "-n", "4", "--ignore-eos", "Hello"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "decode:  4 tokens" in r.stderr


def test_pull_sharded_model(hub, models, sources):
    rc, out, err = cli("pull", "org/sharded", "--dir", models, hub=hub)
    assert rc == 0, err
    assert read_dir(models / "org" / "sharded") == read_dir(sources / "sharded")
    assert len([f for f in os.listdir(models / "org" / "sharded") if f.endswith(".safetensors")]) == 3


def test_second_pull_skips_files_present(hub, models):
    assert cli("pull", "org/tiny", "--dir", models, hub=hub)[0] == 0
    hub.requests.clear()
    rc, out, err = cli("pull", "org/tiny", "--dir", models, hub=hub)
    assert rc == 0, err
    assert "org/tiny is up to date" in out
    assert not [p for p in hub.paths("GET") if "/resolve/" in p or p.startswith("/cdn/")]
    assert "present" in err


def test_resume_after_a_cut(hub, models, sources):
    size = len(hub.repos["org/tiny"]["model.safetensors"])
    hub.cut_after = size // 3
    rc, out, err = cli("pull", "org/tiny", "--dir", models, hub=hub)
    assert rc == 3, err
    assert "run the same command again to resume" in err
    assert not (models / "org" / "tiny").exists()               # nothing half-done is served
    part = models / "org" / ".tiny.partial-pull" / "model.safetensors.part"
    assert part.stat().st_size == size // 3
    hub.requests.clear()
    rc, out, err = cli("pull", "org/tiny", "--dir", models, hub=hub)
    assert rc == 0, err
    ranges = [h.get("Range") for m, p, h in hub.requests if p.startswith("/cdn/")]
    assert ranges == [f"bytes={size // 3}-"]
    assert "resumed" in err
    assert read_dir(models / "org" / "tiny") == read_dir(sources / "tiny")


def test_resume_starts_over_when_the_server_ignores_range(hub, models, sources):
    hub.cut_after = 1000
    assert cli("pull", "org/tiny", "--dir", models, hub=hub)[0] == 3
    hub.no_range = True
    rc, out, err = cli("pull", "org/tiny", "--dir", models, hub=hub)
    assert rc == 0, err
    assert read_dir(models / "org" / "tiny") == read_dir(sources / "tiny")


def test_hash_mismatch_is_refused(hub, models):
    hub.wrong_hash = True
    rc, out, err = cli("pull", "org/tiny", "--dir", models, hub=hub)
    assert rc == 6, err
    assert "model.safetensors: sha256 mismatch" in err and "partial file was deleted" in err
    assert not (models / "org" / "tiny").exists()
    assert not (models / "org" / ".tiny.partial-pull" / "model.safetensors.part").exists()
    assert not (models / "org" / ".tiny.partial-pull" / "model.safetensors").exists()


def test_token_is_sent_and_never_printed(hub, models):
    hub.token = "hf_secret_123"
    rc, out, err = cli("pull", "org/tiny", "--dir", models, hub=hub, env={"HF_TOKEN": "hf_secret_123"})
    assert rc == 0, err
    auth = [h.get("Authorization") for m, p, h in hub.requests if not p.startswith("/cdn/")]
    assert auth and all(a == "Bearer hf_secret_123" for a in auth)
    assert "hf_secret_123" not in out + err


def test_gated_model_without_token_mentions_hf_token(hub, models):
    hub.token = "hf_secret_123"
    rc, out, err = cli("pull", "org/tiny", "--dir", models, hub=hub)
    assert rc == 4
    assert "HTTP 401" in err and "HF_TOKEN" in err
    rc, out, err = cli("pull", "org/tiny", "--dir", models, hub=hub, env={"HF_TOKEN": "wrong"})
    assert rc == 4 and "HF_TOKEN cannot read it" in err and "wrong" not in err


def test_unknown_model_and_revision(hub, models):
    rc, out, err = cli("pull", "org/nosuch", "--dir", models, hub=hub)
    assert rc == 5 and 'no model "org/nosuch"' in err
    rc, out, err = cli("pull", "org/tiny", "--revision", "v9", "--dir", models, hub=hub)
    assert rc == 5 and 'no revision "v9"' in err
    assert not list(models.iterdir())


def test_repository_without_safetensors_is_refused(hub, models):
    rc, out, err = cli("pull", "org/pytorch-only", "--dir", models, hub=hub)
    assert rc == 1
    assert "has no model.safetensors" in err
    assert not [p for p in hub.paths() if "/resolve/" in p]


def test_offline_is_a_clear_error(models):
    port = free_port()      # nothing listens there
    rc, out, err = cli("pull", "gpt2", "--dir", models, endpoint=f"http://127.0.0.1:{port}")
    assert rc == 3
    assert f"cannot reach http://127.0.0.1:{port}" in err


@pytest.mark.parametrize("name", ["../evil", "/etc", "a/../b", ".hidden", "org/.x", "a/b/c", "a//b", "a b", "",
                                  "x" * 200])
def test_unsafe_names_are_refused(hub, models, name):
    for cmd in ("pull", "rm"):
        rc, out, err = cli(cmd, name, "--dir", models, hub=hub)
        assert rc == 2, err
        assert "not a model name" in err
    assert not hub.requests
    assert not list(models.iterdir())


def test_list_shows_models_and_their_state(hub, models):
    assert cli("pull", "org/tiny", "--dir", models, hub=hub)[0] == 0
    assert cli("pull", "tiny", "--dir", models, hub=hub)[0] == 0
    (models / "broken").mkdir()
    (models / "broken" / "config.json").write_text("{}")
    (models / "notamodel").mkdir()
    hub.cut_after = 100
    assert cli("pull", "org/sharded", "--dir", models, hub=hub)[0] == 3
    rc, out, err = cli("list", "--dir", models)
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 4, out
    assert re.match(r"^broken +\d+ B +incomplete: no vocab\.json, merges\.txt, model\.safetensors$", lines[0])
    assert re.match(r"^org/\.sharded\.partial-pull +.* +partial pull", lines[1])
    assert re.match(r"^org/tiny +[\d.]+ [KM]iB +complete$", lines[2])
    assert re.match(r"^tiny +[\d.]+ [KM]iB +complete$", lines[3])


def test_list_reads_models_dir_from_the_config_file(models, tmp_path):
    (models / "m").mkdir()
    (models / "m" / "config.json").write_text("{}")
    conf = tmp_path / "llmcgi.conf"
    conf.write_text(f"[server]\nlisten = unix:{tmp_path}/s.sock\nmodels_dir = {models}\n")
    rc, out, err = cli("-c", conf, "list")
    assert rc == 0, err
    assert out.startswith("m ")
    conf.write_text(f"[server]\nlisten = unix:{tmp_path}/s.sock\n")
    rc, out, err = cli("-c", conf, "list")
    assert rc == 2 and "sets no models_dir" in err


def test_rm(hub, models, tmp_path):
    assert cli("pull", "org/tiny", "--dir", models, hub=hub)[0] == 0
    rc, out, err = cli("rm", "org/tiny", "--dir", models)
    assert rc == 0, err
    assert not (models / "org").exists()
    rc, out, err = cli("rm", "org/tiny", "--dir", models)
    assert rc == 5 and "no model org/tiny" in err
    # a link to a model elsewhere: the link goes, the model stays
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    (models / "linked").symlink_to(outside)
    rc, out, err = cli("rm", "linked", "--dir", models)
    assert rc == 0, err
    assert not (models / "linked").exists() and (outside / "config.json").exists()
    # an ORG that is a link out of the directory is not followed
    (outside / "m").mkdir()
    (outside / "m" / "config.json").write_text("{}")
    (models / "evil").symlink_to(outside)
    rc, out, err = cli("rm", "evil/m", "--dir", models)
    assert rc == 1 and "not following it" in err
    assert (outside / "m" / "config.json").exists()
    # a directory that is not a model is not removed
    (models / "org2" / "data").mkdir(parents=True)
    rc, out, err = cli("rm", "org2", "--dir", models)
    assert rc == 1 and "not a model directory" in err


@pytest.mark.parametrize("args,message", [
    ([], "no command given"),
    (["fetch"], 'unknown command "fetch"'),
    (["pull"], "pull takes one model NAME"),
    (["list", "x"], "list takes no arguments"),
    (["list", "--revision", "x"], "--revision is for pull"),
    (["--bogus"], "usage:"),
])
def test_usage_errors(models, args, message):
    rc, out, err = cli(*args, "--dir", models)
    assert rc == 2 and message in err


def test_help():
    rc, out, _ = cli("--help")
    assert rc == 0 and "pull NAME" in out and "HF_TOKEN" in out


def test_pull_of_a_changed_model_fetches_only_what_changed(hub, models, sources):
    assert cli("pull", "org/tiny", "--dir", models, hub=hub)[0] == 0
    old = hub.repos["org/tiny"]
    changed = dict(old, **{"vocab.json": old["vocab.json"] + b" "})
    hub.repos["org/tiny"] = changed
    try:
        hub.requests.clear()
        rc, out, err = cli("pull", "org/tiny", "--dir", models, hub=hub)
        assert rc == 0, err
        assert "1 files downloaded" in out
        assert not [p for p in hub.paths("GET") if p.startswith("/cdn/")]    # the weights were kept
        assert read_dir(models / "org" / "tiny") == changed
        assert sorted(os.listdir(models / "org")) == ["tiny"]
    finally:
        hub.repos["org/tiny"] = old
