"""Command-line pieces shared by the example scripts: the synthetic dataset they run on."""
import argparse
from pathlib import Path

from utils.synthetic import ensure_dataset


def example_parser(doc: str) -> argparse.ArgumentParser:
    """A parser whose help shows ``doc`` as written, with ``--data`` (the synthetic dataset folder) and ``--small``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/synthetic", help="synthetic dataset folder (generated if absent)")
    parser.add_argument("--small", action="store_true", help="generate a small dataset if --data is absent")
    return parser


def synthetic_data(args: argparse.Namespace) -> Path:
    """``args.data`` as a Path, after generating the synthetic dataset there (small with ``args.small``) if absent."""
    data = Path(args.data)
    ensure_dataset(data, args.small)
    return data
