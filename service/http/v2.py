"""Open Inference Protocol v2 (KServe, Triton): metadata, request decoding, responses."""

from __future__ import annotations

from typing import Any

import numpy as np

from service.http.schemas import V2Tensor
from service.models.pool_file import FloatMatrix


def metadata(name: str, n_features: int, class_names: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "versions": ["1"],
        "platform": "pickserve",
        "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, n_features]}],
        "outputs": [
            {"name": "predicted_class", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(class_names)]},
            {"name": "predicted_class_name", "datatype": "BYTES", "shape": [-1]},
        ],
    }


# The values each OIP v2 datatype can hold: integers in range, or floats within the type's
# finite range (a value the declared type cannot represent is refused, not cast).
DATATYPE_RANGES = {
    "INT32": (-(2.0**31), 2.0**31 - 1),
    "INT64": (-(2.0**63), 2.0**63 - 1),
    "FP32": (-float(np.finfo(np.float32).max), float(np.finfo(np.float32).max)),
}


def check_datatype(name: str, datatype: str, flat: FloatMatrix) -> None:
    """ValueError unless every value fits the tensor's declared `datatype`."""
    if datatype in ("INT32", "INT64") and not np.all(flat == np.round(flat)):
        raise ValueError(f"input {name!r} is {datatype} but holds values that are not integers")
    low, high = DATATYPE_RANGES.get(datatype, (-np.inf, np.inf))
    if flat.size and (flat.min() < low or flat.max() > high):
        raise ValueError(f"input {name!r} holds values outside the range of {datatype}")


def instances(tensor: V2Tensor, n_features: int) -> list[list[float]]:
    """Rows of the input tensor; its declared shape must match its data and the pool, and
    its values its declared datatype."""
    try:
        flat = np.asarray(tensor.data, dtype=np.float64).ravel()
    except (TypeError, ValueError, OverflowError) as error:
        raise ValueError(f"input {tensor.name!r} holds ragged or non-numeric data") from error
    check_datatype(tensor.name, tensor.datatype, flat)
    shape = tensor.shape if len(tensor.shape) == 2 else [1, tensor.shape[0]]
    if shape[1] != n_features or shape[0] < 1 or shape[0] * shape[1] != flat.size:
        raise ValueError(
            f"input {tensor.name!r}: shape {tensor.shape} with {flat.size} values does not "
            f"make rows of {n_features} features"
        )
    rows: list[list[float]] = flat.reshape(shape).tolist()
    return rows


def response(
    name: str,
    request_id: str | None,
    probabilities: FloatMatrix,
    class_names: list[str],
    served: str,
    version: int | None,
    item_ids: list[str] | None,
    failed_over_from: str | None = None,
) -> dict[str, Any]:
    n_rows, n_classes = probabilities.shape
    predicted = probabilities.argmax(axis=1).tolist()
    parameters: dict[str, Any] = {"served_model": served}
    if failed_over_from is not None:
        parameters["failed_over_from"] = failed_over_from
    if version is not None:
        parameters["selection_version"] = version
    if item_ids is not None:
        parameters["item_ids"] = item_ids
    return {
        "model_name": name,
        "model_version": "1",
        "id": request_id,
        "parameters": parameters,
        "outputs": [
            {"name": "predicted_class", "datatype": "INT64", "shape": [n_rows],
             "data": predicted},
            {"name": "probabilities", "datatype": "FP64", "shape": [n_rows, n_classes],
             "data": probabilities.ravel().tolist()},
            {"name": "predicted_class_name", "datatype": "BYTES", "shape": [n_rows],
             "data": [class_names[c] for c in predicted]},
        ],
    }  # fmt: skip
