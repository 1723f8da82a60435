"""Hidden-state extraction speed and memory: this toolkit's upstreams vs S3PRL's experts on the same weights.

For Mockingjay base (3 x 768) and APC base (3 x 512 GRU), random weights are exported in S3PRL's
checkpoint format; each (model, implementation) pair then extracts all hidden states of the same
utterances (default: 32 of librispeech_mini, batch 8, 2 threads) in its own process, after one
warm-up batch. Prints the real-time factor (audio seconds per wall second), peak RSS and ratios.

    python benchmarks/extract_speed.py [--utterances 32] [--batch 8] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
LIBRISPEECH = ROOT.parent / "shared" / "data" / "librispeech_mini" / "LibriSpeech"
MODELS = ("mockingjay", "apc")


def _utterances(n: int) -> list[torch.Tensor]:
    from corpora.audio import load_audio  # noqa: PLC0415

    files = sorted(LIBRISPEECH.rglob("*.flac"))[:n]
    if len(files) < n:
        raise SystemExit(f"need {n} utterances under {LIBRISPEECH}, found {len(files)}")
    return [load_audio(f) for f in files]


def _export(model_name: str, path: Path) -> None:
    if model_name == "apc":
        from upstream.apc import build_apc  # noqa: PLC0415
        from upstream.interop.s3prl_apc import export_s3prl_apc  # noqa: PLC0415

        export_s3prl_apc(build_apc(preset="base"), path)
    else:
        from upstream.interop.s3prl_mockingjay import export_s3prl_mockingjay  # noqa: PLC0415
        from upstream.mockingjay import build_mockingjay  # noqa: PLC0415

        export_s3prl_mockingjay(build_mockingjay(preset="base"), path)


def _worker(model_name: str, impl: str, ckpt: Path, n: int, batch: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    wavs = _utterances(n)
    if impl == "s3prl":
        import importlib  # noqa: PLC0415

        expert = importlib.import_module(f"s3prl.upstream.{model_name}.expert").UpstreamExpert(ckpt=str(ckpt)).eval()

        def run(chunk):
            return expert(chunk)["hidden_states"]
    else:
        from upstream import build_upstream  # noqa: PLC0415

        model = build_upstream(model_name, ckpt)

        def run(chunk):
            lengths = torch.tensor([len(w) for w in chunk])
            return model(torch.nn.utils.rnn.pad_sequence(chunk, batch_first=True), lengths).hidden_states
    batches = [wavs[i:i + batch] for i in range(0, n, batch)]
    with torch.inference_mode():
        run(batches[0])  # warm-up
        start = time.perf_counter()
        for chunk in batches:
            states = run(chunk)
        wall = time.perf_counter() - start
    audio = sum(len(w) for w in wavs) / 16000
    return {"model": model_name, "impl": impl, "rtf": audio / wall, "wall": wall, "audio_seconds": audio,
            "layers": len(states), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--utterances", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--worker", nargs=3, metavar=("MODEL", "IMPL", "CKPT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        m, impl, ckpt = args.worker
        print(json.dumps(_worker(m, impl, Path(ckpt), args.utterances, args.batch, args.threads)))
        return
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model_name in MODELS:
            ckpt = Path(tmp) / f"{model_name}_s3prl.ckpt"
            _export(model_name, ckpt)
            for impl in ("s3prl", "ours"):
                out = subprocess.run([sys.executable, __file__, "--worker", model_name, impl, str(ckpt),
                                      "--utterances", str(args.utterances), "--batch", str(args.batch),
                                      "--threads", str(args.threads)], check=True, capture_output=True, text=True)
                row = json.loads(out.stdout.strip().splitlines()[-1])
                rows[(model_name, impl)] = row
                print(f"{model_name:<11} {impl:<6} {row['rtf']:7.1f}x real time  {row['wall']:6.2f} s for "
                      f"{row['audio_seconds']:.0f} s of audio  {row['layers']} states  peak RSS {row['peak_rss_mb']:6.0f} MB",
                      flush=True)
    print(f"\n{args.utterances} utterances of {LIBRISPEECH}, batch {args.batch}, {args.threads} threads")
    for model_name in MODELS:
        ours, ref = rows[(model_name, "ours")], rows[(model_name, "s3prl")]
        print(f"{model_name:<11} speed ours/S3PRL {ours['rtf'] / ref['rtf']:.2f} (target >= 1)   "
              f"peak RSS ours/S3PRL {ours['peak_rss_mb'] / ref['peak_rss_mb']:.2f} (target <= 1)")


if __name__ == "__main__":
    main()
