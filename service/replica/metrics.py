"""Prometheus metrics that read the same whichever replica answers /metrics.

Event counts (requests, latency buckets, shadow work, rejected labels, errors) are gathered
per replica and added to the shared store every flush interval. Accepted labels, queries
and swaps are counted inside the store transaction that applies them (`service.state.rules`), so
each counts exactly once whatever happens to its answer. Picker state (posterior, best,
served model, queue depth) is read from the store at scrape time. The text is rendered
with prometheus_client from those stored numbers.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from service.state.rules import Selection

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
PREFIX = "pickserve_"
COUNTERS = {
    "requests": ("Inference requests answered, by served model", ("model",)),
    "items_served": ("Items answered, by served model", ("model",)),
    "shadow_items": ("Items sampled for shadow evaluation, by outcome (done, shed)", ("outcome",)),
    "model_evaluations": (
        "Model evaluations (one model on one item), by purpose: served (answering a client, "
        "failed attempts included), shadow (shadow evaluation: every candidate, or the "
        "active set, on each item), labeling (the other candidates on the items queued for "
        "labels, in the large-pool mode)",
        ("purpose",),
    ),
    "model_loads": (
        "Models loaded on demand in router replicas (max_resident_models; the Candidates "
        "deployment's are Ray's ray_pickserve_model_loads_total)",
        (),
    ),
    "model_load_seconds": ("Seconds router replicas spent loading models on demand", ()),
    "mlflow_points": (
        "Journal points (one per label batch) written to MLflow runs (PICKSERVE_MLFLOW_*)",
        (),
    ),
    "queries": ("Items the picker queued for labeling", ()),
    "labels": (
        "Labels posted, by outcome (accepted, duplicate, unknown, invalid, leased)",
        ("outcome",),
    ),
    "swaps": ("Hot swaps of the served model", ()),
    "canary_rollbacks": ("Canary swaps rolled back (errors or latency past their bounds)", ()),
    "drift_events": ("Drifts detected in the live stream (each may start a new round)", ()),
    "failovers": ("Served requests a model failed, answered by another candidate", ("model",)),
    "errors": (
        "Errors, by kind: model (a served or called model failed), timeout (a model call "
        "or a shadow batch ran past model_timeout_s), store, shadow (a shadow batch failed), "
        "nonfinite (a model's non-finite output in shadow work, per item), mlflow (a pass of "
        "the MLflow writer failed: MLflow down or refusing; the journal waits in the store)",
        ("kind",),
    ),
}
LATENCY = "request_latency_seconds"


def counter_key(name: str, *label_values: str) -> str:
    return "|".join((name, *label_values))


class LocalCounters:
    """This replica's counts since the last flush to the store."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deltas: dict[str, float] = defaultdict(float)

    def inc(self, name: str, *label_values: str, value: float = 1.0) -> None:
        with self._lock:
            self._deltas[counter_key(name, *label_values)] += value

    def observe_latency(self, model: str, seconds: float) -> None:
        bucket = next((str(b) for b in LATENCY_BUCKETS_S if seconds <= b), "+Inf")
        with self._lock:
            self._deltas[counter_key(LATENCY, model, bucket)] += 1
            self._deltas[counter_key(LATENCY + "_sum", model)] += seconds

    def drain(self) -> dict[str, float]:
        with self._lock:
            deltas, self._deltas = dict(self._deltas), defaultdict(float)
        return deltas

    def restore(self, deltas: Mapping[str, float]) -> None:
        """Put back deltas a failed flush could not store, so no count is lost."""
        with self._lock:
            for key, value in deltas.items():
                self._deltas[key] += value


# Label values every scrape shows, at 0 before their first event, so that rate() and
# dashboards have a series from the start (absent series read as "no data").
KNOWN_LABELS: dict[str, tuple[str, ...]] = {
    "shadow_items": ("done", "shed"),
    "labels": ("accepted", "duplicate", "unknown", "invalid", "leased"),
    "errors": ("model", "timeout", "store", "shadow", "nonfinite", "mlflow"),
}


def _counter_families(stored: Mapping[str, float], models: list[str]) -> Iterable[Metric]:
    for name, (help_text, label_names) in COUNTERS.items():
        family = CounterMetricFamily(PREFIX + name, help_text, labels=label_names)
        values: dict[tuple[str, ...], float] = {}
        if not label_names:
            values[()] = 0.0
        elif label_names == ("model",):
            values.update({(model,): 0.0 for model in models})
        else:
            values.update({(v,): 0.0 for v in KNOWN_LABELS.get(name, ())})
        for key, value in stored.items():
            parts = key.split("|")
            if parts[0] == name and len(parts) == len(label_names) + 1:
                values[tuple(parts[1:])] = value
        for label_values, value in values.items():
            family.add_metric(list(label_values), value)
        yield family


