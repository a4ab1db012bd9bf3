"""pytest set-up for the integration tests: a TAP reporter (automake's tap-driver counts each test) and shared fixtures.

Run by `make check` as `python3 -m pytest FILE`: the terminal reporter is
unregistered below, so stdout carries nothing but TAP; failures come out as
TAP diagnostics ("# " lines) with pytest's own report.
"""

import os
import sys
from pathlib import Path

import pytest

# The Python client libraries of tests/requirements.txt, installed by tests/run-all
# with pip --target into tests/.pydeps (LLMCGI_PYDEPS names another directory).
# Tests that need one skip without it (servers.require_module).
_pydeps = Path(os.environ.get("LLMCGI_PYDEPS") or Path(__file__).resolve().parent.parent / ".pydeps")
if _pydeps.is_dir() and str(_pydeps) not in sys.path:
    sys.path.insert(0, str(_pydeps))

from servers import WEB_SERVERS, Llmcgi, make_tmpdir, remove_tmpdir  # noqa: E402

_tap = {"count": 0}


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    # Unregistering (rather than -p no:terminal) keeps the options the
    # terminal plugin defines, which assertion rewriting still reads.
    reporter = config.pluginmanager.getplugin("terminalreporter")
    if reporter:
        config.pluginmanager.unregister(reporter)


def _emit(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def pytest_runtest_logreport(report):
    name = report.nodeid.split("::", 1)[-1]
    if report.when == "call" or (report.when == "setup" and not report.passed):
        _tap["count"] += 1
        n = _tap["count"]
        if report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else "skipped"
            _emit(f"ok {n} - {name} # SKIP {reason}")
        elif report.passed:
            _emit(f"ok {n} - {name}")
        else:
            _emit(f"not ok {n} - {name}")
            for line in str(report.longreprtext).splitlines():
                _emit(f"#   {line}")
    elif report.when == "teardown" and report.failed:
        _tap["count"] += 1
        _emit(f"not ok {_tap['count']} - {name} (teardown)")
        for line in str(report.longreprtext).splitlines():
            _emit(f"#   {line}")


def pytest_sessionfinish(session, exitstatus):
    _emit(f"1..{_tap['count']}")


@pytest.fixture(scope="module", params=sorted(WEB_SERVERS))
def web(request):
    """A web server (nginx, then Apache) with the project's site file,
    forwarding to a unix socket in its own directory; started once per module."""
    sockdir = make_tmpdir("llmcgi-sock-")
    server = WEB_SERVERS[request.param](sockdir / "llmcgi.sock")
    server.sock = sockdir / "llmcgi.sock"
    server.start()
    yield server
    server.stop()
    remove_tmpdir(sockdir)


@pytest.fixture
def llmcgi_factory():
    """Makes llmcgi processes and stops them (and checks for sanitizer
    reports) at the end of the test."""
    made = []

    def make(sock, **kw):
        s = Llmcgi(sock, **kw)
        made.append(s)
        return s

    yield make
    reports = [r for r in (s.cleanup() for s in made) if r]
    assert not reports, "sanitizer report from llmcgi:\n" + "\n".join(reports)
