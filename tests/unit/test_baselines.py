import numpy as np
import pytest

from picker import compact_classes, entropy_query_probability, random_query_probability
from picker.baselines import vote_entropy


def test_vote_entropy_golden() -> None:
    np.testing.assert_allclose(
        vote_entropy(compact_classes([[0, 0, 1, 1], [3, 3, 3, 3], [0, 1, 2, 3]])), [1.0, 0.0, 2.0]
    )


def test_entropy_q_scales_and_caps() -> None:
    compact = compact_classes([[0, 0, 1, 1], [5, 5, 5, 5]])
    np.testing.assert_allclose(entropy_query_probability(compact, 0.5, 4), [0.25, 0.0])
    np.testing.assert_allclose(entropy_query_probability(compact, 10.0, 4), [1.0, 0.0])
    with pytest.raises(ValueError):
        entropy_query_probability(compact, 1.0, 1)


def test_random_q_only_on_disagreements() -> None:
    compact = compact_classes([[0, 1], [1, 1]])
    np.testing.assert_allclose(random_query_probability(compact, 0.3), [0.3, 0.0])
