"""pickserve's picker: ModelPicker (Karimi et al., AISTATS 2021), pure numpy.

The algorithm as small pure functions over arrays (`picker.modelpicker`), an explicit
serialisable state (`picker.state`), decisions for live items (`picker.decisions`), the
baselines (`picker.baselines`) and the offline replay and calibration tools. The pool-based
selectors, which re-rank a queue of items after every label, are in `picker.pooled`
(Model Selector, CODA and pickserve's own `pool-based`) with their replay in
`picker.pool_replay`.
"""

from picker.baselines import entropy_query_probability, random_query_probability
from picker.data import PickerInputError, Pool, load_pool, make_pool
from picker.decisions import (
    DEFAULT_GAMMA,
    PickerConfig,
    QueryDecisions,
    cap_queries,
    decide,
    decide_queries,
    served_model,
)
from picker.modelpicker import (
    best_model,
    compact_classes,
    disagreement_variance,
    draw_queries,
    importance_weighted,
    item_query_probability,
    learning_rate,
    learning_rates,
    loss_increments,
    posterior,
    query_probability,
)
from picker.state import (
    STATE_VERSION,
    PickerState,
    apply_increments,
    initial_state,
    observe,
    record_queries,
    start_round,
)

__all__ = [
    "DEFAULT_GAMMA",
    "STATE_VERSION",
    "PickerConfig",
    "PickerInputError",
    "PickerState",
    "Pool",
    "QueryDecisions",
    "apply_increments",
    "best_model",
    "cap_queries",
    "compact_classes",
    "decide",
    "decide_queries",
    "disagreement_variance",
    "draw_queries",
    "entropy_query_probability",
    "importance_weighted",
    "initial_state",
    "item_query_probability",
    "learning_rate",
    "learning_rates",
    "load_pool",
    "loss_increments",
    "make_pool",
    "observe",
    "posterior",
    "query_probability",
    "random_query_probability",
    "record_queries",
    "served_model",
    "start_round",
]
