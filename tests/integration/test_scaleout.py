"""Scaling out (README "Scaling out"): several llmcgi hosts behind the web tier, one host killed mid-run.

Three llmcgi processes listen for FastCGI over TCP on 127.0.0.2, 127.0.0.3 and
127.0.0.4, each with web_server_addrs = 127.0.0.1 (where the web servers'
connections come from), and serve small random-weight GPT-2 models on the CPU.

* The cluster: one real nginx with the shipped etc/nginx/llmcgi-cluster (only
  the three host addresses, the listen port and fail_timeout changed), under a
  bounded mixed load (streamed and not) with long streams held open, and the
  host on 127.0.0.3 killed (SIGKILL) mid-run. nginx's access log (the test's
  own log_format) says which host served each request (X-Request-Id): no
  request failed unless its last host was the killed one; every stream on a
  survivor ran to [DONE]; nginx took the dead host out (its error log says so)
  and requests kept succeeding; after a restart the host serves again.
* The same with the shipped Apache balancer site (etc/apache/llmcgi-cluster.conf),
  each request's member read from Apache's access log.
* The two-tier gateway: nginx (the single-host site) in front of one llmcgi
  with no local model, whose `openai` upstreams are the three hosts, each
  behind its own nginx (the single-host site) and loading only its models:
  a on 127.0.0.2 and .3, b on .3 and .4. /v1/models on the gateway lists the
  union; killing .3 fails no non-streamed request (the gateway retries on the
  other host before any byte reached the client), a stream cut on .3 ends
  with an error event (or, when .3 had answered its headers but no event
  yet, the gateway's JSON 502), streams on survivors end with [DONE]; the gateway's
  /health takes .3 out and back, and .3 serves again after its restart.
* The TCP accept list: a FastCGI connection from 127.0.0.9 is closed
  unanswered (and logged), the same bytes from 127.0.0.1 are answered; a
  TCP listen on every interface without web_server_addrs does not start.

Which requests run on the killed host at the moment of the kill depends on
the machine's speed, so the assertions are about each request's outcome and
where it ran, never about how many there were or how long anything took.
"""

import json
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading

import pytest

from servers import (BUILDDIR, LLMCGI, SRCDIR, TIMEOUT, Apache, Nginx, Stream, free_port,
                     make_tmpdir, remove_tmpdir, request, require, stop_process, wait_for, write_nginx_conf)

GEN = BUILDDIR / "tools" / "gen-gpt2"
TOKENIZER = SRCDIR / "tests" / "fixtures" / "gpt2-tokenizer"
HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
KILLED = 1                          # 127.0.0.3
JSON_CT = {"Content-Type": "application/json"}
SMALL = ["--layers", "2", "--heads", "2", "--embd", "64", "--positions", "128"]
LONG = ["--layers", "4", "--heads", "4", "--embd", "256", "--positions", "2048"]
THREADS, PER_THREAD = 4, 12         # the mixed load: 48 requests, every other one streamed
KILL_AFTER = 10                     # requests finished before the kill
HELD = 6                            # long streams open across the kill
HELD_TOKENS = 1500


@pytest.fixture(scope="module")
def models():
    if not (TOKENIZER / "vocab.json").exists():
        pytest.skip(f"the GPT-2 tokenizer files are not at {TOKENIZER}")
    d = make_tmpdir("llmcgi-scaleout-models-")
    out = {}
    for name, shape, seed in (("tiny", SMALL, 11), ("long", LONG, 44)):
        subprocess.run([str(GEN), "--out", str(d / name), *shape, "--seed", str(seed), "--tokenizer", str(TOKENIZER)],
                       check=True, capture_output=True, timeout=120)
        out[name] = d / name
    yield out
    remove_tmpdir(d)


def common_port():
    """A port free on all three host addresses."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((HOSTS[0], 0))
            port = s.getsockname()[1]
        try:
            for h in HOSTS[1:]:
                with socket.socket() as t:
                    t.bind((h, port))
            return port
        except OSError:
            continue
    raise AssertionError("no port free on 127.0.0.2-4")


class Host:
    """One llmcgi model host listening for FastCGI on addr:port (TCP)."""

    def __init__(self, addr, port, models, extra=""):
        self.addr, self.port, self.models = addr, port, models
        self.dir = make_tmpdir("llmcgi-host-")
        self.proc = None
        self.out = None
        self.starts = 0
        sections = "".join(f"[model {n}]\npath = {p}\ndevice = cpu\nthreads = 1\nmax_concurrent = 8\n\n"
                           for n, p in models.items())
        (self.dir / "llmcgi.conf").write_text(f"""\
