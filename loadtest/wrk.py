"""Drive an HTTP endpoint with wrk (the C load generator, Debian package `wrk`) and read
its figures back as numbers: requests per second, p50/p99 latency, errors.

A Lua script rotates through the given request bodies and prints one JSON line from
wrk's `done` hook, so nothing is parsed out of wrk's human-readable report.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCRIPT = """
local bodies = {}
for line in io.lines("%(bodies)s") do bodies[#bodies + 1] = line end
local headers = {["Content-Type"] = "application/json"%(auth)s}
local i = 0
request = function()
  i = i %% #bodies + 1
  return wrk.format("POST", nil, headers, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %%d, "duration_us": %%d, "socket_errors": %%d, "non2xx": %%d, '
    .. '"p50_us": %%.1f, "p90_us": %%.1f, "p99_us": %%.1f}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    failed: int  # socket errors and non-2xx answers

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "rps": round(self.rps, 1),
                "p50_ms": round(self.p50_ms, 2), "p90_ms": round(self.p90_ms, 2),
                "p99_ms": round(self.p99_ms, 2), "failed": self.failed}  # fmt: skip


def require_wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("error: wrk is not installed: apt-get install wrk (Debian/Ubuntu)")
    return found


def run_wrk(
    url: str,
    bodies: list[str],
    connections: int,
    duration_s: float,
    threads: int = 1,
    token: str | None = None,
    timeout_s: float = 10.0,
) -> WrkResult:
    """POST the bodies (in turn) to `url` from `connections` connections for `duration_s`."""
    wrk = require_wrk()
    with tempfile.TemporaryDirectory(prefix="pickserve-wrk-") as folder:
        bodies_file = Path(folder) / "bodies.jsonl"
        bodies_file.write_text("\n".join(b.replace("\n", " ") for b in bodies) + "\n")
        auth = f', ["Authorization"] = "Bearer {token}"' if token else ""
        script = Path(folder) / "post.lua"
        script.write_text(_SCRIPT % {"bodies": bodies_file, "auth": auth})
        command = [wrk, f"-t{min(threads, connections)}", f"-c{connections}",
                   f"-d{max(1, round(duration_s))}s", f"--timeout={timeout_s:g}s",
                   "-s", str(script), url]  # fmt: skip
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=duration_s + 60, check=True
        )
    line = next(x for x in reversed(done.stdout.splitlines()) if x.startswith("{"))
    figures = json.loads(line)
    return WrkResult(
        requests=figures["requests"],
        rps=figures["requests"] / (figures["duration_us"] / 1e6),
        p50_ms=figures["p50_us"] / 1000,
        p90_ms=figures["p90_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        failed=figures["socket_errors"] + figures["non2xx"],
    )
