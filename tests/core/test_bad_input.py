"""Bad input fails at the entry point with a message naming the argument."""

import numpy as np
import pytest

import tnlib
from tnlib import Cut

GOOD = np.arange(24, dtype=np.float64).reshape(2, 3, 2, 2)
MATRIX = np.arange(12, dtype=np.float64).reshape(3, 4)


def entry_points(x):
    """Every public function taking an array, called with otherwise valid arguments."""
    return {
        "truncated_svd": lambda: tnlib.truncated_svd(x.reshape(x.shape[0], -1) if x.ndim > 1 else x, max_rank=1),
        "singular_values": lambda: tnlib.singular_values(x.reshape(x.shape[0], -1) if x.ndim > 1 else x),
        "spectrum": lambda: tnlib.spectrum(x, "o|ihw"),
        "spectra": lambda: tnlib.spectra(x),
        "truncate": lambda: tnlib.truncate(x, "o|ihw", max_rank=1),
        "matricize": lambda: tnlib.matricize(x, "o|ihw"),
        "mps": lambda: tnlib.mps(x),
        "tucker": lambda: tnlib.tucker(x, ranks=1),
        "cp": lambda: tnlib.cp(x, 2, max_iter=1),
        "cp_rank": lambda: tnlib.cp_rank(x, 0.5, max_iter=1),
    }


@pytest.mark.parametrize("name", list(entry_points(GOOD)))
@pytest.mark.parametrize(
    "bad, error, message",
    [
        (np.where(GOOD == 5, np.nan, GOOD), ValueError, "NaN or Inf"),
        (np.where(GOOD == 5, np.inf, GOOD), ValueError, "NaN or Inf"),
        (GOOD.astype(np.int64), TypeError, "floating dtype.*int64"),
        (GOOD > 3, TypeError, "floating dtype.*bool"),
        (GOOD.astype(np.float16), TypeError, "floating dtype.*float16"),
        (np.zeros((2, 0, 2, 2)), ValueError, "empty dimension"),
        (np.ma.masked_array(GOOD, mask=GOOD > 5), TypeError, "must not be a masked array.*mask would be silently"),
    ],
    ids=["nan", "inf", "int", "bool", "half", "empty", "masked"],
)
def test_bad_arrays_are_refused_everywhere(name, bad, error, message):
    with pytest.raises(error, match=message):
        entry_points(bad)[name]()


def test_bad_arrays_are_refused_on_torch_too():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="tensor contains NaN"):
        tnlib.spectra(torch.full((2, 2, 2, 2), float("nan")))
    with pytest.raises(TypeError, match="floating dtype.*int64"):
        tnlib.truncate(torch.ones((2, 2, 2, 2), dtype=torch.int64), "o|ihw")


def test_non_arrays():
    with pytest.raises(TypeError, match="m must be an array"):
        tnlib.truncated_svd("not an array")
    u, s, vh, info = tnlib.truncated_svd([[3.0, 0.0], [0.0, 1.0]], max_rank=1)  # array-likes are fine
    assert info.rank == 1 and float(s[0]) == 3.0


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"max_rank": 0}, ValueError, "max_rank must be a positive integer.*got 0"),
        ({"max_rank": -3}, ValueError, "max_rank"),
        ({"max_rank": 2.5}, TypeError, "max_rank must be a positive integer"),
        ({"max_rank": True}, TypeError, "max_rank"),
        ({"rel_error": -0.1}, ValueError, r"rel_error must lie in \[0, 1\]"),
        ({"rel_error": 1.5}, ValueError, "rel_error"),
        ({"rel_error": float("nan")}, ValueError, "rel_error"),
        ({"rel_error": "0.1"}, TypeError, "rel_error"),
        ({"cutoff": -1e-3}, ValueError, "cutoff"),
        ({"method": "qr"}, ValueError, "method must be one of 'auto', 'full', 'gram', 'randomized'; got 'qr'"),
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": "x"}, TypeError, "seed"),
        ({"oversample": -1}, ValueError, "oversample"),
        ({"power_iters": 1.0}, TypeError, "power_iters"),
        ({"power_iters": 10**9}, ValueError, "power_iters must be at most 32, got 1000000000"),
        ({"oversample": 10**9}, ValueError, "oversample must be at most 1000, got 1000000000"),
        ({"method": np.array(["full", "gram"])}, TypeError, "method must be a string, one of 'auto', 'full'"),
        ({"max_bond": 3}, TypeError, "max_bond"),  # unknown keywords are refused
    ],
)
def test_bad_truncation_keywords(kwargs, error, message):
    with pytest.raises(error, match=message):
        tnlib.truncated_svd(MATRIX, **kwargs)


