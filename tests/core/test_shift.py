"""The shift profile's arithmetic: the symmetric KL, sums added up over batches, the profile per block."""

from __future__ import annotations

import numpy as np
import pytest

from tlbench.plugin.engine import BatchNormSums
from tlbench.train.shift import NO_BATCHNORM, shift_profile, statistics_rows, symmetric_kl


def test_symmetric_kl_by_hand():
    # p = N(0, 1), q = N(1, 2): KL(p||q) = (ln 2 + 2/2 - 1) / 2 = ln(2) / 2, KL(q||p) = (-ln 2 + 3 - 1) / 2
    assert symmetric_kl(0.0, 1.0, 1.0, 2.0) == pytest.approx(1.0)
    assert symmetric_kl(1.0, 2.0, 0.0, 1.0) == pytest.approx(1.0)
    assert symmetric_kl(3.0, 0.5, 3.0, 0.5) == 0.0


def layer_sums(values: np.ndarray, block: int, running_mean, running_var, eps=0.0) -> BatchNormSums:
    """What an engine hands over for ``values`` (images x channels x positions)."""
    return BatchNormSums(block, values.shape[0] * values.shape[2], values.sum(axis=(0, 2)), (values ** 2).sum(axis=(0, 2)),
                         np.asarray(running_mean, float), np.asarray(running_var, float), eps)


def test_statistics_add_up_over_batches():
    rng = np.random.default_rng(0)
    first, second = rng.normal(2, 3, (5, 2, 7)), rng.normal(2, 3, (3, 2, 7))
    both = np.concatenate([first, second])
    rows = statistics_rows([[layer_sums(first, 1, [0, 0], [1, 1], 1e-3)], [layer_sums(second, 1, [0, 0], [1, 1], 1e-3)]])
    assert rows.shape == (2, 7)
    np.testing.assert_allclose(rows[:, 2], both.mean(axis=(0, 2)))
    np.testing.assert_allclose(rows[:, 3], both.var(axis=(0, 2)))
    np.testing.assert_array_equal(rows[:, [0, 1, 4, 5, 6]], [[0, 1, 0, 1, 1e-3]] * 2)


def test_profile_is_the_mean_per_block_of_the_mean_per_layer():
    def layer(block, total, squares, running_mean, running_var, eps=0.0):  # over 4 values a channel
        return BatchNormSums(block, 4, *(np.array(v, float) for v in (total, squares, running_mean, running_var)), eps)

    layers = [layer(0, [4, 4], [4, 4], [1, 0], [1, 1], eps=1.0),  # N(1, 0 + 1) against N(1, 1 + 1) and N(0, 1 + 1)
              layer(2, [0], [4], [1], [2]),  # N(0, 1) against N(1, 2)
              layer(2, [4], [8], [0], [2])]  # N(1, 1) against N(0, 2)
    found = shift_profile(statistics_rows([layers]), blocks=3)
    assert found["shift_profile"] == pytest.approx([(0.25 + 1.0) / 2, None, (1.0 + 1.0) / 2])
    assert found["shift_profile"][1] is None  # block 1 has no BatchNorm layer
    assert found["shift"] == pytest.approx((0.625 + 1.0) / 2)
    assert found["shift_reason"] is None


def test_no_batchnorm_gives_null_and_the_reason():
    rows = statistics_rows([[], []])
    assert rows.shape == (0, 7)
    assert shift_profile(rows, blocks=3) == {"shift_profile": None, "shift": None, "shift_reason": NO_BATCHNORM}


def test_an_engine_without_batchnorm_sums_fails_the_cell_and_says_so(toy_plugin, tmp_path):
    import json

    import tlbench

    out = tmp_path / "run"
    tlbench.run_grid({"name": "shift", "datasets": ["stripes"], "backbones": ["toy/centroid"], "strategies": ["shift"]},
                     out=out, device="cpu")
    [record] = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert record["status"] == "failed"
    assert "engine lacks the capability 'batchnorm_sums', which strategy 'shift' needs" in record["error"]
