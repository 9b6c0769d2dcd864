"""Where a replica's time goes: py-spy samples one Ray Serve replica process while wrk drives
it, and the samples are summed per request.

py-spy (PyPI `py-spy`, a dev dependency) samples the process from outside, at `rate` per
second, without changing it. `--gil` keeps only the samples of the thread holding the GIL:
the process's Python time,
which is serial, so threads that wait (the event loop in epoll, idle pool threads) are not
counted. Dividing by the requests wrk completed in the same window gives milliseconds per
request, comparable between the bare app and pickserve. Each sample counts once, for the
model if it is on the stack, else for the innermost frame's layer (pickserve's own code,
FastAPI/starlette/pydantic, Ray Serve, asyncio): the rows add up to the total.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest.wrk import WrkResult, run_wrk

# (group, substring of "function (file:line)") in the order they are tried on a frame
GROUPS = (
    ("model: scikit-learn predict_proba", "sklearn/"),
    ("pickserve: ModelRunner (thread lanes, timeouts)", "service/models/runner.py"),
    ("pickserve: Server (served model, failover)", "service/replica/serving.py"),
    ("pickserve: shadow offer (coin, batching)", "service/replica/shadow.py"),
    ("pickserve: request/response models (schemas)", "service/http/schemas.py"),
    ("pickserve: auth and middleware", "service/http/auth.py"),
    ("pickserve: predict route", "service/http/routes/inference.py"),
    ("pickserve: metrics", "service/replica/metrics.py"),
    ("pydantic validation and serialisation", "pydantic"),
    ("FastAPI routing and encoding", "fastapi/"),
    ("starlette (ASGI, middleware)", "starlette/"),
    ("Ray Serve replica machinery", "ray/serve/"),
    ("other Ray", "ray/"),
    ("asyncio event loop", "asyncio/"),
)
OTHER = "other (standard library, json, threads)"


@dataclass
class Profile:
    """Samples of one replica over one wrk run, summed per request."""

    samples: int
    rate: int
    wrk: WrkResult
    groups: Counter[str] = field(default_factory=Counter)
    top: list[tuple[str, int]] = field(default_factory=list)

    def ms_per_request(self, samples: int | None = None) -> float:
        count = self.samples if samples is None else samples
        return 1000.0 * count / self.rate / max(1, self.wrk.requests)

    def as_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "rate": self.rate, "wrk": self.wrk.as_dict(),
                "gil_ms_per_request": round(self.ms_per_request(), 3),
                "groups_ms_per_request": {g: round(self.ms_per_request(n), 3)
                                          for g, n in self.groups.most_common()},
                "top_frames": self.top}  # fmt: skip


def require_py_spy() -> str:
    beside = Path(sys.executable).parent / "py-spy"  # installed into this virtualenv
    found = shutil.which("py-spy") or (str(beside) if beside.exists() else None)
    if found is None:
        raise SystemExit("error: py-spy is not installed: pip install py-spy")
    return found


def replica_pid(app: str, deployment: str) -> int:
    """The process id of the (first) running replica of `deployment` in `app` here."""
    from loadtest.soak import replica_processes

    pids = sorted(pid for pid, name in replica_processes(app).items() if name == deployment)
    if not pids:
        raise SystemExit(f"error: no running replica ServeReplica:{app}:{deployment}")
    return pids[0]


def group_of(frames: list[str]) -> str:
    """The one group a sample counts for: the model if it is on the stack, else the
    innermost frame that belongs to a group (so the table's rows add up to the total)."""
    model, needle = GROUPS[0]
    if any(needle in frame for frame in frames):
        return model
    for frame in reversed(frames):
        for group, needle in GROUPS[1:]:
            if needle in frame:
                return group
    return OTHER


def summarise(collapsed: str, top: int = 12) -> tuple[int, Counter[str], list[tuple[str, int]]]:
    """Total samples, samples per group and the busiest leaf frames from py-spy's
    `--format raw` output (one `frame;frame;... count` line per stack)."""
    total, groups, leaves = 0, Counter[str](), Counter[str]()
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        leaves[frames[-1]] += count
        groups[group_of(frames)] += count
    return total, groups, leaves.most_common(top)


def profile_under_load(
    pid: int, url: str, bodies: list[str], duration_s: float, out: Path, rate: int = 500
) -> Profile:
    """wrk with one connection on `url` for `duration_s` while py-spy samples `pid`; the
    raw stacks (collapsed format: speedscope, inferno and flamegraph.pl read it) go to `out`."""
    py_spy = require_py_spy()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pickserve-profile-") as folder:
        raw = Path(folder) / "stacks.txt"
        record = [py_spy, "record", "--pid", str(pid), "--rate", str(rate), "--nonblocking",
                  "--gil", "--duration", str(round(duration_s)), "--format", "raw",
                  "-o", str(raw)]  # fmt: skip
        result: list[WrkResult] = []
        load = threading.Thread(
            target=lambda: result.append(run_wrk(url, bodies, 1, duration_s)), daemon=True
        )
        load.start()
        subprocess.run(record, capture_output=True, text=True, check=True,
                       timeout=duration_s + 60)  # fmt: skip
        load.join()
        collapsed = raw.read_text()
    out.write_text(collapsed)
    total, groups, leaves = summarise(collapsed)
    return Profile(samples=total, rate=rate, wrk=result[0], groups=groups, top=leaves)


def profile_table(profiles: dict[str, Profile]) -> str:
    """GIL milliseconds per request of each replica, by group."""
    names = list(profiles)
    order = [x for x, _ in GROUPS] + [OTHER]
    groups = sorted({g for p in profiles.values() for g in p.groups}, key=order.index)
    lines = ["| where (each sample once) | " + " | ".join(f"{n} ms/request" for n in names) + " |",
             "|---|" + "---|" * len(names)]  # fmt: skip
    totals = [f"**{profiles[n].ms_per_request():.2f}**" for n in names]
    lines.append("| **holding the GIL, in all** | " + " | ".join(totals) + " |")
    for group in groups:
        cells = [f"{profiles[n].ms_per_request(profiles[n].groups.get(group, 0)):.2f}"
                 for n in names]  # fmt: skip
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