def test_bad_matrix_shape():
    with pytest.raises(ValueError, match="m must have 2 dimensions, got shape"):
        tnlib.truncated_svd(GOOD)
    with pytest.raises(ValueError, match="m must have 2 dimensions"):
        tnlib.singular_values(np.ones(3))


@pytest.mark.parametrize(
    "cut, message",
    [
        ("oihw", "exactly one '|'"),
        ("o|i|hw", "exactly one '|'"),
        ("|oihw", "empty side"),
        ("oi|", "empty side"),
        ("oo|ihw", "repeats label"),
        ("o|ihx", "unknown label.*'x'.*missing label.*'w'"),
        ("o|ih", "missing label.*'w'"),
    ],
)
def test_bad_cuts(cut, message):
    with pytest.raises(ValueError, match=message):
        tnlib.spectrum(GOOD, cut)
    with pytest.raises(ValueError, match=message):
        tnlib.truncate(GOOD, cut, max_rank=1)


def test_bad_cut_types_and_lists():
    with pytest.raises(TypeError, match="cut must be a string"):
        Cut(3)
    with pytest.raises(ValueError, match="empty list"):
        tnlib.truncate(GOOD, [], max_rank=1)
    with pytest.raises(ValueError, match="one int per cut"):
        tnlib.truncate(GOOD, ["o|ihw", "i|ohw"], max_rank=[1, 2, 3])
    with pytest.raises(ValueError, match="max_rank"):
        tnlib.truncate(GOOD, ["o|ihw", "i|ohw"], max_rank=[1, 0])


@pytest.mark.parametrize(
    "labels, message",
    [
        ("oih", "one label per index: the tensor has 4"),
        ("oihwx", "one label per index"),
        ("oiho", "labels must be distinct"),
        ("oi|h", "must not contain"),
        (["o", "i", "hw"], "one-character labels"),
    ],
)
def test_bad_labels(labels, message):
    with pytest.raises((ValueError, TypeError), match=message):
        tnlib.spectra(GOOD, labels=labels)


def test_all_cuts_needs_two_labels():
    with pytest.raises(ValueError, match="at least two"):
        tnlib.all_cuts("o")


def test_spectrum_method_and_rank_for():
    with pytest.raises(ValueError, match="method must be one of 'auto', 'full', 'gram'"):
        tnlib.spectra(GOOD, method="randomized")
    with pytest.raises(ValueError, match="rel_error"):
        tnlib.spectrum(GOOD, "o|ihw").rank_for(-0.5)


def test_all_cuts_refuses_to_enumerate_too_many_labels():
    assert len(tnlib.all_cuts("abcdefghijklmnop")) == 2**15 - 1  # MAX_CUT_LABELS = 16 labels still enumerate
    with pytest.raises(ValueError, match=r"labels: 26 labels have 2\*\*25 - 1 cuts, too many .*at most 16 labels"):
        tnlib.all_cuts("abcdefghijklmnopqrstuvwxyz")
    with pytest.raises(ValueError, match="labels: 24 labels have .*choose the cuts wanted explicitly"):
        tnlib.spectra(np.ones((1,) * 24))
    (only,) = tnlib.spectra(np.ones((1,) * 24), cuts=["a|bcdefghijklmnopqrstuvwx"]).values()
    assert only.singular_values.tolist() == [1.0]  # explicit cuts of many size-1 legs are fine


@pytest.mark.parametrize("labels", [5, None, 2.5])
def test_all_cuts_needs_a_string_of_labels(labels):
    with pytest.raises(TypeError, match="labels must be a string of one-character labels"):
        tnlib.all_cuts(labels)


