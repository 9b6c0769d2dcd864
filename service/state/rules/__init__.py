"""The rules of the live state, each written once, as pure functions.

The state is a handful of documents: `meta` (the pool, the served model and its version,
the current round, the deployment's label budget last applied), one `tally:{round}` per
round (the picker's `PickerState`, its selector, and whether the round is closed), one
`item:{id}` per queued item, and a queue `queue:{round}` of item ids scored by when they
become available. A pool-based round also keeps `pool:{round}`, every item that joined its
pool (labeled, waiting or expired), and `labeled:{round}`, its labeled items: the belief
(`service.state.belief`) is derived from those items' documents and nothing else.
A rule takes the documents a transition read and returns the `Txn` that a store applies
atomically, with compare-and-set on every document the decision read (and an answer for
the caller). No I/O, no clock, no randomness of its own: time and the random generator
come in as arguments. The math is the picker's (`picker.decide_queries`, `cap_queries`,
`loss_increments`, `apply_increments`, `served_model`).

One module per family of transitions: `documents` (the documents, their keys, reading
them), `keys` (idempotency keys), `observe` (shadow evaluation of live items), `labels`
(leases and labels), `rounds` (rounds, budgets, the selector), `swaps` (swaps and the
canary), `candidates` (candidates added or removed at run time), `active` (the large-pool
mode's active set), `elimination` (the large-pool mode's elimination test). This package names them
all, so a caller writes `rules.apply_label`.
"""

from __future__ import annotations

from service.state.rules.active import (
    active_columns,
    decide_active,
    label_check_columns,
    round_order,
)
from service.state.rules.documents import (
    ACCEPTED_COUNTER,
    COUNTERS,
    DRIFT_COUNTER,
    META,
    MODELPICKER,
    POOL_BASED,
    QUERIES_COUNTER,
    SCHEMA,
    SWAPS,
    SWAPS_COUNTER,
    Item,
    LabelOutcome,
    Meta,
    RoundRecord,
    Selection,
    Tally,
    audit_key,
    check_pool,
    initialise,
    item_key,
    labeled_key,
    pool_key,
    queue_key,
    selection,
    tally_key,
)
from service.state.rules.keys import (
    CANDIDATE_KEYS,
    KeyReusedError,
    answering_key,
    bind_key,
    key_key,
)
from service.state.rules.labels import (
    apply_label,
    hold_items,
    leasable,
    lease_window,
    pool_lease_limit,
    renew_leases,
)
from service.state.rules.observe import (
    Batch,
    Observed,
    observe_batch,
)
from service.state.rules.rounds import (
    apply_config_budget,
    new_round,
    set_budget,
    switch_selector,
)
from service.state.rules.swaps import (
    advance,
    canary_event,
    canary_key,
    canary_share,
    change_record,
    promote,
    rollback,
    swap,
    swap_record,
    swap_target,
)

__all__ = [
    "ACCEPTED_COUNTER",
    "CANDIDATE_KEYS",
    "COUNTERS",
    "DRIFT_COUNTER",
    "META",
    "MODELPICKER",
    "POOL_BASED",
    "QUERIES_COUNTER",
    "SCHEMA",
    "SWAPS",
    "SWAPS_COUNTER",
    "Batch",
    "Item",
    "KeyReusedError",
    "LabelOutcome",
    "Meta",
    "Observed",
    "RoundRecord",
    "Selection",
    "Tally",
    "active_columns",
    "advance",
    "answering_key",
    "apply_config_budget",
    "apply_label",
    "audit_key",
    "bind_key",
    "canary_event",
    "canary_key",
    "canary_share",
    "change_record",
    "check_pool",
    "decide_active",
    "hold_items",
    "initialise",
    "item_key",
    "key_key",
    "label_check_columns",
    "labeled_key",
    "leasable",
    "lease_window",
    "new_round",
    "observe_batch",
    "pool_key",
    "pool_lease_limit",
    "promote",
    "queue_key",
    "renew_leases",
    "rollback",
    "round_order",
    "selection",
    "set_budget",
    "swap",
    "swap_record",
    "swap_target",
    "switch_selector",
    "tally_key",
]
