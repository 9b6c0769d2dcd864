"""The pure parts of the MLflow support: registry URIs, the one-line reasons, the signature
check against the pool, and the journal's rule (a point per label count, never twice, in
step order, even with two writers at once)."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from pydantic import ValidationError

from picker import PickerState
from service.models.isolated import child_environment
from service.models.loaders import check_place
from service.models.pool_file import CandidateSpec, PoolLoadError, read_pool_spec, write_pool_file
from service.models.registry import (
    RegistryError,
    _explain,
    check_signature,
    parse,
    without_credentials,
)
from service.models.roster import followed
from service.state.live import LiveState
from service.state.rules import Meta, Selection, Tally, tally_key
from service.state.rules.journal import journal_key, record_point
from service.state.store.base import Put, Txn
from service.state.store.memory import MemoryBackend


@pytest.mark.parametrize(
    ("uri", "parsed"),
    [
        ("models:/fraud/3", ("fraud", "3", None)),
        ("models:/fraud@challenger", ("fraud", None, "challenger")),
        ("models:/team.fraud-v2/12", ("team.fraud-v2", "12", None)),
    ],
)
def test_registry_uris(uri: str, parsed: tuple[str, str | None, str | None]) -> None:
    assert parse(uri) == parsed
    assert CandidateSpec(name="c", mlflow=uri).kind == "mlflow"


@pytest.mark.parametrize(
    "uri",
    ["runs:/abc/model", "models:/fraud", "models:/fraud/0", "models:/fraud/x", "models:/a/1/2",
     "models:/fraud@", "models:/../etc/1", "models:/fraud@a b", "file:///etc/passwd"],
)  # fmt: skip
def test_anything_else_is_refused_before_the_registry_is_asked(uri: str) -> None:
    with pytest.raises(RegistryError):
        parse(uri)
    with pytest.raises(ValidationError):
        CandidateSpec(name="c", mlflow=uri)


def test_a_registry_candidate_names_one_source() -> None:
    with pytest.raises(ValidationError, match="exactly one of sklearn, onnx, python, mlflow"):
        CandidateSpec(name="c", mlflow="models:/fraud/3", sklearn="m.joblib")


def test_credentials_never_reach_a_message() -> None:
    shown = without_credentials("https://user:s3cret@mlflow.example:5000/base?token=abc")
    assert shown == "https://mlflow.example:5000/base"


class RefusedError(Exception):
    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.error_code = code


@pytest.mark.parametrize(
    ("error", "version", "alias", "reason"),
    [
        (RefusedError("RESOURCE_DOES_NOT_EXIST", "Registered Model with name=m not found"), "1", None,
         "the registry has no registered model 'm'"),
        (RefusedError("RESOURCE_DOES_NOT_EXIST", "Model Version (name=m, version=4) not found"), "4",
         None, "registered model 'm' has no version 4"),
        (RefusedError("INVALID_PARAMETER_VALUE", "Registered model alias best not found."), None,
         "best", "registered model 'm' has no alias @best set"),
    ],
)  # fmt: skip
def test_each_registry_answer_is_one_line(
    error: Exception, version: str | None, alias: str | None, reason: str
) -> None:
    assert _explain(error, "m", version, alias) == reason


def tensor(width: int) -> SimpleNamespace:
    return SimpleNamespace(inputs=[SimpleNamespace(shape=(-1, width))])


def columns(count: int) -> SimpleNamespace:
    return SimpleNamespace(inputs=[SimpleNamespace(name=f"c{i}") for i in range(count)])


def info(inputs: SimpleNamespace | None, outputs: SimpleNamespace | None) -> SimpleNamespace:
    signature = None if inputs is None else SimpleNamespace(inputs=inputs, outputs=outputs)
    return SimpleNamespace(signature=signature)


def test_a_signature_is_checked_against_the_pool() -> None:
    check_signature(info(tensor(64), tensor(10)), 64, 10, sklearn=False)
    check_signature(info(columns(64), None), 64, 10, sklearn=False)
    check_signature(info(None, None), 64, 10, sklearn=False)  # no signature: the probe decides
    check_signature(info(tensor(64), tensor(1)), 64, 10, sklearn=True)  # predict's labels
    with pytest.raises(RegistryError, match="takes 5 input columns, the pool has n_features=64"):
        check_signature(info(tensor(5), None), 64, 10, sklearn=True)
    with pytest.raises(RegistryError, match="returns 3 columns, the pool has 10 classes"):
        check_signature(info(columns(64), columns(3)), 64, 10, sklearn=False)


def selection(labels: int, closed: bool = False, tally_version: int = 3) -> Selection:
    picker = PickerState((0.0, 2.0), step=40, labels=labels, queries=labels + 1)
    return Selection(Meta(("a", "b"), 0), Tally(picker, closed=closed),
                     meta_version=1, tally_version=tally_version)  # fmt: skip


def test_a_point_holds_the_round_as_it_stands_and_is_written_once_per_label_count() -> None:
    txn = record_point(selection(4), None, 7, 100.0)
    assert txn is not None and txn.op == "journal:0:4"
    (point,) = txn.append[journal_key(0)]
    assert point["step"] == 4 and point["queue_depth"] == 7 and point["served"] == "a"
    assert point["best"] == "a" and point["posterior"]["a"] > point["posterior"]["b"]
    assert txn.expect == {"tally:0": 3}  # compare-and-set on the round's tally
    assert record_point(selection(4), 4, 7, 101.0) is None  # the journal has that count
    assert record_point(selection(3), 4, 7, 101.0) is None
    assert record_point(selection(5, closed=True), 4, 7, 101.0) is None


def test_two_writers_at_once_write_each_label_count_once_and_in_order() -> None:
    live = LiveState(MemoryBackend())
    live.initialise(["a", "b"], 0, None, 0.0)

    def writer() -> None:
        for _ in range(50):
            live.record_point(1.0, 100.0)

    def labeler() -> None:  # a label count that grows, as labels landing make it
        for count in range(1, 40):
            live._transact(lambda count=count: (_relabel(live, count), None))

    threads = [threading.Thread(target=f) for f in (writer, writer, labeler)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    live.record_point(2.0, 100.0)
    steps = [p["step"] for p in live.journal(0, 1000)]
    assert steps == sorted(set(steps)) and steps[-1] == 39


def _relabel(live: LiveState, count: int) -> Txn:
    current = live.selection(recent_swaps=0)
    tally = replace(current.tally, picker=replace(current.picker, labels=count))
    key = tally_key(0)
    return Txn(f"labels:{count}", expect={key: current.tally_version},
               put={key: Put(tally.to_dict())})  # fmt: skip


def test_a_registry_pool_of_aliases_is_its_candidates_and_is_not_written_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "pool.yaml"
    path.write_text(
        "n_features: 4\nclasses: 2\ninitial: fraud-champion\n"
        "mlflow_pool: {model: fraud, aliases: [champion, challenger]}\n"
        "candidates:\n  - {name: local, sklearn: m.joblib}\n"
    )
    spec = read_pool_spec(path)
    assert [(c.name, c.source) for c in spec.candidates] == [
        ("fraud-champion", "models:/fraud@champion"),
        ("fraud-challenger", "models:/fraud@challenger"),
        ("local", "m.joblib"),
    ]
    # a candidate of it removed at run time: the file keeps its own entries and the exclusion
    kept = followed(spec, ["fraud-champion", "local"], {}, ["fraud-challenger"])
    write_pool_file(path, kept)
    written = yaml.safe_load(path.read_text())
    assert [c["name"] for c in written["candidates"]] == ["local"]
    assert written["mlflow_pool"]["exclude"] == ["fraud-challenger"]
    assert [c.name for c in read_pool_spec(path).candidates] == ["fraud-champion", "local"]


@pytest.mark.parametrize(
    ("pool", "problem"),
    [
        ("{model: fraud}", "exactly one of aliases, tag"),
        ("{model: fraud, aliases: [a], tag: 'k=v'}", "exactly one of aliases, tag"),
        ("{model: '../x', aliases: [a]}", "String should match pattern"),
        ("{model: fraud, aliases: ['no way']}", "String should match pattern"),
    ],
)
def test_a_malformed_registry_pool_is_one_line(tmp_path: Path, pool: str, problem: str) -> None:
    path = tmp_path / "pool.yaml"
    path.write_text(f"n_features: 4\nclasses: 2\nmlflow_pool: {pool}\ncandidates: []\n")
    with pytest.raises(PoolLoadError, match=problem) as raised:
        read_pool_spec(path)
    assert "\n" not in str(raised.value)


def test_a_registry_candidates_child_alone_gets_the_way_to_the_registry() -> None:
    environ = {"PATH": "/bin", "PICKSERVE_MLFLOW_TRACKING_URI": "http://u:p@h", "REDIS_URL": "r"}
    assert child_environment(environ) == {"PATH": "/bin"}
    assert child_environment(environ, registry=True) == {
        "PATH": "/bin",
        "PICKSERVE_MLFLOW_TRACKING_URI": "http://u:p@h",
    }


def test_without_a_tracking_server_a_registry_candidate_is_refused_before_any_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("PICKSERVE_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(variable, raising=False)
    path = tmp_path / "pool.yaml"
    path.write_text("n_features: 4\nclasses: 2\ncandidates:\n  - {name: a, mlflow: 'models:/m/1'}\n"
                    "  - {name: b, mlflow: 'models:/m/2'}\n")  # fmt: skip
    pool = read_pool_spec(path)
    with pytest.raises(PoolLoadError) as refused:
        check_place(pool.candidates[0], path, pool)  # what POST /v1/candidates asks first
    assert str(refused.value).endswith(
        "candidate 'a' (mlflow models:/m/1): no MLflow tracking server is configured: set "
        "PICKSERVE_MLFLOW_TRACKING_URI (or MLFLOW_TRACKING_URI)"
    )
