"""The truncation vocabulary: exact kept ranks for each criterion, and the report."""

import json
import math

import numpy as np
import pytest

from tnlib.truncation import TruncationInfo, TruncationSpec, tail_weights

S = np.array([10.0, 5.0, 2.0, 1.0, 0.5, 0.0])
SQ = S**2  # 100, 25, 4, 1, 0.25, 0 ; total 130.25


def kept(**kwargs):
    return TruncationSpec.from_kwargs(**kwargs).kept_rank(SQ)


def test_no_criterion_keeps_everything():
    assert TruncationSpec().is_trivial
    assert kept() == len(S)


@pytest.mark.parametrize("max_rank, expected", [(1, 1), (3, 3), (6, 6), (100, 6)])
def test_max_rank_is_a_cap(max_rank, expected):
    assert kept(max_rank=max_rank) == expected


@pytest.mark.parametrize(
    "cutoff, expected",
    [(0.0, 6), (0.05, 5), (0.1, 4), (0.10001, 3), (0.2, 3), (0.5, 2), (1.0, 1)],
)
def test_cutoff_drops_values_below_fraction_of_smax(cutoff, expected):
    assert kept(cutoff=cutoff) == expected


def test_rel_error_keeps_the_smallest_rank_meeting_the_target():
    total = SQ.sum()
    tails = [SQ[r:].sum() for r in range(len(SQ) + 1)]  # 130.25, 30.25, 5.25, 1.25, 0.25, 0, 0
    for r in range(len(SQ)):
        target = math.sqrt(tails[r] / total)
        assert kept(rel_error=min(target * (1 + 1e-12), 1.0)) == r
        if tails[r] > 0:
            assert kept(rel_error=target * (1 - 1e-9)) == r + 1


def test_rel_error_zero_keeps_all_nonzero_values_and_one_keeps_none():
    assert kept(rel_error=0.0) == 5
    assert kept(rel_error=1.0) == 0


def test_combined_criteria_keep_the_smallest_rank():
    assert kept(max_rank=2, rel_error=0.01) == 2
    assert kept(max_rank=5, rel_error=0.2) == 3  # rank 2 leaves sqrt(5.25 / 130.25) = 0.2008
    assert kept(max_rank=5, cutoff=0.3) == 2
    assert kept(rel_error=0.0, cutoff=0.15) == 3


def test_rel_error_with_partial_spectrum_counts_the_weight_outside():
    # only the two leading values are known; the other 5.75 of the 130.25 lies outside
    spec = TruncationSpec(rel_error=0.25)
    assert spec.kept_rank(SQ[:2], total_sq=SQ.sum()) == 2
    assert spec.kept_rank(SQ[:1], total_sq=SQ.sum()) == 1  # target not reachable: keep all known
    np.testing.assert_allclose(tail_weights(SQ[:2], SQ.sum()), [130.25, 30.25, 5.25])


def test_tail_weights_are_exact_reverse_sums():
    np.testing.assert_array_equal(tail_weights(SQ), [130.25, 30.25, 5.25, 1.25, 0.25, 0.0, 0.0])


def test_info_from_spectrum_matches_hand_computation():
    info = TruncationInfo.from_spectrum(SQ, 2, cut="o|ihw")
    assert info.rank == 2 and info.ranks == (2,) and info.cut == "o|ihw"
    assert info.discarded_weight == pytest.approx(5.25 / 130.25, rel=1e-15)
    assert info.rel_error == pytest.approx(math.sqrt(5.25 / 130.25), rel=1e-15)
    assert info.norm_loss == pytest.approx(1 - math.sqrt(125 / 130.25), rel=1e-14)
    assert info.norm_loss < info.rel_error


def test_info_of_a_zero_tensor_is_all_zero():
    info = TruncationInfo.from_spectrum(np.zeros(3), 0)
    assert (info.rank, info.rel_error, info.norm_loss, info.discarded_weight) == (0, 0.0, 0.0, 0.0)


def test_rank_of_a_multi_step_info_points_to_ranks():
    info = TruncationInfo((2, 3), 0.1, 0.01, 0.02)
    with pytest.raises(AttributeError, match="ranks"):
        _ = info.rank


def test_info_to_dict_is_json_serializable():
    step = TruncationInfo.from_spectrum(SQ, 3, cut="oi|hw")
    info = TruncationInfo((3, 2), 0.2, 0.02, 0.04, steps=(step, step))
    data = json.loads(json.dumps(info.to_dict()))
    assert data["ranks"] == [3, 2] and data["steps"][0]["cut"] == "oi|hw" and data["steps"][1]["ranks"] == [3]
