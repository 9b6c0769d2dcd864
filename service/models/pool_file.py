"""The candidate pool: a YAML file naming each candidate and how to load it.

```yaml
n_features: 64
classes: 10                 # or a list of class names
initial: logreg             # served before any label (default: the first candidate)
candidates:
  - {name: logreg, sklearn: models/logreg.joblib}     # joblib (or .skops) file
  - {name: mlp, onnx: models/mlp.onnx}                 # onnxruntime
  - {name: custom, python: my_pkg.models:make_model}   # factory() -> has predict_proba
  - {name: fraud-v3, mlflow: "models:/fraud/3"}        # MLflow registry (or models:/fraud@alias)
mlflow_pool: {model: fraud, aliases: [champion, challenger]}  # optional: fraud-champion, ...
# or {model: fraud, tag: "stage=candidate"}: every version with that tag (fraud-v3, fraud-v4)
```
Model files are named relative to the YAML file and must resolve (symlinks followed) to a
file below its folder, the pool folder: a path outside it is refused without a word on
whether it exists. A `python:` module must be found in the pool folder or in the folders
of an optional `python_path:` list (relative to that folder); installed packages only with
`allow_installed_modules: true` in the pool file. Each candidate is loaded and probed once
(a batch of zeros must give one probability per class): anything that fails stops start-up
with one line naming the candidate, its file and the reason (never the file's contents).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import numpy as np
import numpy.typing as npt
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from service.models import registry
from service.models.registry import MLFLOW_URI_PATTERN, RegistryError

FloatMatrix = npt.NDArray[np.float64]
NO_CLASS = -1  # a row whose class probabilities are not finite: no label equals it
NOT_EVALUATED = -2  # a candidate a large-pool shadow batch did not run on that row


class PoolLoadError(RuntimeError):
    """The pool file or one of its candidates cannot be loaded. The message is one line
    naming the pool file, the candidate and its source, and the reason."""


def one_line(error: BaseException) -> str:
    """An exception as `Type: first line of its message`, whitespace collapsed."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__


SERVED_MODEL = "router"  # the name OIP v2 clients use for the served model, never a candidate
CANDIDATE_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
MODEL_PATH_CHARS = 1024  # a model file's path, relative to the pool folder


def _no_nul(path: str | None) -> str | None:
    if path is not None and "\x00" in path:
        raise ValueError("a path holds no NUL character")
    return path


ModelPath = Annotated[
    str, Field(min_length=1, max_length=MODEL_PATH_CHARS), AfterValidator(_no_nul)
]


class CandidateSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        ..., pattern=CANDIDATE_NAME_PATTERN, max_length=64,
        description=f"the candidate's name (not {SERVED_MODEL!r}: that names the served model)",
    )  # fmt: skip
    sklearn: ModelPath | None = Field(
        None, description="joblib or skops file of a fitted estimator, below the pool folder"
    )
    onnx: ModelPath | None = Field(
        None, description="ONNX file (onnxruntime), below the pool folder"
    )
    python: str | None = Field(
        None, pattern=r"^[\w.]+:[\w]+$", max_length=256,
        description="module:factory, the module in the pool folder or python_path",
    )  # fmt: skip
    mlflow: str | None = Field(
        None, pattern=MLFLOW_URI_PATTERN, max_length=300,
        description="a registered model version in MLflow's registry: models:/<name>/<version> "
        "or models:/<name>@<alias> (the tracking server PICKSERVE_MLFLOW_TRACKING_URI or "
        "MLFLOW_TRACKING_URI names)",
    )  # fmt: skip
    prior: float | None = Field(
        None, ge=0, le=1,
        description="an offline score in [0, 1], higher is better (a validation accuracy): "
        "the large-pool mode's first active set of a round ranks candidates by it",
    )  # fmt: skip

    _from_registry_pool: bool = PrivateAttr(False)  # made from `mlflow_pool` when read

    @model_validator(mode="after")
    def exactly_one_source(self) -> CandidateSpec:
        if self.name == SERVED_MODEL:
            raise ValueError(f"{SERVED_MODEL!r} names the served model: choose another name")
        given = [s for s in (self.sklearn, self.onnx, self.python, self.mlflow) if s is not None]
        if len(given) != 1:
            raise ValueError(
                f"candidate {self.name!r}: give exactly one of sklearn, onnx, python, mlflow"
            )
        return self

    @property
    def kind(self) -> str:
        if self.mlflow:
            return "mlflow"
        return "python" if self.python else "onnx" if self.onnx else "sklearn"

    @property
    def source(self) -> str:
        return self.python or self.onnx or self.sklearn or self.mlflow or ""


