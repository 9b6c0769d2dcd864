"""Candidates from an MLflow model registry: a pool entry `{name: fraud-v3, mlflow:
"models:/fraud/3"}` (a version) or `"models:/fraud@challenger"` (an alias, resolved when the
candidate is loaded), from the tracking server `PICKSERVE_MLFLOW_TRACKING_URI` or
`MLFLOW_TRACKING_URI` names.

A version is loaded through MLflow's own loaders: its scikit-learn flavor when it has one
(the estimator's `predict_proba` and `classes_` are used as for a joblib file), else its
pyfunc flavor, whose `predict(X)` must return one row per item of class probabilities,
one column per pool class in the pool's order (an array or a DataFrame of shape
(items, classes)). A version's signature, when it has one, is checked first: its inputs
must take `n_features` columns (or a tensor of that width), and a pyfunc's outputs, when
declared, one column per class.

Every failure is one line, without the tracking URI's credentials: the registered model
or version unknown, the alias not set, the registry unreachable, the signature against the
pool, MLflow not installed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

TRACKING_URI_VARIABLES = ("PICKSERVE_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI")
MLFLOW_URI_PATTERN = (
    r"^models:/[A-Za-z0-9][A-Za-z0-9_.-]*(/[1-9][0-9]{0,8}|@[A-Za-z_][A-Za-z0-9_-]*)$"
)
_URI = re.compile(MLFLOW_URI_PATTERN)
# MLflow's client retries a refused connection for minutes by default: a registry that is
# down should be one line at start-up (or a 422) in seconds, and the journal's writer
# retries on its own schedule (service.tracking).
_CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


NOT_CONFIGURED = (
    "no MLflow tracking server is configured: set PICKSERVE_MLFLOW_TRACKING_URI "
    "(or MLFLOW_TRACKING_URI)"
)


class RegistryError(Exception):
    """Why a registry candidate cannot be served, in one line."""


@dataclass(frozen=True)
class RegistryRef:
    """A registered model version: what `models:/name/version` or `models:/name@alias`
    resolved to when it was loaded."""

    model: str
    version: str
    run_id: str | None
    alias: str | None = None

    @property
    def uri(self) -> str:
        return f"models:/{self.model}/{self.version}"

    def describe(self) -> str:
        via = f" @{self.alias}" if self.alias else ""
        run = f", run {self.run_id[:8]}" if self.run_id else ""
        return f"{self.model} v{self.version}{via}{run}"


def tracking_uri() -> str | None:
    for variable in TRACKING_URI_VARIABLES:
        value = os.environ.get(variable, "").strip()
        if value:
            return value
    return None


def use_tracking_uri(uri: str | None) -> None:
    """Make `uri` (the setting) the tracking server of this process and those it starts."""
    if uri:
        os.environ[TRACKING_URI_VARIABLES[0]] = uri


def without_credentials(uri: str) -> str:
    """The tracking URI as it may be shown: no user, password or query (a token)."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "the tracking URI"
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def client() -> Any:
    """An MlflowClient for the configured tracking server (which also serves the registry)."""
    uri = tracking_uri()
    if uri is None:
        raise RegistryError(NOT_CONFIGURED)
    for variable, value in _CLIENT_DEFAULTS.items():
        os.environ.setdefault(variable, value)
    try:
        import mlflow  # the registry support is an optional install
        from mlflow import MlflowClient
    except ImportError:
        raise RegistryError(
            "MLflow is not installed where the pool is loaded: pip install 'pickserve[mlflow]'"
        ) from None
    mlflow.set_tracking_uri(uri)  # MLflow's own loaders read the process-wide URIs
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def parse(uri: str) -> tuple[str, str | None, str | None]:
    """`models:/name/3` -> (name, "3", None); `models:/name@alias` -> (name, None, alias)."""
    if not _URI.match(uri):
        raise RegistryError(
            f"{uri!r} is not models:/<registered model>/<version> or models:/<model>@<alias>"
        )
    body = uri.removeprefix("models:/")
    if "@" in body:
        name, alias = body.split("@", 1)
        return name, None, alias
    name, version = body.rsplit("/", 1)
    return name, version, None


def _explain(error: Exception, model: str, version: str | None, alias: str | None) -> str:
    """An MLflow client error as one line a person can act on."""
    code = getattr(error, "error_code", None)
    text = " ".join(str(error).split())
    if code == "RESOURCE_DOES_NOT_EXIST":
        if "Registered Model" in text:
            return f"the registry has no registered model {model!r}"
        return f"registered model {model!r} has no version {version}"
    if code == "INVALID_PARAMETER_VALUE" and alias is not None and "alias" in text.lower():
        return f"registered model {model!r} has no alias @{alias} set"
    if code == "PERMISSION_DENIED" or code == "UNAUTHENTICATED":
        return f"the registry refused access to {model!r} ({code})"
    where = without_credentials(tracking_uri() or "")
    if "Max retries exceeded" in text or "Connection" in text or "timed out" in text.lower():
        return f"the MLflow registry at {where} is unreachable"
    return f"the MLflow registry at {where} answered {code or type(error).__name__}"


