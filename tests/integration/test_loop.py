"""The whole loop, once per store: the demo stream, a labeler answering from ground truth,
and the served model ending as the best one on the stream."""

import pytest

from service.demo import drive
from service.demo_pool import DemoData
from tests.integration.conftest import Deploy


@pytest.mark.parametrize("store", ["embedded", "redis"])
def test_served_model_ends_as_the_best_on_the_stream(
    deploy: Deploy, demo: DemoData, store: str
) -> None:
    client = deploy(store=store, shadow_rate=0.5)  # default gamma
    first = demo.summary["best_on_training_distribution"]
    target = demo.summary["best_today"]
    assert first != target
    progress = drive(client, demo, target, max_items=12_000, seed=3)
    selection = client.get("/v1/selection").json()
    assert selection["served_model"] == target
    assert selection["posterior"][target] >= 0.9
    assert progress.labels_posted == selection["labels"]
    assert progress.labels_posted < progress.items_served / 8
    # clients saw the swap: responses first named the initial model, finally the best
    assert progress.served_models_seen[0] == first and progress.served_models_seen[-1] == target
    assert selection["swaps"] and selection["swaps"][-1]["to_model"] == target
    assert selection["swaps"][0]["from_model"] == first