[server]
listen = {addr}:{port}
web_server_addrs = 127.0.0.1
threads = 32
sse_keepalive = 200ms
shutdown_timeout = 5s
error_log = {self.dir}/error.log
access_log = {self.dir}/access.log
log_level = info
{extra}

{sections}""")

    def start(self):
        self.starts += 1
        self.out = open(self.dir / f"stdout-{self.starts}.log", "wb")
        self.proc = subprocess.Popen([str(LLMCGI), "-c", str(self.dir / "llmcgi.conf")], stdout=self.out,
                                     stderr=subprocess.STDOUT, cwd=self.dir)
        # this start's "ready" and every model loaded (the log is appended to across restarts)
        wait_for(lambda: self.proc.poll() is not None or (
            self.log().count(" ready: ") >= self.starts and
            all(self.log().count(f"model {n} loaded from") >= self.starts for n in self.models)),
            f"llmcgi on {self.addr}:{self.port}", timeout=60)
        assert self.proc.poll() is None, f"llmcgi on {self.addr} exited: {self.log()}"
        return self

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=TIMEOUT)
        self.out.close()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            stop_process(self.proc)
            self.out.close()

    def log(self):
        p = self.dir / "error.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def served(self):
        """{request id: status} from its access log: what it answered completely."""
        p = self.dir / "access.log"
        out = {}
        for line in (p.read_text(errors="replace") if p.exists() else "").splitlines():
            m = re.search(r'" (\d{3}) \d+ \S+ (\S+)$', line)
            if m:
                out[m.group(2)] = int(m.group(1))
        return out

    def sanitizer_report(self):
        text = "".join(p.read_text(errors="replace") for p in self.dir.glob("stdout-*.log"))
        return "\n".join(l for l in text.splitlines() if "Sanitizer" in l or "runtime error" in l)


@pytest.fixture
def hosts_factory():
    made = []

    def make(*a, **kw):
        h = Host(*a, **kw)
        made.append(h)
        return h

    yield make
    for h in made:
        h.stop()
    reports = [r for r in (h.sanitizer_report() for h in made) if r]
    for h in made:
        remove_tmpdir(h.dir)
    assert not reports, "sanitizer report from llmcgi:\n" + "\n".join(reports)


# ---------------------------------------------------------------------------- the web tiers

def _listen_here(site, port):
    site = re.sub(r"^\s*listen \[::\]:80;\n", "", site, flags=re.M)
    return site.replace("listen 80;", f"listen 127.0.0.1:{port};")


class ClusterNginx(Nginx):
    """nginx with the shipped cluster site, its three hosts replaced by ours; an access log
    that says which host served each request."""

    def __init__(self, port, fail_timeout="2s"):
        self.bin = require("nginx", "nginx")
        self.dir = make_tmpdir("nginx-cluster-")
        self.port = free_port()
        site = (BUILDDIR / "etc/nginx/llmcgi-cluster").read_text()
        servers = re.findall(r"server 10\.0\.0\.1[1-3]:9000 ", site)
        assert len(servers) == 3, "the cluster site no longer lists three example hosts"
        for i, h in enumerate(HOSTS):
            site = site.replace(f"server 10.0.0.1{i + 1}:9000 ", f"server {h}:{port} ")
        assert "fail_timeout=10s" in site
        site = site.replace("fail_timeout=10s", f"fail_timeout={fail_timeout}")
        (self.dir / "site.conf").write_text(_listen_here(site, self.port))
        write_nginx_conf(self.dir, f"log_format scaleout '$http_x_request_id $status \"$upstream_addr\"';\n"
                                   f"    access_log {self.dir}/access.log scaleout;")

    def failed_under(self, rid):
        return False                # $upstream_addr names every host tried: the killed one is seen

    def last_host(self):
        """{request id: (status, the address of the last host tried)}."""
        out = {}
        for line in (self.dir / "access.log").read_text(errors="replace").splitlines():
            m = re.match(r'(\S+) (\d{3}) "(.*)"$', line)
            if m:
                last = m.group(3).replace(" : ", ", ").split(", ")[-1]
                out[m.group(1)] = (int(m.group(2)), last.rsplit(":", 1)[0])
        return out


class ClusterApache(Apache):
    """Apache with the shipped balancer site, its three members replaced by ours; an access
    log that says which member served each request."""

    def __init__(self, port):
        super().__init__("/nonexistent/llmcgi.sock")      # the single-host site, replaced below
        site = (BUILDDIR / "etc/apache/llmcgi-cluster.conf").read_text()
        members = re.findall(r'"fcgi://10\.0\.0\.1[1-3]:9000"', site)
        assert len(members) == 3, "the Apache cluster site no longer lists three example members"
        for i, h in enumerate(HOSTS):
            site = site.replace(f'"fcgi://10.0.0.1{i + 1}:9000"', f'"fcgi://{h}:{port}"')
        site = site.replace("retry=10", "retry=2")
        site = site.replace("<VirtualHost *:80>", f"<VirtualHost 127.0.0.1:{self.port}>")
        errors = self.dir / "errors"
        if not errors.exists():
            shutil.copytree(SRCDIR / "etc/errors", errors)
        site = re.sub(r"/\S*/llmcgi/errors", str(errors), site)
        (self.dir / "site.conf").write_text(site)
        conf = (self.dir / "httpd.conf").read_text()
        moddir = "/usr/lib/apache2/modules"
        builtin = subprocess.run([self.bin, "-l"], capture_output=True, text=True).stdout
        loads = "\n".join(f"LoadModule {m}_module {moddir}/mod_{m}.so"
                          for m in ("slotmem_shm", "proxy_balancer", "lbmethod_bybusyness", "log_config")
                          if f"mod_{m}.c" not in builtin)
        conf = conf.replace("Include ", f"{loads}\n"
                            f"LogFormat \"%{{X-Request-Id}}i %>s \\\"%{{BALANCER_WORKER_NAME}}e\\\"\" scaleout\n"
                            f"CustomLog {self.dir}/access.log scaleout\n"
                            "ErrorLogFormat \"[%l] [id %{X-Request-Id}i] %M\"\nInclude ", 1)
        (self.dir / "httpd.conf").write_text(conf)

    def failed_under(self, rid):
        """Did a member fail under this request? mod_proxy_balancer re-sends a request whose
        member died after it was sent to another member without its body (that one answers
        400), and its access log names only the last member; the error log names the request."""
        return f"[id {rid}] AH0" in self.log()

    def last_host(self):
        out = {}
        p = self.dir / "access.log"
        for line in (p.read_text(errors="replace") if p.exists() else "").splitlines():
            m = re.match(r'(\S+) (\d{3}) "(.*)"$', line)
            if m:
                h = re.search(r"fcgi://([\d.]+):", m.group(3))
                out[m.group(1)] = (int(m.group(2)), h.group(1) if h else "")
        return out


# ---------------------------------------------------------------------------- clients

def completion(port, rid, stream, model="tiny", max_tokens=8):
    """One /v1/completions request; returns (ok, what happened)."""
    body = json.dumps({"model": model, "prompt": f"Request {rid} says", "max_tokens": max_tokens,
                       "temperature": 0, "stream": stream})
    headers = dict(JSON_CT, **{"X-Request-Id": rid})
    try:
        if not stream:
            r = request(port, "POST", "/v1/completions", body, headers, timeout=60)
            if r.status != 200:
                return False, f"status {r.status}: {r.body[:200]!r}"
            return len(r.json()["choices"]) == 1, "answered"
        s = Stream(port, "/v1/completions", headers=headers, method="POST", body=body, timeout=60)
        try:
            return read_stream(s)
        finally:
            s.close()
    except (OSError, ValueError) as e:
        return False, f"{type(e).__name__}: {e}"


def read_stream(s):
    """Reads a stream to its end: (True, "done") for [DONE] after a finish_reason, else
    (False, why); why starts with "error event" when the stream ended with one."""
    if s.status != 200:
        length = s.headers.get("content-length")
        body = s.f.read(int(length)).decode(errors="replace") if length else " ".join(s.read_rest())
        return False, f"status {s.status}: {body[:300]}"
    finished = False
    try:
        while (ev := s.read_event()) is not None:
            data = ev[0].get("data", "")
            if data == "[DONE]":
                return finished, "done" if finished else "[DONE] without a finish_reason"
            obj = json.loads(data)
            if "error" in obj:
                return False, f"error event: {obj['error']}"
            finished |= any(c.get("finish_reason") for c in obj.get("choices", []))
    except (OSError, ValueError) as e:
        return False, f"cut: {type(e).__name__}: {e}"
    return False, "cut: the stream ended without [DONE]"


def open_held(port, n, model, prefix):
    """n long streams, each read up to its first event: running when this returns."""
    held = []
    for i in range(n):
        rid = f"{prefix}-held-{i}"
        body = json.dumps({"model": model, "prompt": f"Held stream {i} starts here", "max_tokens": HELD_TOKENS,
                           "temperature": 0, "stream": True})
        s = Stream(port, "/v1/completions", headers=dict(JSON_CT, **{"X-Request-Id": rid}), method="POST", body=body,
                   timeout=120)
        assert s.status == 200, s.status
        first = s.read_event()
        assert first and "data" in first[0], "a held stream sent no first event"
        held.append((rid, s))
    return held


def mixed_load(port, prefix, models, kill):
    """THREADS clients, PER_THREAD requests each, every other one streamed, over `models` in
    turn; kill() runs once KILL_AFTER requests have finished. Returns {rid: (stream, ok, why)}."""
    results, lock, done = {}, threading.Lock(), [0]
    killed = threading.Event()

    def client(t):
        for i in range(PER_THREAD):
            rid = f"{prefix}-{t}-{i}"
            stream = i % 2 == 1
            ok, why = completion(port, rid, stream, model=models[(t + i) % len(models)])
            with lock:
                results[rid] = (stream, ok, why)
                done[0] += 1
                go = done[0] >= KILL_AFTER and not killed.is_set()
                if go:
                    killed.set()
            if go:
                kill()

    threads = [threading.Thread(target=client, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=600)
    assert killed.is_set() and len(results) == THREADS * PER_THREAD
    return results


# ---------------------------------------------------------------------------- the cluster (nginx, Apache)

def logged(web, rid):
    """(status, last host) of a request in the web server's log, once it is there."""
    return wait_for(lambda: web.last_host().get(rid), f"{rid} in the web server's log")


