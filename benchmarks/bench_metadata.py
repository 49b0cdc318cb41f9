"""Memory of the EgoClip training metadata: object-column DataFrame (the old loader) vs the compact one.

    python benchmarks/bench_metadata.py [--rows 200000] [--csv PATH]

Writes a synthetic TAB-separated ``egoclip.csv`` (EgoClip columns, Ego4D-like: ~1300 narrations per
video, 6-decimal times, nearly all-distinct "#C C ..." narrations, a few malformed rows) unless ``--csv``
names one, then loads it with each variant, every measurement in a fresh subprocess so none sees
another's heap:

* ``legacy``  -- a reference copy of the previous ``load_egoclip``: every cell read as text, and
  ``video_uid``/``narration_source``/``clip_text`` kept as one Python ``str`` per row.
* ``compact`` -- ``data_loader.metadata.load_egoclip``: read in chunks, uids and sources categorical,
  narrations in one UTF-8 buffer + offsets (``PackedStrings``), times float64.

Measured, in MiB (2**20 bytes):

* ``tracemalloc_peak`` / ``tracemalloc_retained``: Python-heap and NumPy buffers allocated during the load
  (NumPy reports its buffers to tracemalloc), at the peak and still held by the returned table.
  Exact and noise-free, but blind to memory that pandas' C tokenizer mallocs directly while parsing.
* ``rss_peak`` / ``rss_retained``: the process's resident set (``/proc/self/status`` VmHWM / VmRSS) above
  the baseline after imports; retained is read after ``gc.collect()`` and glibc ``malloc_trim(0)``. This is
  what the OS sees (it includes the tokenizer), but it also counts pandas' lazy imports and heap
  fragmentation left by the parse, so ``rss_freed_with_table`` (how much RSS dropping the table gives
  back, after another trim) is reported too.
* ``cow_dirty``: a forked child (like a DataLoader worker) reads ``clip_text`` and ``video_uid`` of every
  row the way the dataset does; reported is how much of the parent's memory that made the child copy
  (``Private_Dirty`` in ``/proc/self/smaps_rollup`` above a forked child that reads nothing). Python
  objects are copied because reading them updates their reference counts; flat NumPy buffers are not.

Writes ``benchmarks/results/metadata.json`` with the numbers and a linear extrapolation to the 3.8 M
rows of the real EgoClip.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import tracemalloc
import warnings

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import machine_info, write_report  # noqa: E402
from data_loader import metadata as md  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "metadata.json")
EGOCLIP_ROWS = 3_800_000
MIB = 2 ** 20

VERBS = ["picks", "puts", "holds", "cuts", "opens", "closes", "moves", "turns", "washes", "wipes", "pours",
         "takes", "drops", "lifts", "touches", "adjusts", "looks at", "walks to", "stirs", "folds"]
NOUNS = ["a bag of clothes", "the knife", "a cup", "the door", "a piece of wood", "the tap", "a plate",
         "the phone", "a bowl of rice", "the paint brush", "a screw", "the dough", "a towel", "the lid",
         "a carton of milk", "the cabinet", "a pair of scissors", "the laptop", "a bottle", "the book"]
PLACES = ["", " from the floor", " on the table", " with his left hand", " in the sink", " on the shelf",
          " with both hands", " from the box", " into the pot", " near the wall"]


# ---------------------------------------------------------------- data
def generate_egoclip(path: str, rows: int, seed: int = 0, clips_per_video: int = 1300,
                     bad_fraction: float = 0.0005) -> None:
    """A TAB-separated egoclip.csv of ``rows`` data lines in EgoClip's format (``md.EGOCLIP_COLUMNS``).

    About ``bad_fraction`` of the rows are broken the ways real files are (an extra field, a bad tag cell,
    ``clip_end < clip_start``), so the loader's skip accounting runs too.
    """
    rng = np.random.default_rng(seed)
    num_videos = max(1, rows // clips_per_video)
    video = np.sort(rng.integers(0, num_videos, rows))
    uids = np.array([f"{rng.bytes(4).hex()}-{rng.bytes(2).hex()}-{rng.bytes(2).hex()}-{rng.bytes(2).hex()}-"
                     f"{rng.bytes(6).hex()}" for _ in range(num_videos)])
    durations = np.round(rng.uniform(300.0, 3600.0, num_videos), 6)
    dur = durations[video]
    narration = np.round(rng.uniform(0.0, 1.0, rows) * dur, 4)
    start = np.round(np.maximum(narration - rng.uniform(0.2, 2.0, rows), 0.0), 6)
    end = np.round(np.minimum(narration + rng.uniform(0.2, 2.0, rows), dur), 6)
    first = np.r_[0, np.flatnonzero(np.diff(video)) + 1]
    narration_ind = np.arange(rows) - np.repeat(first, np.diff(np.r_[first, rows]))
    # real narrations are nearly all distinct; a made-up word per narration makes these so too
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype="S1")
    words = [b"".join(rng.choice(letters, k)).decode() for k in rng.integers(3, 10, 3000)]
    text = [f"#C C {VERBS[v]} {NOUNS[n]} {words[w]}{PLACES[p]}" for v, n, w, p in
            zip(rng.integers(0, len(VERBS), rows), rng.integers(0, len(NOUNS), rows),
                rng.integers(0, len(words), rows), rng.integers(0, len(PLACES), rows))]
    verb_tags = [f"[{v}]" for v in rng.integers(0, md.EGO4D_NUM_VERBS, rows)]
    noun_tags = ["[" + ", ".join(map(str, rng.integers(0, md.EGO4D_NUM_NOUNS, k))) + "]"
                 for k in rng.integers(1, 4, rows)]
    source = np.where(rng.random(rows) < 0.5, "narration_pass_1", "narration_pass_2")
    lines = ["\t".join(md.EGOCLIP_COLUMNS)]
    uid_of_row = uids[video].tolist()
    dur, narration, start, end = dur.tolist(), narration.tolist(), start.tolist(), end.tolist()
    narration_ind, source = narration_ind.tolist(), source.tolist()
    for i in range(rows):
        lines.append(f"{i}\t{uid_of_row[i]}\t{dur[i]!r}\t{source[i]}\t{narration_ind[i]}\t{narration[i]!r}\t"
                     f"{start[i]!r}\t{end[i]!r}\t{text[i]}\t{verb_tags[i]}\t{noun_tags[i]}")
    for i in rng.choice(np.arange(1, rows + 1), size=int(bad_fraction * rows), replace=False):
        fields = lines[i].split("\t")
        kind = i % 3
        if kind == 0:
            fields.append("extra field")
        elif kind == 1:
            fields[9] = "[1, x]"
        else:
            fields[6], fields[7] = fields[7], str(float(fields[7]) - 1.0)
        lines[i] = "\t".join(fields)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


# ---------------------------------------------------------------- the previous loader (reference copy)
def legacy_load_egoclip(path: str, num_verbs: int = md.EGO4D_NUM_VERBS,
                        num_nouns: int = md.EGO4D_NUM_NOUNS) -> md.EgoClipTable:
    """The loader as it was before the compact storage: all cells as text, object columns kept."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, on_bad_lines="warn")
    bad_lines = [int(n) for w in caught for n in re.findall(r"Skipping line (\d+)", str(w.message))]
    skipped = {"malformed line": len(bad_lines)}
    times = {c: pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=np.float64) for c in md.TIME_COLUMNS}
    finite = np.logical_and.reduce([np.isfinite(t) for t in times.values()])
    ordered = finite & (times["clip_end"] >= times["clip_start"])
    verbs, verb_ok = _legacy_tags(frame["tag_verb"], num_verbs)
    nouns, noun_ok = _legacy_tags(frame["tag_noun"], num_nouns)
    has_uid = frame["video_uid"].str.len().to_numpy() > 0
    tags_ok = verb_ok & noun_ok
    skipped["non-numeric time"] = int((~finite).sum())
    skipped["clip_end < clip_start"] = int((finite & ~ordered).sum())
    skipped["bad tags"] = int((ordered & ~tags_ok).sum())
    skipped["empty video_uid"] = int((ordered & tags_ok & ~has_uid).sum())
    keep = ordered & tags_ok & has_uid
    rows = np.flatnonzero(keep)
    clean = frame.iloc[rows][["video_uid", "narration_source", "clip_text"]].reset_index(drop=True)
    for column in ("video_dur", "narration_ind"):
        clean[column] = pd.to_numeric(frame[column].iloc[rows], errors="coerce").to_numpy()
    for column, values in times.items():
        clean[column] = values[rows]
    return md.EgoClipTable(frame=clean, verb_ids=md.TagLists([verbs[r] for r in rows]),
                           noun_ids=md.TagLists([nouns[r] for r in rows]),
                           skipped={k: n for k, n in skipped.items() if n})


