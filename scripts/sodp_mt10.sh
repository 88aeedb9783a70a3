#!/usr/bin/env bash
# SODP on MT10 end to end: the sub-optimal multi-task data, one planner pretrained on it, then
# per-task fine-tuning (100k env steps each, configs/experiment/sodp_metaworld.yaml), seed-major,
# skipping what finished. The table: python scripts/sodp_table.py runs/sodp/ft
#   bash scripts/sodp_mt10.sh [seeds...]          (default: 0 1 2)
set -euo pipefail
cd "$(dirname "$0")/.."
B=.venv/bin
SEEDS=("${@:-0 1 2}")
TASKS="reach push pick-place door-open drawer-open drawer-close button-press-topdown
       peg-insert-side window-open window-close"
mkdir -p runs/sodp/ft
[ -f data/mt10_suboptimal.hdf5 ] || $B/otpr-demos task=mt10 num_episodes=1000 \
  quality=suboptimal action_noise=1.0 out=data/mt10_suboptimal.hdf5 > runs/sodp/demos.log 2>&1
[ -f runs/sodp/mt10_pretrain/summary.json ] || $B/otpr-pretrain task=mt10 \
  experiment=sodp_metaworld progress=false hydra.run.dir=runs/sodp/mt10_pretrain \
  > runs/sodp/mt10_pretrain.log 2>&1
for S in ${SEEDS[*]}; do
  for T in $TASKS; do
    out=runs/sodp/ft/${T}_s$S
    [ -f "$out/summary.json" ] && continue
    $B/otpr-finetune task=reach experiment=sodp_metaworld checkpoint=runs/sodp/mt10_pretrain \
      task.name="$T-v3" seed="$S" progress=false hydra.run.dir="$out" > "$out.log" 2>&1
  done
done
