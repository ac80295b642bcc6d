"""tnlib_torch: the PyTorch adapter of tnlib (conv layers, models, studies).

Empty for now: the truncation of conv kernels, factorized conv layers and the
compressibility study arrive in later releases.  It imports :mod:`tnlib`; the
core never imports it.
"""

import tnlib

__version__ = tnlib.__version__
