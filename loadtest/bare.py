"""The baseline users compare pickserve with: one model on Ray Serve, deployed by hand.

A FastAPI deployment that loads one fitted scikit-learn model and answers `POST /predict`
with each item's class and probabilities, written the way the Ray Serve docs show: a
pydantic request model, a plain (threaded) method, no batching. `loadtest.overhead` deploys
it beside pickserve, behind the same Ray proxy, holding the model pickserve serves.
"""

from typing import Any

import joblib
import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel
from ray import serve

app = FastAPI()


class BarePredictRequest(BaseModel):
    instances: list[list[float]]


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress(app)
class BareModel:
    def __init__(self, model_file: str) -> None:
        self.model = joblib.load(model_file)

    @app.post("/predict")
    def predict(self, request: BarePredictRequest) -> dict[str, Any]:
        probabilities = self.model.predict_proba(np.asarray(request.instances))
        return {
            "predictions": [
                {"class": int(row.argmax()), "probabilities": row.tolist()} for row in probabilities
            ]
        }
