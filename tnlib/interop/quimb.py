"""Matrix product states to and from quimb's :class:`quimb.tensor.MatrixProductState`.

Site ``k`` of a tnlib :class:`~tnlib.decompositions.mps.MPS` is site ``k`` of
the quimb MPS, with physical index ``site_ind_id.format(k)`` (``"k0"``,
``"k1"``, ... by default) of the same dimension, and bond ``k`` is the quimb
bond between sites ``k`` and ``k + 1``.  A tnlib core has the layout
``(left bond, site dim, right bond)`` with outer bonds of size 1; quimb's
open-boundary MPS has no outer bonds at all, so the first and last cores lose
their size-1 bond on the way to quimb and get it back on the way from it.

The arrays are handed over without copies or transfers: quimb dispatches
through autoray too, so numpy, torch and cupy cores stay in their backend
and on their device.  quimb is imported only when a function here is called
(``pip install tnlib[quimb]``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import autoray as ar

from tnlib.decompositions.mps import MPS

__all__ = ["from_quimb", "to_quimb"]


def _quimb_tensor() -> Any:
    """The ``quimb.tensor`` module, or an ImportError that says how to install it."""
    try:
        import quimb.tensor as qtn
    except ImportError as err:
        raise ImportError(
            "tnlib.interop.quimb needs quimb, which is not installed; install it with `pip install tnlib[quimb]`"
        ) from err
    return qtn


def _sites(qmps: Any) -> list[int]:
    """The site numbers of ``qmps``, in chain order, read off its site tags.

    ``qmps.sites`` counts from 0 even for an MPS built on other sites
    (``sites=[2, 3, 4]``), whose tags are those of the given sites (and
    ``qmps.site_tag(i)`` takes ``i`` modulo the number of tensors).
    """
    pattern = re.compile(re.escape(qmps.site_tag_id).replace(re.escape("{}"), r"(\d+)") + r"\Z")
    return sorted(int(match.group(1)) for tag in qmps.tag_map if (match := pattern.match(tag)))


def to_quimb(mps: MPS, site_ind_id: str = "k{}", site_tag_id: str = "I{}", tags: Any = None) -> Any:
    """The quimb ``MatrixProductState`` of a tnlib :class:`MPS`, site for site.

    Parameters
    ----------
    mps
        The MPS to convert; its cores are shared, not copied.
    site_ind_id, site_tag_id, tags
        Passed to :class:`quimb.tensor.MatrixProductState`: the names of the
        physical indices and site tags (formatted with the site number) and
        any global tags.

    Returns
    -------
    quimb.tensor.MatrixProductState
        Open boundaries, ``L = mps.num_sites``, physical dimensions
        ``mps.site_dims`` and bond dimensions ``mps.bond_dims``.  Its dense
        vector ``to_dense()`` runs over the sites in chain order (``mps.order``),
        not in the original label order of ``mps.to_dense()``.
    """
    qtn = _quimb_tensor()
    if not isinstance(mps, MPS):
        raise TypeError(f"mps must be a tnlib MPS, got {type(mps).__name__}")
    cores = mps.cores
    if len(cores) == 1:
        arrays = [ar.do("reshape", cores[0], (cores[0].shape[1],))]
    else:
        first, last = cores[0], cores[-1]
        arrays = [
            ar.do("reshape", first, first.shape[1:]),  # (1, d, r) -> (d, r): 'pr'
            *cores[1:-1],  # (l, d, r): 'lpr'
            ar.do("reshape", last, last.shape[:2]),  # (l, d, 1) -> (l, d): 'lp'
        ]
    return qtn.MatrixProductState(arrays, shape="lpr", site_ind_id=site_ind_id, site_tag_id=site_tag_id, tags=tags)


def from_quimb(qmps: Any, labels: str | Sequence[str] | None = None) -> MPS:
    """A tnlib :class:`MPS` from a quimb ``MatrixProductState``, site for site.

    Whatever layout quimb holds each tensor in, the cores come out as
    ``(left bond, site dim, right bond)`` with outer bonds of size 1, their
    arrays in quimb's backend.

    Parameters
    ----------
    qmps
        An open-boundary quimb MPS with one tensor per site, each holding its
        physical index and the bonds to its neighbours (one index per bond).
    labels
        One label per site (default: those of :meth:`MPS.from_cores`).

    Raises
    ------
    ValueError
        For a periodic (cyclic) MPS, a site without exactly one tensor, or a
        tensor with other indices than its physical one and one bond to each
        neighbour (fuse multiple bonds first with ``qmps.fuse_multibonds()``).
    """
    qtn = _quimb_tensor()
    if not isinstance(qmps, qtn.MatrixProductState):
        raise TypeError(f"qmps must be a quimb.tensor.MatrixProductState, got {type(qmps).__name__}")
    if qmps.cyclic:
        raise ValueError("qmps is periodic (cyclic); a tnlib MPS has open boundaries")
    sites = _sites(qmps)
    if len(sites) != qmps.num_tensors:
        raise ValueError(f"qmps must hold one tensor per site: {len(sites)} site tags, {qmps.num_tensors} tensors")
    tensors = []
    for site in sites:
        found = qmps.select_tensors(qmps.site_tag_id.format(site), which="all")
        if len(found) != 1:
            raise ValueError(f"site {site} of qmps must hold exactly one tensor, it holds {len(found)}")
        tensors.append(found[0])

    cores = []
    for k, (site, t) in enumerate(zip(sites, tensors)):
        phys = qmps.site_ind_id.format(site)
        left = list(qtn.bonds(tensors[k - 1], t)) if k > 0 else []
        right = list(qtn.bonds(t, tensors[k + 1])) if k < len(tensors) - 1 else []
        if len(left) > 1 or len(right) > 1:
            raise ValueError(
                f"site {site} of qmps shares several indices with a neighbour; call qmps.fuse_multibonds() first"
            )
        if phys not in t.inds or set(t.inds) != {phys, *left, *right}:
            raise ValueError(
                f"the tensor of site {site} must have the physical index {phys!r} and one bond to each "
                f"neighbour, it has indices {t.inds}"
            )
        shape = (t.ind_size(left[0]) if left else 1, t.ind_size(phys), t.ind_size(right[0]) if right else 1)
        cores.append(ar.do("reshape", t.transpose(*left, phys, *right).data, shape))
    return MPS.from_cores(cores) if labels is None else MPS.from_cores(cores, labels)
