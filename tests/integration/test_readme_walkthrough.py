"""The README's walk-throughs ("Bring your own pool", and MLflow's), run exactly as written.

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


def walkthrough_blocks(heading: str = "### A walk-through") -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split(heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)


def run_blocks(
    blocks: list[str], folder: Path, env: dict[str, str], up: dict[str, str]
) -> list[str]:
    """Run the blocks in order in `folder`; a block naming one of `up`'s commands is left
    running (as in a shell of its own) until its log shows `up[command]`. The outputs of
    the others, which must exit 0."""
    for name in ("Makefile", "pyproject.toml", ".venv"):
        (folder / name).symlink_to(ROOT / name)
    outputs: list[str] = []
    servers: list[subprocess.Popen[bytes]] = []
    try:
        for number, block in enumerate(blocks):
            waits_for = [ready for command, ready in up.items() if command in block]
            if waits_for:
                log = folder / f"block-{number}.log"
                with log.open("wb") as sink:
                    servers.append(subprocess.Popen(
                        ["bash", "-c", block], cwd=folder, env=env,
                        stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
                    ))  # fmt: skip
                wait_until_up(servers[-1], log, waits_for[0])
                outputs.append("")
                continue
            result = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", block], cwd=folder, env=env,
                capture_output=True, text=True, timeout=300, check=False,
            )  # fmt: skip
            assert result.returncode == 0, (block[:200], result.stdout, result.stderr)
            outputs.append(result.stdout)
    finally:
        for server in reversed(servers):
            stop(server)
    return outputs


def walkthrough_env(folder: Path) -> dict[str, str]:
    port = free_port()
    env = dict(os.environ, PORT=str(port), PICKSERVE_URL=f"http://127.0.0.1:{port}",
               PICKSERVE_STATE_DIR=str(folder / "state"), RAY_AUTH_MODE="disabled",
               RAY_USAGE_STATS_ENABLED="0")  # fmt: skip
    env.pop("RAY_ADDRESS", None)
    return env


def test_the_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    blocks = walkthrough_blocks()
    assert len(blocks) == 5 and blocks[3].startswith("make run")
    outputs = run_blocks(blocks, tmp_path, walkthrough_env(tmp_path),
                         {"make run": "pickserve is up"})  # fmt: skip
    checker, served = outputs[2], outputs[4]
    assert "3 of 3 candidates load" in checker and "accuracy" in checker
    assert "agreement on 285 items" in checker
    assert served.startswith("day 1: served by stump, e.g. "), served
    assert re.search(r"e\.g\. 0 = malignant|e\.g\. 1 = benign", served), served
    asked = re.findall(r"(\d+) labels asked for, (\d+) accepted", served)
    assert sum(int(a) for a, _ in asked) >= 1, served  # a few items were labeled
    assert all(a == b for a, b in asked), served  # every label (a class name) was accepted
    assert served.count("posterior: {'logreg'") == 3, served


def wait_until_up(server: subprocess.Popen[bytes], log: Path, ready: str) -> None:
    deadline = time.monotonic() + 180
    while ready not in log.read_text(errors="replace"):
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


def test_the_mlflow_walkthrough_runs_as_written(tmp_path: Path) -> None:
    """Register two models in a real MLflow server, serve them by registry URI, label, and
    read the round's run and the champion alias back through MLflow's client."""
    blocks = walkthrough_blocks("### An MLflow walk-through")
    assert len(blocks) == 5
    env = {**walkthrough_env(tmp_path), "MLFLOW_PORT": str(free_port())}
    up = {"mlflow server": "Uvicorn running on", "make run": "pickserve is up"}
    outputs = run_blocks(blocks, tmp_path, env, up)
    checker, served = outputs[2], outputs[4]
    print(served)  # what the README shows of a run
    assert "2 of 2 candidates load" in checker and "registry" in checker, checker
    assert "cancer v1, run" in checker and "cancer v2" in checker, checker  # (may wrap)
    assert "@challenger" in checker, checker
    days = re.findall(r"day \d: (\d+) labels, serving (\w+)", served)
    assert len(days) == 6 and int(days[-1][0]) > 0, served
    run = re.search(r"round-0: (\d+) points; posterior.logreg [0-9.]+ after (\d+) labels", served)
    assert run is not None and int(run.group(2)) == int(days[-1][0]), served
    assert int(run.group(1)) >= 2, served  # a point per label batch
    version = {"stump": "1", "logreg": "2"}[days[-1][1]]
    assert f"champion: cancer version {version}" in served, served  # the served one's
