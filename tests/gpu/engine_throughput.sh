#!/usr/bin/env bash
# GPU check for issue 8: the smoke profile's `samples` stage with the vLLM engine and with the HF engine,
# tokens/s side by side. Needs a CUDA GPU and an environment with the vllm extra:
#   python -m venv .venv-vllm && . .venv-vllm/bin/activate && pip install -e '.[vllm,dev]'
# Run from the repository root: bash tests/gpu/engine_throughput.sh [OUT_DIR]
# Both runs sample the same SFT policy (trained identically from seed 0 in each run folder) on the same
# prompts with the same settings; only --engine differs. The engine is not part of stage keys, hence two
# run folders. vLLM's time includes its start-up (model load, CUDA graphs) only in total_s, not in
# tokens_per_second, which the stage measures over generation alone.
set -euo pipefail

OUT=${1:-${OUT:-/tmp/gpu_check}}
rm -rf "$OUT" && mkdir -p "$OUT"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: this check needs a GPU')"
python -c "import vllm" || { echo "vllm does not import: pip install -e '.[vllm]' first" >&2; exit 1; }

COMMON=(--methods samples --profile smoke --set device=cuda --set data.prompts.limit=48
        --set samples.k=16 --set samples.max_new_tokens=128 --set samples.batch_size=8 --set "evaluate=[]")
for engine in vllm hf; do
  start=$(date +%s.%N)
  python -m harness run "${COMMON[@]}" --engine "$engine" --run-dir "$OUT/$engine" 2> "$OUT/$engine.log"
  end=$(date +%s.%N)
  python -c "print($end - $start)" > "$OUT/$engine.total_s"
  grep "generation engine" "$OUT/$engine.log" || true
done

python - "$OUT" <<'PY'
import glob, json, platform, sys
from importlib.metadata import version

import torch

out = sys.argv[1]
rows = {}
for engine in ("vllm", "hf"):
    [stats_path] = glob.glob(f"{out}/{engine}/stages/samples-*/stats.json")
    stats = json.load(open(stats_path))
    assert stats["engine"] == engine, f"{stats_path}: ran with engine {stats['engine']}, expected {engine}"
    rows[engine] = stats | {"total_s": float(open(f"{out}/{engine}.total_s").read())}
print(f"smoke profile (tiny-random-llama, seed 0), samples: {rows['hf']['prompts']} prompts x k={rows['hf']['k']}, "
      f"max_new_tokens=128; {torch.cuda.get_device_name(0)}; torch {torch.__version__}, "
      f"transformers {version('transformers')}, vllm {version('vllm')}, python {platform.python_version()}")
print(f"{'':28}{'vllm':>14}{'hf':>14}")
for key in ("samples", "generated_tokens_this_attempt", "mean_token_count", "tokens_per_second", "total_s"):
    cells = [rows[e].get(key) for e in ("vllm", "hf")]
    print(f"{key:28}" + "".join(f"{c:>14.1f}" if isinstance(c, float) else f"{c!s:>14}" for c in cells))
speedup = rows["vllm"]["tokens_per_second"] / rows["hf"]["tokens_per_second"]
print(f"vllm / hf tokens per second: {speedup:.1f}x")
PY