REGISTERED_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class RegistryPool(BaseModel):
    """`mlflow_pool:` a registered model's versions as candidates, those its `aliases`
    point at (candidate `{model}-{alias}`, the alias resolved when it is loaded), or every
    version with the `tag` `key=value` when the pool file is read (candidate
    `{model}-v{version}`). They come before the file's own `candidates`."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., pattern=REGISTERED_NAME, max_length=128)
    aliases: (
        list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$", max_length=64)]] | None
    ) = Field(None, min_length=1, max_length=1000)
    tag: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.-]+=[A-Za-z0-9_.: -]*$", max_length=256,
        description="key=value: every version carrying that tag",
    )  # fmt: skip
    exclude: list[str] = Field(
        default_factory=list, max_length=1000,
        description="candidates of it removed at run time (pickserve writes these)",
    )  # fmt: skip

    @model_validator(mode="after")
    def one_selection(self) -> RegistryPool:
        if (self.aliases is None) == (self.tag is None):
            raise ValueError("mlflow_pool: give exactly one of aliases, tag")
        return self

    def entries(self) -> list[dict[str, str]]:
        """The candidates it names now (a tag asks the registry)."""
        if self.aliases is not None:
            named = [(f"{self.model}-{a}", f"models:/{self.model}@{a}") for a in self.aliases]
        else:
            key, value = str(self.tag).split("=", 1)
            versions = registry.versions_tagged(self.model, key, value)
            named = [(f"{self.model}-v{v}", f"models:/{self.model}/{v}") for v in versions]
        return [{"name": n, "mlflow": u} for n, u in named if n not in self.exclude]


class PoolSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_features: int = Field(..., ge=1, le=1_000_000)
    classes: int | list[str] = Field(..., description="number of classes, or their names")
    initial: str | None = None
    image_shape: list[int] | None = Field(
        None, min_length=2, max_length=3,
        description="how a person sees an instance: [height, width] (grey) or [height, "
        "width, 3] (RGB), row-major; absent: a table of features",
    )  # fmt: skip
    python_path: list[str] = Field(
        default_factory=list, max_length=64,
        description="folders searched for `python:` modules, relative to the pool file's "
        "folder (which is always searched first)",
    )  # fmt: skip
    allow_installed_modules: bool = Field(
        False,
        description="`python:` modules may also come from the installed packages (by default "
        "only from the pool folder and python_path)",
    )
    mlflow_pool: RegistryPool | None = Field(
        None, description="a registered model's versions in MLflow's registry as candidates"
    )
    candidates: list[CandidateSpec] = Field(..., min_length=2, max_length=1000)

    @model_validator(mode="after")
    def consistent(self) -> PoolSpec:
        names = [c.name for c in self.candidates]
        if len(set(names)) != len(names):
            raise ValueError("candidate names must be unique")
        if self.initial is not None and self.initial not in names:
            raise ValueError(f"initial model {self.initial!r} is not a candidate")
        if len(self.class_names) < 2:
            raise ValueError("a pool needs at least 2 classes")
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError("class names must be unique")
        if self.image_shape is not None:
            size = int(np.prod(self.image_shape))
            if size != self.n_features or min(self.image_shape) < 1:
                raise ValueError(f"image_shape {self.image_shape} does not hold n_features")
            if len(self.image_shape) == 3 and self.image_shape[2] != 3:
                raise ValueError("a 3-dimensional image_shape ends with 3 (RGB)")
        return self

    @property
    def class_names(self) -> list[str]:
        if isinstance(self.classes, int):
            return [str(i) for i in range(self.classes)]
        return list(self.classes)


def read_pool_spec(path: Path) -> PoolSpec:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as error:
        raise PoolLoadError(f"{path}: no such pool file") from error
    except OSError as error:
        raise PoolLoadError(f"{path}: cannot read the pool file ({one_line(error)})") from error
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or one_line(error)
        raise PoolLoadError(f"{path}: not valid YAML{where}: {problem}") from error
    expanded = 0
    try:
        if isinstance(data, dict) and data.get("mlflow_pool") is not None:
            entries = RegistryPool.model_validate(data["mlflow_pool"]).entries()
            expanded = len(entries)
            data = {**data, "candidates": [*entries, *(data.get("candidates") or [])]}
        spec = PoolSpec.model_validate(data)
    except RegistryError as error:
        raise PoolLoadError(f"{path}: mlflow_pool: {error}") from None
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'the file'}: {e['msg']}"
            for e in error.errors()
        )
        raise PoolLoadError(f"{path}: not a valid pool file: {problems}") from error
    for candidate in spec.candidates[:expanded]:
        candidate._from_registry_pool = True
    return spec


def write_pool_file(path: Path, spec: PoolSpec) -> None:
    """The pool file of `spec`; the candidates its `mlflow_pool` makes are not written (it
    makes them again when read)."""
    data = spec.model_dump(exclude_none=True)
    data["candidates"] = [c.model_dump(exclude_none=True) for c in spec.candidates
                          if not c._from_registry_pool]  # fmt: skip
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def as_feature_matrix(instances: Sequence[Sequence[float]], n_features: int) -> FloatMatrix:
    """Validate a batch of feature vectors: right length, finite numbers."""
    widths = sorted({len(row) for row in instances})
    if widths != [n_features]:
        raise ValueError(f"each instance needs {n_features} features, got lengths {widths}")
    matrix = np.asarray(instances, dtype=np.float64)
    if not np.all(np.isfinite(matrix)):
        raise ValueError("instances must hold finite numbers (no NaN or infinity)")
    return matrix
