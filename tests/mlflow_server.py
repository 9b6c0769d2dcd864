"""A real MLflow tracking server for tests: `mlflow server` (installed with the project's
dev extra) on a free port, a SQLite backend and a local artifact folder, so that it can be
stopped and started again with its data; and helpers that register models in it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.redis_server import free_port


class MlflowServer:
    def __init__(self, folder: Path) -> None:
        binary = shutil.which("mlflow") or str(Path(sys.executable).parent / "mlflow")
        if not Path(binary).exists():
            raise RuntimeError("mlflow is not installed: run `make test`, which installs it")
        self.binary, self.folder, self.port = binary, folder, free_port()
        self.process: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [
            self.binary, "server", "--host", "127.0.0.1", "--port", str(self.port),
            "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
            "--artifacts-destination", str(self.folder / "artifacts"), "--workers", "1",
        ]  # fmt: skip
        log = (self.folder / "server.log").open("ab")
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder,
            start_new_session=True,  # its workers stop with it (stop() signals the group)
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"mlflow server did not answer /health: {self.log_tail()}")

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None

    def log_tail(self) -> str:
        path = self.folder / "server.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def register(url: str, model: Any, name: str, features: Any, signature: bool = True) -> str:
    """Log a fitted scikit-learn model and register it as a version of `name`; returns the
        version. Its requirements are given, so MLflow does not inspect the environment; MLflow
    saves it with skops, trusting the scikit-learn types the model holds."""
    import mlflow
    import mlflow.sklearn
    import skops.io
    from mlflow.models import infer_signature

    mlflow.set_tracking_uri(url)
    mlflow.set_experiment("registered-models")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model, name="model", registered_model_name=name,
            signature=infer_signature(features, model.predict_proba(features)) if signature
            else None,
            pip_requirements=["scikit-learn"], input_example=None,
            skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(model)),
        )  # fmt: skip
    return str(info.registered_model_version)


def register_pyfunc(url: str, estimator: Any, name: str, features: Any, classes: int) -> str:
    """`estimator` as a pyfunc model (`predict` gives its class probabilities), registered
    as a version of `name`, with a signature of `classes` output columns."""
    import mlflow
    import mlflow.pyfunc
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from tests.fixtures.pyfunc_models import ClassProbabilities

    mlflow.set_tracking_uri(url)
    mlflow.set_experiment("registered-models")
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype("float64"), (-1, features.shape[1]))]),
        outputs=Schema([TensorSpec(np.dtype("float64"), (-1, classes))]),
    )
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model", python_model=ClassProbabilities(estimator),
            registered_model_name=name, signature=signature, pip_requirements=["scikit-learn"],
        )  # fmt: skip
    return str(info.registered_model_version)
