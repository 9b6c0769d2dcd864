"""The whole loop, once per selector and store: the demo stream, a labeler answering from
ground truth, and the served model ending as the best one on the stream.

ModelPicker's coin asks for few items, so its labeler takes whatever is queued (50 per
batch). A pool-based round queues every disagreement item and its order is the point, so
its labeler is slower than the traffic (2 per batch of 16 predictions): it must then need
far fewer labels than the pool offered."""

import pytest

from service.models.demo_data import DemoData
from service.tools.demo import drive
from tests.integration.conftest import Deploy

LABELS_PER_BATCH = {"modelpicker": 50, "pool-based": 2}


@pytest.mark.parametrize("store", ["embedded", "redis"])
@pytest.mark.parametrize("selector", ["modelpicker", "pool-based"])
def test_served_model_ends_as_the_best_on_the_stream(
    deploy: Deploy, demo: DemoData, store: str, selector: str
) -> None:
    client = deploy(store=store, shadow_rate=0.5, selector=selector)  # default gamma
    first = demo.summary["best_on_training_distribution"]
    target = demo.summary["best_today"]
    assert first != target
    progress = drive(client, demo, target, max_items=12_000, seed=3,
                     labels_per_batch=LABELS_PER_BATCH[selector])  # fmt: skip
    selection = client.get("/v1/selection").json()
    assert selection["selector"] == selector and selection["round"] == 0
    assert selection["served_model"] == target
    assert selection["posterior"][target] >= 0.9
    assert progress.labels_posted == selection["labels"]
    assert progress.labels_posted < progress.items_served / 8
    if selector == "pool-based":
        assert progress.labels_posted < selection["queries"] / 2
    # clients saw the swap: responses first named the initial model, finally the best
    assert progress.served_models_seen[0] == first and progress.served_models_seen[-1] == target
    assert selection["swaps"] and selection["swaps"][-1]["to_model"] == target
    assert selection["swaps"][0]["from_model"] == first
