"""Where the team's shared data lies: ``../shared/data`` beside the repository (absent on a user's machine).

Tests that read it skip cleanly when it is absent; see that folder's README.
"""

from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
