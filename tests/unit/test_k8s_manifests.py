"""The deployment files are checked, not assumed: the RayService against KubeRay's own CRD
schema (v1.7.0, kept in k8s/crd/), every Serve config against Ray's ServeDeploySchema, and
the dashboard's PromQL with promtool (Debian's `prometheus` package)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

ROOT = Path(__file__).resolve().parents[2]


def crd_schema() -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "k8s" / "crd" / "ray.io_rayservices.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def unknown_fields(value: Any, schema: dict[str, Any], where: str = "") -> list[str]:
    """Fields the schema does not declare (what `kubectl apply --validate=strict` refuses;
    the API server would silently drop them)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found = []
    if isinstance(value, dict) and "properties" in schema:
        for key, item in value.items():
            if key not in schema["properties"]:
                found.append(f"{where}.{key}")
            else:
                found += unknown_fields(item, schema["properties"][key], f"{where}.{key}")
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, item in value.items():
            found += unknown_fields(item, schema["additionalProperties"], f"{where}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            found += unknown_fields(item, schema["items"], f"{where}[{index}]")
    return found


def test_the_rayservice_matches_kuberays_crd() -> None:
    manifest = yaml.safe_load((ROOT / "k8s" / "rayservice.yaml").read_text())
    schema = crd_schema()
    jsonschema.validate(manifest, schema)  # types, required fields, enums
    assert unknown_fields(manifest, schema) == []


def test_the_strict_check_catches_a_misspelt_field() -> None:
    """The walker above is not vacuous: a typo KubeRay would silently drop is reported."""
    manifest = yaml.safe_load((ROOT / "k8s" / "rayservice.yaml").read_text())
    manifest["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParam"] = {}
    assert unknown_fields(manifest, crd_schema()) == [
        ".spec.rayClusterConfig.headGroupSpec.rayStartParam"
    ]


@pytest.mark.parametrize("source", ["deploy/serve.yaml", "k8s/rayservice.yaml"])
def test_serve_configs_match_ray_serves_deploy_schema(source: str) -> None:
    document = yaml.safe_load((ROOT / source).read_text())
    config = yaml.safe_load(document["spec"]["serveConfigV2"]) if "spec" in document else document
    parsed = ServeDeploySchema.model_validate(config)
    assert [app.import_path for app in parsed.applications] == ["service.app:build_app"]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((ROOT / "k8s" / "grafana-dashboard.json").read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]


def test_the_dashboards_promql_parses(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: make test installs Debian's prometheus package"
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"pickserve:dashboard_{i}", "expr": e} for i, e in enumerate(dashboard_expressions())
    ]}]}  # fmt: skip
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(dashboard_expressions())} rules found" in result.stdout


def test_the_image_is_rays_own_for_this_ray_and_python_and_the_manifests_name_it() -> None:
    """deploy/Dockerfile cannot be built here (no Docker engine): check what it says."""
    import sys
    import tomllib

    import ray

    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    assert f"FROM rayproject/ray:{ray.__version__}-{python}\n" in dockerfile
    for folder in ("picker", "service"):
        assert f"COPY --chown=ray:users {folder} ./{folder}" in dockerfile
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    manifest = yaml.safe_load((ROOT / "k8s" / "rayservice.yaml").read_text())
    cluster = manifest["spec"]["rayClusterConfig"]
    images = [cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]] + [
        group["template"]["spec"]["containers"][0]["image"] for group in cluster["workerGroupSpecs"]
    ]
    assert images and set(images) == {f"registry.example.com/pickserve:{version}"}
    assert f"-t registry.example.com/pickserve:{version} ." in dockerfile
    assert f'rayVersion: "{ray.__version__}"' in (ROOT / "k8s" / "rayservice.yaml").read_text()


def test_the_ray_dashboard_is_reachable_only_by_the_operator_and_the_cluster() -> None:
    """The dashboard accepts jobs and Serve configs: on the head pod it must listen on the
    pod's address for KubeRay, so the network policy admits only the operator's namespace
    and the Ray pods to its ports, and everyone to Serve and metrics."""
    policy = yaml.safe_load((ROOT / "k8s" / "networkpolicy.yaml").read_text())
    assert policy["kind"] == "NetworkPolicy" and policy["spec"]["policyTypes"] == ["Ingress"]
    head = yaml.safe_load((ROOT / "k8s" / "rayservice.yaml").read_text())
    assert policy["spec"]["podSelector"]["matchLabels"] == {"ray.io/node-type": "head"}
    open_ports: set[int] = set()
    for rule in policy["spec"]["ingress"]:
        ports = {p["port"] for p in rule.get("ports", [])}
        sources = rule.get("from", [])
        if not sources:  # from anywhere
            open_ports |= ports
        else:
            assert all("podSelector" in s or "namespaceSelector" in s for s in sources)
    assert open_ports == {8000, 8080}
    params = head["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]
    assert int(params["metrics-export-port"]) == 8080
    # locally the driver starts Ray with no dashboard at all
    assert "include_dashboard=False" in (ROOT / "service" / "__main__.py").read_text()