def _whose_version(registry: Any, name: str, version: str, reason: str) -> str:
    """MLflow answers a version of a model it does not know as a missing version: ask
    whether the model itself is there."""
    try:
        registry.get_registered_model(name)
    except Exception as error:
        return _explain(error, name, None, None)
    return reason


def resolve(uri: str, registry: Any | None = None) -> RegistryRef:
    """The version a `models:/` URI names now (an alias is resolved on this call)."""
    name, version, alias = parse(uri)
    registry = registry or client()
    try:
        if alias is not None:
            found = registry.get_model_version_by_alias(name, alias)
        else:
            found = registry.get_model_version(name, version)
    except Exception as error:  # MlflowException and its REST and connection kinds
        reason = _explain(error, name, version, alias)
        if version is not None and reason.endswith(f"has no version {version}"):
            reason = _whose_version(registry, name, version, reason)
        raise RegistryError(reason) from None
    return RegistryRef(name, str(found.version), found.run_id or None, alias)


def versions_tagged(model: str, key: str, value: str) -> list[str]:
    """The versions of `model` carrying the tag key=value, oldest first."""
    registry = client()
    query = f"name = '{model}' and tags.`{key}` = '{value}'"
    try:
        found = registry.search_model_versions(query)
    except Exception as error:
        raise RegistryError(_explain(error, model, None, None)) from None
    versions = sorted({int(v.version) for v in found})
    if not versions:
        raise RegistryError(f"registered model {model!r} has no version tagged {key}={value}")
    return [str(v) for v in versions]


def _signature_width(schema: Any) -> int | None:
    """How many columns a signature schema declares: a tensor's last dimension, or the
    number of named columns; None when it says nothing checkable."""
    if schema is None:
        return None
    inputs = list(getattr(schema, "inputs", []) or [])
    if len(inputs) == 1 and hasattr(inputs[0], "shape"):
        shape = tuple(inputs[0].shape or ())
        return int(shape[-1]) if len(shape) == 2 and int(shape[-1]) > 0 else None
    return len(inputs) or None


def check_signature(info: Any, n_features: int, n_classes: int, sklearn: bool) -> None:
    """The version's signature against the pool: its inputs take n_features columns; a
    pyfunc's declared outputs give one column per class (a scikit-learn model's outputs
    describe `predict`, whose classes `classes_` is checked against instead)."""
    signature = getattr(info, "signature", None)
    if signature is None:
        return
    width = _signature_width(signature.inputs)
    if width is not None and width != n_features:
        raise RegistryError(
            f"its signature takes {width} input columns, the pool has n_features={n_features}"
        )
    outputs = _signature_width(signature.outputs)
    if not sklearn and outputs is not None and outputs != n_classes:
        raise RegistryError(
            f"its signature returns {outputs} columns, the pool has {n_classes} classes "
            "(a pyfunc candidate returns one probability per class)"
        )


class PyfuncProbabilities:
    """A pyfunc model seen as a classifier: `predict(X)` returns the class probabilities."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def predict_proba(self, features: Any) -> Any:
        return np.asarray(self.model.predict(np.asarray(features)), dtype=np.float64)


def checked(uri: str, n_features: int, n_classes: int) -> tuple[RegistryRef, bool]:
    """The version a `models:/` URI names and whether it has the scikit-learn flavor, its
    signature checked against the pool: from the registry's records and the version's
    MLmodel file alone (nothing of the model is loaded or run)."""
    ref = resolve(uri, client())
    import mlflow

    try:  # the alias resolved once: the info and the model are the same version
        info = mlflow.models.get_model_info(ref.uri)
    except Exception as error:
        raise RegistryError(_explain(error, ref.model, ref.version, None)) from None
    sklearn = "sklearn" in (info.flavors or {})
    check_signature(info, n_features, n_classes, sklearn)
    return ref, sklearn


def load(uri: str, n_features: int, n_classes: int) -> tuple[Any, RegistryRef]:
    """The model a `models:/` URI names, loaded with MLflow's scikit-learn flavor or pyfunc,
    after its signature is checked; and the version it resolved to."""
    import mlflow

    ref, sklearn = checked(uri, n_features, n_classes)
    pinned = ref.uri
    try:
        if sklearn:
            import mlflow.sklearn

            return mlflow.sklearn.load_model(pinned), ref
        import mlflow.pyfunc

        return PyfuncProbabilities(mlflow.pyfunc.load_model(pinned)), ref
    except RegistryError:
        raise
    except Exception as error:  # its message may quote the artifact: the type alone
        raise RegistryError(
            f"MLflow could not load {ref.describe()} ({type(error).__name__})"
        ) from None
