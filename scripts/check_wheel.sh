#!/usr/bin/env bash
# The toolkit as a user installs it: build the wheel, install it into a fresh venv OUTSIDE the
# checkout (the dependencies are borrowed from .venv through a .pth file; the toolkit itself comes
# only from the wheel), then, from an empty temporary folder, run every console script's --help, list
# the packaged recipes, train + evaluate one tiny keyword-spotting run on a Speech Commands-layout
# corpus made here, with a recipe named as the wheel ships it (-c ks/speech_commands), and run a
# one-experiment benchmark whose YAML names its task config as a checkout does. Needs .venv
# (scripts/setup.sh). Run by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
CHECKOUT=$(pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "check_wheel: building the wheel from the checkout's files (tracked and new, not ignored ones)"
mkdir "$WORK/src"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
  | tar --null -T - -cf - | tar -C "$WORK/src" -xf -
.venv/bin/python -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation -w "$WORK/dist" "$WORK/src" \
  >/dev/null
WHEEL=$(ls "$WORK"/dist/superb_lite-*.whl)
.venv/bin/python - "$WHEEL" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
tops = sorted({n.split("/")[0] for n in names if not n.startswith("superb_lite")})
print(f"check_wheel: {len(names)} files; top level: {', '.join(tops)}")
for need in ("core/__init__.py", "corpora/demo/__init__.py", "upstream/registry.py", "downstream/heads/__init__.py",
             "leaderboard/cli.py", "recipes/benchmark/run.py", "recipes/asr/low_resource.py", "recipes/ks/fsdd.yaml",
             "recipes/benchmark/shared.yaml", "recipes/pretrain/apc_tiny.yaml", "run_downstream.py"):
    assert need in names, f"{need} missing from the wheel"
PY

BASE=$(.venv/bin/python -c 'import sys; print(sys._base_executable)')
"$BASE" -m venv "$WORK/venv"  # its own pip (ensurepip's bundled wheel): .venv's installation is left alone
"$WORK/venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps "$WHEEL" >/dev/null
SITE=$("$WORK/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
DEPS=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$DEPS" > "$SITE/borrowed-dependencies.pth"  # a path line only: .venv's editable-install hook is not run
export PATH="$WORK/venv/bin:$PATH"

mkdir "$WORK/run" && cd "$WORK/run"
python - "$CHECKOUT" <<'PY'
import sys
import core, corpora, downstream, leaderboard, recipes, upstream
for module in (core, corpora, upstream, downstream, leaderboard, recipes):
    assert not module.__file__.startswith(sys.argv[1]), f"{module.__name__} comes from the checkout: {module.__file__}"
print(f"check_wheel: the toolkit imports from {core.__file__.rsplit('/core/', 1)[0]}")
PY
for command in superb-downstream superb-pretrain superb-leaderboard "python -m recipes.benchmark" \
               "python -m recipes.asr.low_resource" "python -m leaderboard" "python -m upstream.pretrain"; do
  $command --help >/dev/null || { echo "check_wheel: FAILED: $command --help"; exit 1; }
  echo "check_wheel: $command --help: ok"
done
RECIPES=$(superb-downstream --list-recipes)
echo "check_wheel: $(echo "$RECIPES" | wc -l) recipes packaged, e.g. $(echo "$RECIPES" | head -3 | tr '\n' ' ')"

python - <<'PY'
# A tiny Speech Commands layout: two words, three speakers, tones with a little noise.
from pathlib import Path
import numpy as np
import soundfile as sf
rng = np.random.default_rng(0)
root = Path("speech_commands")
for w, (word, pitch) in enumerate((("yes", 300.0), ("no", 700.0))):
    (root / word).mkdir(parents=True)
    for s, speaker in enumerate(("aa11", "bb22", "cc33")):
        for n in range(4):
            t = np.arange(16000) / 16000
            wave = 0.3 * np.sin(2 * np.pi * (pitch + 40 * s + 10 * n) * t) + 0.01 * rng.standard_normal(t.size)
            sf.write(root / word / f"{speaker}_nohash_{n}.wav", wave.astype("float32"), 16000)
(root / "validation_list.txt").write_text("".join(f"{w}/bb22_nohash_{n}.wav\n" for w in ("yes", "no") for n in range(4)))
(root / "testing_list.txt").write_text("".join(f"{w}/cc33_nohash_{n}.wav\n" for w in ("yes", "no") for n in range(4)))
PY
superb-downstream -m train -u fbank -d ks -c ks/speech_commands -n tiny -p exp -o task.root=speech_commands \
  -o task.classes=all -o train.total_steps=6 -o train.eval_every=3 -o train.save_every=3 -o train.batch_size=4 \
  -o cache.root=cache >"$WORK/train.log" 2>&1 || { cat "$WORK/train.log"; exit 1; }
superb-downstream -m evaluate -n tiny -p exp -s dev,test >"$WORK/eval.log" 2>&1 || { cat "$WORK/eval.log"; exit 1; }
superb-leaderboard exp >/dev/null
cat > bench.yaml <<'YAML'
# the benchmark from the wheel: task configs spelled as in a checkout (recipes/...), found in the package
upstreams: [fbank]
tasks:
  ks:
    task: ks
    config: recipes/ks/speech_commands.yaml
    overrides: [task.root=speech_commands, task.classes=all, train.total_steps=4, train.eval_every=2,
                train.save_every=2, train.batch_size=4, cache.root=cache]
YAML
python -m recipes.benchmark --data bench.yaml --expdir bench >"$WORK/bench.log" 2>&1 || { cat "$WORK/bench.log"; exit 1; }
test -f bench/leaderboard.md && echo "check_wheel: python -m recipes.benchmark --data bench.yaml: leaderboard written"
python - <<'PY'
import json
r = json.load(open("exp/tiny/results.json"))
print(f"check_wheel: tiny run done: {r['task']} {r['upstream']} test accuracy {r['splits']['test']['accuracy']:.3f}, "
      f"schema {r['schema_version']}; leaderboard written: {sorted(p for p in __import__('os').listdir('exp'))}")
PY
echo "check_wheel: passed"