def run_cluster_kill(web_class, models, hosts_factory):
    port = common_port()
    hosts = [hosts_factory(h, port, models) for h in HOSTS]
    for h in hosts:
        h.start()
    web = web_class(port).start()
    dead = HOSTS[KILLED]
    try:
        held = open_held(web.port, HELD, "long", "c")
        results = mixed_load(web.port, "c", ["tiny", "long"], hosts[KILLED].kill)
        held_results = {}
        for rid, s in held:
            held_results[rid] = read_stream(s)
            s.close()
        # the web server logs a request just after its last byte went out
        want = set(results) | set(held_results)
        where = wait_for(lambda: want <= set(w := web.last_host()) and w, "every request in the log")

        # every request is in the log; each that failed had the killed host as its last
        for rid, (stream, ok, why) in results.items():
            status, last = where[rid]
            if not ok:
                assert last == dead or web.failed_under(rid), \
                    f"{'stream' if stream else 'request'} {rid} failed ({why}) on {last}, alive"
            elif not stream:
                assert status == 200, (rid, status, last)
        for rid, (ok, why) in held_results.items():
            last = where[rid][1]
            if last != dead:
                assert ok, f"held stream {rid} on surviving host {last}: {why}"
        served = {last for _, last in where.values()}
        assert set(HOSTS) - {dead} <= served, f"the survivors served nothing: {served}"

        # the dead host is out: requests keep succeeding, none of them on it
        for i in range(6):
            ok, why = completion(web.port, f"c-after-{i}", False)
            assert ok, f"a request after the kill failed: {why}"
            assert logged(web, f"c-after-{i}")[1] != dead
        if web_class is ClusterNginx:
            assert "upstream server temporarily disabled" in web.log(), web.log()[-2000:]

        # restarted, it serves again (once the web server's time-out for it has passed)
        hosts[KILLED].start()
        n = [0]

        def back():
            n[0] += 1
            rid = f"c-back-{n[0]}"
            ok, why = completion(web.port, rid, False)
            assert ok, f"a request after the restart failed: {why}"
            return logged(web, rid)[1] == dead
        wait_for(back, f"{dead} to serve again after its restart", timeout=90, interval=0.2)
    finally:
        web.stop()


