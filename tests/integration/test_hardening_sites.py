"""Hardening of the shipped web server sites and of what llmcgi hands them (issue 19, items 7, 13, 14).

The web servers run the project's own site files (servers.py): what a client
gets here is what it gets from an installed site.
"""

import http.client
import json
import socket

import pytest

from servers import TIMEOUT, request, wait_for


def assert_json_error(r, status, dialect, retry_after=False):
    """r is the web server's JSON error in `dialect` ("openai" or "tgi")."""
    assert r.status == status, (r.status, r.body[:300])
    assert (r.header("content-type") or "").startswith("application/json"), (r.headers, r.body[:300])
    body = r.json()
    if dialect == "openai":
        assert set(body) == {"error"}, body
        assert set(body["error"]) == {"message", "type", "param", "code"}, body
        assert body["error"]["message"] and body["error"]["type"], body
    else:
        assert set(body) == {"error", "error_type"}, body
        assert isinstance(body["error"], str) and body["error"] and body["error_type"], body
    if retry_after:
        assert (r.header("retry-after") or "").isdigit(), r.headers
    return body


def raw_request(port, head, body=b""):
    """Sends a request and reads the answer, also when the server answers
    before the whole body is in (nginx) and stops reading it."""
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    try:
        try:
            s.sendall(head + body)
        except (BrokenPipeError, ConnectionResetError):
            pass                                # answered early: the answer is waiting
        resp = http.client.HTTPResponse(s)
        resp.begin()
        data = resp.read()
        from servers import Response
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        s.close()


@pytest.fixture
def app(web, llmcgi_factory):
    return llmcgi_factory(web.sock).start()


# ---------------------------------------------------------------- item 14: the web server's own errors

def test_llmcgi_down_is_json_with_retry_after(web, app):
    assert request(web.port, "GET", "/health").status == 200
    app.stop()
    r = request(web.port, "GET", "/v1/models")
    status = r.status
    assert status in (502, 503), r.status
    assert_json_error(r, status, "openai", retry_after=True)
    assert_json_error(request(web.port, "GET", "/health"), status, "tgi", retry_after=True)
    assert_json_error(request(web.port, "POST", "/v1/chat/completions", body="{}",
                              headers={"Content-Type": "application/json"}), status, "openai", retry_after=True)
    assert_json_error(request(web.port, "POST", "/generate", body="{}",
                              headers={"Content-Type": "application/json"}), status, "tgi", retry_after=True)


def test_url_too_long_is_json(web, app):
    assert_json_error(request(web.port, "GET", "/v1/models/" + "a" * 9000), 414, "openai")
    assert_json_error(request(web.port, "GET", "/info?" + "a" * 9000), 414, "tgi")


def test_header_too_long_is_json(web, app):
    big = {"X-Big": "b" * 9000}
    assert_json_error(request(web.port, "GET", "/v1/models", headers=big), 400, "openai")
    assert_json_error(request(web.port, "GET", "/health", headers=big), 400, "tgi")


def test_body_over_the_sites_limit_is_json(web, app):
    # Over the sites' 16 MiB. nginx refuses it on Content-Length alone; Apache
    # passes it on and llmcgi refuses it (its max_body is lower): JSON either way.
    size = 17 * 1024 * 1024
    for path, dialect in (("/v1/completions", "openai"), ("/generate", "tgi")):
        head = (f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                f"Content-Length: {size}\r\nConnection: close\r\n\r\n").encode()
        assert_json_error(raw_request(web.port, head, b"{" + b" " * (size - 1)), 413, dialect)


def test_llmcgi_errors_pass_through_untouched(web, app):
    r = request(web.port, "GET", "/v1/no-such-thing")
    assert r.status == 404 and r.header("x-request-id"), r.headers
    assert "no-such-thing" in r.json()["error"]["message"]     # llmcgi's message, not the site's
    r = request(web.port, "POST", "/_test/echo", body="x" * 100_000, headers={"Content-Type": "application/json"})
    assert r.status == 413 and r.header("x-request-id"), r.headers
    assert "(max_body)" in r.json()["error"], r.body



def test_the_error_documents_are_not_served_as_answers(web, app):
    for path in ("/.llmcgi-error", "/.llmcgi-error/503.json"):
        assert_json_error(request(web.port, "GET", path), 404, "tgi")

# ---------------------------------------------------------------- item 7: big upstream headers

