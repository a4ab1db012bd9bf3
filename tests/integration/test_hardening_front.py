"""The front door against a hostile client (issue 19, items 3, 8, 10 and 13): no forged error-log
lines through model names or upstream errors, errors answered before routing in the path's dialect,
a trickled FastCGI head that cannot hold a thread, and the FastCGI records libfcgi gets wrong
(FCGI_GET_VALUES, the AUTHORIZER and FILTER roles), on the raw FastCGI socket.

The raw-socket tests talk FastCGI themselves (a few lines of struct packing below), because
nginx and Apache send a request's head at once and never send these records.
"""

import json
import re
import select
import socket
import struct
import threading
import time

import pytest

from servers import TIMEOUT, WEB_SERVERS, make_tmpdir, remove_tmpdir, request, wait_for
from standin import Standin

JSON = {"Content-Type": "application/json"}
FORGED = "2026-01-01T00:00:00.000+00:00 [error] forged"
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d \[(error|warn|notice|info|debug)\] ")


# ---------------------------------------------------------------------------- a raw FastCGI client

BEGIN_REQUEST, END_REQUEST, PARAMS, STDIN, STDOUT = 1, 3, 4, 5, 6
GET_VALUES, GET_VALUES_RESULT, UNKNOWN_TYPE = 9, 10, 11
RESPONDER, AUTHORIZER, FILTER = 1, 2, 3
KEEP_CONN, UNKNOWN_ROLE = 1, 3


def record(rtype, rid, content=b""):
    pad = (8 - len(content) % 8) % 8
    return struct.pack(">BBHHBB", 1, rtype, rid, len(content), pad, 0) + content + b"\0" * pad


def name_value(name, value):
    def length(n):
        return bytes([n]) if n < 128 else struct.pack(">I", n | 0x80000000)
    return length(len(name)) + length(len(value)) + name + value


def parse_name_values(data):
    out, i = {}, 0
    while i < len(data):
        lens = []
        for _ in range(2):
            if data[i] & 0x80:
                lens.append(struct.unpack(">I", data[i:i + 4])[0] & 0x7fffffff)
                i += 4
            else:
                lens.append(data[i])
                i += 1
        out[data[i:i + lens[0]].decode()] = data[i + lens[0]:i + lens[0] + lens[1]].decode()
        i += lens[0] + lens[1]
    return out


def begin(rid, role=RESPONDER, flags=0):
    return record(BEGIN_REQUEST, rid, struct.pack(">HB5x", role, flags))


def get_request(rid, path="/health", flags=0):
    params = name_value(b"REQUEST_METHOD", b"GET") + name_value(b"REQUEST_URI", path.encode())
    return begin(rid, RESPONDER, flags) + record(PARAMS, rid, params) + record(PARAMS, rid) + record(STDIN, rid)


class Conn:
    """One FastCGI connection to a unix socket, reading whole records."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(TIMEOUT)
        self.s.connect(str(path))
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def record(self):
        """The next (type, request id, content), or None when the connection closed."""
        while True:
            if len(self.buf) >= 8:
                _, rtype, rid, clen, plen, _ = struct.unpack(">BBHHBB", self.buf[:8])
                if len(self.buf) >= 8 + clen + plen:
                    content = self.buf[8:8 + clen]
                    self.buf = self.buf[8 + clen + plen:]
                    return rtype, rid, content
            try:
                data = self.s.recv(65536)
            except ConnectionResetError:
                return None
            if not data:
                return None
            self.buf += data

    def until_end(self, rid):
        """The records up to and including request rid's FCGI_END_REQUEST."""
        got = []
        while True:
            r = self.record()
            assert r is not None, f"connection closed before FCGI_END_REQUEST; got {got}"
            got.append(r)
            if r[0] == END_REQUEST and r[1] == rid:
                return got

    def closed(self):
        """True once the peer closed the connection (waits up to TIMEOUT)."""
        return self.record() is None

    def close(self):
        self.s.close()


def stdout_of(records, rid):
    return b"".join(c for t, i, c in records if t == STDOUT and i == rid)


def end_status(records, rid):
    (content,) = [c for t, i, c in records if t == END_REQUEST and i == rid]
    return struct.unpack(">IB3x", content)


# ---------------------------------------------------------------------------- fixtures

