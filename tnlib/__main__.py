"""``python -m tnlib``: the core demo (see :mod:`tnlib.demo`)."""

import sys

from tnlib.demo import main

sys.exit(main())
