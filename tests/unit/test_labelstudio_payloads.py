"""The Label Studio bridge's pure parts: the labeling config, task payloads, answers."""

import base64
import io
import xml.etree.ElementTree as ElementTree

import numpy as np
from matplotlib import pyplot

from service.tools.labelstudio.payloads import (
    annotations_made,
    annotator_id,
    annotator_name,
    chosen_class,
    label_config,
    task_payload,
)

ITEM = {"item_id": "i1", "instance": [float(v) for v in range(64)],
        "predictions": {"a": 3, "b": -1, "c": 7}}  # fmt: skip
CLASSES = [str(n) for n in range(10)]


def test_the_config_offers_every_class_about_an_image_or_a_table() -> None:
    image = ElementTree.fromstring(label_config(["cat", 'say "hi"'], [8, 8]))
    assert image.find("Image").attrib["value"] == "$image"
    assert [c.attrib["value"] for c in image.iter("Choice")] == ["cat", 'say "hi"']
    table = ElementTree.fromstring(label_config(["a", "b"], None))
    assert table.find("Table").attrib["value"] == "$features"
    assert table.find("Choices").attrib["toName"] == "item"


def test_tasks_carry_the_item_and_hide_predictions_unless_asked() -> None:
    hidden = task_payload(ITEM, CLASSES, [8, 8], show=False)
    assert hidden["data"]["item_id"] == "i1" and "predictions" not in hidden
    png = base64.b64decode(hidden["data"]["image"].split(",", 1)[1])
    pixels = pyplot.imread(io.BytesIO(png))
    assert pixels.shape[:2] == (256, 256)  # 8 x 8, scaled 32 times
    assert np.all(pixels[0, 0, :3] > pixels[-1, -1, :3])  # 0 light, 63 dark
    shown = task_payload(ITEM, CLASSES, [8, 8], show=True)
    assert [
        (p["model_version"], p["result"][0]["value"]["choices"]) for p in shown["predictions"]
    ] == [("a", ["3"]), ("c", ["7"])]  # fmt: skip  (b failed on this item: no prediction)
    table = task_payload({**ITEM, "instance": [0.5, 2.0]}, ["x", "y"], None, show=False)
    assert table["data"]["features"] == {"feature 0": 0.5, "feature 1": 2.0}


def test_an_annotation_gives_its_class_or_nothing() -> None:
    def region(choice: str, name: str = "label") -> dict[str, object]:
        return {"from_name": name, "type": "choices", "value": {"choices": [choice]}}

    assert chosen_class([region("7")], CLASSES) == "7"
    assert chosen_class([region("7", name="other"), region("2")], CLASSES) == "2"
    assert chosen_class([region("eleven")], CLASSES) is None
    assert chosen_class([], CLASSES) is None


def test_an_annotation_names_its_annotator_as_a_labeler() -> None:
    assert annotator_id({"completed_by": 7}) == 7
    assert annotator_id({"completed_by": {"id": 8, "email": "x@y.z"}}) == 8
    assert annotator_id({"completed_by": None}) is None and annotator_id({}) is None
    assert annotator_name(7, {"id": 7, "email": "amy@example.com"}) == "amy@example.com"
    # not a plain address (a space, a slash, too long), or unknown: the user's id
    assert annotator_name(7, {"email": "amy smith@example.com"}) == "user7"
    assert annotator_name(7, {"email": "a/b@example.com"}) == "user7"
    assert annotator_name(7, {"email": "a" * 41}) == "user7"
    assert annotator_name(9, None) == "user9"


def test_a_skip_is_no_annotation_made() -> None:
    made = [{"id": 1, "was_cancelled": False}, {"id": 2, "was_cancelled": True}, {"id": 3}]
    assert annotations_made(made) == 2 and annotations_made([]) == 0
