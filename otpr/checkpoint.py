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
            optimizers.pt      optimizer states (and any scheduler): tensors and plain
                               containers only, read with torch.load(weights_only=True)
            rng.json           python, numpy, torch (CPU and GPUs) and the algorithm's
                               generator states
            replay.npz         the replay buffer, filled part (read with allow_pickle=False)
            loop.json          iteration, env steps, episode counters, eval history
            episodes.json      the training envs' episodes in progress (each member's reset
                               seed, generator and executed chunks) and the loop's per-episode
                               bookkeeping, to re-create them exactly (otpr/loop.py)
    last                       text file: the name of the newest complete checkpoint
    evaluated/step_.../        weights at every evaluation (config, meta, modules, loop.json);
                               kept when rolling retention removes the full checkpoint

Every file is written under a temporary directory that is renamed into place only when
complete, and ``last`` is replaced atomically, so a run killed at any moment leaves the previous
checkpoint intact. A policy loads from its checkpoint alone (:func:`load_policy`).

Nothing in a checkpoint executes code when read: weights are safetensors, the optimizer
states a weights-only ``torch.load`` (a pickle naming any other object is refused), the rest
JSON and pickle-free npz. A resume reads every file of a checkpoint before it uses any
(:func:`read_resume_point`); a file that is missing or does not parse is a
:class:`CorruptCheckpointError` naming it, and the run resumes from the previous full
checkpoint instead (:func:`resume_candidates`; the newest two are kept for that), with a
warning. Format 3 (this one) differs from 2 in ``training_state/`` only: the weights of a
format-2 checkpoint still load, its training state is refused.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file

from otpr import faults
from otpr.config import WEIGHTS

# 2: one algorithm's modules per checkpoint, meta.json names the algorithm;
# 3: training_state without pickles (rng.json) and with the envs' episodes (episodes.json)
FORMAT_VERSION = 3
WEIGHTS_READABLE = (2, 3)  # the weights (safetensors) are the same in both
EVALUATED = "evaluated"  # checkpoints/evaluated/: weights of every evaluated point
CORRUPT_PREFIX = "corrupt_"  # a full checkpoint found unreadable on resume is moved aside


class CheckpointError(ValueError):
    """A checkpoint this version cannot use; the message names the file and what to do."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint file is missing or does not parse (truncated, garbage, refused pickle)."""


class CheckpointWarning(UserWarning):
    """A resume skipped an unreadable checkpoint for an older one."""


