"""The load tool's profile summary: each py-spy sample counts once, for the model if it is
on the stack, else for the innermost frame's layer, so the rows add up to the total."""

from loadtest.profile import OTHER, summarise

STACKS = """\
_worker (concurrent/futures/thread.py:83);run (service/models/runner.py:109);predict_proba (sklearn/svm/_base.py:593) 30
handle (fastapi/routing.py:381);predict (service/http/routes/inference.py:88);validate (pydantic/main.py:10) 5
handle (fastapi/routing.py:381);predict (service/http/routes/inference.py:88) 7
run_forever (asyncio/base_events.py:600) 4
Thread.run (threading.py:982) 2
not a stack line
"""


def test_each_sample_counts_once_for_its_innermost_layer() -> None:
    total, groups, leaves = summarise(STACKS)
    assert total == 48 == sum(groups.values())
    assert groups["model: scikit-learn predict_proba"] == 30  # the model wins over the runner
    assert groups["pydantic validation and serialisation"] == 5
    assert groups["pickserve: predict route"] == 7
    assert groups["asyncio event loop"] == 4 and groups[OTHER] == 2
    assert leaves[0] == ("predict_proba (sklearn/svm/_base.py:593)", 30)
