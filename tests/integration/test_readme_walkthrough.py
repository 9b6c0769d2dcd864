"""The README's "Bring your own pool" walk-through, run exactly as written.

Every ```bash block of the section runs in order with bash, in a fresh folder that holds
the repository's Makefile and .venv (so `make run` and `.venv/bin/python` are the real
ones). The block that starts `make run` is left running, as a user leaves it in its own
shell, until the service says it is up; the others must exit 0. Only the environment
differs from a user's: a free port (PORT, PICKSERVE_URL) and a private state folder.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]


def walkthrough_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### A walk-through", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)


def test_the_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    blocks = walkthrough_blocks()
    assert len(blocks) == 5 and blocks[3].startswith("make run")
    for name in ("Makefile", "pyproject.toml", ".venv"):
        (tmp_path / name).symlink_to(ROOT / name)
    port = free_port()
    env = dict(os.environ, PORT=str(port), PICKSERVE_URL=f"http://127.0.0.1:{port}",
               PICKSERVE_STATE_DIR=str(tmp_path / "state"), RAY_AUTH_MODE="disabled",
               RAY_USAGE_STATS_ENABLED="0")  # fmt: skip
    env.pop("RAY_ADDRESS", None)
    outputs: list[str] = []
    server: subprocess.Popen[bytes] | None = None
    log = tmp_path / "make-run.log"
    try:
        for block in blocks:
            if block.startswith("make run"):
                with log.open("wb") as sink:
                    server = subprocess.Popen(
                        ["bash", "-c", block], cwd=tmp_path, env=env,
                        stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
                    )  # fmt: skip
                wait_until_up(server, log)
                continue
            result = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env,
                capture_output=True, text=True, timeout=300, check=False,
            )  # fmt: skip
            assert result.returncode == 0, (block[:200], result.stdout, result.stderr)
            outputs.append(result.stdout)
    finally:
        if server is not None:
            stop(server)
    checker, served = outputs[2], outputs[3]
    assert "3 of 3 candidates load" in checker and "accuracy" in checker
    assert "agreement on 285 items" in checker
    assert served.startswith("day 1: served by stump, e.g. "), served
    assert re.search(r"e\.g\. 0 = malignant|e\.g\. 1 = benign", served), served
    asked = re.findall(r"(\d+) labels asked for, (\d+) accepted", served)
    assert sum(int(a) for a, _ in asked) >= 1, served  # a few items were labeled
    assert all(a == b for a, b in asked), served  # every label (a class name) was accepted
    assert served.count("posterior: {'logreg'") == 3, served


def wait_until_up(server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 180
    while "pickserve is up" not in log.read_text(errors="replace"):
        assert server.poll() is None, log.read_text(errors="replace")
        assert time.monotonic() < deadline, log.read_text(errors="replace")
        time.sleep(0.5)


def stop(server: subprocess.Popen[bytes]) -> None:
    """What Ctrl-C does in the user's shell: the service shuts Ray down and exits."""
    os.killpg(server.pid, signal.SIGINT)
    try:
        server.wait(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