def _save_module(module: torch.nn.Module, path: Path) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(state, str(path))


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; ``CorruptCheckpointError`` naming it if missing or
    unreadable (safetensors checks the header and that the data is all there)."""
    if not path.is_file():
        raise CorruptCheckpointError(f"{path}: missing")
    try:
        return load_file(str(path))
    except Exception as err:  # SafetensorError, OSError: truncated, garbage, unreadable
        raise CorruptCheckpointError(f"{path}: not a readable safetensors file ({err})") from None


def _fill_module(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shapes
        first = str(err).strip().splitlines()[-1].strip()
        raise CheckpointError(
            f"{path}: weights do not fit the network ({first}); was it saved with another config?"
        ) from None
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not fit the network (missing keys {missing[:5]}, unexpected "
            f"keys {unexpected[:5]}); was it saved with another config?"
        )


def _load_module(module: torch.nn.Module, path: Path) -> None:
    _fill_module(module, _read_tensors(path), path)


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise CorruptCheckpointError(f"{path}: missing")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CorruptCheckpointError(f"{path}: not readable JSON ({err})") from None


def _read_torch(path: Path) -> Any:
    """A ``torch.save`` file of tensors and plain containers, read with ``weights_only=True``:
    a pickle that names any other object (code that would run on load) is refused."""
    if not path.is_file():
        raise CorruptCheckpointError(f"{path}: missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError (refused object), RuntimeError (bad zip), EOF
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CorruptCheckpointError(
            f"{path}: refused: not a file of tensors and plain containers (torch.load "
            f"weights_only=True: {first[:200]})"
        ) from None


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise CorruptCheckpointError(f"{path}: missing")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}  # every member read (zip CRCs checked)
    except Exception as err:  # BadZipFile, ValueError (pickled object arrays), OSError, EOF
        raise CorruptCheckpointError(f"{path}: not a readable npz file ({err})") from None


# RNG states as JSON (rng.json): python's (version, 625 ints, gauss), numpy's legacy
# (name, 624 uint32 keys, pos, has_gauss, cached), torch's and the generators' byte tensors.
def rng_state(extra_generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_initialized():  # the GPUs' default generators (draws without a generator)
        for i, gpu_state in enumerate(torch.cuda.get_rng_state_all()):
            state[f"torch_cuda/{i}"] = gpu_state
    for name, gen in (extra_generators or {}).items():
        state[f"gen/{name}"] = gen.get_state()
    return state


def _rng_to_json(state: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in state.items():
        if key == "python":
            version, internal, gauss = value
            out[key] = [version, list(internal), gauss]
        elif key == "numpy":
            name, keys, pos, has_gauss, cached = value
            out[key] = [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]
        elif isinstance(value, torch.Tensor):
            out[key] = {"uint8": value.tolist()}
        else:  # numpy bit-generator states: dicts of ints and strings
            out[key] = value
    return out


def _rng_from_json(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == "python":
            version, internal, gauss = value
            out[key] = (version, tuple(internal), gauss)
        elif key == "numpy":
            name, keys, pos, has_gauss, cached = value
            out[key] = (name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached)
        elif isinstance(value, dict) and "uint8" in value:
            out[key] = torch.tensor(value["uint8"], dtype=torch.uint8)
        else:
            out[key] = value
    return out


def set_rng_state(
    state: dict[str, Any], extra_generators: dict[str, torch.Generator] | None = None
) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    for key in [k for k in state if k.startswith("torch_cuda/")]:
        index = int(key.split("/")[1])
        if index < torch.cuda.device_count():  # a GPU run resumed without that GPU: skipped
            torch.cuda.set_rng_state(state[key], index)
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
    training: dict[str, Any] | None,
) -> Path:
    """Write ``root/name`` under a temporary name, then rename it into place. ``training``:
    ``optimizers``, ``rng``, ``replay`` (or None) and ``episodes`` (or None)."""
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
    ts = tmp / "training_state"
    if training is not None:
        torch.save(
            {k: o.state_dict() for k, o in training["optimizers"].items()},
            ts / "optimizers.pt",
        )
        (ts / "rng.json").write_text(json.dumps(_rng_to_json(training["rng"])))
        faults.kill_point(f"write:{name}")  # tests: a kill with the checkpoint half written
        replay = training["replay"]
        if replay is not None:
            arrays = {f"arr/{k}": v for k, v in replay["arrays"].items()}
            scalars = {k: np.asarray(replay[k]) for k in ("ptr", "size", "total_added")}
            np.savez(ts / "replay.npz", **arrays, **scalars)
        (ts / "episodes.json").write_text(json.dumps(training["episodes"]))
    (ts / "loop.json").write_text(json.dumps(loop_state, indent=2))
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
    episodes: dict[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    """Write a checkpoint atomically and point ``last`` at it; keep the newest ``keep`` (at
    least 2, so that a resume has an older one to fall back to if the newest is unreadable).
    ``episodes``: the training envs' episodes in progress (JSON-able; None before any)."""
    if keep < 2:
        raise ValueError(f"save_checkpoint: keep must be >= 2 (a fallback), got {keep}")
    root = Path(run_dir) / "checkpoints"
    training = {"optimizers": optimizers, "rng": rng, "replay": replay, "episodes": episodes}
    final = _write(root, name, config, meta, modules, loop_state, training)
    _point_last_at(root, name)
    done = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in done[:-keep]:
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _point_last_at(root: Path, name: str) -> None:
    pointer = root / ".last.tmp"
    pointer.write_text(name)
    os.replace(pointer, root / "last")


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


def read_meta(ckpt: str | Path, resume: bool = False) -> dict[str, Any]:
    """``meta.json`` of a checkpoint; refuses one written in a format whose weights this
    version cannot read, and with ``resume`` one whose training state it cannot read."""
    path = resolve(ckpt) / "meta.json"
    meta = _read_json(path)
    if not isinstance(meta, dict):
        raise CorruptCheckpointError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    version = meta.get("format_version")
    if version not in WEIGHTS_READABLE:
        raise CheckpointError(
            f"{path}: format_version: expected {FORMAT_VERSION}, got {version} (written by an "
            "older otpr, whose checkpoints held every algorithm's networks); re-run its "
            "pretraining (otpr-pretrain) or training with this version"
        )
    if resume and version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version: expected {FORMAT_VERSION} to resume, got {version} (its "
            "training_state holds pickles and no env episodes); start a new run from its "
            "weights with checkpoint=<it>"
        )
    return meta


def load_modules(ckpt: str | Path, modules: dict[str, torch.nn.Module]) -> None:
    """Load ``<name>.safetensors`` into each ``modules[name]``."""
    ckpt = resolve(ckpt)
    for key, module in modules.items():
        _load_module(module, ckpt / f"{key}.safetensors")


def read_loop_state(ckpt: str | Path, missing_ok: bool = False) -> dict[str, Any]:
    """The loop counters and evaluation history of a checkpoint (no weights, no replay);
    ``missing_ok``: ``{}`` for weights put together by hand or by ``otpr-average``,
    which have none."""
    path = resolve(ckpt) / "training_state" / "loop.json"
    if missing_ok and not path.exists():
        return {}
    return _read_json(path)


