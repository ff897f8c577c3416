"""The cost model that decides where encoding a shared prompt once pays (training and scoring).

A layout's forward cost is estimated as its token positions (padding included) plus its attention
score pairs divided by ``PAIRS_PER_POSITION * hidden_size``: per position the layers' matmuls cost
about ``hidden_size`` times what one score pair costs. The constant was fitted on training steps
(``scripts/bench_share_prompt.py``, docs/performance.md "share_prompt: auto"); training packs a batch
where the flat layout is predicted ``AUTO_MIN_RATIO`` times as costly, the margin every measured point
cleared. Scoring (``alignkit.eval.scoring``) reads the same model and margin for its own layout.
"""

SHARE_PROMPT = ("auto", "on", "off")  # the settings of share_prompt, in training and in scoring
PAIRS_PER_POSITION = 4.0
AUTO_MIN_RATIO = 1.10


def layout_cost(rows: int, positions: int, pairs: float, hidden_size: int) -> float:
    """Estimated forward cost of ``rows`` rows of ``positions`` positions each (padding included), each
    row with ``pairs`` attention score pairs (``W(W+1)/2`` for a causal row of width ``W``)."""
    return rows * (positions + pairs / (PAIRS_PER_POSITION * hidden_size))


def worth_sharing(flat: float, shared: float) -> bool:
    """The ``auto`` rule: share where the flat layout is predicted ``AUTO_MIN_RATIO`` times as costly."""
    return flat >= AUTO_MIN_RATIO * shared
