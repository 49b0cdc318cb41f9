"""Prepare Ego4D narrations + precomputed video features for CLEP training (resumable: rerun to continue).

    python run/preprocess_clep.py --narrations ego4d/v1/annotations/narration.json \\
        --ego4d-json ego4d/v1/ego4d.json --features ego4d/v1/omnivore_video_swinl --out data/clep \\
        [--text-encoder minilm | st:all-mpnet-base-v2 | hash:64] \\
        [--k400-labels kinetics400/val.csv --k400-features k400_features/] \\
        [--charades-csv CharadesEgo/CharadesEgo_v1_test.csv --charades-classes Charades_v1_classes.txt \\
         --charades-features charades_features/]

Writes the output folder described in data_loader/clep_preprocess.py; a report of kept and skipped videos
and narrations goes to <out>/preprocess_report.json.
"""
import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_loader.clep_preprocess import NarrationFilter, preprocess  # noqa: E402
from model.sentence_encoders import build_text_encoder  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--narrations", required=True, help="Ego4D narration.json")
    parser.add_argument("--ego4d-json", default=None, help="Ego4D ego4d.json (videos in val/test splits dropped)")
    parser.add_argument("--features", required=True, help="folder of <video_uid>.pt feature files [T, D]")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--text-encoder", default="minilm",
                        help="minilm (offline all-MiniLM-L6-v2), st:<sentence-transformers name>, hf:<folder>, "
                             "hash[:dim]")
    parser.add_argument("--device", default="cpu", help="device of the text encoder")
    parser.add_argument("--batch-size", type=int, default=1024, help="narrations per encoder call")
    parser.add_argument("--min-words", type=int, default=5, help="drop narrations with fewer words")
    parser.add_argument("--skip-missing-features", action="store_true",
                        help="drop narrated videos without a feature file (default: stop, naming them)")
    parser.add_argument("--k400-labels", help="Kinetics-style CSV: label + key, or youtube_id/time_start/time_end")
    parser.add_argument("--k400-features", help="folder of <key>.pt features of the Kinetics clips")
    parser.add_argument("--charades-csv", help="CharadesEgo_v1_test.csv (id, actions)")
    parser.add_argument("--charades-classes", help="Charades_v1_classes.txt ('c000 <name>' lines)")
    parser.add_argument("--charades-features", help="folder of <id>.pt features of the Charades-Ego videos")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    k400 = {"labels_csv": args.k400_labels, "feature_dir": args.k400_features} if args.k400_labels else None
    charades = ({"test_csv": args.charades_csv, "classes_txt": args.charades_classes,
                 "feature_dir": args.charades_features} if args.charades_csv else None)
    report = preprocess(args.out, args.narrations, args.features,
                        build_text_encoder(args.text_encoder, device=args.device), args.ego4d_json,
                        NarrationFilter(min_words=args.min_words), args.skip_missing_features, args.batch_size,
                        k400, charades)
    report["text_encoder"] = args.text_encoder
    (Path(args.out) / "preprocess_report.json").write_text(json.dumps(report, indent=1))
    logging.info("done: %s", json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