def test_cluster_nginx_survives_a_host_killed_mid_run(models, hosts_factory):
    run_cluster_kill(ClusterNginx, models, hosts_factory)


def test_cluster_apache_balancer_survives_a_host_killed_mid_run(models, hosts_factory):
    run_cluster_kill(ClusterApache, models, hosts_factory)


# ---------------------------------------------------------------------------- the two-tier gateway

GATEWAY_MODELS = {HOSTS[0]: ["a"], HOSTS[1]: ["a", "b"], HOSTS[2]: ["b"]}


def test_gateway_tier_routes_by_model_and_survives_a_host_killed(models, hosts_factory, llmcgi_factory):
    port = common_port()
    paths = {"a": models["long"], "b": models["tiny"]}
    hosts, fronts = [], []
    sockdir = make_tmpdir("llmcgi-gw-sock-")
    try:
        for addr in HOSTS:
            h = hosts_factory(addr, port, {m: paths[m] for m in GATEWAY_MODELS[addr]})
            hosts.append(h.start())
            # the host's own nginx (the single-host site), passing to its llmcgi over TCP
            front = Nginx(sockdir / "unused.sock")
            site = (front.dir / "site.conf").read_text()
            (front.dir / "site.conf").write_text(site.replace(f"unix:{sockdir / 'unused.sock'}", f"{addr}:{port}"))
            fronts.append(front.start())
        upstreams = "".join(f"""
[upstream host{i + 2}]
type = openai
url = http://127.0.0.1:{fronts[i].port}
models = {" ".join(GATEWAY_MODELS[addr])}
health_interval = 300ms
""" for i, addr in enumerate(HOSTS))
        sock = sockdir / "gateway.sock"
        edge = Nginx(sock).start()
        gateway = llmcgi_factory(sock, extra="")
        gateway.config.write_text(gateway.config.read_text().replace("threads = 8", "threads = 32") + upstreams)
        gateway.start()
        try:
            def health():
                return request(edge.port, "GET", "/health").json()["upstreams"]

            wait_for(lambda: all(u["available"] for u in health().values()), "every host up at the gateway")
            listed = request(edge.port, "GET", "/v1/models").json()["data"]
            assert sorted(m["id"] for m in listed) == ["a", "b"], listed
            assert {m["id"]: m["upstream"] for m in listed} == {"a": "host2", "b": "host3"}

            held = open_held(edge.port, 4, "a", "g")
            dead = hosts[KILLED]
            results = mixed_load(edge.port, "g", ["a", "b"], dead.kill)
            held_results = {rid: read_stream(s) for rid, s in held}
            for _, s in held:
                s.close()
            on_survivors = {}
            for i, h in enumerate(hosts):
                if i != KILLED:
                    on_survivors.update(h.served())

            for rid, (stream, ok, why) in list(results.items()) + [(r, (True,) + v) for r, v in held_results.items()]:
                if not stream:
                    assert ok, f"non-streamed {rid} failed: the gateway should have retried it elsewhere ({why})"
                elif not ok:
                    assert rid not in on_survivors, f"stream {rid} failed ({why}) though a survivor served it"
                    # cut after its first event: an error event; before it: the gateway's JSON 502
                    assert why.startswith("error event") or why.startswith('status 502: {"error":{'), \
                        f"stream {rid} ended without a clean error: {why}"
                elif rid in on_survivors:
                    assert on_survivors[rid] == 200

            # out at the gateway, requests for both models still answered
            wait_for(lambda: not health()["host3"]["available"], "the gateway to take the dead host out")
            for i, m in enumerate(["a", "b", "a", "b"]):
                ok, why = completion(edge.port, f"g-after-{i}", False, model=m)
                assert ok, why

            # restarted: back at the gateway, and it serves again
            dead.start()
            wait_for(lambda: health()["host3"]["available"], "the gateway to bring the host back", timeout=60)
            n = [0]

            def back():
                n[0] += 1
                rid = f"g-back-{n[0]}"
                ok, why = completion(edge.port, rid, False, model="b")
                assert ok, why
                return rid in dead.served()
            wait_for(back, "the restarted host to serve again", timeout=60, interval=0.05)
        finally:
            edge.stop()
    finally:
        for f in fronts:
            f.stop()
        remove_tmpdir(sockdir)


