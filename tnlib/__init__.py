"""tnlib: tensor-network decompositions and entanglement spectra on any array backend.

The core is pure math on numpy, cupy or torch arrays (dispatched through
autoray): truncated SVD, cuts (bipartitions of labelled indices) and their
entanglement spectra, truncation along cuts, matrix product states, Tucker and CP, all sharing one truncation
vocabulary (``max_rank``, ``rel_error``, ``cutoff``) and reporting what they
discarded in a :class:`TruncationInfo`.
"""

from tnlib.cuts import KERNEL_LABELS, Cut, all_cuts, matricize, truncate
from tnlib.decompositions.cp import CP_INITS, CP_METHODS, cp
from tnlib.decompositions.cp_ladder import cp_ladder
from tnlib.decompositions.cp_rank import CPRankSearch, cp_rank
from tnlib.decompositions.cp_significance import CPSignificance, cp_significance
from tnlib.decompositions.cp_tensor import CPFit, CPTensor
from tnlib.decompositions.mps import MPS
from tnlib.decompositions.tt_svd import mps
from tnlib.decompositions.tucker import TuckerTensor, tucker
from tnlib.decompositions.tucker_ranks import evbmf_rank, tucker_ranks
from tnlib.spectra_batched import spectra_many
from tnlib.spectrum import Spectrum, spectra, spectrum
from tnlib.svd import SVD_METHODS, VALUE_METHODS, singular_values, truncated_svd
from tnlib.truncation import TruncationInfo

__version__ = "0.1.0"

__all__ = [
    "CP_INITS",
    "CP_METHODS",
    "KERNEL_LABELS",
    "SVD_METHODS",
    "VALUE_METHODS",
    "CPFit",
    "CPRankSearch",
    "CPSignificance",
    "CPTensor",
    "Cut",
    "MPS",
    "Spectrum",
    "TruncationInfo",
    "TuckerTensor",
    "all_cuts",
    "cp",
    "cp_ladder",
    "cp_rank",
    "cp_significance",
    "evbmf_rank",
    "matricize",
    "mps",
    "singular_values",
    "spectra",
    "spectra_many",
    "spectrum",
    "truncate",
    "truncated_svd",
    "tucker",
    "tucker_ranks",
]