@pytest.fixture
def raw(llmcgi_factory):
    """llmcgi alone on its unix socket with two threads and short head and read timeouts."""
    d = make_tmpdir("llmcgi-front-")
    app = llmcgi_factory(d / "llmcgi.sock", dir=d)
    text = app.config.read_text()
    app.config.write_text(text.replace("threads = 8\n", "threads = 2\nread_timeout = 3s\nhead_timeout = 2s\n", 1))
    app.start()
    yield app
    app.stop()
    remove_tmpdir(d)


@pytest.fixture
def site(llmcgi_factory):
    """nginx in front of llmcgi, with an OpenAI-dialect upstream that takes every model name."""
    d = make_tmpdir("llmcgi-front-")
    upstream = Standin("openai", model_ids=["known"]).start()
    app = llmcgi_factory(d / "llmcgi.sock", dir=d, extra=f"""
[upstream any]
type = openai
url = {upstream.url}
models = *
retries = 0
""")
    app.start()
    web = WEB_SERVERS["nginx"](app.sock).start()
    yield app, web.port, upstream
    web.stop()
    upstream.stop()
    app.stop()
    remove_tmpdir(d)


# ---------------------------------------------------------------------------- item 3: log injection

def test_no_forged_error_log_lines_from_model_names_or_upstream_errors(site):
    app, port, upstream = site
    # a model name with a line break: the upstream's 404 quotes it, and llmcgi logs that
    r = request(port, "POST", "/v1/completions", json.dumps({"model": "x\n" + FORGED, "prompt": "hi"}), JSON)
    assert r.status == 404, r.body
    # an upstream's error message with a line break, answered whole ...
    upstream.set_fault("status", code=500, message="boom\r\n" + FORGED + " by a status", times=1)
    r = request(port, "POST", "/v1/completions", json.dumps({"model": "known", "prompt": "hi"}), JSON)
    assert r.status == 502, r.body
    # ... and as an error event in a stream (translated for a TGI client)
    upstream.set_fault("error_event", message="boom\n" + FORGED + " by an event", times=1)
    r = request(port, "POST", "/generate_stream",
                json.dumps({"model": "known", "inputs": "hi", "parameters": {"max_new_tokens": 3}}), JSON)
    assert r.status == 200 and b"forged by an event" in r.body, r.body

    def logged():
        text = app.log()
        return all(w in text for w in ("\\n" + FORGED, FORGED + " by a status", FORGED + " by an event"))
    wait_for(logged, "the three messages in the error log")
    lines = app.log().splitlines()
    for line in lines:
        assert LOG_LINE.match(line) and not line.startswith(FORGED[:23]), f"a forged log line: {line!r}"
    assert any("\\r\\n" + FORGED + " by a status" in line for line in lines), lines


# ---------------------------------------------------------------------------- item 8: errors before routing

def test_errors_answered_before_routing_take_the_paths_dialect(site):
    app, port, _ = site
    long = "a" * 3000                  # beyond llmcgi's 2 KiB path, within nginx's 8 KiB request line
    r = request(port, "GET", "/v1/models/" + long)
    assert r.status == 414, r.body
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert "too long" in body["error"]["message"], body
    r = request(port, "GET", "/v1?" + "x=1&" + "/" + long)   # a long query is not a long path
    assert r.status != 414, r.body
    r = request(port, "GET", "/info/" + long)
    assert r.status == 414, r.body
    body = r.json()
    assert set(body) == {"error", "error_type"} and "too long" in body["error"], body


# ---------------------------------------------------------------------------- item 10: trickled heads

def test_trickled_fastcgi_heads_do_not_hold_the_threads(raw):
    """Six connections (three times the threads) announce a 60000-byte FCGI_PARAMS record and send
    a byte of it every 2 s: each is closed at head_timeout, and another client gets its answer."""
    closed = {}
    stop = threading.Event()

    def trickle(i):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(TIMEOUT)
        s.connect(str(raw.sock))
        try:
            s.sendall(begin(1) + struct.pack(">BBHHBB", 1, PARAMS, 1, 60000, 0, 0))
            while not stop.is_set():
                s.sendall(b"\x01")
                if select.select([s], [], [], 0)[0] and s.recv(1) == b"":
                    closed[i] = "closed"
                    return
                stop.wait(2)
        except OSError as e:           # EPIPE, ECONNRESET: closed by llmcgi
            closed[i] = str(e)
            return
        finally:
            s.close()

    threads = [threading.Thread(target=trickle, args=(i,), daemon=True) for i in range(6)]
    try:
        for t in threads:
            t.start()
        time.sleep(0.5)                # the tricklers first, so that they take the threads
        c = Conn(raw.sock)
        c.send(get_request(1))
        got = c.until_end(1)
        assert stdout_of(got, 1).startswith(b"Status: 200"), got
        c.close()
        wait_for(lambda: len(closed) == 6, "llmcgi to close every trickling connection", timeout=3 * TIMEOUT)
    finally:
        stop.set()
        for t in threads:
            t.join(TIMEOUT)


