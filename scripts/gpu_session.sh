#!/usr/bin/env bash
# One call on a lent GPU: both GPU recipes (cnn9 from scratch, EfficientNet-B0 from ImageNet-1k) trained at once on
# one GPU, each with its test report, then checked the way anyone would check them (load_classifier(...).predict on
# the 10,000 test images), and everything packed under OUT in at most 8 files (what the device tool brings back).
#
#   bash scripts/gpu_session.sh DATA_DIR WEIGHTS OUT [flags for both runs]
#
# Prove it on the CPU first (minutes; the same code path, a subset and one epoch):
#   CHECK_IMAGES=500 bash scripts/gpu_session.sh ../shared/data/cifar-100-python \
#        ../shared/weights/tf_efficientnet_b0.in1k_tfhub_bnrecal.safetensors /tmp/gpu-proof --subset 500 --epochs 1 --batch-size 64
# On the device, after the data parts of ../shared/tools/device-data (README, "On a lent GPU"):
#   set -o pipefail; bash scripts/gpu_session.sh /root/data/cifar-100-python .device-data/b0.safetensors $OUT 2>&1 | tee $OUT/log
#
# Comes back: log (the tee above), machine.txt, cnn9.log, efficientnet_b0.log, cnn9.tar, efficientnet_b0.tar (each:
# NAME.safetensors, NAME.json, NAME.eval.json, history.json). CNN9_FLAGS / B0_FLAGS add flags to one run only;
# CHECK_IMAGES=N checks on the first N test images only (the CPU proof: B0 at 224 px runs at ~30 images/s there).
# RUN_TIMEOUT (seconds, default 270) bounds each run, so that what finished still comes back and the whole call
# fits in 330 s: a second try then still fits the session's 15 minutes of device time.
set -uo pipefail
if [ $# -lt 3 ]; then
  echo "usage: bash scripts/gpu_session.sh DATA_DIR WEIGHTS OUT [flags for both runs]" >&2
  exit 2
fi
data=$1 weights=$2 out=$3
shift 3
[ -f "$data/train" ] || { echo "error: no CIFAR-100 at $data (train, test, meta)" >&2; exit 2; }
[ -f "$weights" ] || { echo "error: no ImageNet weights at $weights" >&2; exit 2; }
mkdir -p "$out"
data=$(cd "$data" && pwd) weights=$(cd "$(dirname "$weights")" && pwd)/$(basename "$weights") out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."  # the repository (the paths above are absolute now)
py=${PYTHON:-$(command -v python3 || command -v python)}
work=$(mktemp -d /tmp/gpu-session.XXXXXX)
export PYTHONUNBUFFERED=1

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi (CPU proof)"
  lscpu 2>/dev/null | grep -E "Model name|^CPU\(s\)"
  "$py" -c "import sys, torch, timm, safetensors; print('python', sys.version.split()[0], 'torch', torch.__version__,
'timm', timm.__version__, 'safetensors', safetensors.__version__, 'cuda', torch.cuda.is_available())"
  git log -1 --format="commit %H" 2>/dev/null || true
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt"

train() {  # NAME, then train.py flags; the run's own log beside the others
  local name=$1
  shift
  timeout "${RUN_TIMEOUT:-270}" "$py" scripts/train.py --data-dir "$data" --out "$work/ck" --run-dir "$work/runs" \
    --name "$name" "$@" > "$out/$name.log" 2>&1
  echo "$name: train.py exit status $?"
}
start=$(date +%s)
# shellcheck disable=SC2086  # the *_FLAGS are word lists on purpose
train cnn9 --model cnn9 "$@" ${CNN9_FLAGS:-} &
# shellcheck disable=SC2086
train efficientnet_b0 --model efficientnet_b0 --pretrained-file "$weights" "$@" ${B0_FLAGS:-} &
wait
echo "both runs ended after $(( $(date +%s) - start )) s"

# The check anyone can make: the shipped fp16 checkpoint, loaded as the app loads it, on the 10,000 test images.
"$py" - "$work/ck" "$data" "${CHECK_IMAGES:-0}" <<'EOF'
import sys, time
from pathlib import Path
import torch
from PIL import Image
from cifar_models import load_classifier, load_cifar100

folder, data_dir, limit = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
test = load_cifar100(data_dir, download_if_missing=False).test
test = test.take(torch.arange(min(limit, len(test)))) if limit > 0 else test
device = "cuda" if torch.cuda.is_available() else "cpu"
for js in sorted(folder.glob("*.json")):
    if js.name.endswith(".eval.json"):
        continue
    t = time.time()
    clf = load_classifier(js.with_suffix(""), device=device)
    right = 0
    for i in range(0, len(test), 500):
        batch = [Image.fromarray(x.permute(1, 2, 0).numpy()) for x in test.images[i:i + 500]]
        top = clf.predict(batch, k=1)
        right += sum(p[0][0] == clf.classes[int(y)] for p, y in zip(top, test.labels[i:i + 500]))
    print(f"check: {js.stem} top-1 {100 * right / len(test):.2f}% on {len(test)} test images through "
          f"load_classifier(...).predict ({time.time() - t:.0f} s)")
EOF

for name in cnn9 efficientnet_b0; do
  files=()
  for f in "$name.safetensors" "$name.json" "$name.eval.json"; do [ -f "$work/ck/$f" ] && files+=("ck/$f"); done
  [ -f "$work/runs/$name/history.json" ] && files+=("runs/$name/history.json")
  if [ ${#files[@]} -gt 0 ]; then
    tar -cf "$out/$name.tar" -C "$work" "${files[@]}" && echo "packed $out/$name.tar: ${files[*]}"
  else
    echo "$name: nothing to pack (see $name.log)"
  fi
done
du -h "$out"/* 2>/dev/null
