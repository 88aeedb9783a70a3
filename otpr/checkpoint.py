"""Self-describing checkpoints.

Layout of ``<run_dir>/checkpoints/``::

    step_000012000/
        config.yaml            resolved config of the run
        meta.json              task spec (dims, horizon), shapes, counters, format version
        policy.safetensors     the trained policy, normalizer statistics included
        policy_ema.safetensors the average of its weights (only if algo.ema_decay > 0)
        <module>.safetensors   the algorithm's other networks, exactly ``Algorithm.modules()``
                               (otpr: critic, potentials; dppo: value; bc: none)
        training_state/
            optimizers.pt      optimizer states (and any scheduler)
            rng.pt             python, numpy, torch and the algorithm's generator states
            replay.npz         the replay buffer, filled part
            loop.json          iteration, env steps, episode counters, eval history
    last                       text file: the name of the newest complete checkpoint
    evaluated/step_.../        weights at every evaluation (config, meta, modules, loop.json);
                               kept when rolling retention removes the full checkpoint

Every file is written under a temporary directory that is renamed into place only when
complete, and ``last`` is replaced atomically, so a run killed at any moment leaves the previous
checkpoint intact. A policy loads from its checkpoint alone (:func:`load_policy`).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file

from otpr.config import WEIGHTS

FORMAT_VERSION = 2  # 2: one algorithm's modules per checkpoint, meta.json names the algorithm
EVALUATED = "evaluated"  # checkpoints/evaluated/: weights of every evaluated point


def _save_module(module: torch.nn.Module, path: Path) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(state, str(path))


def _load_module(module: torch.nn.Module, path: Path) -> None:
    state = load_file(str(path))
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights do not fit the network (missing keys {missing[:5]}, unexpected "
            f"keys {unexpected[:5]}); was it saved with another config?"
        )


def rng_state(extra_generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    for name, gen in (extra_generators or {}).items():
        state[f"gen/{name}"] = gen.get_state()
    return state


def set_rng_state(
    state: dict[str, Any], extra_generators: dict[str, torch.Generator] | None = None
) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    for name, gen in (extra_generators or {}).items():
        if f"gen/{name}" in state:
            gen.set_state(state[f"gen/{name}"])


def _write(
    root: Path,
    name: str,
    config: dict[str, Any],
    meta: dict[str, Any],
    modules: dict[str, torch.nn.Module],
    loop_state: dict[str, Any],
    training: tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None] | None,
) -> Path:
    """Write ``root/name`` under a temporary name, then rename it into place."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    tmp = root / f".tmp_{name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "training_state").mkdir(parents=True)
    (tmp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (tmp / "meta.json").write_text(json.dumps(dict(meta, format_version=FORMAT_VERSION), indent=2))
    for key, module in modules.items():
        _save_module(module, tmp / f"{key}.safetensors")
    if training is not None:
        optimizers, rng, replay = training
        torch.save(
            {k: o.state_dict() for k, o in optimizers.items()},
            tmp / "training_state" / "optimizers.pt",
        )
        torch.save(rng, tmp / "training_state" / "rng.pt")
        if replay is not None:
            arrays = {f"arr/{k}": v for k, v in replay["arrays"].items()}
            scalars = {k: np.asarray(replay[k]) for k in ("ptr", "size", "total_added")}
            np.savez(tmp / "training_state" / "replay.npz", **arrays, **scalars)
    (tmp / "training_state" / "loop.json").write_text(json.dumps(loop_state, indent=2))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def save_checkpoint(
    run_dir: str | Path,
    name: str,
    config: dict[str, Any],
    meta: dict[str, Any],
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, Any],
    rng: dict[str, Any],
    replay: dict[str, Any] | None,
    loop_state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write a checkpoint atomically and point ``last`` at it; keep the newest ``keep``."""
    root = Path(run_dir) / "checkpoints"
    final = _write(root, name, config, meta, modules, loop_state, (optimizers, rng, replay))
    pointer = root / ".last.tmp"
    pointer.write_text(name)
    os.replace(pointer, root / "last")
    done = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in done[:-keep] if keep > 0 else []:
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def save_evaluated(
    run_dir: str | Path,
    name: str,
    config: dict[str, Any],
    meta: dict[str, Any],
    modules: dict[str, torch.nn.Module],
    loop_state: dict[str, Any],
) -> Path:
    """The weights of an evaluated point of the curve, ``checkpoints/evaluated/<name>``: config,
    meta, every module and the loop counters, so ``otpr-eval``, ``otpr-finetune`` and
    :func:`load_policy` read it as a checkpoint. Without optimizer, RNG and replay state it is
    not a point to resume from; rolling retention leaves it alone."""
    return _write(
        Path(run_dir) / "checkpoints" / EVALUATED, name, config, meta, modules, loop_state, None
    )


def resolve(path: str | Path) -> Path:
    """A checkpoint dir from a checkpoint dir, a ``checkpoints/`` dir or a run dir."""
    path = Path(path)
    if (path / "meta.json").exists():
        return path
    for root in (path, path / "checkpoints"):
        if (root / "last").exists():
            ckpt = root / (root / "last").read_text().strip()
            if not (ckpt / "meta.json").exists():
                raise FileNotFoundError(f"{root / 'last'} points at {ckpt}, which is incomplete")
            return ckpt
    raise FileNotFoundError(
        f"{path}: no checkpoint here (expected meta.json, checkpoints/last or last)"
    )


def read_config(ckpt: str | Path) -> dict[str, Any]:
    return yaml.safe_load((resolve(ckpt) / "config.yaml").read_text())


class CheckpointError(ValueError):
    """A checkpoint this version cannot use; the message names the file and what to do."""


def read_meta(ckpt: str | Path) -> dict[str, Any]:
    """``meta.json`` of a checkpoint; refuses one written in another format version."""
    path = resolve(ckpt) / "meta.json"
    meta = json.loads(path.read_text())
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version: expected {FORMAT_VERSION}, got {version} (written by an "
            "older otpr, whose checkpoints held every algorithm's networks); re-run its "
            "pretraining (otpr-pretrain) or training with this version"
        )
    return meta


def load_modules(ckpt: str | Path, modules: dict[str, torch.nn.Module]) -> None:
    """Load ``<name>.safetensors`` into each ``modules[name]``."""
    ckpt = resolve(ckpt)
    for key, module in modules.items():
        path = ckpt / f"{key}.safetensors"
        if not path.exists():
            raise FileNotFoundError(f"{ckpt}: missing {path.name}")
        _load_module(module, path)


def read_loop_state(ckpt: str | Path, missing_ok: bool = False) -> dict[str, Any]:
    """The loop counters and evaluation history of a checkpoint (no weights, no replay);
    ``missing_ok``: ``{}`` for weights put together by hand or by ``otpr-average``,
    which have none."""
    path = resolve(ckpt) / "training_state" / "loop.json"
    if missing_ok and not path.exists():
        return {}
    return json.loads(path.read_text())


def load_training_state(ckpt: str | Path) -> dict[str, Any]:
    """Optimizers, RNG, replay and loop counters of a checkpoint."""
    ckpt = resolve(ckpt)
    ts = ckpt / "training_state"
    if not (ts / "optimizers.pt").exists():
        raise FileNotFoundError(
            f"{ckpt}: weights only (an evaluated point, or an incomplete checkpoint), "
            "no optimizer, RNG or replay state to resume from; start a new run from it with "
            "checkpoint=<it>, or resume from the run directory's checkpoints/last"
        )
    state: dict[str, Any] = {
        "optimizers": torch.load(ts / "optimizers.pt", weights_only=False),
        "rng": torch.load(ts / "rng.pt", weights_only=False),
        "loop": read_loop_state(ckpt),
        "replay": None,
    }
    if (ts / "replay.npz").exists():
        with np.load(ts / "replay.npz") as z:
            state["replay"] = {
                "arrays": {k[4:]: z[k] for k in z.files if k.startswith("arr/")},
                **{k: int(z[k]) for k in ("ptr", "size", "total_added")},
            }
    return state


def acting_weights(ckpt: str | Path) -> str:
    """The module name whose weights acted in a checkpoint: ``policy_ema`` when the run kept an
    average of the policy's weights (``algo.ema_decay > 0``), else ``policy``."""
    return "policy_ema" if (resolve(ckpt) / "policy_ema.safetensors").exists() else "policy"


def policy_weights(ckpt: str | Path, weights: str = "acting") -> str:
    """The module name of a checkpoint's ``weights``: ``acting`` (see :func:`acting_weights`) or
    ``trained`` (``policy``, the network the optimiser stepped, also when an average acted)."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {list(WEIGHTS)}, got {weights!r}")
    return acting_weights(ckpt) if weights == "acting" else "policy"


def start_weights(ckpt: str | Path, weights: str, keeps_average: bool) -> dict[str, str]:
    """Which stored weights a new run started from ``ckpt`` loads: ``{run module: checkpoint
    file stem}``. The policy gets the checkpoint's ``weights`` (:func:`policy_weights`); a run
    that keeps its own average (``keeps_average``) continues the checkpoint's average only when
    that run kept one and its acting weights are asked for (otherwise the average starts at the
    loaded weights). The algorithm's other networks are never loaded: they start fresh."""
    source = policy_weights(ckpt, weights)
    if keeps_average and weights == "acting" and acting_weights(ckpt) == "policy_ema":
        return {"policy": "policy", "policy_ema": "policy_ema"}
    return {"policy": source}


def load_policy(ckpt: str | Path, device: str = "cpu", weights: str = "acting") -> Any:
    """The diffusion policy of a checkpoint, from the checkpoint alone (config + weights): by
    default the weights that acted, i.e. ``policy_ema`` when the run kept an average, else
    ``policy``; ``weights="trained"`` gives ``policy`` in both cases."""
    from otpr.config import from_dict
    from policies.factory import build_policy

    ckpt = resolve(ckpt)
    meta = read_meta(ckpt)  # refuses another format before its config is parsed
    cfg = from_dict(read_config(ckpt))
    policy = build_policy(
        cfg.policy,
        meta["obs_dim"],
        meta["action_dim"],
        cfg.task.obs_history,
        cfg.task.horizon,
        device,
    )
    load_modules(ckpt, {policy_weights(ckpt, weights): policy})
    policy.eval()
    return policy


class RunLock:
    """One training process per run directory: ``<run_dir>/.lock`` holds ``pid host``.

    A second process that would resume into a directory a live process is writing fails with
    the holder's pid instead of interleaving checkpoints and metrics with it. A lock left by a
    process that died (same host, pid gone) is taken over, so a killed run resumes as before.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self.held = False

    def acquire(self) -> None:
        import socket

        me = f"{os.getpid()} {socket.gethostname()}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if not self._stale(socket.gethostname()):
                    raise RuntimeError(
                        f"{self.path}: the run directory is in use by process "
                        f"{self.path.read_text().strip()!r}; stop it first, or delete the lock "
                        "file if that process is gone"
                    ) from None
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(me)
            self.held = True
            return
        raise RuntimeError(f"{self.path}: could not take the lock")

    def _stale(self, host: str) -> bool:
        try:
            pid_text, holder_host = self.path.read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            return True  # unreadable or half-written: no process can be holding it
        if holder_host != host:
            return False  # another machine: cannot tell, so do not take it
        if pid == os.getpid():
            return True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
