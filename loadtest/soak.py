"""A bounded soak: load for a fixed time while a labeler answers the queue; memory of every
replica of the application and the label queue depth are sampled and plotted.

Replica memory is read from /proc (the resident set of each process whose title names a
Serve replica of the application), so it runs on Linux only.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from loadtest.wrk import run_wrk

CHUNK_S = 10.0


def replica_processes(app: str) -> dict[int, str]:
    """The Ray Serve replica processes of `app` on this machine, pid → deployment: Ray
    titles a replica's worker process `ray::ServeReplica:APP:DEPLOYMENT`, with the method
    it is running appended while it runs one (`DEPLOYMENT.handle_request...`)."""
    found: dict[int, str] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
        except OSError:
            continue
        if title.startswith(f"ray::ServeReplica:{app}:"):
            tail = title.split(f"ServeReplica:{app}:")[1].split()[0]
            found[int(proc.name)] = tail.split(".")[0]
    return found


def replica_memory_mib(app: str) -> dict[str, float]:
    """Resident memory of each Ray Serve replica process of `app`, by deployment."""
    memory: dict[str, float] = {}
    for pid, deployment in replica_processes(app).items():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        rss_kib = next(int(x.split()[1]) for x in status.splitlines() if x.startswith("VmRSS"))
        memory[f"{deployment} (pid {pid})"] = rss_kib / 1024
    return memory


def _labeler(url: str, truth: dict[tuple[float, ...], int], stop: threading.Event) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.wait(2.0):
            try:
                items = client.get("/v1/queries", params={"limit": 20}).json()["items"]
                labels = [{"item_id": i["item_id"], "label": truth[tuple(i["instance"])]}
                          for i in items if tuple(i["instance"]) in truth]  # fmt: skip
                if labels:
                    client.post("/v1/feedback", json={"labels": labels})
            except (httpx.HTTPError, KeyError):
                continue  # a slow answer under load: the next pass tries again


def _metric(text: str, prefix: str) -> float:
    return next(float(x.split()[-1]) for x in text.splitlines() if x.startswith(prefix))


def soak(url: str, bodies: list[str], demo: Any, duration_s: float, plot: Path) -> dict[str, Any]:
    features, labels = demo.stream("blurred")
    truth = {tuple(row): int(y) for row, y in zip(features.round(4).tolist(), labels, strict=True)}
    app = url.rstrip("/").rsplit("/", 1)[-1]
    stop = threading.Event()
    labeler = threading.Thread(target=_labeler, args=(url, truth, stop), daemon=True)
    labeler.start()
    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        while time.monotonic() - started < duration_s:
            result = run_wrk(f"{url}/v1/predict", bodies, 8, CHUNK_S, threads=2)
            text = httpx.get(f"{url}/metrics", timeout=30).text
            depth = _metric(text, "pickserve_label_queue_depth ")
            labels_total = _metric(text, 'pickserve_labels_total{outcome="accepted"}')
            elapsed_s = round(time.monotonic() - started, 1)
            samples.append({"t_s": elapsed_s, "rps": round(result.rps, 1),
                            "p99_ms": round(result.p99_ms, 1), "failed": result.failed,
                            "queue_depth": depth, "labels": labels_total,
                            "memory_mib": replica_memory_mib(app)})  # fmt: skip
            print(
                f"soak {samples[-1]['t_s']:.0f} s: {result.rps:.0f} req/s, queue "
                f"{depth:.0f}, memory {sum(samples[-1]['memory_mib'].values()):.0f} MiB"
            )
    finally:
        stop.set()
        labeler.join(timeout=10)
    _plot(samples, plot)
    first, last = samples[0], samples[-1]
    return {"samples": samples, "plot": str(plot),
            "memory_first_mib": round(sum(first["memory_mib"].values()), 1),
            "memory_last_mib": round(sum(last["memory_mib"].values()), 1),
            "queue_depth_max": max(s["queue_depth"] for s in samples),
            "failed": sum(s["failed"] for s in samples)}  # fmt: skip


def _plot(samples: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = np.array([s["t_s"] for s in samples])
    figure, (memory_axis, queue_axis) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    processes = sorted({p for s in samples for p in s["memory_mib"]})
    for process in processes:
        values = [s["memory_mib"].get(process, np.nan) for s in samples]
        memory_axis.plot(times, values, label=process)
    memory_axis.set_ylabel("resident memory, MiB")
    memory_axis.legend(fontsize=7)
    queue_axis.plot(times, [s["queue_depth"] for s in samples], label="label queue depth")
    queue_axis.plot(times, [s["rps"] for s in samples], label="req/s")
    queue_axis.set_xlabel("seconds under load")
    queue_axis.legend(fontsize=7)
    figure.suptitle("pickserve soak: 8 connections, a labeler answering the queue")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
