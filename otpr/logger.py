"""Namespaced metrics: one JSON object per line in ``metrics.jsonl`` plus TensorBoard events.

Keys are namespaced by role: ``critic/q_loss``, ``ot/dual``, ``ot/h_mean``, ``actor/dsm``,
``eval/success``, ``perf/env_steps_per_s``. Every record carries ``env_steps`` and ``iteration``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


class MetricsLogger:
    """Appends records to ``metrics.jsonl`` (resumable: appends) and mirrors them to TensorBoard."""

    def __init__(
        self, run_dir: str | Path, tensorboard: bool = True, wandb_cfg: dict | None = None
    ) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tb = None
        self._wandb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(Path(run_dir) / "tb"))
        if wandb_cfg is not None:
            import wandb  # optional dependency

            self._wandb = wandb.init(config=wandb_cfg, dir=str(run_dir))

    def log(self, record: dict[str, Any], step: int) -> None:
        clean = {k: _plain(v) for k, v in record.items()}
        with self.path.open("a") as f:
            f.write(json.dumps(clean) + "\n")
        if self._tb is not None:
            for key, value in clean.items():
                if isinstance(value, (int, float)) and "/" in key and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(clean, step=step)

    def truncate_after(self, env_steps: int) -> None:
        """On resume: drop records written after the checkpoint being resumed from (and a
        last line a killed process left half written); ``-1`` empties the file."""
        if not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # cut short by a kill mid-write
            if isinstance(record, dict) and record.get("env_steps", 0) <= env_steps:
                keep.append(line)
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in keep))
        tmp.replace(self.path)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