def test_a_stalled_head_is_not_answered(raw):
    """A head cut short by read_timeout is closed, not answered as a request of what came."""
    c = Conn(raw.sock)
    pair = name_value(b"REQUEST_METHOD", b"GET")      # whole, then nothing of the 100 bytes announced
    c.send(begin(1) + struct.pack(">BBHHBB", 1, PARAMS, 1, 100, 0, 0) + pair)
    assert c.closed(), "the connection of a stalled head is closed"
    c.close()
    assert raw.access_log() == "", "no request was answered"
    c = Conn(raw.sock)
    c.send(get_request(2))
    assert end_status(c.until_end(2), 2) == (0, 0)
    c.close()


def test_a_client_sending_on_after_its_answer_does_not_hold_a_thread(raw):
    """Closing a connection after its answer reads what the client still sends (so that the close
    is no reset), but not for ever: three clients (more than the threads) that send a byte a second
    after their answer are closed, and another client gets its answer."""
    conns = [Conn(raw.sock) for _ in range(3)]
    stop = threading.Event()

    def trickle():
        while not stop.is_set():
            for c in conns:
                try:
                    c.send(b"\0")
                except OSError:
                    pass
            stop.wait(1)

    t = threading.Thread(target=trickle, daemon=True)
    try:
        for c in conns:
            c.send(get_request(1))
        t.start()
        other = Conn(raw.sock)
        other.send(get_request(1))
        assert end_status(other.until_end(1), 1) == (0, 0)
        other.close()
        for c in conns:
            assert end_status(c.until_end(1), 1) == (0, 0)
            assert c.closed(), "closed although the client keeps sending"
    finally:
        stop.set()
        t.join(TIMEOUT)
        for c in conns:
            c.close()


# ---------------------------------------------------------------------------- item 13: roles, GET_VALUES

@pytest.mark.parametrize("role", [AUTHORIZER, FILTER])
def test_other_roles_get_unknown_role(raw, role):
    c = Conn(raw.sock)
    c.send(begin(1, role) + record(PARAMS, 1, name_value(b"REQUEST_URI", b"/health")) + record(PARAMS, 1) +
           record(STDIN, 1))
    got = c.until_end(1)
    assert end_status(got, 1) == (0, UNKNOWN_ROLE), got
    assert stdout_of(got, 1) == b"", "not answered as a responder"
    assert c.closed(), "without FCGI_KEEP_CONN the connection is closed"
    c.close()
    # with FCGI_KEEP_CONN the rest of the refused request is dropped and the connection serves on
    c = Conn(raw.sock)
    c.send(begin(1, role, KEEP_CONN) + record(PARAMS, 1, name_value(b"REQUEST_URI", b"/health")) +
           record(PARAMS, 1) + record(STDIN, 1) + get_request(2, flags=KEEP_CONN))
    got = c.until_end(1)
    assert end_status(got, 1) == (0, UNKNOWN_ROLE) and stdout_of(got, 1) == b"", got
    got = c.until_end(2)
    assert end_status(got, 2) == (0, 0) and b'"status"' in stdout_of(got, 2), got
    c.close()


def test_get_values_is_answered(raw):
    c = Conn(raw.sock)
    query = (name_value(b"FCGI_MAX_CONNS", b"") + name_value(b"FCGI_MAX_REQS", b"") +
             name_value(b"FCGI_MPXS_CONNS", b"") + name_value(b"NOT_A_VARIABLE", b""))
    c.send(record(GET_VALUES, 0, query))
    rtype, rid, content = c.record()
    assert (rtype, rid) == (GET_VALUES_RESULT, 0)
    assert parse_name_values(content) == {"FCGI_MAX_CONNS": "2", "FCGI_MAX_REQS": "2", "FCGI_MPXS_CONNS": "0"}
    c.send(record(42, 0, b"what"))     # a management record of an unknown type
    rtype, rid, content = c.record()
    assert (rtype, rid, content[0]) == (UNKNOWN_TYPE, 0, 42)
    c.send(get_request(1))             # and the connection still serves a request
    assert end_status(c.until_end(1), 1) == (0, 0)
    c.close()
