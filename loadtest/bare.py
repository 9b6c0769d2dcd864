"""The baseline users compare pickserve with: one model on Ray Serve, deployed by hand.

A FastAPI deployment that loads one fitted scikit-learn model and answers `POST /predict`
with each item's class and probabilities, written the way Ray Serve's own examples write a
model route: an `async def` that awaits the request body and calls `predict_proba` on the
model, no batching, no thread pool. (A plain `def` route would run in Starlette's thread
pool, a hand-off that makes the baseline slower than what users write.)
`loadtest.overhead` deploys it beside pickserve, behind the same Ray proxy, holding the
model pickserve serves.
"""

from typing import Any

import joblib
import numpy as np
from fastapi import FastAPI, Request
from ray import serve

app = FastAPI()


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress(app)
class BareModel:
    def __init__(self, model_file: str) -> None:
        self.model = joblib.load(model_file)

    @app.post("/predict")
    async def predict(self, request: Request) -> dict[str, Any]:
        body = await request.json()
        probabilities = self.model.predict_proba(np.asarray(body["instances"], dtype=np.float64))
        return {
            "predictions": [
                {"class": int(row.argmax()), "probabilities": row.tolist()} for row in probabilities
            ]
        }