def load_training_state(ckpt: str | Path) -> dict[str, Any]:
    """Optimizers, RNG, replay, loop counters and the envs' episodes of a checkpoint, every
    file read without executing code; ``CorruptCheckpointError`` naming a file that is
    missing or does not parse."""
    ckpt = resolve(ckpt)
    ts = ckpt / "training_state"
    if not (ts / "optimizers.pt").exists() and not (ts / "rng.json").exists():
        raise CheckpointError(
            f"{ckpt}: weights only (an evaluated point, or an incomplete checkpoint), "
            "no optimizer, RNG or replay state to resume from; start a new run from it with "
            "checkpoint=<it>, or resume from the run directory's checkpoints/last"
        )
    optimizers = _read_torch(ts / "optimizers.pt")
    if not isinstance(optimizers, dict):
        raise CorruptCheckpointError(f"{ts / 'optimizers.pt'}: expected a dict of states")
    rng = _read_json(ts / "rng.json")
    try:
        rng = _rng_from_json(rng)
    except (TypeError, ValueError, AttributeError) as err:
        raise CorruptCheckpointError(f"{ts / 'rng.json'}: not an RNG state ({err})") from None
    state: dict[str, Any] = {
        "optimizers": optimizers,
        "rng": rng,
        "loop": _read_json(ts / "loop.json"),
        "episodes": _read_json(ts / "episodes.json"),
        "replay": None,
    }
    if (ts / "replay.npz").exists():
        z = _read_npz(ts / "replay.npz")
        try:
            state["replay"] = {
                "arrays": {k[4:]: v for k, v in z.items() if k.startswith("arr/")},
                **{k: int(z[k]) for k in ("ptr", "size", "total_added")},
            }
        except KeyError as err:
            raise CorruptCheckpointError(f"{ts / 'replay.npz'}: no {err} array") from None
    return state


@dataclass
class ResumePoint:
    """Everything a resume needs from one checkpoint, read (and so checked) before any of it
    is used: meta, each module's tensors and the training state."""

    path: Path
    meta: dict[str, Any]
    tensors: dict[str, dict[str, torch.Tensor]]
    training: dict[str, Any]

    def load_modules(self, modules: dict[str, torch.nn.Module]) -> None:
        for key, module in modules.items():
            _fill_module(module, self.tensors[key], self.path / f"{key}.safetensors")


def read_resume_point(ckpt: str | Path, module_names: list[str]) -> ResumePoint:
    """Read every file a resume uses from the full checkpoint ``ckpt``: ``CorruptCheckpointError``
    naming the first that is missing or does not parse, ``CheckpointError`` for a format this
    version cannot resume."""
    ckpt = Path(ckpt)
    if not (ckpt / "meta.json").is_file():
        raise CorruptCheckpointError(f"{ckpt / 'meta.json'}: missing")
    meta = read_meta(ckpt, resume=True)
    config = ckpt / "config.yaml"
    try:
        ok = isinstance(yaml.safe_load(config.read_text()), dict)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        ok = False
    if not ok:
        raise CorruptCheckpointError(f"{config}: missing, or not a YAML mapping")
    tensors = {key: _read_tensors(ckpt / f"{key}.safetensors") for key in module_names}
    return ResumePoint(ckpt, meta, tensors, load_training_state(ckpt))


def remove_partial(run_dir: str | Path) -> None:
    """Remove what a killed writer left half done: ``.tmp_*`` checkpoint directories and the
    ``last`` pointer's temporary file (only one process writes a run directory: RunLock)."""
    root = Path(run_dir) / "checkpoints"
    for parent in (root, root / EVALUATED):
        for tmp in parent.glob(".tmp_*"):
            shutil.rmtree(tmp, ignore_errors=True)
    (root / ".last.tmp").unlink(missing_ok=True)


def resume_candidates(run_dir: str | Path) -> list[Path]:
    """The full checkpoints a resume of ``run_dir`` tries, in order: the one ``last`` names,
    then the others newest first (a checkpoint dir given directly: only it)."""
    path = Path(run_dir)
    if (path / "meta.json").exists():
        return [path]
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    full = sorted((p for p in root.glob("step_*") if p.is_dir()), reverse=True)
    named = root / (root / "last").read_text().strip() if (root / "last").is_file() else None
    first = [named] if named is not None and named.name.startswith("step_") else []
    return first + [p for p in full if p != named]


def set_aside(bad: Path, fallback: Path, err: CheckpointError) -> Path:
    """A resume found ``bad`` unreadable (``err``) and resumes from ``fallback``: move ``bad``
    to ``corrupt_<name>`` beside it (kept for inspection, out of the resume candidates and of
    pruning), point ``last`` at ``fallback``, and warn once naming the bad file."""
    aside = bad.parent / f"{CORRUPT_PREFIX}{bad.name}"
    if bad.exists():
        if aside.exists():
            shutil.rmtree(aside)
        os.replace(bad, aside)
    _point_last_at(fallback.parent, fallback.name)
    warnings.warn(
        f"{err}; resuming from the previous checkpoint {fallback} (the unreadable one is "
        f"kept as {aside.name})",
        CheckpointWarning,
        stacklevel=2,
    )
    return aside


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
                    raise CheckpointError(
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
        raise CheckpointError(f"{self.path}: could not take the run directory's lock")

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
