"""The large pool: 1,000 scikit-learn candidates of eight families, each trained on its own
slice of one generated data set, for the large-pool mode's replays.

A team's model repository holds models "developed under different hypotheses": other
families, other features, other training rows, some trained on noisy labels. Each
candidate here is such a hypothesis, drawn from its own seed (`recipe(i)`), so that one
candidate can be rebuilt alone and compared with the recorded matrix:

- the data: `make_classification` (16 features, 5 classes, 9,000 rows), fixed by `SEED`;
  the first 4,000 rows are the training rows, the other 5,000 the stream;
- per candidate: a family (logistic regression, decision tree, k-NN, naive Bayes, LDA,
  QDA, a small random forest, small extra trees), its setting, a random subset of the
  features (4 to 16), of the training rows (150 to 4,000), and a share of flipped labels
  (none for most; up to 40 %).

The stream's prediction matrix (5,000 × 1,000) and its labels are what replays need
(`predictions`). `write_pool` writes the fitted candidates and a pool file for the service
(`benchmarks/large_pool_service.py` serves them in the large-pool mode).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SEED = 20261204
N_CANDIDATES = 1000
N_TRAIN = 4000
N_STREAM = 5000
N_FEATURES = 16
N_CLASSES = 5
FAMILIES = ("logreg", "tree", "knn", "naive-bayes", "lda", "qda", "forest", "extra-trees")


@dataclass(frozen=True)
class Recipe:
    """How candidate `index` is made: its family, setting, features, rows and label noise."""

    index: int
    family: str
    setting: float
    features: tuple[int, ...]
    rows: int
    flipped: float

    @property
    def name(self) -> str:
        return f"{self.family}-{self.index:04d}"


def recipe(index: int) -> Recipe:
    """Candidate `index`'s recipe, from its own seed: the same on every machine."""
    rng = np.random.default_rng([SEED, index])
    family = FAMILIES[index % len(FAMILIES)]
    setting = {
        "logreg": lambda: float(10.0 ** rng.uniform(-3, 2)),  # C
        "tree": lambda: float(rng.integers(1, 13)),  # max depth
        "knn": lambda: float(rng.integers(1, 40)),  # neighbours
        "naive-bayes": lambda: float(10.0 ** rng.uniform(-9, -1)),  # var smoothing
        "lda": lambda: float(rng.uniform(0.0, 1.0)),  # shrinkage
        "qda": lambda: float(rng.uniform(0.0, 1.0)),  # regularisation
        "forest": lambda: float(rng.integers(2, 13)),  # max depth
        "extra-trees": lambda: float(rng.integers(2, 13)),  # max depth
    }[family]()
    n_features = int(rng.integers(4, N_FEATURES + 1))
    features = tuple(sorted(int(f) for f in rng.choice(N_FEATURES, n_features, replace=False)))
    rows = int(rng.integers(150, N_TRAIN + 1))
    flipped = float(rng.choice([0.0, 0.0, 0.0, 0.1, 0.2, 0.4]))
    return Recipe(index, family, setting, features, rows, flipped)


def dataset() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(training features, training labels, stream features, stream labels)."""
    from sklearn.datasets import make_classification

    features, labels = make_classification(
        n_samples=N_TRAIN + N_STREAM, n_features=N_FEATURES, n_informative=8,
        n_redundant=4, n_classes=N_CLASSES, n_clusters_per_class=2, class_sep=0.9,
        flip_y=0.03, random_state=SEED,
    )  # fmt: skip
    return features[:N_TRAIN], labels[:N_TRAIN], features[N_TRAIN:], labels[N_TRAIN:]


def _estimator(family: str, setting: float, seed: int) -> Any:
    from sklearn.discriminant_analysis import (
        LinearDiscriminantAnalysis,
        QuadraticDiscriminantAnalysis,
    )
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    depth = int(setting)
    return {
        "logreg": lambda: make_pipeline(
            StandardScaler(), LogisticRegression(C=setting, max_iter=500)
        ),
        "tree": lambda: DecisionTreeClassifier(max_depth=depth, random_state=seed),
        "knn": lambda: make_pipeline(StandardScaler(), KNeighborsClassifier(depth)),
        "naive-bayes": lambda: GaussianNB(var_smoothing=setting),
        "lda": lambda: LinearDiscriminantAnalysis(solver="lsqr", shrinkage=setting),
        "qda": lambda: QuadraticDiscriminantAnalysis(reg_param=setting),
        "forest": lambda: RandomForestClassifier(10, max_depth=depth, random_state=seed),
        "extra-trees": lambda: ExtraTreesClassifier(10, max_depth=depth, random_state=seed),
    }[family]()


def fit(made: Recipe, train_x: np.ndarray, train_y: np.ndarray) -> Any:
    """The fitted candidate: a pipeline that keeps its features, then its estimator."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    rng = np.random.default_rng([SEED, made.index, 1])
    rows = rng.choice(N_TRAIN, made.rows, replace=False)
    labels = train_y[rows].copy()
    flip = rng.random(made.rows) < made.flipped
    labels[flip] = (labels[flip] + rng.integers(1, N_CLASSES, int(flip.sum()))) % N_CLASSES
    keep = ColumnTransformer([("keep", "passthrough", list(made.features))])
    model = Pipeline([("features", keep),
                      ("model", _estimator(made.family, made.setting, made.index))])  # fmt: skip
    return model.fit(train_x[rows], labels)


def predictions(indices: range | list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The stream's predicted classes of the candidates `indices` (stream × candidates, int8)
    and the stream's true classes."""
    train_x, train_y, stream_x, stream_y = dataset()
    columns = [fit(recipe(i), train_x, train_y).predict(stream_x) for i in indices]
    return np.stack(columns, axis=1).astype(np.int8), stream_y.astype(np.int8)


def write_pool(folder: Path, count: int = N_CANDIDATES) -> Path:
    """The first `count` candidates, fitted, as joblib files in `folder`/models and a pool
    file beside them (kept: a folder that already holds them is reused)."""
    import joblib

    pool_file = folder / "pool.yaml"
    names = [recipe(i).name for i in range(count)]
    lines = [f"  - {{name: {name}, sklearn: models/{name}.joblib}}\n" for name in names]
    text = (f"n_features: {N_FEATURES}\nclasses: {N_CLASSES}\ncandidates:\n"
            + "".join(lines))  # fmt: skip
    if pool_file.is_file() and pool_file.read_text() == text:
        return pool_file
    (folder / "models").mkdir(parents=True, exist_ok=True)
    train_x, train_y, _, _ = dataset()
    for index, name in enumerate(names):
        joblib.dump(fit(recipe(index), train_x, train_y), folder / "models" / f"{name}.joblib")
    pool_file.write_text(text)
    return pool_file
