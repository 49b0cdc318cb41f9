"""Makes the top-level packages importable when pytest runs from a checkout without `pip install -e .`."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