def _latency_family(stored: Mapping[str, float]) -> Metric:
    family = HistogramMetricFamily(
        PREFIX + LATENCY, "Inference latency in the router, by served model", labels=("model",)
    )
    per_model: dict[str, dict[str, float]] = defaultdict(dict)
    for key, value in stored.items():
        parts = key.split("|")
        if parts[0] == LATENCY:
            per_model[parts[1]][parts[2]] = value
    for model, counts in sorted(per_model.items()):
        cumulative, buckets = 0.0, []
        for bound in [*map(str, LATENCY_BUCKETS_S), "+Inf"]:
            cumulative += counts.get(bound, 0.0)
            buckets.append((bound, cumulative))
        total = stored.get(counter_key(LATENCY + "_sum", model), 0.0)
        family.add_metric([model], buckets, total)
    return family


# What q (a label's weight) could be worked out from: shown to the `metrics` and `admin`
# roles only; the open endpoint carries the rest.
PICKER_FIGURES = ("posterior_weight", "best_model", "cumulative_loss", "picker_step")


def _state_families(
    selection: Selection, queue_depth: int, store_up: bool, full: bool
) -> Iterable[Metric]:
    names = selection.model_names
    indices = range(len(names))
    gauges: list[tuple[str, str, Iterable[float]]] = [
        ("served_model", "1 for the served model", [float(i == selection.served) for i in indices])
    ]
    if full:
        best = selection.best
        gauges += [
            ("posterior_weight", "Posterior probability that the model is the best",
             selection.weights().tolist()),
            ("best_model", "1 for the posterior's best model", [float(i == best) for i in indices]),
            ("cumulative_loss", "Importance-weighted loss L_i in this round",
             selection.picker.losses),
        ]  # fmt: skip
    for name, help_text, values in gauges:
        family = GaugeMetricFamily(PREFIX + name, help_text, labels=("model",))
        for model, value in zip(names, values, strict=True):
            family.add_metric([model], float(value))
        yield family
    picker = selection.picker
    budget = -1 if picker.budget is None else picker.budget
    scalars: list[tuple[str, str, float]] = [
        ("label_queue_depth", "Items waiting for a label", queue_depth),
        ("round", "Current round", picker.round),
        ("round_labels", "Labels applied this round", picker.labels),
        ("round_queries", "Queries issued this round", picker.queries),
        ("label_budget", "Queries allowed this round (-1: no budget)", budget),
        ("selection_version", "Bumps on every hot swap", selection.version),
        ("store_up", "1 when the state store answered this scrape", int(store_up)),
    ]
    if full:
        scalars.append(("picker_step", "Items the picker has seen this round", picker.step))
    for name, help_text, value in scalars:
        yield GaugeMetricFamily(PREFIX + name, help_text, value=float(value))
    yield from _drift_families(selection)


def _drift_families(selection: Selection) -> Iterable[Metric]:
    """The last drift test of the round: chi-square statistics and p-values, by test."""
    monitor = selection.tally.monitor
    last = None if monitor is None else monitor.last
    statistic = GaugeMetricFamily(
        PREFIX + "drift_statistic", "Chi-square statistic of the round's last drift test "
        "(current window against the reference), by test", labels=("test",),
    )  # fmt: skip
    p_value = GaugeMetricFamily(
        PREFIX + "drift_p_value", "p-value of the round's last drift test, by test",
        labels=("test",),
    )  # fmt: skip
    if last is not None:
        for test, prefix in (("classes", ""), ("disagreement", "disagreement_")):
            statistic.add_metric([test], float(last[prefix + "statistic"]))
            p_value.add_metric([test], float(last[prefix + "p_value"]))
    yield statistic
    yield p_value


def labeler_accuracy(accuracies: Mapping[str, float]) -> Metric:
    """Each labeler's estimated accuracy (GET /v1/labelers has its interval)."""
    family = GaugeMetricFamily(
        PREFIX + "labeler_accuracy", "Estimated share of a labeler's labels that are right "
        "(from overlap items and gold items; Dawid-Skene, one accuracy per labeler)",
        labels=("labeler",),
    )  # fmt: skip
    for name, accuracy in sorted(accuracies.items()):
        family.add_metric([name], accuracy)
    return family


def gauge(name: str, help_text: str, value: float) -> Metric:
    """A replica-level gauge for `render(extra=...)`."""
    return GaugeMetricFamily(PREFIX + name, help_text, value=float(value))


class _StoredCollector(Collector):
    def __init__(
        self,
        stored: Mapping[str, float],
        selection: Selection,
        depth: int,
        store_up: bool,
        extra: Iterable[Metric],
        full: bool,
    ) -> None:
        self._stored, self._selection, self._depth = stored, selection, depth
        self._store_up, self._extra, self._full = store_up, list(extra), full

    def collect(self) -> Iterable[Metric]:
        yield from _counter_families(self._stored, self._selection.model_names)
        yield _latency_family(self._stored)
        yield from _state_families(self._selection, self._depth, self._store_up, self._full)
        yield from self._extra


def render(
    stored: Mapping[str, float],
    selection: Selection,
    queue_depth: int,
    store_up: bool = True,
    extra: Iterable[Metric] = (),
    full: bool = True,
) -> bytes:
    """The Prometheus text exposition of stored counters and the picker's state, and of
    `extra` gauges the answering replica knows (its paced shadow rate, say). Without
    `full`, none of the PICKER_FIGURES."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StoredCollector(stored, selection, queue_depth, store_up, extra, full))
    return generate_latest(registry)
