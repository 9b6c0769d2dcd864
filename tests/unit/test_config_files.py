"""The shipped Ray Serve and KubeRay configs are valid pickserve settings."""

from pathlib import Path

import pytest
import yaml

from service.config.knobs import RuntimeKnobs
from service.config.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def serve_configs() -> list[dict]:  # type: ignore[type-arg]
    rayservice = yaml.safe_load((ROOT / "k8s" / "rayservice.yaml").read_text())
    return [
        yaml.safe_load((ROOT / "deploy" / "serve.yaml").read_text()),
        yaml.safe_load(rayservice["spec"]["serveConfigV2"]),
    ]


@pytest.mark.parametrize("config", serve_configs())
def test_serve_config_builds_settings_and_knobs(config: dict) -> None:  # type: ignore[type-arg]
    (app,) = config["applications"]
    assert app["import_path"] == "service.app:build_app"
    settings = Settings(**app["args"])
    # the settings' host is the address the proxy listens on: it decides if tokens are needed
    assert settings.host == config["http_options"]["host"]
    if settings.host != "127.0.0.1":
        assert settings.tokens_file is not None
    (router,) = [d for d in app["deployments"] if d["name"] == "Router"]
    RuntimeKnobs(**router["user_config"])


def test_unknown_knob_is_rejected() -> None:
    with pytest.raises(ValueError, match="Extra inputs"):
        RuntimeKnobs(gama=3.0)  # type: ignore[call-arg]


def test_the_kubernetes_redis_keeps_what_it_acknowledges() -> None:
    """The store refuses a Redis without these settings; the shipped manifest sets both."""
    documents = list(yaml.safe_load_all((ROOT / "k8s" / "redis.yaml").read_text()))
    (statefulset,) = [d for d in documents if d["kind"] == "StatefulSet"]
    args = statefulset["spec"]["template"]["spec"]["containers"][0]["args"]
    settings = dict(zip(args[::2], args[1::2], strict=True))
    assert settings["--appendonly"] == "yes" and settings["--maxmemory-policy"] == "noeviction"


@pytest.mark.parametrize(
    "knobs",
    [{"selector": "pool_based"}, {"selector": ""}, {"pool_max_items": 9},
     {"pool_max_items": 1_000_001}, {"pool_max_items": 2.5}],
)  # fmt: skip
def test_a_bad_selector_knob_is_refused(knobs: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=r"selector|pool_max_items"):
        RuntimeKnobs(**knobs)


def test_the_selector_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PICKSERVE_KNOBS__SELECTOR", "pool-based")
    assert Settings().knobs.selector == "pool-based"
    monkeypatch.setenv("PICKSERVE_KNOBS__SELECTOR", "coda")
    with pytest.raises(ValueError, match="selector"):
        Settings()


def test_the_large_pool_settings_come_from_the_environment_or_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PICKSERVE_KNOBS__ELIMINATION_DELTA", "0.01")
    monkeypatch.setenv("PICKSERVE_MAX_RESIDENT_MODELS", "40")
    settings = Settings()
    assert settings.knobs.elimination_delta == 0.01 and settings.max_resident_models == 40
    monkeypatch.setenv("PICKSERVE_KNOBS__ELIMINATION_DELTA", "off")
    assert Settings().knobs.elimination_delta == "off"
    for bad in ("2", "often", "0"):
        monkeypatch.setenv("PICKSERVE_KNOBS__ELIMINATION_DELTA", bad)
        with pytest.raises(ValueError) as refused:
            Settings()
        (error,) = refused.value.errors()  # type: ignore[attr-defined]
        assert "between 0 and 1 (exclusive), or off" in error["msg"]
    monkeypatch.setenv("PICKSERVE_KNOBS__ELIMINATION_DELTA", "0.05")
    monkeypatch.setenv("PICKSERVE_MAX_RESIDENT_MODELS", "0")
    with pytest.raises(ValueError, match="max_resident_models"):
        Settings()
