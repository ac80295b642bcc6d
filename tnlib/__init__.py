"""tnlib: tensor-network decompositions and entanglement spectra on any array backend.

The core is pure math on numpy, cupy or torch arrays (dispatched through
autoray): truncated SVD, cuts (bipartitions of labelled indices) and their
entanglement spectra, truncation along cuts and matrix product states, all sharing one truncation
vocabulary (``max_rank``, ``rel_error``, ``cutoff``) and reporting what they
discarded in a :class:`TruncationInfo`.
"""

from tnlib.cuts import KERNEL_LABELS, Cut, all_cuts, matricize, truncate
from tnlib.decompositions.mps import MPS, mps
from tnlib.decompositions.tucker import TuckerTensor, tucker
from tnlib.spectrum import Spectrum, spectra, spectrum
from tnlib.svd import SVD_METHODS, VALUE_METHODS, singular_values, truncated_svd
from tnlib.truncation import TruncationInfo

__version__ = "0.1.0"

__all__ = [
    "KERNEL_LABELS",
    "SVD_METHODS",
    "VALUE_METHODS",
    "Cut",
    "MPS",
    "Spectrum",
    "TruncationInfo",
    "TuckerTensor",
    "all_cuts",
    "matricize",
    "mps",
    "singular_values",
    "spectra",
    "spectrum",
    "truncate",
    "truncated_svd",
    "tucker",
]
