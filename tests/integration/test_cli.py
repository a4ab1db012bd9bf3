"""The llmcgi command line without a web server: --check, --version, listening, and the shipped files
(the sample config passes --check; systemd-analyze verify accepts the units)."""

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import textwrap

import pytest

from servers import BUILDDIR, LLMCGI, Llmcgi, free_port, make_tmpdir, require, wait_for


def run(*args, timeout=20):
    r = subprocess.run([str(LLMCGI), *args], capture_output=True, text=True, timeout=timeout)
    assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr
    return r


def write(tmp, text, name="llmcgi.conf"):
    p = tmp / name
    p.write_text(textwrap.dedent(text))
    return p


@pytest.fixture
def tmp():
    d = make_tmpdir("llmcgi-cli-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_check_accepts_a_valid_file(tmp):
    conf = write(tmp, """\
        [server]
        listen = 127.0.0.1:9000
        threads = 4
        [model a]
        path = models/a
        """)
    r = run("--check", "-c", str(conf))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{conf}: configuration is valid (1 models, 0 upstreams)"


def test_check_reports_every_error_with_file_and_line(tmp):
    conf = write(tmp, """\
        [server]
        threads = 0
        max_body = lots
        listen = nowhere
        colour = blue
        [model x]
        [mystery]
        """)
    r = run("-t", "-c", str(conf))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert lines == [
        f"{conf}:2: threads must be a whole number from 1 to 1024, got \"0\"",
        f"{conf}:3: max_body must be a size like 512k, 8M or 1G, from 1 to 1073741824 bytes, got \"lots\"",
        f"{conf}:4: listen: expected unix:/path or host:port, got \"nowhere\"",
        f"{conf}:5: unknown key \"colour\" in [server]",
        f"{conf}:6: [model x] needs a path (the model's directory)",
        f"{conf}:7: unknown section [mystery] (known: [server], [model NAME], [upstream NAME], [auth], [limits], [cors])",
    ], r.stderr


def test_check_reports_keys_file_lines(tmp):
    keys = write(tmp, "# keys\n" + "ab" * 32 + " web\nnot-a-hash x\n" + "cd" * 32 + " web\n", name="keys")
    conf = write(tmp, f"""\
        [server]
        listen = unix:{tmp}/s.sock
        [auth]
        keys_file = {keys}
        """)
    r = run("-t", "-c", str(conf))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2, r.stderr
    assert lines[0].startswith(f"{keys}:3: the first field must be the key's SHA-256"), lines[0]
    assert lines[1] == f"{keys}:4: key name \"web\" is already used on line 2", lines[1]


def test_check_missing_file(tmp):
    r = run("--check", "-c", str(tmp / "absent.conf"))
    assert r.returncode == 1
    assert r.stderr.strip() == f"{tmp}/absent.conf: cannot open: No such file or directory"


def test_shipped_sample_config_is_valid():
    r = run("--check", "-c", str(BUILDDIR / "etc/llmcgi.conf"))
    assert r.returncode == 0, r.stderr


def test_unknown_option_and_stray_argument():
    r = run("--frobnicate")
    assert r.returncode == 2 and "usage: llmcgi" in r.stderr
    r = run("extra")
    assert r.returncode == 2 and 'unexpected argument "extra"' in r.stderr


def test_version_reports_build_features():
    r = run("--version")
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.match(r"llmcgi \d+\.\d+\.\d+\n", r.stdout)
    assert re.search(r"^cuda: ", r.stdout, re.M)
    assert "libcurl/" in r.stdout and "json-c/" in r.stdout


def test_no_listen_address_is_a_clear_error(tmp):
    conf = write(tmp, f"[server]\nerror_log = {tmp}/e.log\n")
    r = run("-c", str(conf))
    assert r.returncode == 1
    assert "nowhere to listen: set `listen` in [server]" in (tmp / "e.log").read_text()


def test_unix_socket_mode_and_in_use_detection(tmp):
    sock = tmp / "s.sock"
    a = Llmcgi(sock, dir=tmp, extra="").start()
    try:
        a.config.write_text(a.config.read_text().replace("socket_mode = 0666", "socket_mode = 0640"))
        # the running one made its socket with 0666; a second instance must refuse
        # to steal the live socket
        r = run("-c", str(a.config))
        assert r.returncode == 1
        assert f"{sock} is in use by a running process" in a.log()
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o666
    finally:
        assert a.stop() == 0


def test_live_socket_with_a_full_backlog_is_left_alone(tmp):
    """A socket whose owner is alive but busy (its backlog full: connect says
    EAGAIN) must not be taken for stale and deleted."""
    sock = tmp / "busy.sock"
    owner = socket.socket(socket.AF_UNIX)
    owner.bind(str(sock))
    owner.listen(0)
    fillers = []
    try:
        while True:                              # fill the backlog without accepting
            c = socket.socket(socket.AF_UNIX)
            c.setblocking(False)
            try:
                c.connect(str(sock))
            except BlockingIOError:
                c.close()
                break
            fillers.append(c)
        a = Llmcgi(sock, dir=tmp)
        r = subprocess.run([str(LLMCGI), "-c", str(a.config)], capture_output=True, text=True, timeout=20)
        assert r.returncode == 1
        assert f"cannot tell whether {sock} is in use" in a.log()
        assert sock.exists()
    finally:
        for c in fillers:
            c.close()
        owner.close()


def test_stale_socket_file_is_replaced(tmp):
    sock = tmp / "s.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock))                       # a socket file nobody listens on
    a = Llmcgi(sock, dir=tmp).start()
    assert a.stop() == 0


def test_tcp_listen_override_answers_fastcgi(tmp):
    """--listen host:port beats the config; cgi-fcgi (libfcgi's own client) talks FastCGI to it."""
    cgi_fcgi = require("cgi-fcgi", "libfcgi-bin")
    port = free_port()
    a = Llmcgi(tmp / "unused.sock", dir=tmp)
    cmd = [str(LLMCGI), "-c", str(a.config), "--listen", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "ready:" in a.log(), "llmcgi on tcp")
        assert f"tcp:127.0.0.1:{port}" in a.log()
        assert not (tmp / "unused.sock").exists()
        env = {"REQUEST_METHOD": "GET", "REQUEST_URI": "/health", "SCRIPT_NAME": "/health",
               "QUERY_STRING": "", "PATH": os.environ.get("PATH", "")}
        r = subprocess.run([cgi_fcgi, "-bind", "-connect", f"127.0.0.1:{port}"], env=env,
                           capture_output=True, text=True, timeout=20)
        assert "Status: 200 OK" in r.stdout
        assert '"status":"ok"' in r.stdout
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0


def test_systemd_units_verify(tmp):
    """systemd-analyze verify accepts the generated units (ExecStart pointed at the built binary)."""
    analyze = require("systemd-analyze", "systemd")
    for name in ("llmcgi.service", "llmcgi.socket"):
        text = (BUILDDIR / "systemd" / name).read_text()
        text = re.sub(r"(Exec\w+=)\S*/llmcgi\b", rf"\1{LLMCGI}", text)
        (tmp / name).write_text(text)
    r = subprocess.run([analyze, "verify", "--man=no", str(tmp / "llmcgi.socket"), str(tmp / "llmcgi.service")],
                       capture_output=True, text=True, timeout=60)
    ours = [l for l in (r.stdout + r.stderr).splitlines() if "llmcgi" in l]
    assert r.returncode == 0 and not ours, r.stdout + r.stderr


def test_sd_notify_ready_reloading_stopping(tmp):
    """What systemd sees of a Type=notify service: a datagram socket stands in
    for NOTIFY_SOCKET, as systemd's own is one."""
    notify = tmp / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify))
    listener.settimeout(20)
    a = Llmcgi(tmp / "s.sock", dir=tmp)
    env = dict(os.environ, NOTIFY_SOCKET=str(notify))
    proc = subprocess.Popen([str(LLMCGI), "-c", str(a.config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def next_message():
        return listener.recv(4096).decode()

    try:
        first = next_message()
        assert first.startswith("READY=1\nSTATUS=serving on unix:"), first
        proc.send_signal(signal.SIGHUP)
        assert next_message().startswith("RELOADING=1\nMONOTONIC_USEC=")
        assert next_message() == "READY=1\nSTATUS=serving"
        proc.send_signal(signal.SIGTERM)
        assert next_message() == "STOPPING=1"
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        listener.close()


def test_journal_priority_prefixes(tmp):
    """Under systemd (JOURNAL_STREAM names stderr), messages carry <N> syslog
    priorities for the journal instead of time stamps."""
    conf = write(tmp, f"[server]\nerror_log = stderr\nlisten = unix:{tmp}/j.sock\n")
    err_path = tmp / "stderr.txt"
    with open(err_path, "wb") as err:
        st = os.fstat(err.fileno())
        env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
        proc = subprocess.Popen([str(LLMCGI), "-c", str(conf)], env=env, stdout=subprocess.DEVNULL, stderr=err)
        wait_for(lambda: "ready:" in err_path.read_text(), "llmcgi to start")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    lines = err_path.read_text().splitlines()
    assert lines and all(re.match(r"<[3-7]>", l) for l in lines), lines
    assert any(l.startswith("<5>llmcgi ") and "ready:" in l for l in lines), lines
