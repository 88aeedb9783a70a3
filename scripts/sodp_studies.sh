#!/usr/bin/env bash
# SODP's two studies beside the MT10 table (scripts/sodp_mt10.sh must have run: they reuse its
# data, its pretrained planner and its algo.regularizer=bc runs), two runs at a time, skipping
# what finished:
#   regularisers  none / kl / pl against bc on reach, drawer-close and button-press-topdown, from
#                 the MT10 planner, 3 seeds: runs/sodp/reg/<task>_<regulariser>_s<seed>
#   transfer      three tasks outside MT10 fine-tuned from the MT10 planner and from a planner
#                 pretrained on basketball alone (the paper's Table 3 design; same data size,
#                 1,000 sub-optimal episodes, and same 50k pretraining steps): runs/sodp/transfer/
#                 <task>_<mt10|basketball>_s<seed>
# The tables: python scripts/sodp_table.py --studies runs/sodp
#   bash scripts/sodp_studies.sh [reg|transfer|all]          (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
B=$PWD/.venv/bin
WHAT=${1:-all}
SEEDS="0 1 2"
MT10=runs/sodp/mt10_pretrain
BAS=runs/sodp/basketball_pretrain
[ -f $MT10/summary.json ] || { echo "sodp_studies.sh: $MT10 is missing: run scripts/sodp_mt10.sh first"; exit 1; }
jobs=$(mktemp)
trap 'rm -f "$jobs"' EXIT

if [[ $WHAT == reg || $WHAT == all ]]; then
  mkdir -p runs/sodp/reg
  for S in $SEEDS; do
    for T in reach drawer-close button-press-topdown; do
      for R in none kl pl; do
        echo "runs/sodp/reg/${T}_${R}_s$S $MT10 $T $S algo.regularizer=$R" >> "$jobs"
      done
    done
  done
fi
if [[ $WHAT == transfer || $WHAT == all ]]; then
  mkdir -p runs/sodp/transfer
  [ -f data/basketball_suboptimal.hdf5 ] || $B/otpr-demos task=reach task.name=basketball-v3 \
    num_episodes=1000 quality=suboptimal action_noise=1.0 task.max_episode_steps=150 progress=false \
    out=data/basketball_suboptimal.hdf5 > runs/sodp/basketball_demos.log 2>&1
  [ -f $BAS/summary.json ] || $B/otpr-pretrain task=reach task.name=basketball-v3 \
    experiment=sodp_metaworld task.demos.path=data/basketball_suboptimal.hdf5 progress=false \
    hydra.run.dir=$BAS > runs/sodp/basketball_pretrain.log 2>&1
  for S in $SEEDS; do
    for T in plate-slide-side handle-pull-side faucet-open; do
      echo "runs/sodp/transfer/${T}_mt10_s$S $MT10 $T $S" >> "$jobs"
      echo "runs/sodp/transfer/${T}_basketball_s$S $BAS $T $S task.demos.path=data/basketball_suboptimal.hdf5" \
        >> "$jobs"
    done
  done
fi

run_one() {  # out checkpoint task seed [overrides...]
  local out=$1 ckpt=$2 task=$3 seed=$4
  shift 4
  [ -f "$out/summary.json" ] && return 0
  "$B"/otpr-finetune task=reach experiment=sodp_metaworld checkpoint="$ckpt" \
    task.name="$task-v3" seed="$seed" progress=false hydra.run.dir="$out" "$@" > "$out.log" 2>&1 \
    || echo "failed: $out (see $out.log)"
}
export -f run_one
export B
xargs -P 2 -L 1 bash -c 'run_one "$@"' _ < "$jobs"
