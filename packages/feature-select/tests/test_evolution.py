import itertools
import math

import numpy as np
import pytest
import torch

from feature_select.evolution import (
    InputNeuronSchedule,
    keep_strongest_per_row,
    row_max_scores,
    set_prune_mask,
    top_k_indices,
    top_new_connections,
)


def test_set_prune_drops_the_weights_closest_to_zero_on_each_side():
    values = torch.tensor([-5.0, -0.1, -1.0, -0.5, 0.2, 3.0, 0.05, 1.0, 0.0, 2.0])
    keep = set_prune_mask(values, 0.5)
    # 4 negatives -> keep int(0.5*4)=2 most negative (-5, -1); 5 positives -> keep 2 largest (3, 2); zero dropped
    assert values[keep].sort().values.tolist() == [-5.0, -1.0, 2.0, 3.0]
    assert set_prune_mask(values, 0.0).sum() == 9  # zeta=0 keeps every non-zero weight


def test_keep_strongest_per_row_reactivates_emptied_rows_only():
    rows = torch.tensor([0, 0, 1, 1, 2])
    values = torch.tensor([0.1, -0.3, 0.2, 0.05, 1.0])
    keep = torch.tensor([False, False, True, False, False])
    fixed = keep_strongest_per_row(rows, values, keep, torch.tensor([0, 1]))
    # row 0 gets its strongest (-0.3), row 1 already has one, row 2 is not required
    assert fixed.tolist() == [False, True, True, False, False]


def test_top_new_connections_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(9, 4, generator=g)
    existing_rows = torch.tensor([0, 2, 2, 5])
    existing_cols = torch.tensor([1, 0, 3, 2])
    pool = torch.tensor([0, 2, 3, 5, 8])
    rows, cols = top_new_connections(
        lambda r: scores[r], pool, 4, existing_rows, existing_cols, 6, chunk_rows=2
    )
    masked = torch.full_like(scores, -math.inf)
    masked[pool] = scores[pool]
    masked[existing_rows, existing_cols] = -math.inf
    expected = torch.topk(masked.flatten(), 6).indices
    assert sorted((rows * 4 + cols).tolist()) == sorted(expected.tolist())


@pytest.mark.parametrize("chunk_rows", [1, 3, 100])
def test_top_new_connections_is_the_same_in_one_block_or_many(chunk_rows):
    g = torch.Generator().manual_seed(1)
    scores = torch.rand(12, 5, generator=g)
    existing_rows, existing_cols = torch.tensor([1, 1, 4, 11]), torch.tensor([0, 4, 2, 3])
    pool = torch.tensor([1, 2, 4, 7, 11])
    rows, cols = top_new_connections(
        lambda r: scores[r], pool, 5, existing_rows, existing_cols, 9, chunk_rows
    )
    masked = torch.full_like(scores, -math.inf)
    masked[pool] = scores[pool]
    masked[existing_rows, existing_cols] = -math.inf
    assert (rows * 5 + cols).tolist() == sorted(torch.topk(masked.flatten(), 9).indices.tolist())


def test_top_k_indices_hand_computed():
    scores = torch.tensor([0.3, 5.0, -1.0, 2.0, 0.0, 4.0])
    assert sorted(top_k_indices(scores, 3).tolist()) == [1, 3, 5]
    assert sorted(top_k_indices(scores, 10).tolist()) == list(range(6))
    assert top_k_indices(scores, 0).numel() == 0


def test_top_new_connections_returns_at_most_the_free_positions():
    scores = torch.ones(2, 2)
    rows, cols = top_new_connections(
        lambda r: scores[r], torch.tensor([0, 1]), 2, torch.tensor([0]), torch.tensor([0]), 10, 1
    )
    assert sorted(zip(rows.tolist(), cols.tolist(), strict=True)) == [(0, 1), (1, 0), (1, 1)]


