"""``python -m tnlib``: the core demo (see :mod:`tnlib.demo`), with the errors of :mod:`tnlib.cli`."""

import sys

from tnlib.cli import SPECTRA, run

sys.exit(run("python -m tnlib", SPECTRA, sys.argv[1:]))
