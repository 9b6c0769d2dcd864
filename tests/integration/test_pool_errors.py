"""A broken pool stops every way of starting pickserve with one line and exit code 2.

Each failure kind of `tests.bad_pools` is started three ways, as real processes: `make run
POOL=...`, Ray Serve's own CLI on the builder (`serve run service.app:build_app pool=...`)
and the pool checker. Under `serve deploy` / `serve run config.yaml` the builder runs
inside the cluster: there the line is the end of the application's status message.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests import bad_pools
from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def environment(state_dir: Path) -> dict[str, str]:
    env = dict(os.environ, PICKSERVE_STATE_DIR=str(state_dir), RAY_AUTH_MODE="disabled")
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def own_lines(stderr: str) -> list[str]:
    """stderr without make's own report and Ray's INFO lines."""
    return [
        line
        for line in stderr.splitlines()
        if line.strip() and not line.startswith("make") and " INFO " not in line
    ]


@pytest.mark.parametrize("kind", sorted(bad_pools.KINDS))
def test_a_broken_pool_stops_make_run_serve_run_and_the_checker(tmp_path: Path, kind: str) -> None:
    path, fragments = bad_pools.make(kind, tmp_path / "pool")
    env = environment(tmp_path / "state")
    commands = {
        "make run": ["make", "-s", "run", f"POOL={path}", f"PORT={free_port()}"],
        "serve run": [str(BIN / "serve"), "run", "service.app:build_app", f"pool={path}",
                      "store=memory"],
        "check-pool": [sys.executable, "-m", "service", "check-pool", str(path)],
    }  # fmt: skip
    with ThreadPoolExecutor(len(commands)) as pool:
        results = dict(
            zip(commands, pool.map(lambda c: run(c, env), commands.values()), strict=True)
        )
    for way, result in results.items():
        lines = own_lines(result.stderr)
        assert result.returncode == 2, (way, result.returncode, result.stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith("error: "), (way, result.stderr)
        for fragment in fragments:
            assert fragment in lines[0], (way, fragment, lines[0])
        assert "Traceback" not in result.stderr + result.stdout, way
    assert "Error 2" in results["make run"].stderr  # make reports the command's own code


def test_serve_run_of_a_config_file_reports_the_line_in_the_app_status(tmp_path: Path) -> None:
    """The config path (`serve run config.yaml`, `serve deploy`): the builder runs in the
    cluster, Ray marks the application DEPLOY_FAILED and its message ends with the line."""
    path, fragments = bad_pools.make("missing_file", tmp_path / "pool")
    config = tmp_path / "serve.yaml"
    config.write_text(
        "proxy_location: HeadOnly\n"
        f"http_options: {{host: 127.0.0.1, port: {free_port()}}}\n"
        "applications:\n  - name: pickserve\n    route_prefix: /\n"
        "    import_path: service.app:build_app\n"
        f"    args: {{pool: {path}, store: memory}}\n"
    )
    env = environment(tmp_path / "state")
    env.pop("RAY_ADDRESS", None)
    process = subprocess.Popen(
        [str(BIN / "serve"), "run", str(config)], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    assert process.stdout is not None
    found, deadline = None, time.monotonic() + 90
    try:
        for line in process.stdout:  # Ray forwards the controller's log to this output
            if "StartupError: " in line:
                found = line.split("StartupError: ", 1)[1].strip()
                break
            if time.monotonic() > deadline:
                break
    finally:
        os.killpg(process.pid, signal.SIGINT)  # the CLI shuts its Ray down on Ctrl-C
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    assert found is not None, "the controller never reported the pool error"
    for fragment in fragments:
        assert fragment in found


@pytest.mark.parametrize("kind", sorted(bad_pools.KINDS))
def test_inside_the_cluster_the_builder_fails_with_the_line(
    serve_port: int, tmp_path: Path, kind: str
) -> None:
    """What Ray Serve's controller does for `serve deploy` and config files: it calls the
    builder in a Ray task. The task's error is a StartupError whose message is the line."""
    import ray

    path, fragments = bad_pools.make(kind, tmp_path / "pool")

    @ray.remote(num_cpus=0)
    def build_in_a_task(args: dict[str, str]) -> None:
        from service.app import build_app

        build_app(args)

    with pytest.raises(ray.exceptions.RayTaskError) as raised:
        ray.get(build_in_a_task.remote({"pool": str(path), "store": "memory",
                                        "state_dir": str(tmp_path / "state")}))  # fmt: skip
    last = str(raised.value).strip().splitlines()[-1]
    assert last.startswith("service.app.StartupError: "), last
    for fragment in fragments:
        assert fragment in last, (fragment, last)


@pytest.mark.parametrize(
    ("active", "fragment"),
    [
        ("3", "active_models 3 exceeds the pool's 2 candidates"),
        ("1", "active_models: Value error, must be a whole number from 2"),
    ],
)
def test_an_active_set_the_pool_cannot_fill_stops_the_start_with_one_line(
    tmp_path: Path, active: str, fragment: str
) -> None:
    folder = tmp_path / "pool"
    folder.mkdir()
    path = bad_pools._pool(folder, "{name: twin, sklearn: good.joblib}")
    env = dict(environment(tmp_path / "state"), PICKSERVE_KNOBS__ACTIVE_MODELS=active)
    result = run([sys.executable, "-m", "service", "--pool", str(path), "--port",
                  str(free_port())], env)  # fmt: skip
    lines = own_lines(result.stderr)
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines
