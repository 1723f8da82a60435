"""Hidden-state extraction speed and memory: this toolkit's upstreams vs the reference implementations on
the same weights.

Mockingjay base (3 x 768) and APC base (3 x 512 GRU): random weights exported in S3PRL's checkpoint
format, run by S3PRL's experts and by this toolkit. HuBERT Base (12 x 768): random weights of
S3PRL's (fairseq's) ``HubertModel`` saved in S3PRL's format and copied into a Hugging Face
``HubertModel`` folder; run by S3PRL's expert, by transformers and by this toolkit. Each (model,
implementation) pair extracts all hidden states of the same utterances (default: 32 of
librispeech_mini, batch 8, 2 threads) in its own process, after one warm-up batch. Prints the
real-time factor (audio seconds per wall second), peak RSS and ratios, and for HuBERT the largest
difference of the last hidden state of the first utterance between implementations. wav2vec 2.0
Base and WavLM Base (Base+ shape): random weights of S3PRL's own ``Wav2Vec2Model`` (S3PRL's converted
format) and ``WavLM`` (Microsoft's release format), run by S3PRL's experts and by this toolkit's
Hugging Face upstream (``-u hf``, which reads both formats into transformers' models).

    python benchmarks/extract_speed.py [--models mockingjay apc hubert wav2vec2 wavlm] [--utterances 32] [--batch 8]
        [--threads 2]
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
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

from core.tensors import lengths_to_mask  # noqa: E402  (after sys.path setup)

LIBRISPEECH = ROOT.parent / "shared" / "data" / "librispeech_mini" / "LibriSpeech"
MODELS = ("mockingjay", "apc", "hubert", "wav2vec2", "wavlm")
IMPLS = {"mockingjay": ("s3prl", "ours"), "apc": ("s3prl", "ours"), "hubert": ("s3prl", "huggingface", "ours"),
         "wav2vec2": ("s3prl", "ours"), "wavlm": ("s3prl", "ours")}
UPSTREAM = {"wav2vec2": "hf", "wavlm": "hf"}
"""The toolkit's upstream of each model where its name differs."""


def _utterances(n: int) -> list[torch.Tensor]:
    from corpora.audio import load_audio  # noqa: PLC0415  (worker process only)

    files = sorted(LIBRISPEECH.rglob("*.flac"))[:n]
    if len(files) < n:
        raise SystemExit(f"need {n} utterances under {LIBRISPEECH}, found {len(files)}")
    return [load_audio(f) for f in files]


def _export_hubert(path: Path) -> None:
    """Random HuBERT Base weights as S3PRL's checkpoint (``path``) and as a Hugging Face folder (``path``.hf)."""
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig  # noqa: PLC0415  (optional dev dependency)
    from transformers import HubertConfig as HFConfig, HubertModel as HFModel  # noqa: PLC0415  (optional dev dependency)

    from upstream import build_upstream  # noqa: PLC0415  (each process loads only what it measures)
    from upstream.wav2vec2.checkpoints import HF_PREFIXES  # noqa: PLC0415  (each process loads only what it measures)

    mc, tc = HubertConfig(label_rate=50), HubertPretrainingConfig()
    ref = HubertModel(mc, tc, [list(range(504))])
    torch.save({"task_cfg": dataclasses.asdict(tc), "model_cfg": dataclasses.asdict(mc),
                "model_weight": ref.state_dict(), "dictionaries_symbols": [list(range(504))]}, path)
    ours = build_upstream("hubert", path).model.state_dict()
    hf = HFModel(HFConfig())
    state = {}
    for key, value in ours.items():
        for hf_prefix, our_prefix in HF_PREFIXES:
            if key.startswith(our_prefix):
                state[hf_prefix + key[len(our_prefix):]] = value
    hf.load_state_dict(state, strict=True)
    hf.save_pretrained(str(path) + ".hf")


def _export_wav2vec2(path: Path) -> None:
    """Random wav2vec 2.0 Base weights of S3PRL's (fairseq's) model, in S3PRL's converted format."""
    from s3prl.upstream.wav2vec2.wav2vec2_model import AudioPretrainingConfig, Wav2Vec2Config, Wav2Vec2Model  # noqa: PLC0415  (optional dev dependency)

    mc, tc = Wav2Vec2Config(), AudioPretrainingConfig()
    torch.save({"task_cfg": dataclasses.asdict(tc), "model_cfg": {**dataclasses.asdict(mc), "_name": "wav2vec2"},
                "model_weight": Wav2Vec2Model(mc).state_dict()}, path)