def _legacy_tags(cells: pd.Series, size: int) -> tuple[list, np.ndarray]:
    parsed = {}
    for text in pd.unique(cells):
        try:
            ids = md.parse_tag_list(text)
        except ValueError:
            ids = None
        parsed[text] = None if ids is not None and any(i >= size for i in ids) else ids
    rows = [parsed[text] for text in cells]
    return rows, np.fromiter((ids is not None for ids in rows), dtype=bool, count=len(rows))


LOADERS = {"legacy": legacy_load_egoclip, "compact": md.load_egoclip}


# ---------------------------------------------------------------- measurement (one subprocess each)
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _private_dirty_kib() -> int:
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith("Private_Dirty:"):
                return int(line.split()[1])
    raise RuntimeError("/proc/self/smaps_rollup has no Private_Dirty")


def _trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _touch_all_rows(frame: pd.DataFrame) -> int:
    """What a DataLoader worker does over an epoch: read every row's narration and video uid."""
    texts, uids = frame["clip_text"], frame["video_uid"]
    total = 0
    for i in range(len(frame)):
        total += len(texts.iat[i]) + len(uids.iat[i])
    return total


def _child_dirty_kib(frame: pd.DataFrame, touch: bool) -> int:
    """Private_Dirty KiB of a forked child after (optionally) reading every row, sent back over a pipe."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(read_fd)
            if touch:
                _touch_all_rows(frame)
            gc.collect()
            os.write(write_fd, str(_private_dirty_kib()).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        value = int(f.read())
    os.waitpid(pid, 0)
    return value


def measure(variant: str, mode: str, csv: str) -> dict:
    load = LOADERS[variant]
    if mode == "tracemalloc":
        gc.collect()
        tracemalloc.start()
        t0 = time.perf_counter()
        table = load(csv)
        seconds = time.perf_counter() - t0
        gc.collect()
        retained, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return {"rows": len(table), "skipped": table.skipped, "tracemalloc_peak_mib": peak / MIB,
                "tracemalloc_retained_mib": retained / MIB, "load_s_traced": seconds}
    _trim()
    base = _status_kib("VmRSS")
    t0 = time.perf_counter()
    table = load(csv)
    seconds = time.perf_counter() - t0
    peak = _status_kib("VmHWM")
    _trim()
    retained = _status_kib("VmRSS")
    frame = table.frame
    idle, touched = _child_dirty_kib(frame, touch=False), _child_dirty_kib(frame, touch=True)
    result = {"rows": len(table), "rss_peak_mib": (peak - base) / 1024, "rss_retained_mib": (retained - base) / 1024,
              "cow_dirty_mib": max(touched - idle, 0) / 1024, "load_s": seconds,
              "frame_memory_usage_deep_mib": frame.memory_usage(deep=True).sum() / MIB,
              "dtypes": {c: str(t) for c, t in frame.dtypes.items()}}
    del table, frame
    _trim()
    result["rss_freed_with_table_mib"] = (retained - _status_kib("VmRSS")) / 1024
    return result


def run_measurement(variant: str, mode: str, csv: str) -> dict:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--measure", variant, "--mode", mode,
                          "--csv", csv], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def check_same_table(csv: str) -> None:
    """Both loaders keep the same rows with the same values (the compact storage loses nothing)."""
    old, new = legacy_load_egoclip(csv), md.load_egoclip(csv)
    assert old.skipped == new.skipped, (old.skipped, new.skipped)
    assert list(old.frame.columns) == list(new.frame.columns)
    for column in old.frame.columns:
        assert old.frame[column].tolist() == new.frame[column].tolist(), column
    for name in ("verb_ids", "noun_ids"):
        a, b = getattr(old, name), getattr(new, name)
        assert np.array_equal(a.offsets, b.offsets) and np.array_equal(a.values, b.values), name


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000, help="data rows of the generated egoclip.csv")
    parser.add_argument("--csv", default=None, help="an existing egoclip.csv (default: generate one)")
    parser.add_argument("--out", default=RESULTS)
    parser.add_argument("--measure", choices=sorted(LOADERS), help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("tracemalloc", "rss"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.mode, args.csv)))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        csv = args.csv
        if csv is None:
            csv = os.path.join(tmp, "egoclip.csv")
            t0 = time.perf_counter()
            generate_egoclip(csv, args.rows)
            print(f"generated {args.rows} rows in {time.perf_counter() - t0:.1f} s")
        check_same_table(csv)
        results = {}
        for variant in LOADERS:
            results[variant] = {**run_measurement(variant, "tracemalloc", csv), **run_measurement(variant, "rss", csv)}
        csv_mib = os.path.getsize(csv) / MIB

    rows = results["compact"]["rows"]
    scale = EGOCLIP_ROWS / rows
    keys = ("tracemalloc_peak_mib", "tracemalloc_retained_mib", "rss_peak_mib", "rss_retained_mib",
            "rss_freed_with_table_mib", "cow_dirty_mib")
    extrapolated = {v: {k: r[k] * scale for k in keys} for v, r in results.items()}
    report = {"benchmark": "metadata", "what": "memory of load_egoclip's table (MiB), see the script docstring",
              "csv": "given" if args.csv else "generated", "csv_mib": csv_mib, "rows_kept": rows,
              "machine": machine_info(pandas=pd.__version__, numpy=np.__version__),
              "results": results, f"linear_extrapolation_to_{EGOCLIP_ROWS}_rows": extrapolated,
              "note": "retained memory and cow_dirty scale linearly with rows; the compact loader's peak does "
                      "not (it parses chunk by chunk: peak = retained + the narration bytes while they are "
                      "joined + one chunk), so its extrapolated peak is an upper bound",
              "ratios_legacy_over_compact": {k: results["legacy"][k] / max(results["compact"][k], 1e-9)
                                             for k in keys}}
    print(f"{rows} rows kept of a {csv_mib:.1f} MiB egoclip.csv; MiB (×{scale:.0f} for {EGOCLIP_ROWS} rows)")
    for variant, r in results.items():
        print(f"{variant}: load {r['load_s']:.2f} s")
        for k in keys:
            print(f"  {k.replace('_mib', ''):<26}{r[k]:>8.1f}   ({r[k] * scale:>6.0f} at {EGOCLIP_ROWS} rows)")
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