# ---------------------------------------------------------------------------- the TCP accept list

def fcgi_get(path):
    """The bytes of one FastCGI GET request (role responder, no keep-alive)."""
    def rec(t, content):
        return struct.pack(">BBHHBB", 1, t, 1, len(content), 0, 0) + content

    def nv(k, v):
        k, v = k.encode(), v.encode()
        return bytes([len(k), len(v)]) + k + v
    params = b"".join(nv(k, v) for k, v in {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "REQUEST_URI": path,
                                               "DOCUMENT_URI": path, "QUERY_STRING": "",
                                               "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1"}.items())
    return (rec(1, struct.pack(">HB5x", 1, 0)) + rec(4, params) + rec(4, b"") + rec(5, b""))


def fcgi_exchange(source, addr, port):
    """Sends fcgi_get from source to addr:port; returns all it answered (b"" when closed unanswered)."""
    with socket.socket() as s:
        s.settimeout(TIMEOUT)
        s.bind((source, 0))
        s.connect((addr, port))
        got = b""
        try:
            s.sendall(fcgi_get("/health"))
            while chunk := s.recv(65536):
                got += chunk
        except ConnectionResetError:
            pass
        return got


def answered(source, addr, port):
    try:
        return fcgi_exchange(source, addr, port)
    except OSError:
        return b""


