"""Helpers shared by the benchmark scripts: the machine a result was measured on, and writing the result."""
from __future__ import annotations

import json
import os
import platform

from utils.video_io import atomic_file


def machine_info(**versions: str) -> dict:
    """Python version, CPU count and platform of this machine, plus the given library versions."""
    return {"python": platform.python_version(), **versions, "cpus": os.cpu_count(),
            "platform": platform.platform()}


def write_report(report: dict, path: str) -> None:
    """Write ``report`` as indented JSON to ``path`` (atomically: a failed run leaves the previous file)."""
    with atomic_file(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(report, f, indent=2)
    print(f"wrote {path}")
