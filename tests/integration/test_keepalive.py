"""Kept FastCGI connections (nginx fastcgi_keep_conn + upstream keepalive, Apache enablereuse), as the
shipped site files set them up: connections are reused, idle ones pin no thread, and a request whose body
the handler never read leaves the connection usable."""

import http.client
import json
import socket
import threading
import time

import pytest

from servers import TIMEOUT, request, wait_for


def accepted(web):
    return request(web.port, "GET", "/health").json()["connections"]


@pytest.fixture
def two_threads(web, llmcgi_factory):
    """llmcgi with only 2 responder threads behind a web server that keeps many connections."""
    app = llmcgi_factory(web.sock)
    app.config.write_text(app.config.read_text().replace("threads = 8", "threads = 2"))
    return app.start()


def test_connections_are_reused(web, two_threads):
    before = accepted(web)
    conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=TIMEOUT)
    try:
        for _ in range(30):
            conn.request("GET", "/v1/models", headers={"Host": "localhost"})
            r = conn.getresponse()
            r.read()
            assert r.status == 200
    finally:
        conn.close()
    grown = accepted(web) - before
    assert grown <= 5, f"30 requests opened {grown} FastCGI connections: they are not kept"


def test_idle_kept_connections_pin_no_thread(web, two_threads):
    """16 clients at once against 2 threads: the web server ends up keeping
    more connections than llmcgi has threads. If an idle kept connection held
    a thread (libfcgi's own behaviour), requests on the others would wait
    forever; here every one is answered."""
    errors, done = [], []

    def client():
        try:
            for _ in range(10):
                r = request(web.port, "GET", "/health")
                assert r.status == 200, r.status
            done.append(1)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=3 * TIMEOUT)
    assert not errors, errors[:3]
    assert len(done) == 16


def test_unread_body_leaves_the_connection_usable(web, two_threads):
    """The body fits in the socket buffer, so the web server sends all of it and
    keeps the connection; llmcgi answers 405 without reading it. Unless llmcgi
    reads the rest itself, libfcgi takes the leftover records for a protocol
    error on the next request and drops the connection, and the web server has
    to open a new one."""
    conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=TIMEOUT)
    try:
        def ask(method, path, body=None):
            conn.request(method, path, body=body, headers={"Host": "localhost", "Content-Type": "application/json"})
            r = conn.getresponse()
            return r.status, r.read()

        # one client connection: one web-server worker, one kept FastCGI connection
        status, body = ask("GET", "/health")
        before = json.loads(body)["connections"]
        assert ask("POST", "/health", body=b"x" * 60_000)[0] == 405
        for _ in range(3):
            assert ask("GET", "/v1/models")[0] == 200
        status, body = ask("GET", "/health")
        grown = json.loads(body)["connections"] - before
        assert grown == 0, f"{grown} new connection(s): the kept connection broke after the unread body"
    finally:
        conn.close()


def test_silent_connections_pin_no_thread(web, llmcgi_factory):
    """Connections that send nothing, or stop half-way through a record, must
    not take llmcgi's threads away from the web server's requests: silent
    ones are parked, stalled ones fail after read_timeout."""
    app = llmcgi_factory(web.sock)
    app.config.write_text(app.config.read_text().replace("threads = 8", "threads = 2")
                          .replace("[server]", "[server]\nread_timeout = 500ms"))
    app.start()
    raw = []
    for partial in (b"", b"", b"\x01\x01\x00", b"\x01\x01\x00"):   # 2 silent, 2 cut inside a header
        c = socket.socket(socket.AF_UNIX)
        c.settimeout(TIMEOUT)
        c.connect(str(web.sock))
        if partial:
            c.sendall(partial)
        raw.append(c)
    try:
        for _ in range(5):
            assert request(web.port, "GET", "/health").status == 200
        # the stalled ones are closed by llmcgi once read_timeout has passed
        for c in raw[2:]:
            assert c.recv(1) == b""
    finally:
        for c in raw:
            c.close()
