"""Schemathesis fuzzes the running app from its own OpenAPI document: at least 1,000
generated cases for every operation that takes input, and no response may be a 5xx.

Operations without parameters (health, metrics, pool, selection) have one possible request;
schemathesis sends them a few times. The app is the real one, over Ray Serve and HTTP,
with the embedded store; rounds, budgets and candidates the fuzzer posts change only its
own state and its own copy of the pool file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import httpx

from service.models.demo_data import DemoData
from tests.integration.conftest import Deploy, own_copy_of_demo_pool

MIN_CASES = 1000
PARAMETERLESS = {
    "GET /metrics", "GET /v1/pool", "GET /v1/selection", "GET /v2/health/live",
    "GET /v2/health/ready",
}  # fmt: skip


def cases_per_operation(report: Path) -> Counter[str]:
    cases: Counter[str] = Counter()
    for line in report.read_text().splitlines():
        event = json.loads(line)
        finished = event.get("ScenarioFinished")
        if finished and finished.get("recorder"):
            recorder = finished["recorder"]
            cases[recorder["label"]] += len(recorder.get("cases", {}))
    return cases


def test_no_generated_request_gets_a_server_error(
    deploy: Deploy, demo: DemoData, tmp_path: Path
) -> None:
    pool = own_copy_of_demo_pool(demo, tmp_path / "pool")
    client: httpx.Client = deploy(shadow_rate=0.2, pool=pool)
    binary = shutil.which("schemathesis") or str(
        Path(__file__).parents[2] / ".venv/bin/schemathesis"
    )
    report = tmp_path / "fuzz.ndjson"
    run = subprocess.run(
        [binary, "run", f"{client.base_url}/openapi.json", "--checks", "not_a_server_error",
         "--phases", "coverage,fuzzing", "--max-examples", str(MIN_CASES), "--seed", "20261123",
         "--request-timeout", "30", "--no-color", "--report", "ndjson",
         "--report-ndjson-path", str(report)],
        capture_output=True, text=True, timeout=1500, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-6000:]
    cases = cases_per_operation(report)
    print("\n" + "\n".join(f"{op}: {n} cases" for op, n in sorted(cases.items())))
    paths = client.get("/openapi.json").json()["paths"]
    operations = {
        f"{method.upper()} {path}" for path, methods in paths.items() for method in methods
    }
    assert operations <= set(cases), f"not fuzzed: {operations - set(cases)}"  # every operation
    for operation, count in cases.items():
        if operation not in PARAMETERLESS:
            assert count >= MIN_CASES, f"{operation}: only {count} cases"
