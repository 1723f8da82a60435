"""Build one of the synthetic demo corpora and print what it holds.

    python -m corpora.demo keywords|asr|st OUT_DIR [options]

Each prints where the corpus is and the ``task.corpus`` / ``task.root`` settings that read it;
``keywords`` also prints clips, speakers and words per split.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from .asr import build_demo_asr
from .keywords import build_demo_keywords, split_counts
from .st import build_demo_st
from .tts import FLITE_VOICES, STAMP


def main(argv: list[str] | None = None) -> None:
    """``python -m corpora.demo keywords|asr|st OUT_DIR``: build a demo corpus, print what it holds."""
    parser = argparse.ArgumentParser(prog="python -m corpora.demo", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="corpus", required=True)
    kw = sub.add_parser("keywords", help="demo keyword-spotting corpus (Speech Commands v0.01 layout)")
    kw.add_argument("out_dir", type=Path)
    kw.add_argument("--espeak-speakers", type=int, default=24, help="espeak-ng voice configurations (default 24)")
    kw.add_argument("--no-flite", action="store_true", help="leave out the flite voices")
    kw.add_argument("--repeats", type=int, default=2, help="clips per speaker and word (default 2)")
    kw.add_argument("--seed", type=int, default=0)
    asr = sub.add_parser("asr", help="demo ASR corpus (LibriSpeech / Libri-light layout)")
    asr.add_argument("out_dir", type=Path)
    asr.add_argument("--train-minutes", type=float, default=10.0)
    asr.add_argument("--eval-minutes", type=float, default=3.0)
    asr.add_argument("--seed", type=int, default=0)
    st = sub.add_parser("st", help="demo En->De speech-translation corpus (CoVoST 2 layout)")
    st.add_argument("out_dir", type=Path)
    st.add_argument("--parallel-text", type=Path, default=None,
                    help="a Multi30k folder (default: the built-in grammar)")
    st.add_argument("--sizes", type=int, nargs=3, default=(1500, 200, 200), metavar=("TRAIN", "DEV", "TEST"))
    st.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.monotonic()
    if args.corpus == "st":
        root = build_demo_st(args.out_dir, args.parallel_text, tuple(args.sizes), seed=args.seed)
        print(f"{root} ready ({time.monotonic() - started:.1f} s): {json.loads((root / STAMP).read_text())['seconds']} "
              f"s of speech; use task.corpus=covost2 task.root={root}")
        return
    if args.corpus == "asr":
        root = build_demo_asr(args.out_dir, args.train_minutes, args.eval_minutes, seed=args.seed)
        print(f"{root} ready ({time.monotonic() - started:.1f} s): {json.loads((root / STAMP).read_text())['seconds']} "
              f"s of speech; use task.corpus=librispeech task.root={root}")
        return
    root = build_demo_keywords(
        args.out_dir,
        espeak_speakers=args.espeak_speakers,
        flite_voices=() if args.no_flite else tuple(FLITE_VOICES),
        repeats=args.repeats,
        seed=args.seed,
    )
    split = json.loads((root / STAMP).read_text())["split"]
    for name, counts in split_counts(root).items():
        print(f"{name}: {sum(counts.values())} clips, {len(split[name])} speakers, {len(counts)} words")
    print(f"{root} ready ({time.monotonic() - started:.1f} s); use task.corpus=speech_commands task.root={root}")


if __name__ == "__main__":
    main()
