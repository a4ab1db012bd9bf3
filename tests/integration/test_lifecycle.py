"""llmcgi's process life behind real nginx and Apache: drain on SIGTERM, reload on SIGHUP, reopen logs on
SIGUSR1, and the launch modes (config socket, spawn-fcgi on fd 0, systemd socket activation)."""

import os
import signal

import pytest

from servers import SRCDIR, Stream, request, wait_for


def models(web):
    return [m["id"] for m in request(web.port, "GET", "/v1/models").json()["data"]]


def test_sigterm_lets_the_request_in_flight_finish(web, llmcgi_factory):
    app = llmcgi_factory(web.sock).start()
    s = Stream(web.port, "/_test/slow?ms=1500")
    try:
        assert s.status == 200
        assert s.readline() == "start"          # the request is being answered now
        app.signal(signal.SIGTERM)
        wait_for(lambda: "finishing 1 request(s) in flight" in app.log(), "llmcgi to start draining")
        assert s.read_rest() == ["end"]         # ... and completes
    finally:
        s.close()
    assert app.wait() == 0
    assert "all requests finished; exiting" in app.log()
    assert not os.path.exists(web.sock), "the socket llmcgi created is removed on exit"


def test_sigterm_gives_up_after_shutdown_timeout(web, llmcgi_factory):
    app = llmcgi_factory(web.sock, shutdown_timeout="300ms").start()
    s = Stream(web.port, "/_test/slow?ms=30000")
    try:
        assert s.readline() == "start"
        app.signal(signal.SIGTERM)
        assert app.wait() == 0
        assert "shutdown_timeout reached with 1 request(s) unfinished" in app.log()
    finally:
        s.close()


def test_second_sigterm_exits_at_once(web, llmcgi_factory):
    app = llmcgi_factory(web.sock).start()
    s = Stream(web.port, "/_test/slow?ms=30000")
    try:
        assert s.readline() == "start"
        app.signal(signal.SIGTERM)
        wait_for(lambda: "finishing 1 request(s)" in app.log(), "draining")
        app.signal(signal.SIGTERM)
        assert app.wait() == 0
        assert "exiting without waiting" in app.log()
    finally:
        s.close()


def test_sighup_reload_picks_up_a_change(web, llmcgi_factory):
    app = llmcgi_factory(web.sock).start()
    assert models(web) == []
    app.write_config(extra="[model tiny]\npath = /srv/models/tiny\n")
    app.signal(signal.SIGHUP)
    wait_for(lambda: models(web) == ["tiny"], "the reloaded model list")
    assert "configuration reloaded (1 models)" in app.log()
    # the process did not restart: the same pid still answers
    assert app.proc.poll() is None


def test_sighup_with_a_bad_file_keeps_the_running_config(web, llmcgi_factory):
    # a model that loads: as the one model configured it is the default, which /health judges
    app = llmcgi_factory(web.sock, extra=f"[model keep]\npath = {SRCDIR}/models/llmcgi-tiny\n").start()
    assert models(web) == ["keep"]
    app.config.write_text(app.config.read_text().replace("threads = 8", "threads = many") + "[model new]\n")
    app.signal(signal.SIGHUP)
    wait_for(lambda: "reload failed: keeping the running configuration" in app.log(), "the failed reload")
    log = app.log()
    assert f"{app.config}:" in log and "threads must be a whole number" in log, "errors name file:line"
    assert "[model new] needs a path" in log
    assert models(web) == ["keep"]
    wait_for(lambda: request(web.port, "GET", "/health").status == 200, "/health to say ok (the model loaded)")


def test_sigusr1_reopens_the_access_log(web, llmcgi_factory):
    app = llmcgi_factory(web.sock).start()
    request(web.port, "GET", "/health", headers={"X-Request-Id": "before-rotate"})
    wait_for(lambda: "before-rotate" in app.access_log(), "the first line")
    os.rename(app.dir / "access.log", app.dir / "access.log.1")
    app.signal(signal.SIGUSR1)
    wait_for(lambda: "reopening log files" in app.log(), "the reopen")
    request(web.port, "GET", "/health", headers={"X-Request-Id": "after-rotate"})
    wait_for(lambda: "after-rotate" in app.access_log(), "a line in the new file")
    assert "after-rotate" not in (app.dir / "access.log.1").read_text()


def test_spawn_fcgi_socket_on_fd0(web, llmcgi_factory):
    app = llmcgi_factory(web.sock, mode="spawn-fcgi").start()
    assert "socket inherited on fd 0" in app.log()
    assert request(web.port, "GET", "/health").json()["status"] == "ok"
    app.signal(signal.SIGTERM)
    assert app.wait() == 0


def test_systemd_socket_activation(web, llmcgi_factory):
    app = llmcgi_factory(web.sock, mode="systemd").start()
    assert "socket from systemd" in app.log()
    assert request(web.port, "GET", "/health").json()["status"] == "ok"
    s = Stream(web.port, "/_test/slow?ms=500")
    try:
        assert s.readline() == "start"
        app.signal(signal.SIGTERM)
        assert s.read_rest() == ["end"]
    finally:
        s.close()
    assert app.wait() == 0
    # llmcgi did not make this socket: it leaves it to its owner
    assert os.path.exists(web.sock)
    os.unlink(web.sock)
