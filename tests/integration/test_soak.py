"""The soak's short version (tests/soak/soak): 40 connections through real nginx, 4 s + 8 s, then the faults.

The script starts its own llmcgi, nginx, stand-in upstreams and the shipped
model, checks every answer and llmcgi's RSS and fds itself, and exits 0 only
when every requirement holds; here it runs with small numbers and its JSON
summary is checked for the figures that show each part really happened
(requests of every kind answered, the killed upstreams seen down and back,
three reloads, streams finishing after SIGTERM, exit 0). Bounds are loose
enough for a loaded 2-core machine; nothing here is about durations. Under
the sanitizers the RSS bound is lifted (ASan's quarantine grows by design)
and the script fails on any sanitizer report of llmcgi's.
"""

import json
import os
import subprocess
import sys

from servers import SRCDIR, make_tmpdir, remove_tmpdir, require

SOAK = SRCDIR / "tests" / "soak" / "soak"


def test_short_soak_with_faults():
    require("nginx", "nginx")
    d = make_tmpdir("llmcgi-test-soak-")
    try:
        out = d / "summary.json"
        sanitizers = os.environ.get("LLMCGI_SANITIZERS") == "yes"
        cmd = [sys.executable, "-B", str(SOAK), "--connections", "40", "--warmup", "4", "--seconds", "8", "--faults",
               "--kill-seconds", "2", "--threads", "64", "--think-ms", "50", "--quiet",
               "--max-rss-growth", "1000" if sanitizers else "25",
               # 1 in 20 requests malformed and 1 in 20 aborted, so that a short run has dozens of each
               "--malformed", "0.05", "--aborts", "0.05", "--json", str(out)]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        report = p.stdout + p.stderr
        assert p.returncode == 0, report[-6000:]
        s = json.loads(out.read_text())
        assert s["ok"] and not s["failures"] and not s["lost"], report[-6000:]
        kinds = s["by_kind"]
        for k in ("local chat stream", "local generate", "tgi generate_stream", "oai completions"):
            assert kinds.get(k, {}).get("200", 0) > 0, (k, kinds.get(k))
        malformed = sum(v for k, d in kinds.items() if k.startswith("malformed") for v in d.values())
        aborted = sum(d.get("200 aborted", 0) for k, d in kinds.items() if k.startswith("abort"))
        assert malformed > 0 and aborted > 0, (malformed, aborted)
        st = s["steady"]
        assert st["pid"]["status_before"] == st["pid"]["status_after"]
        assert st["fds"]["after_drain"]["other"] == st["fds"]["start"]["other"]
        assert s["kill"]["replicas_down_seen"] == {"tgi": 1, "oai": 1} and s["kill"]["recovered"]
        assert s["kill"]["tgi_requests_after"] > 0 and s["kill"]["tgi_ok_after"] == s["kill"]["tgi_requests_after"]
        assert s["hup"]["reloads_logged"] == 3
        t = s["term"]
        assert t["exit_status"] == 0 and t["drained_log_line"]
        assert t["those_streams_ended_properly"] == t["streams_answering_at_signal"]
        assert all(ch["ok"] for ch in s["checks"].values()), s["checks"]
    finally:
        remove_tmpdir(d)
