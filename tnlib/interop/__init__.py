"""Conversions between tnlib's objects and those of other tensor-network libraries.

Each submodule imports its library lazily, inside its functions, so that
``import tnlib`` never needs it; install the extra that a submodule names
(``pip install tnlib[quimb]`` for :mod:`tnlib.interop.quimb`,
``pip install tnlib[tensorly]`` for :mod:`tnlib.interop.tensorly`).
"""
