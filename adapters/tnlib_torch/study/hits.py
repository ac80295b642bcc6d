"""Which test samples a model got right, stored compactly in a record: :func:`pack_hits`, :func:`unpack_hits`.

A study evaluates every model on the same test samples in the same order, so two records' hits can be
compared sample by sample: a paired test of two accuracies (:mod:`tnlib_torch.study.statistics`) needs
the samples one model got right and the other wrong, not just the two counts.  A record holds its hits
as ``hits``, the top-1 hits in evaluation order packed eight to a byte (``numpy.packbits``, little bit
order) and written in base64: 1,000 samples take 168 characters of JSON.
"""

from __future__ import annotations

import base64
import binascii

import numpy as np

__all__ = ["pack_hits", "unpack_hits"]


def pack_hits(hits: np.ndarray) -> str:
    """The base64 text of a one-dimensional boolean array of top-1 hits (:func:`unpack_hits` reads it back).

    Raises
    ------
    TypeError
        ``hits`` is not a one-dimensional boolean numpy array.
    """
    if not isinstance(hits, np.ndarray) or hits.dtype != np.bool_ or hits.ndim != 1:
        raise TypeError(f"hits must be a one-dimensional boolean numpy array, got {type(hits).__name__} "
                        f"{getattr(hits, 'dtype', '')} {getattr(hits, 'shape', '')}".rstrip())
    return base64.b64encode(np.packbits(hits, bitorder="little").tobytes()).decode("ascii")


def unpack_hits(text: str, count: int) -> np.ndarray:
    """The ``count`` boolean hits that :func:`pack_hits` wrote as ``text``.

    Raises
    ------
    TypeError
        ``text`` is not a string or ``count`` not an int.
    ValueError
        ``text`` is not base64, or holds another number of samples than ``count`` (the padding bits of the
        last byte must be zero).
    """
    if not isinstance(text, str):
        raise TypeError(f"hits must be a base64 string, got {type(text).__name__}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise TypeError(f"count must be an int >= 0, got {count!r}")
    try:
        packed = np.frombuffer(base64.b64decode(text, validate=True), dtype=np.uint8)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"hits is not base64 text: {error}") from None
    if len(packed) != (count + 7) // 8:
        raise ValueError(f"hits holds {8 * len(packed)} bits, not the {count} samples of count (rounded up to bytes)")
    bits = np.unpackbits(packed, bitorder="little").astype(bool)
    if bits[count:].any():
        raise ValueError(f"hits has hits set past its count {count}")
    return bits[:count]
