"""The demo pool: ten scikit-learn classifiers on the handwritten digits bundled with
scikit-learn, and a shifted "today" stream on which the model that was best on the
training distribution is not the best.

Instances are 64 pixel values in 0..16. Today's stream is the held-out digits with sensor
noise and a random occluding bar, so the candidates trained on clean digits degrade while
the ones trained on noisy copies hold up. Two more shifts of the same held-out digits have
other leaders: `moved` (the camera moved one pixel to the right, with sensor noise; knn-3
leads by several points, and today's best falls behind) and `blurred` (out of focus;
svc-rbf leads). Built on first use and cached under a folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.models.loaders import LoadedPool, load_pool
from service.models.pool_file import CandidateSpec, PoolSpec, write_pool_file

DEMO_VERSION = 3
STREAMS = ("today", "moved", "blurred")
SEED = 20261122


def shift(features: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Today's data: Gaussian pixel noise plus a 2-pixel-wide occluding bar per image."""
    noisy = features + rng.normal(0.0, 4.0, size=features.shape)
    images = noisy.reshape(-1, 8, 8)
    for image in images:
        if rng.random() < 0.5:
            column = rng.integers(0, 7)
            image[:, column : column + 2] = 0.0
        else:
            row = rng.integers(0, 7)
            image[row : row + 2, :] = 0.0
    return np.clip(images.reshape(-1, 64), 0.0, 16.0)


def moved(features: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The camera moved one pixel to the right (the left column goes dark), with noise."""
    images = np.zeros_like(features.reshape(-1, 8, 8))
    images[:, :, 1:] = features.reshape(-1, 8, 8)[:, :, :-1]
    noisy = images.reshape(-1, 64) + rng.normal(0.0, 3.0, size=features.shape)
    return np.clip(noisy, 0.0, 16.0)


def blurred(features: np.ndarray) -> np.ndarray:
    """Out of focus: each pixel mixed with its four neighbours (weight 0.8)."""
    images = features.reshape(-1, 8, 8)
    neighbours = sum(np.roll(images, step, axis) for step in (1, -1) for axis in (1, 2))
    return np.clip(0.2 * images + 0.2 * neighbours, 0.0, 16.0).reshape(-1, 64)


def _candidates(rng: np.random.Generator) -> list[tuple[str, Any, str]]:
    """(name, estimator, training slice) for the ten candidates."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    seed = int(rng.integers(1 << 31))
    return [
        ("svc-rbf", CalibratedClassifierCV(SVC(random_state=seed), ensemble=False), "clean"),
        ("knn-3", KNeighborsClassifier(3), "clean"),
        ("logreg", make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)), "clean"),
        ("forest", RandomForestClassifier(200, random_state=seed), "clean"),
        ("mlp", MLPClassifier((64,), max_iter=800, random_state=seed), "clean"),
        ("naive-bayes", GaussianNB(), "clean"),
        ("tree", DecisionTreeClassifier(random_state=seed), "clean"),
        ("lda", LinearDiscriminantAnalysis(), "first-half"),
        ("extra-trees-noisy", ExtraTreesClassifier(200, random_state=seed), "noisy"),
        (
            "logreg-noisy",
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
            "noisy",
        ),
    ]


@dataclass(frozen=True)
class DemoData:
    pool_file: Path
    stream_features: np.ndarray  # today's stream
    stream_labels: np.ndarray
    summary: dict[str, Any]
    streams: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (features, labels)

    def stream(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in self.streams:
            raise ValueError(f"unknown demo stream {name!r}; streams: {', '.join(self.streams)}")
        return self.streams[name]

    def best_on(self, name: str) -> str:
        accuracy = self.summary["accuracy"][name]
        return str(max(accuracy, key=lambda n: accuracy[n]))


def _fit(
    folder: Path,
    candidates: list[tuple[str, Any, str]],
    slices: dict[str, tuple[np.ndarray, np.ndarray]],
) -> list[tuple[str, Any]]:
    """Fit each candidate on its training slice and save it as models/{name}.joblib."""
    import joblib

    (folder / "models").mkdir(parents=True, exist_ok=True)
    fitted = []
    for name, estimator, slice_name in candidates:
        estimator.fit(*slices[slice_name])
        joblib.dump(estimator, folder / "models" / f"{name}.joblib")
        fitted.append((name, estimator))
    return fitted


def _build(folder: Path) -> None:
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(SEED)
    digits = load_digits()
    order = rng.permutation(len(digits.target))
    features, labels = digits.data[order], digits.target[order]
    n_train = 1000
    train_x, train_y = features[:n_train], labels[:n_train]
    held_x, held_y = features[n_train:], labels[n_train:]
    slices = {
        "clean": (train_x, train_y),
        "first-half": (train_x[: n_train // 2], train_y[: n_train // 2]),
        "noisy": (np.vstack([train_x, shift(train_x, rng)]), np.concatenate([train_y, train_y])),
    }
    today_x = shift(held_x, rng)
    fitted = _fit(folder, _candidates(rng), slices)
    specs = [CandidateSpec(name=name, sklearn=f"models/{name}.joblib") for name, _ in fitted]
    clean_accuracy = {name: float(np.mean(model.predict(held_x) == held_y))
                      for name, model in fitted}  # fmt: skip
    streams = {"today": today_x, "moved": moved(held_x, rng), "blurred": blurred(held_x)}
    accuracy = {
        stream: {name: float(np.mean(model.predict(x) == held_y)) for name, model in fitted}
        for stream, x in streams.items()
    }
    today_accuracy = accuracy["today"]
    best_clean = max(clean_accuracy, key=lambda n: clean_accuracy[n])
    spec = PoolSpec(
        n_features=64, classes=10, initial=best_clean, image_shape=[8, 8], candidates=specs
    )
    write_pool_file(folder / "pool.yaml", spec)
    for stream, x in streams.items():
        np.savez_compressed(folder / f"{stream}.npz", features=x, labels=held_y)
    summary = {
        "version": DEMO_VERSION,
        "best_on_training_distribution": best_clean,
        "best_today": max(today_accuracy, key=lambda n: today_accuracy[n]),
        "accuracy_training_distribution": clean_accuracy,
        "accuracy_today": today_accuracy,
        "accuracy": accuracy,
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))


def ensure_demo(folder: Path) -> DemoData:
    """Build the demo pool into `folder` unless a current build is cached there."""
    summary_file = folder / "summary.json"
    current = summary_file.is_file() and json.loads(summary_file.read_text()).get("version")
    if current != DEMO_VERSION:
        folder.mkdir(parents=True, exist_ok=True)
        _build(folder)
    streams = {}
    for name in STREAMS:
        with np.load(folder / f"{name}.npz") as stored:
            streams[name] = (stored["features"], stored["labels"].astype(np.int64))
    return DemoData(
        pool_file=folder / "pool.yaml",
        stream_features=streams["today"][0],
        stream_labels=streams["today"][1],
        summary=json.loads(summary_file.read_text()),
        streams=streams,
    )


def load_demo_pool(folder: Path) -> LoadedPool:
    return load_pool(ensure_demo(folder).pool_file)
