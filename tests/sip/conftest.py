"""Make `ivr` importable when the package is not installed into the venv (plain `pytest tests/sip`)."""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
