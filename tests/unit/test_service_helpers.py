"""Pure parts of the service: label checks, OIP v2 decoding, metrics rendering."""

import numpy as np
import pytest

from picker import PickerState
from service.http import v2
from service.http.labels import check_labels
from service.http.schemas import Label, V2Tensor
from service.replica.metrics import LocalCounters, render
from service.state.rules import Meta, Selection, Tally

CLASSES = [str(n) for n in range(10)]


def test_check_labels_flags_out_of_range_and_repeats() -> None:
    labels = [
        Label(item_id="a", label=1),
        Label(item_id="b", label=10),
        Label(item_id="a", label=2),
    ]
    resolved, problems = check_labels(labels, CLASSES)
    assert [(p.item_id, p.outcome) for p in problems] == [("b", "invalid"), ("a", "invalid")]
    assert resolved == [("a", 1)]
    assert check_labels(labels[:1], CLASSES) == ([("a", 1)], [])


def test_labels_are_class_indices_or_class_names() -> None:
    classes = ["malignant", "benign", "7"]
    labels = [
        Label(item_id="a", label="benign"),
        Label(item_id="b", label=0),
        Label(item_id="c", label="7"),  # the name "7" is class 2, not index 7
        Label(item_id="d", label=2),
    ]
    assert check_labels(labels, classes) == ([("a", 1), ("b", 0), ("c", 2), ("d", 2)], [])
    resolved, problems = check_labels([Label(item_id="e", label="Benign")], classes)
    assert resolved == []
    assert problems[0].detail == "label 'Benign' is not a class name (malignant, benign, 7)"


def test_a_label_is_never_a_boolean_or_a_float() -> None:
    for value in (True, 1.0):
        with pytest.raises(ValueError, match="label"):
            Label(item_id="a", label=value)  # type: ignore[arg-type]


def test_v2_instances_accept_flat_and_nested_data() -> None:
    flat = V2Tensor(name="x", shape=[2, 2], datatype="FP64", data=[1, 2, 3, 4])
    nested = V2Tensor(name="x", shape=[2, 2], datatype="FP64", data=[[1, 2], [3, 4]])
    assert v2.instances(flat, 2) == v2.instances(nested, 2) == [[1.0, 2.0], [3.0, 4.0]]
    assert v2.instances(V2Tensor(name="x", shape=[2], datatype="FP32", data=[5, 6]), 2) == [
        [5.0, 6.0]
    ]
    with pytest.raises(ValueError, match="does not make rows"):
        v2.instances(V2Tensor(name="x", shape=[3, 2], datatype="FP64", data=[1, 2, 3, 4]), 2)
    with pytest.raises(ValueError, match="valid number"):
        V2Tensor(name="x", shape=[1, 2], datatype="FP64", data=["a", "b"])
    with pytest.raises(ValueError, match="valid number"):  # a 400-digit integer
        V2Tensor(name="x", shape=[1, 2], datatype="FP64", data=[10**400, 1])
    with pytest.raises(ValueError, match="ragged or non-numeric"):
        v2.instances(V2Tensor(name="x", shape=[2, 2], datatype="FP64", data=[[1, 2], [3]]), 2)


def test_metrics_render_counters_histogram_and_state() -> None:
    counters = LocalCounters()
    counters.inc("requests", "m1")
    counters.inc("labels", "accepted", value=3)
    counters.observe_latency("m1", 0.003)
    counters.observe_latency("m1", 7.0)
    stored = counters.drain()
    assert counters.drain() == {}
    counters.restore({"requests|m1": 2.0})
    assert counters.drain() == {"requests|m1": 2.0}
    selection = Selection(
        Meta(("m1", "m2"), served=1, version=2), Tally(PickerState((0.0, 30.0), step=100))
    )
    text = render(stored, selection, queue_depth=4).decode()
    assert 'pickserve_requests_total{model="m1"} 1.0' in text
    assert 'pickserve_labels_total{outcome="accepted"} 3.0' in text
    assert 'pickserve_request_latency_seconds_bucket{le="0.005",model="m1"} 1.0' in text
    assert 'pickserve_request_latency_seconds_bucket{le="+Inf",model="m1"} 2.0' in text
    assert (
        'pickserve_best_model{model="m1"} 1.0' in text
        and 'pickserve_served_model{model="m2"} 1.0' in text
    )
    assert "pickserve_label_queue_depth 4.0" in text and "pickserve_selection_version 2.0" in text
    assert "pickserve_store_up 1.0" in text
    assert "pickserve_store_up 0.0" in render(stored, selection, 4, store_up=False).decode()
    weight = float(text.split('pickserve_posterior_weight{model="m1"} ')[1].split()[0])
    np.testing.assert_allclose(weight, selection.picker.weights()[0])


def test_counters_moved_by_the_state_use_the_metrics_key_format() -> None:
    from service.replica.metrics import counter_key
    from service.state import rules

    assert counter_key("labels", "accepted") == rules.ACCEPTED_COUNTER
    assert counter_key("queries") == rules.QUERIES_COUNTER
    assert counter_key("swaps") == rules.SWAPS_COUNTER


def test_every_counter_has_a_series_before_its_first_event() -> None:
    """Dashboards and rate() need a series from the start: counters render at 0."""
    selection = Selection(Meta(("a", "b"), 0), Tally(PickerState((0.0, 0.0))))
    text = render({}, selection, 0).decode()
    for line in ('pickserve_requests_total{model="a"} 0.0', 'pickserve_requests_total{model="b"} 0.0',
                 "pickserve_swaps_total 0.0", "pickserve_queries_total 0.0",
                 'pickserve_labels_total{outcome="invalid"} 0.0',
                 'pickserve_errors_total{kind="nonfinite"} 0.0',
                 'pickserve_shadow_items_total{outcome="shed"} 0.0'):  # fmt: skip
        assert line in text.splitlines(), line
    counted = render({"labels|accepted": 3.0}, selection, 0).decode().splitlines()
    assert 'pickserve_labels_total{outcome="accepted"} 3.0' in counted
