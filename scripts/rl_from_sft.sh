#!/usr/bin/env bash
# scripts/rl_from_sft.sh DEMO OUT [--set KEY=VALUE ...]
# One HyGRPO run of the demo config from the SFT of a finished `make demo` folder DEMO (a clone's
# root), then its evals: the synthetic test split with the dev set (--limit 500) and the blind set.
# The eighth session's rl.anchor and learner-threads rows in NOTES.md came from this script.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: scripts/rl_from_sft.sh DEMO OUT [--set KEY=VALUE ...]" >&2
  exit 2
fi
DEMO=$1 OUT=$2
shift 2
[ -d "$DEMO/runs/demo/sft/policy" ] || { echo "rl_from_sft: $DEMO/runs/demo/sft/policy does not exist; run make demo there first" >&2; exit 2; }
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
.venv/bin/poserft train --config configs/tiny-cpu.yaml --init "$DEMO/runs/demo/sft/policy" --run-dir "$OUT" \
  --set "data.dir=$DEMO/data/synth" --set "rewards.retriever_dir=$DEMO/runs/demo/retriever_reward" --quiet "$@"
EVAL=(.venv/bin/poserft eval --ckpt "$OUT/checkpoints/latest" --data "$DEMO/data/synth" --evaluator "$DEMO/runs/demo/retriever_evaluator")
"${EVAL[@]}" --limit 500 --out "$OUT/eval_dev"
"${EVAL[@]}" --limit 1 --descriptions benchmarks/data/human_blind/descriptions.jsonl --out "$OUT/eval_blind"
.venv/bin/python scripts/rl_step_times.py "$OUT"
