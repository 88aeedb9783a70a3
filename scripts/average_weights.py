"""Average the acting policy weights of several checkpoints of one architecture (a "soup").

    python -m scripts.average_weights --out runs/soup [--weights trained] CKPT [CKPT ...]

Writes a weights-only checkpoint at ``--out``: the first checkpoint's config, meta and other
modules, with ``policy.safetensors`` the element-wise mean of every checkpoint's acting policy
(``policy_ema`` where a run kept one; ``--weights trained``: ``policy``, the trained weights).
Meant for checkpoints fine-tuned from one common start; averaging unrelated networks gives a
meaningless one. Evaluate it like any checkpoint
(``otpr-eval checkpoint=<out>``, ``python -m scripts.can_failures --checkpoint <out>``).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from otpr.checkpoint import WEIGHTS, policy_weights, resolve


def average(ckpts: list[Path], weights: str = "acting") -> dict[str, torch.Tensor]:
    states = [load_file(str(c / f"{policy_weights(c, weights)}.safetensors")) for c in ckpts]
    keys = set(states[0])
    for c, s in zip(ckpts, states):
        if set(s) != keys or any(s[k].shape != states[0][k].shape for k in keys):
            raise ValueError(
                f"{c}: policy weights do not match {ckpts[0]}'s (another architecture?)"
            )
    return {
        k: (
            torch.stack([s[k].double() for s in states]).mean(0).to(states[0][k].dtype)
            if states[0][k].is_floating_point()
            else states[0][k]
        )
        for k in keys
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--weights", choices=WEIGHTS, default="acting")
    parser.add_argument("checkpoints", nargs="+")
    args = parser.parse_args()
    ckpts = [resolve(c) for c in args.checkpoints]
    out = Path(args.out)
    if out.exists():
        raise FileExistsError(f"{out} exists")
    skip = shutil.ignore_patterns("training_state", "policy_ema.safetensors")
    shutil.copytree(ckpts[0], out, ignore=skip)
    save_file(average(ckpts, args.weights), str(out / "policy.safetensors"))
    (out / "sources.txt").write_text("\n".join(str(c) for c in ckpts) + "\n")
    print(f"{out}: mean of {len(ckpts)} checkpoints")


if __name__ == "__main__":
    main()
