"""llmcgi behind real nginx and real Apache (the project's site files): routes, errors, request ids, streaming.

Every test runs once per web server. Streaming tests are causal, not timed:
the test endpoint sends event k only after the client has released it, and
the client releases it only after reading event k-1 through the web server,
so a server that buffers the stream makes the test fail, never pass slowly.
"""

import re
import uuid

import pytest

from servers import Llmcgi, Stream, request, wait_for


@pytest.fixture(scope="module")
def app(web):
    s = Llmcgi(web.sock).start()
    yield s
    report = s.cleanup()
    assert not report, f"sanitizer report from llmcgi:\n{report}"


def test_health(web, app):
    r = request(web.port, "GET", "/health")
    assert r.status == 200
    assert r.header("content-type") == "application/json"
    body = r.json()
    assert body["status"] == "ok"
    assert body["threads"]["total"] == 8
    assert "cuda" in body
    assert re.fullmatch(r"[0-9a-f]{32}", r.header("x-request-id"))


def test_head_health(web, app):
    r = request(web.port, "HEAD", "/health")
    assert r.status == 200
    assert r.body == b""


def test_request_id_is_echoed_and_logged(web, app):
    rid = f"test-{uuid.uuid4().hex}"
    r = request(web.port, "GET", "/v1/models", headers={"X-Request-Id": rid})
    assert r.status == 200
    assert r.header("x-request-id") == rid
    line = wait_for(lambda: next((l for l in app.access_log().splitlines() if rid in l), None),
                    "the access-log line")
    assert re.search(r'"GET /v1/models" 200 \d+ \d+\.\d{6} ' + rid + "$", line), line


def test_bad_request_id_is_replaced(web, app):
    r = request(web.port, "GET", "/health", headers={"X-Request-Id": "bad id\twith junk"})
    assert re.fullmatch(r"[0-9a-f]{32}", r.header("x-request-id"))


def test_404_tgi_shape(web, app):
    r = request(web.port, "GET", "/no/such/thing")
    assert r.status == 404
    assert r.json() == {"error": "no route for GET /no/such/thing", "error_type": "not_found"}


def test_404_openai_shape(web, app):
    r = request(web.port, "GET", "/v1/no-such-thing")
    assert r.status == 404
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and "param" in err and "code" in err


def test_405_with_allow(web, app):
    r = request(web.port, "PUT", "/health", body="{}", headers={"Content-Type": "application/json"})
    assert r.status == 405
    assert r.header("allow") == "GET, HEAD, OPTIONS"
    assert r.json()["error_type"] == "method_not_allowed"


def test_json_echo(web, app):
    r = request(web.port, "POST", "/_test/echo", body='{"a": [1, "é"]}',
                headers={"Content-Type": "application/json"})
    assert r.status == 200
    assert r.json()["received"] == {"a": [1, "é"]}


def test_413_body_too_large(web, app):
    body = '{"x":"' + "a" * 100_000 + '"}'
    r = request(web.port, "POST", "/_test/echo", body=body, headers={"Content-Type": "application/json"})
    assert r.status == 413
    assert "exceeds the limit of 65536 bytes (max_body)" in r.json()["error"]
    # the server is fine afterwards
    assert request(web.port, "GET", "/health").status == 200


def test_415_wrong_content_type(web, app):
    r = request(web.port, "POST", "/_test/echo", body="{}", headers={"Content-Type": "text/plain"})
    assert r.status == 415
    assert "Content-Type: application/json" in r.json()["error"]


def test_400_malformed_json(web, app):
    r = request(web.port, "POST", "/_test/echo", body='{\n "a": 1,\n "b": }',
                headers={"Content-Type": "application/json"})
    assert r.status == 400
    assert "invalid JSON at line 3, column" in r.json()["error"]


def test_400_json_not_an_object(web, app):
    r = request(web.port, "POST", "/_test/echo", body="[1]", headers={"Content-Type": "application/json"})
    assert r.status == 400
    assert "must be a JSON object" in r.json()["error"]


def test_sse_arrives_event_by_event(web, app):
    sid = uuid.uuid4().hex[:16]
    s = Stream(web.port, f"/_test/sse?id={sid}&events=4")
    try:
        assert s.status == 200
        assert s.headers["content-type"].startswith("text/event-stream")
        assert s.headers["cache-control"] == "no-cache"
        for k in range(4):
            if k > 0:
                # event k exists only after this release, which happens only
                # after event k-1 came through the web server
                assert request(web.port, "POST", f"/_test/release?id={sid}").status == 200
            fields, _ = s.read_event()
            assert fields["event"] == "tick"
            assert fields["data"] == f'{{"seq":{k},"id":"{sid}"}}'
        assert s.read_event() is None
    finally:
        s.close()
    state = request(web.port, "GET", f"/_test/state?id={sid}").json()
    assert state["sent"] == 4 and state["done"] and not state["disconnected"]


def test_sse_keepalive_comments_while_idle(web, app):
    sid = uuid.uuid4().hex[:16]
    s = Stream(web.port, f"/_test/sse?id={sid}&events=2")
    try:
        assert s.read_event()[0]["data"].startswith('{"seq":0')
        # nothing is released: the stream idles and must send ": keep-alive"
        wait_for(lambda: s.readline() == ": keep-alive", "a keep-alive comment through the web server")
        request(web.port, "POST", f"/_test/release?id={sid}")
        assert s.read_event()[0]["data"].startswith('{"seq":1')
    finally:
        s.close()


def test_sse_client_disconnect_is_reported(web, app):
    sid = uuid.uuid4().hex[:16]
    s = Stream(web.port, f"/_test/sse?id={sid}&events=5")
    assert s.read_event()[0]["data"].startswith('{"seq":0')
    s.close()
    # the keep-alives of the idle stream fail once the web server has
    # dropped the connection; the handler sees it and stops
    state = wait_for(lambda: (st := request(web.port, "GET", f"/_test/state?id={sid}").json())["done"] and st,
                     "the stream to notice the disconnect")
    assert state["disconnected"] is True
    assert state["sent"] == 1


def test_no_sanitizer_reports_so_far(web, app):
    assert request(web.port, "GET", "/health").status == 200
    assert not app.sanitizer_report()
