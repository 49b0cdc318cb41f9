"""Charades-Ego annotations: parse the ``actions`` field and write the per-action ``metadata_<split>.csv`` files.

    python -m utils.charades_meta --classes CharadesEgo/Charades_v1_classes.txt --out-dir CharadesEgo \\
        CharadesEgo/CharadesEgo_v1_train_only1st.csv CharadesEgo/CharadesEgo_v1_test_only1st.csv

Each input csv (Charades layout: columns ``id`` and ``actions`` read by name, ``actions`` like
``c147 0.00 12.30;c061 3.10 8.00`` or empty) gives ``<out-dir>/metadata_<split>.csv``: TAB-separated, header
``id	cls	t_start	t_end	narration``, one row per action (``cls`` the class number without ``c``, times in
seconds, ``narration`` the class name); videos without actions are skipped. ``<split>`` is the word after
``CharadesEgo_v1_`` in the file name (``train``, ``test``), or given with ``--splits``.
The class file has one ``cXXX name`` line per class.
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import sys

import pandas as pd

from utils.video_io import atomic_file

METADATA_COLUMNS = ("id", "cls", "t_start", "t_end", "narration")
_ACTION = re.compile(r"^c(\d+) +(-?\d+(?:\.\d*)?) +(-?\d+(?:\.\d*)?)$")


class CharadesFormatError(ValueError):
    """A Charades annotation does not parse; the message names the file and row."""


def read_classes(path: str) -> list[str]:
    """Class names by class number from ``cXXX name`` lines (numbers must run 0, 1, ... in order)."""
    names = []
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            code, _, name = line.strip().partition(" ")
            if not re.fullmatch(r"c\d+", code) or int(code[1:]) != len(names) or not name:
                raise CharadesFormatError(f"{path} line {line_number}: expected 'c{len(names):03d} <class name>', "
                                          f"got {line.strip()!r}")
            names.append(name.strip())
    return names


def parse_actions(field, where: str) -> list[tuple[int, float, float]]:
    """``[(class, start s, end s), ...]`` of an ``actions`` field (empty or NaN: no actions); ``where`` names the
    file and row in the error."""
    if field is None or (isinstance(field, float) and field != field) or not str(field).strip():
        return []
    actions = []
    for part in str(field).split(";"):
        match = _ACTION.match(part.strip())
        if match is None:
            raise CharadesFormatError(f"{where}: action {part.strip()!r} in actions field {field!r} is not "
                                      f"'cXXX start end'")
        cls, start, end = int(match.group(1)), float(match.group(2)), float(match.group(3))
        if end < start:
            raise CharadesFormatError(f"{where}: action {part.strip()!r} ends before it starts")
        actions.append((cls, start, end))
    return actions


def read_charades_csv(path: str, num_classes: int | None = None) -> pd.DataFrame:
    """The csv (all columns as text) plus a parsed ``action_list`` column; a bad row raises naming file and row
    (rows counted from 0 after the header, with the video id)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Charades annotation file {path} not found")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("id", "actions") if c not in table.columns]
    if missing:
        raise CharadesFormatError(f"{path}: missing column(s) {missing}; found {list(table.columns)}")
    parsed = []
    for row, (video, field) in enumerate(zip(table["id"], table["actions"])):
        actions = parse_actions(field, f"{path} row {row} (id {video})")
        if num_classes is not None and any(cls >= num_classes for cls, _, _ in actions):
            raise CharadesFormatError(f"{path} row {row} (id {video}): class number out of range "
                                      f"(there are {num_classes} classes): {field!r}")
        parsed.append(actions)
    return table.assign(action_list=parsed)


def metadata_rows(table: pd.DataFrame, class_names: list[str]) -> list[dict]:
    """One row per action (videos without actions contribute none)."""
    return [{"id": video, "cls": cls, "t_start": start, "t_end": end, "narration": class_names[cls]}
            for video, actions in zip(table["id"], table["action_list"]) for cls, start, end in actions]


def split_of(path: str) -> str:
    """``train`` of ``CharadesEgo_v1_train_only1st.csv``: the word after ``CharadesEgo_v1_`` (else the stem)."""
    stem = os.path.splitext(os.path.basename(path))[0]
    match = re.match(r"CharadesEgo_v1_([A-Za-z0-9]+)", stem)
    return match.group(1) if match else stem


def write_metadata(csv_path: str, class_names: list[str], out_path: str) -> int:
    """Write ``out_path`` (TAB-separated metadata) from one Charades csv; returns the number of action rows."""
    rows = metadata_rows(read_charades_csv(csv_path, len(class_names)), class_names)
    with atomic_file(out_path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METADATA_COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m utils.charades_meta", description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", nargs="+", help="Charades-Ego annotation csv files (one per split)")
    parser.add_argument("--classes", required=True, help="Charades_v1_classes.txt")
    parser.add_argument("--out-dir", required=True, help="folder for metadata_<split>.csv")
    parser.add_argument("--splits", nargs="+", default=None,
                        help="split name of each csv (default: the word after CharadesEgo_v1_ in its name)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    splits = args.splits or [split_of(path) for path in args.csv]
    if len(splits) != len(args.csv) or len(set(splits)) != len(splits):
        raise SystemExit(f"error: need one distinct split name per csv, got {splits} for {len(args.csv)} files")
    try:
        class_names = read_classes(args.classes)
        for path, split in zip(args.csv, splits):
            out = os.path.join(args.out_dir, f"metadata_{split}.csv")
            print(f"{path} -> {out}: {write_metadata(path, class_names, out)} actions")
    except (CharadesFormatError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
