"""``otpr-average``: average the policy weights of several checkpoints of one architecture.

Writes a weights-only checkpoint at ``--out``: the first checkpoint's config, meta and other
modules, with ``policy.safetensors`` the element-wise mean of every checkpoint's acting policy
(``policy_ema`` where a run kept one; ``--weights trained``: ``policy``, the trained weights) and
``sources.txt`` naming the checkpoints averaged. Floating-point tensors are averaged; integer
buffers are the first checkpoint's. Meant for checkpoints fine-tuned from one common start (a
"soup"); averaging unrelated networks gives a meaningless one. The result has no
``training_state/``: evaluate it, or start a new run from it, like any checkpoint.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from otpr.checkpoint import policy_weights, resolve
from otpr.config import WEIGHTS
from otpr.errors import ERRORS_HELP, ArgumentParser, UsageError, run_command

PROG = "otpr-average"
EXAMPLE = f"""\
example:
  {PROG} --out runs/can/soup runs/can/otpr/seed0 runs/can/otpr/seed1 runs/can/otpr/seed2
  otpr-eval checkpoint=runs/can/soup

{ERRORS_HELP}"""


def average(ckpts: list[Path], weights: str = "acting") -> dict[str, torch.Tensor]:
    """The element-wise mean of the checkpoints' ``weights`` policy tensors (integer tensors:
    the first checkpoint's); ``UsageError`` (a ``ValueError``) where their names or shapes
    differ."""
    states = [load_file(str(c / f"{policy_weights(c, weights)}.safetensors")) for c in ckpts]
    keys = set(states[0])
    for c, s in zip(ckpts, states):
        if set(s) != keys or any(s[k].shape != states[0][k].shape for k in keys):
            raise UsageError(
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


def write_average(ckpts: list[Path], out: Path, weights: str = "acting") -> None:
    """Writes the averaged checkpoint at ``out`` (a new directory), built under a temporary name
    beside it and renamed into place, so a failure leaves no partial checkpoint."""
    if out.exists():
        raise FileExistsError(f"{out} exists")
    mean = average(ckpts, weights)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        skip = shutil.ignore_patterns("training_state", "policy_ema.safetensors")
        shutil.copytree(ckpts[0], tmp, ignore=skip, dirs_exist_ok=True)
        save_file(mean, str(tmp / "policy.safetensors"))
        (tmp / "sources.txt").write_text("".join(f"{c}\n" for c in ckpts))
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Average the policy weights of several checkpoints of one architecture\n"
        "(fine-tuned from one common start) element-wise into a new weights-only checkpoint:\n"
        "the first checkpoint's config, meta and other modules, with the mean policy.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out", required=True, help="the new checkpoint directory (must not exist)"
    )
    parser.add_argument(
        "--weights",
        choices=WEIGHTS,
        default="acting",
        help="acting (the EMA weights where a run kept them, the default) or trained",
    )
    parser.add_argument(
        "checkpoints", nargs="+", help="runs, checkpoints/ or checkpoint directories"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """``otpr-average``; exit status 2 with one line on stderr (``otpr.errors``) where the
    arguments are wrong, a checkpoint is missing, ``--out`` exists or the checkpoints' policies
    differ in architecture."""
    return run_command(PROG, lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    out = Path(args.out)
    if out.exists():
        raise UsageError(f"--out {out}: exists, expected a path for the new checkpoint")
    ckpts = [resolve(c) for c in args.checkpoints]
    write_average(ckpts, out, args.weights)
    print(f"{out}: mean of {len(ckpts)} checkpoints")
    return 0


if __name__ == "__main__":
    sys.exit(main())