@pytest.mark.parametrize("cuts", [{"o|ihw", "i|ohw"}, frozenset({"o|ihw"}), {"o|ihw": 1}, {"o|ihw": 1}.keys()])
def test_unordered_cuts_are_refused(cuts):
    with pytest.raises(TypeError, match="cut must be an ordered sequence"):
        tnlib.truncate(GOOD, cuts, max_rank=1)
    with pytest.raises(TypeError, match="cuts must be an ordered sequence"):
        tnlib.spectra(GOOD, cuts=cuts)


def test_unordered_labels_are_refused():
    with pytest.raises(TypeError, match="labels must be an ordered sequence"):
        tnlib.spectra(GOOD, labels={"o", "i", "h", "w"})


def test_truncate_needs_a_cut():
    with pytest.raises(TypeError, match="cut must be a cut like 'oi|hw', a Cut or a list of them, got None"):
        tnlib.truncate(GOOD, None)


@pytest.mark.parametrize(
    "call",
    [
        lambda m: tnlib.truncated_svd(MATRIX, method=m),
        lambda m: tnlib.singular_values(MATRIX, method=m),
        lambda m: tnlib.spectra(GOOD, method=m),
        lambda m: tnlib.truncate(GOOD, "o|ihw", max_rank=1, method=m),
        lambda m: tnlib.mps(GOOD, method=m),
        lambda m: tnlib.tucker(GOOD, ranks=1, method=m),
    ],
    ids=["truncated_svd", "singular_values", "spectra", "truncate", "mps", "tucker"],
)
@pytest.mark.parametrize("method", [np.array(["full", "gram"]), np.array("full"), 3, None], ids=repr)
def test_a_method_that_is_not_a_string_is_a_type_error(call, method):
    with pytest.raises(TypeError, match="method must be a string, one of"):
        call(method)


@pytest.mark.parametrize("ranks", [2.5, "2", object()])
def test_tucker_ranks_of_the_wrong_type(ranks):
    with pytest.raises(TypeError, match="ranks must be None, a positive int or a sequence of them"):
        tnlib.tucker(GOOD, ranks=ranks)


@pytest.mark.parametrize(
    "data, error, message",
    [
        ({}, ValueError, "data must be a dict with at least the key 'singular_values'"),
        ([3.0, 2.0], ValueError, "data must be a dict"),
        ({"singular_values": "321"}, TypeError, "singular_values must be a sequence or array of numbers, got str"),
    ],
)
def test_spectrum_from_bad_dicts(data, error, message):
    with pytest.raises(error, match=message):
        tnlib.Spectrum.from_dict(data)


@pytest.mark.parametrize("values", ["321", b"321", None, {"singular_values": [1.0]}])
def test_spectrum_refuses_strings(values):
    with pytest.raises(TypeError, match="singular_values must be a sequence or array of numbers"):
        tnlib.Spectrum(values)


@pytest.mark.parametrize("scalar", [float("nan"), float("inf"), -np.inf, complex(1, np.nan)])
def test_an_mps_times_a_non_finite_scalar_is_refused(scalar):
    m = tnlib.mps(GOOD)
    with pytest.raises(ValueError, match="scalar must be finite to multiply an MPS"):
        scalar * m
    with pytest.raises(ValueError, match="scalar must be finite"):
        m * scalar


def test_mps_operands_on_different_backends_are_refused():
    torch = pytest.importorskip("torch")
    m, mt = tnlib.mps(GOOD), tnlib.mps(torch.as_tensor(GOOD))
    message = "other's cores must be on the same backend: expected numpy arrays like this MPS's cores, got torch"
    with pytest.raises(TypeError, match=message):
        m.inner(mt)
    with pytest.raises(TypeError, match=message):
        m + mt
    with pytest.raises(TypeError, match="expected torch arrays like this MPS's cores, got numpy"):
        mt + m
    cores = [m.cores[0], torch.as_tensor(m.cores[1]), *m.cores[2:]]
    with pytest.raises(TypeError, match="cores must be on the same backend: expected numpy arrays like cores"):
        tnlib.MPS.from_cores(cores)
