"""`make demo`: drive the shifted "today" stream and a simulated labeler against a running
pickserve, with a live view, until the served model is the best one on the stream.

The labeler answers from ground truth. `drive` is the loop itself; the integration tests
run the same loop.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from service.models.demo_data import STREAMS, DemoData, ensure_demo
from service.models.pool_file import read_pool_spec


@dataclass
class DemoProgress:
    items_served: int = 0
    labels_posted: int = 0
    served_models_seen: list[str] = field(default_factory=list)
    selection: dict[str, Any] = field(default_factory=dict)

    def saw(self, model: str) -> None:
        if not self.served_models_seen or self.served_models_seen[-1] != model:
            self.served_models_seen.append(model)


def drive(
    client: httpx.Client,
    demo: DemoData,
    target: str,
    max_items: int = 20_000,
    batch_size: int = 16,
    seed: int = 0,
    on_step: Callable[[DemoProgress], None] | None = None,
    confidence: float = 0.9,
    stream: str = "today",
    labels_per_batch: int = 50,
) -> DemoProgress:
    """Send the named demo stream (reshuffled each pass) in batches of `batch_size`; after
    each batch the labeler leases up to `labels_per_batch` queued items and labels them
    from ground truth (a labeler slower than the traffic leases few). Stops once `target`
    is served with posterior >= confidence (or after max_items)."""
    rng = np.random.default_rng(seed)
    progress = DemoProgress()
    truth: dict[str, int] = {}
    features, labels = demo.stream(stream)
    while progress.items_served < max_items:
        order = rng.permutation(len(labels))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            answer = client.post("/v1/predict", json={"instances": features[rows].tolist()})
            answer.raise_for_status()
            body = answer.json()
            progress.saw(body["model"])
            progress.items_served += len(rows)
            for prediction, row in zip(body["predictions"], rows, strict=True):
                truth[prediction["item_id"]] = int(labels[row])
            _label_queue(client, truth, progress, labels_per_batch)
            if on_step is not None:
                on_step(progress)
            if _settled(progress.selection, target, confidence):
                progress.saw(target)
                return progress
            if progress.items_served >= max_items:
                break
    return progress


def _settled(selection: dict[str, Any], target: str, confidence: float) -> bool:
    served = selection.get("served_model")
    return served == target and selection["posterior"][target] >= confidence


def _label_queue(
    client: httpx.Client, truth: dict[str, int], progress: DemoProgress, limit: int
) -> None:
    queued = client.get("/v1/queries", params={"limit": limit})
    queued.raise_for_status()
    labels = [
        {"item_id": item["item_id"], "label": truth[item["item_id"]]}
        for item in queued.json()["items"]
        if item["item_id"] in truth
    ]
    if labels:
        posted = client.post("/v1/feedback", json={"labels": labels})
        if posted.status_code not in (200, 404, 409):
            posted.raise_for_status()
        progress.labels_posted += sum(r["outcome"] == "accepted" for r in posted.json()["results"])
    selection = client.get("/v1/selection")
    selection.raise_for_status()
    progress.selection = selection.json()


def pool_mismatch(client: httpx.Client, demo: DemoData) -> str | None:
    """Why the service is not serving the demo pool, or None when it is."""
    answer = client.get("/v1/pool")
    if answer.status_code == 404:
        return "it does not describe its pool (GET /v1/pool): is it pickserve?"
    answer.raise_for_status()
    served = answer.json()
    demo_spec = read_pool_spec(demo.pool_file)
    names = [c["name"] for c in served["candidates"]]
    if (
        names == [c.name for c in demo_spec.candidates]
        and served["n_features"] == demo_spec.n_features
        and served["classes"] == demo_spec.class_names
    ):
        return None
    shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    return (
        f"it serves another pool (candidates {shown}; {served['n_features']} features; "
        f"classes {', '.join(served['classes'][:6])}), not the demo pool. `make demo` drives "
        "only the demo pool: start it with `make run` (no POOL=), or label your own pool's "
        "items with GET /v1/queries and POST /v1/feedback (README: 'Bring your own pool')"
    )


def _view(progress: DemoProgress, target: str) -> Any:
    from rich.table import Table

    selection = progress.selection
    table = Table(title=f"pickserve demo: items {progress.items_served}, "
                  f"labels {progress.labels_posted}, target {target}")  # fmt: skip
    table.add_column("model")
    table.add_column("posterior", justify="right")
    table.add_column("")
    for name, weight in sorted(selection.get("posterior", {}).items(), key=lambda kv: -kv[1]):
        mark = "served" if name == selection.get("served_model") else ""
        table.add_row(name, f"{weight:.4f}", mark)
    swaps = selection.get("swaps", [])
    table.caption = (
        " → ".join([swaps[0]["from_model"], *(s["to_model"] for s in swaps)])
        if swaps
        else "no swap yet"
    )
    return table


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m service.tools.demo", description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument(
        "--state-dir", type=Path, default=Path(os.environ.get("PICKSERVE_STATE_DIR", "var"))
    )
    parser.add_argument("--max-items", type=int, default=20_000)
    parser.add_argument("--stream", choices=STREAMS, default="today",
                        help="the stream to send: today (noise, occlusion), moved (the camera "
                        "moved a pixel), blurred")  # fmt: skip
    parser.add_argument("--labels-per-batch", type=int, default=50, metavar="N",
                        help="items the simulated labeler leases and labels after each batch "
                        "of 16 predictions (default 50: all it gets; 2: a labeler slower than "
                        "the traffic, where selector pool-based's order pays)")  # fmt: skip
    parser.add_argument("--then", choices=STREAMS,
                        help="once the best on --stream is served, switch to this stream (a "
                        "drift: pickserve should notice and start a new round)")  # fmt: skip
    return parser


def main() -> int:
    parser = _parser()
    args = parser.parse_args()
    if not 1 <= args.labels_per_batch <= 500:
        parser.error("--labels-per-batch must be between 1 and 500 (GET /v1/queries' limit)")
    demo = ensure_demo((args.state_dir / "demo-pool").resolve())
    try:
        with httpx.Client(base_url=args.url, timeout=30) as client:
            mismatch = pool_mismatch(client, demo)
            if mismatch is not None:
                print(f"error: the service at {args.url}: {mismatch}", file=sys.stderr)
                return 2
            for stream in [args.stream] + ([args.then] if args.then else []):
                if not _run_phase(client, demo, stream, args):
                    return 1
    except httpx.HTTPError as error:
        print(f"error: cannot talk to pickserve at {args.url}: {error} (is `make run` up?)",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


def _run_phase(client: httpx.Client, demo: DemoData, stream: str, args: argparse.Namespace) -> bool:
    """Send `stream` and label until its best is served, live on the console; True when
    the best is served."""
    from rich.console import Console
    from rich.live import Live

    console = Console()
    started, target = time.monotonic(), demo.best_on(stream)
    selector = client.get("/v1/selection").json().get("selector", "modelpicker")
    console.print(f"stream {stream!r}: its best candidate is {target}; the "
                  f"service's selector is {selector}")  # fmt: skip
    with Live(console=console) as live:

        def show(progress: DemoProgress) -> None:
            live.update(_view(progress, target))

        progress = drive(client, demo, target, args.max_items, stream=stream, on_step=show,
                         labels_per_batch=args.labels_per_batch)  # fmt: skip
    served = progress.selection.get("served_model")
    console.print(f"served model: {served} after {progress.items_served} items, "
                  f"{progress.labels_posted} labels, "
                  f"{time.monotonic() - started:.0f} s; clients saw "
                  f"{' → '.join(progress.served_models_seen)}; round "
                  f"{progress.selection.get('round')}")  # fmt: skip
    return served == target


if __name__ == "__main__":
    sys.exit(main())