def _export_wavlm(path: Path) -> None:
    """Random WavLM Base+ -shaped weights of S3PRL's ``WavLM``, in Microsoft's release format."""
    from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig  # noqa: PLC0415  (optional dev dependency)

    cfg = {"extractor_mode": "default", "relative_position_embedding": True, "gru_rel_pos": True,
           "num_buckets": 320, "max_distance": 800, "normalize": False, "encoder_layerdrop": 0.0}
    torch.save({"cfg": cfg, "model": WavLM(WavLMConfig(cfg)).state_dict()}, path)


def _export(model_name: str, path: Path) -> None:
    if model_name == "wav2vec2":
        _export_wav2vec2(path)
    elif model_name == "wavlm":
        _export_wavlm(path)
    elif model_name == "hubert":
        _export_hubert(path)
    elif model_name == "apc":
        from upstream.apc.model import build_apc  # noqa: PLC0415  (each process loads only what it measures)
        from upstream.apc.s3prl import export_s3prl_apc  # noqa: PLC0415  (each process loads only what it measures)

        export_s3prl_apc(build_apc(preset="base"), path)
    else:
        from upstream.mockingjay.model import build_mockingjay  # noqa: PLC0415  (each process loads only what it measures)
        from upstream.mockingjay.s3prl import export_s3prl_mockingjay  # noqa: PLC0415  (each process loads only what it measures)

        export_s3prl_mockingjay(build_mockingjay(preset="base"), path)


def _worker(model_name: str, impl: str, ckpt: Path, n: int, batch: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    wavs = _utterances(n)
    if impl == "s3prl":
        expert = importlib.import_module(f"s3prl.upstream.{model_name}.expert").UpstreamExpert(ckpt=str(ckpt)).eval()

        def run(chunk):
            return expert(chunk)["hidden_states"]
    elif impl == "huggingface":
        from transformers import HubertModel  # noqa: PLC0415  (optional dev dependency)

        hf = HubertModel.from_pretrained(str(ckpt) + ".hf").eval()

        def run(chunk):
            lengths = torch.tensor([len(w) for w in chunk])
            mask = lengths_to_mask(lengths).long()
            return hf(torch.nn.utils.rnn.pad_sequence(chunk, batch_first=True), attention_mask=mask,
                      output_hidden_states=True).hidden_states
    else:
        from upstream import build_upstream  # noqa: PLC0415  (each process loads only what it measures)

        model = build_upstream(UPSTREAM.get(model_name, model_name), ckpt)

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
        first = run(batches[0][:1])[-1][0]
    audio = sum(len(w) for w in wavs) / 16000
    return {"model": model_name, "impl": impl, "rtf": audio / wall, "wall": wall, "audio_seconds": audio,
            "layers": len(states), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "last_state": first[:, :8].flatten().tolist()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))  # the first paragraph
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
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
        for model_name in args.models:
            ckpt = Path(tmp) / f"{model_name}_s3prl.ckpt"
            _export(model_name, ckpt)
            for impl in IMPLS[model_name]:
                out = subprocess.run([sys.executable, __file__, "--worker", model_name, impl, str(ckpt),
                                      "--utterances", str(args.utterances), "--batch", str(args.batch),
                                      "--threads", str(args.threads)], check=True, capture_output=True, text=True)
                row = json.loads(out.stdout.strip().splitlines()[-1])
                rows[(model_name, impl)] = row
                print(f"{model_name:<11} {impl:<6} {row['rtf']:7.1f}x real time  {row['wall']:6.2f} s for "
                      f"{row['audio_seconds']:.0f} s of audio  {row['layers']} states  "
                      f"peak RSS {row['peak_rss_mb']:6.0f} MB",
                      flush=True)
    print(f"\n{args.utterances} utterances of {LIBRISPEECH}, batch {args.batch}, {args.threads} threads")
    for model_name in args.models:
        ours = rows[(model_name, "ours")]
        for impl in IMPLS[model_name][:-1]:
            ref = rows[(model_name, impl)]
            diff = max(abs(a - b) for a, b in zip(ours["last_state"], ref["last_state"], strict=True))
            print(f"{model_name:<11} speed ours/{impl} {ours['rtf'] / ref['rtf']:.2f} (target >= 1)   "
                  f"peak RSS ours/{impl} {ours['peak_rss_mb'] / ref['peak_rss_mb']:.2f} (target <= 1)   "
                  f"last-state max diff (utterance 1, 8 dims) {diff:.1e}")


if __name__ == "__main__":
    main()
