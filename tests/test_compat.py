"""Every import path the README's "EgoVLP names kept" list promises still resolves."""
import importlib
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def kept_names() -> list[str]:
    text = README.read_text()
    section = text.split("### EgoVLP names kept", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"`((?:model|data_loader|trainer|utils)\.[\w.]+)`", section)


def resolve(dotted: str):
    """Import the longest importable module prefix of ``dotted``, then follow attributes."""
    parts = dotted.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attr in parts[split:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def test_the_readme_lists_names():
    assert len(kept_names()) >= 20


@pytest.mark.parametrize("dotted", kept_names())
def test_readme_name_imports(dotted):
    assert callable(resolve(dotted))
