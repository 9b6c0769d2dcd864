"""What the bridge sends Label Studio and reads back: the labeling config, a task,
the class an annotation chose. Pure functions."""

from __future__ import annotations

import base64
import io
import re
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np


def label_config(classes: list[str], image_shape: list[int] | None) -> str:
    """Choices over the pool's classes, about the item shown as an image or a table."""
    shown = ('<Image name="item" value="$image" zoom="true"/>' if image_shape
             else '<Table name="item" value="$features"/>')  # fmt: skip
    choices = "".join(f"<Choice value={quoteattr(name)}/>" for name in classes)
    return (f'<View>{shown}<Choices name="label" toName="item" choice="single" '
            f'showInline="true">{choices}</Choices></View>')  # fmt: skip


def png_data_url(instance: list[float], image_shape: list[int]) -> str:
    """The instance as a PNG (dark = high), scaled up so annotators can see it."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    values = np.asarray(instance, dtype=np.float64).reshape(image_shape)
    scale = max(1, 256 // max(image_shape[0], image_shape[1]))
    pixels = np.kron(values, np.ones((scale, scale, 1) if values.ndim == 3 else (scale, scale)))
    if pixels.ndim == 3:  # RGB: imsave wants values in 0..1
        low, high = float(pixels.min()), float(pixels.max())
        pixels = (pixels - low) / ((high - low) or 1.0)
    buffer = io.BytesIO()
    pyplot.imsave(buffer, pixels, cmap="gray_r", format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def task_payload(
    item: dict[str, Any], classes: list[str], image_shape: list[int] | None, show: bool
) -> dict[str, Any]:
    """The Label Studio task for a queried item: its id, the item as an image or a table,
    and the candidates' predictions only when `show` (and pickserve gave them)."""
    data: dict[str, Any] = {"item_id": item["item_id"]}
    if image_shape:
        data["image"] = png_data_url(item["instance"], image_shape)
    else:
        data["features"] = {f"feature {i}": v for i, v in enumerate(item["instance"])}
    task: dict[str, Any] = {"data": data}
    if show and item.get("predictions"):
        task["predictions"] = [
            {"model_version": model, "result": [{
                "from_name": "label", "to_name": "item", "type": "choices",
                "value": {"choices": [classes[predicted]]}}]}
            for model, predicted in item["predictions"].items() if predicted >= 0
        ]  # fmt: skip
    return task


def chosen_class(result: list[dict[str, Any]], classes: list[str]) -> str | None:
    """The class an annotation chose (None: it chose none of the pool's classes)."""
    for region in result:
        choices = region.get("value", {}).get("choices") or []
        if region.get("from_name") == "label" and choices and choices[0] in classes:
            return str(choices[0])
    return None


ANNOTATOR_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{1,40}$")


def annotator_id(annotation: dict[str, Any]) -> int | None:
    """The Label Studio user who made an annotation (`completed_by`: an id, or in some
    payloads the user as an object)."""
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        who = who.get("id")
    return int(who) if isinstance(who, int) or (isinstance(who, str) and who.isdigit()) else None


def annotator_name(user_id: int, user: dict[str, Any] | None) -> str:
    """The annotator as pickserve's labeler: their e-mail address when it is a plain one
    of 40 characters at most (pickserve adds '@' and the bridge token's name), else
    `user{id}`."""
    email = (user or {}).get("email") or ""
    return email if ANNOTATOR_PATTERN.match(email) else f"user{user_id}"


def annotations_made(annotations: list[dict[str, Any]]) -> int:
    """A task's annotations that are answers (a skip, `was_cancelled`, is none)."""
    return sum(not a.get("was_cancelled") for a in annotations)