def test_tcp_accept_list_refuses_other_addresses(models, hosts_factory):
    port = common_port()
    h = hosts_factory(HOSTS[0], port, {"tiny": models["tiny"]}).start()
    assert b"Status: 200 OK\r\n" in fcgi_exchange("127.0.0.1", HOSTS[0], port), "a listed address is answered"
    assert fcgi_exchange("127.0.0.9", HOSTS[0], port) == b"", "an address not listed got an answer"
    wait_for(lambda: "refused a FastCGI connection from 127.0.0.9: not in web_server_addrs" in h.log(),
             "the refusal in the log")
    # the listed address is still served after the refusal
    assert b"Status: 200 OK\r\n" in fcgi_exchange("127.0.0.1", HOSTS[0], port)


def kept_request(s):
    """One FastCGI GET /health with FCGI_KEEP_CONN on socket s; returns what came back up to its end
    record (FCGI_END_REQUEST: version 1, type 3, request id 1), or b"" when closed unanswered."""
    req = fcgi_get("/health")
    s.sendall(req[:8] + struct.pack(">HB5x", 1, 1) + req[16:])     # FCGI_BEGIN_REQUEST's flags: KEEP_CONN
    out = b""
    try:
        while b"\x01\x03\x00\x01" not in out:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except ConnectionResetError:
        pass
    return out


def test_a_reload_stops_serving_kept_connections_of_a_dropped_web_server(models, hosts_factory):
    """web_server_addrs is checked again on each request of a kept connection, so a web server removed
    by a reload (SIGHUP) is not served on connections it opened before."""
    port = common_port()
    h = hosts_factory(HOSTS[0], port, {"tiny": models["tiny"]})
    conf = h.dir / "llmcgi.conf"
    conf.write_text(conf.read_text().replace("web_server_addrs = 127.0.0.1\n",
                                             "web_server_addrs = 127.0.0.1 127.0.0.9\n"))
    h.start()
    with socket.socket() as s:
        s.settimeout(TIMEOUT)
        s.bind(("127.0.0.9", 0))
        s.connect((HOSTS[0], port))
        assert b"Status: 200 OK\r\n" in kept_request(s)
        assert b"Status: 200 OK\r\n" in kept_request(s), "the kept connection serves a second request"
        conf.write_text(conf.read_text().replace("web_server_addrs = 127.0.0.1 127.0.0.9\n",
                                                 "web_server_addrs = 127.0.0.1\n"))
        h.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "configuration reloaded" in h.log(), "the reload")
        assert kept_request(s) == b"", "a web server dropped by the reload was served on its kept connection"
    wait_for(lambda: "refused a FastCGI connection from 127.0.0.9" in h.log(), "the refusal in the log")
    assert b"Status: 200 OK\r\n" in fcgi_exchange("127.0.0.1", HOSTS[0], port), "a listed address still is"


@pytest.mark.parametrize("how", ["config", "--listen"])
def test_reachable_tcp_listen_needs_web_server_addrs(tmp_path, how):
    port = common_port()
    conf = tmp_path / "llmcgi.conf"
    listen = f"listen = 0.0.0.0:{port}\n" if how == "config" else ""
    conf.write_text(f"[server]\n{listen}error_log = stderr\n")
    cmd = [str(LLMCGI), "-c", str(conf)] + (["--listen", f":{port}"] if how == "--listen" else [])
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode != 0
    assert "FastCGI has no authentication: set" in r.stderr and "web_server_addrs" in r.stderr, r.stderr
    if how == "config":
        assert f"{conf}:2: listen = 0.0.0.0:{port} can be reached from other machines" in r.stderr, r.stderr
    # the same with the list: it starts (and is stopped at once)
    conf.write_text(f"[server]\n{listen}web_server_addrs = 127.0.0.1\nerror_log = stderr\n")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: p.poll() is not None or answered("127.0.0.1", "127.0.0.1", port) != b"",
                 "llmcgi to answer on the reachable port")
        assert p.poll() is None, p.stdout.read()
    finally:
        stop_process(p)