def test_row_max_scores():
    scores = torch.tensor([[0.1, 0.9], [0.5, 0.2], [0.3, 0.3]])
    best, where = row_max_scores(lambda r: scores[r], torch.tensor([2, 0]), 1)
    torch.testing.assert_close(best, torch.tensor([0.3, 0.9]))
    assert where.tolist()[1] == 1


def test_schedule_removes_gradually_to_the_reference_count_and_protects_immature_neurons():
    d, k, epochs = 40, 5, 20
    sched = InputNeuronSchedule(d, k, zeta_in=0.4, epochs=epochs, epoch_remove=13)
    rng = np.random.default_rng(0)
    active = torch.ones(d, dtype=torch.bool)
    sched.mark_all_active_mature(active)
    sched.mark_all_active_mature(active)
    counts, swaps = [], []
    for epoch in range(2, epochs - 1):
        strength = torch.tensor(rng.random(d))
        immature = active & (sched.protection < 1)
        remove, n_add = sched.plan(epoch, strength, active)
        swaps.append(n_add)
        assert not bool(immature[remove].any())  # only mature neurons are removed
        active[remove] = False
        inactive = torch.nonzero(~active).flatten()
        # add n_add inactive neurons that were not removed just now
        candidates = inactive[~torch.isin(inactive, remove)]
        added = candidates[:n_add]
        assert added.numel() == n_add
        active[added] = True
        sched.mark_added(added)
        counts.append(int(active.sum()))
    assert counts[0] < d
    assert all(b <= a for a, b in itertools.pairwise(counts))  # never grows
    # the reference's dim_to_remove = int((1 - zeta_in) * d - K) = int(24.0 - 5) = 19
    assert sched.removed == 19
    assert counts[-1] == d - 19 == 21
    # swaps never replace more than zeta_in of the neurons that stay (0.2.0 swapped most of K)
    assert all(n <= 0.4 * c for n, c in zip(swaps, counts, strict=True))


def test_schedule_rejects_k_larger_than_d():
    with pytest.raises(ValueError, match="k must be <= 10"):
        InputNeuronSchedule(10, 11, 0.4, 10, 6)


def test_schedule_without_late_swaps_stops_swapping_after_removal():
    d, k = 30, 5
    sched = InputNeuronSchedule(d, k, zeta_in=0.4, epochs=20, epoch_remove=8, swap_until_end=False)
    active = torch.ones(d, dtype=torch.bool)
    sched.mark_all_active_mature(active)
    added_per_epoch = []
    for epoch in range(1, 19):
        remove, n_add = sched.plan(epoch, torch.arange(d, dtype=torch.float32), active)
        assert n_add <= int(0.4 * (int(active.sum()) - (remove.numel() - n_add)))
        active[remove] = False
        added = torch.nonzero(~active).flatten()
        added = added[~torch.isin(added, remove)][:n_add]
        active[added] = True
        sched.mark_added(added)
        added_per_epoch.append(n_add)
    assert int(active.sum()) == d - int(0.6 * d - k) == 17
    assert sum(added_per_epoch[:7]) > 0 and sum(added_per_epoch[7:]) == 0


def test_keep_strongest_per_row_matches_brute_force_with_ties():
    rng = np.random.default_rng(5)
    for _ in range(20):
        n = int(rng.integers(5, 40))
        rows = torch.from_numpy(rng.integers(0, 8, n))
        values = torch.from_numpy(rng.choice([-2.0, -1.0, 0.5, 1.0, 2.0], n)).float()
        keep = torch.from_numpy(rng.random(n) < 0.3)
        must = torch.from_numpy(np.unique(rng.integers(0, 10, 4)))
        fixed = keep_strongest_per_row(rows, values, keep, must)
        expected = keep.clone()
        for r in must.tolist():
            mine = torch.nonzero(rows == r).flatten()
            if mine.numel() and not bool(keep[mine].any()):
                best = values[mine].abs().max()
                expected[mine[values[mine].abs() == best][0]] = True  # first of the strongest
        assert fixed.tolist() == expected.tolist()