@pytest.fixture
def bigheads(web, llmcgi_factory):
    """llmcgi behind `web` with an `http` pass-through to a TGI stand-in under /img."""
    from standin import Standin
    s = Standin("tgi").start()
    app = llmcgi_factory(web.sock, extra=f"""
[upstream img]
type = http
url = {s.url}
path_prefix = /img
""").start()
    yield s, app
    s.stop()


def generate_img(web):
    return request(web.port, "POST", "/img/generate", body='{"inputs": "x"}',
                   headers={"Content-Type": "application/json"})


def test_big_upstream_header_within_llmcgis_cap_gets_through(web, bigheads):
    standin, app = bigheads
    standin.set_fault("status", code=200, headers=[("X-Big", "a" * 7000)])
    r = generate_img(web)
    assert r.status == 200, (r.status, r.body[:300])       # nginx's HTML 502 with its default buffer
    assert r.header("x-big") == "a" * 7000


@pytest.mark.parametrize("heads", [[("X-Huge", "h" * 20000)],
                                   [(f"X-Big-{i}", "b" * 5000) for i in range(4)]],
                         ids=["one-20k-header", "four-5k-headers"])
def test_upstream_headers_over_the_cap_are_a_json_502(web, bigheads, heads):
    standin, app = bigheads
    standin.set_fault("status", code=200, headers=heads)
    r = generate_img(web)
    body = assert_json_error(r, 502, "tgi")
    assert "headers over llmcgi's limit" in body["error"], body
    assert r.header("x-request-id")
    rid = r.header("x-request-id")
    line = [l for l in app.access_log().splitlines() if rid in l]
    assert line and " 502 " in line[0], line          # the access log says what the client got
    standin.set_fault("ok")
    assert generate_img(web).status == 200              # the upstream is not marked down for it


# ---------------------------------------------------------------- item 13: operator-side edges

def test_a_flooding_child_cannot_flood_the_log(llmcgi_factory):
    import sys
    import time
    from servers import WEB_SERVERS, free_port, make_tmpdir
    d = make_tmpdir("flood-")
    (d / "flood.py").write_text("import sys, time\n"
                                "for _ in range(300000):\n    sys.stdout.write('A' * 99 + '\\n')\n"
                                "sys.stdout.flush()\ntime.sleep(1)\nprint('FLOOD-END', flush=True)\ntime.sleep(600)\n")
    t0 = time.monotonic()
    app = llmcgi_factory(d / "llmcgi.sock", dir=d, extra=f"""
[upstream flood]
type = openai
url = http://127.0.0.1:{free_port()}
models = flood
launch = exec {sys.executable} {d}/flood.py
launch_stop_timeout = 2s
""").start()
    web = WEB_SERVERS["nginx"](app.sock).start()
    try:
        assert request(web.port, "GET", "/health").status in (200, 503)    # serving while it floods
        wait_for(lambda: "FLOOD-END" in app.log(), "the child's line after its 30 MB flood", timeout=120)
        took = time.monotonic() - t0
        assert request(web.port, "GET", "/health").status in (200, 503)
    finally:
        web.stop()
    size = (d / "error.log").stat().st_size
    # the bucket: 128 KiB at once, then 8 KiB a second (and llmcgi's own lines)
    assert size < 128 * 1024 + 8192 * (took + 2) + 64 * 1024, (size, took)
    assert "lines (" in app.log() and "of output dropped" in app.log()


def test_a_missing_model_path_is_a_warning_at_reload_start_and_check(llmcgi_factory):
    import signal
    import subprocess
    from servers import LLMCGI, make_tmpdir
    d = make_tmpdir("ghost-")
    app = llmcgi_factory(d / "llmcgi.sock", dir=d).start()
    ghost = "\n[model ghost]\npath = /nonexistent/ghost-model\n"
    app.write_config(extra=ghost)
    line = app.config.read_text().splitlines().index("path = /nonexistent/ghost-model") + 1
    want = f"llmcgi.conf:{line}: [model ghost]: path /nonexistent/ghost-model does not exist"
    app.signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in app.log(), "the reload")
    log = app.log()
    assert want in log, log
    assert log.index(want) < log.index("configuration reloaded"), log
    assert "[warn]" in next(l for l in log.splitlines() if want in l)
    # llmcgi -t says it too (a warning: the file is valid, as at start, where it is logged too)
    r = subprocess.run([str(LLMCGI), "-t", "-c", str(app.config)], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert f"llmcgi.conf:{line}: warning: [model ghost]: path /nonexistent/ghost-model does not exist" in r.stderr
    app.stop()
    (d / "error.log").unlink()
    app.start()
    assert want in app.log(), app.log()
