"""The offline-to-online loop: pretrain by behaviour cloning, then fine-tune with an algorithm.

The loop knows no algorithm by name: it builds the registered one of ``algo.name``
(``otpr.algos``) and calls its interface. One iteration::

    collect   steps_per_iter decisions per env: algo.act(obs, explore=True) gives the chunks,
              T_a of their H actions are executed; every transition goes to the replay and to
              algo.observe
    update    algo.update(data, iteration): the algorithm's learning step on the replay and demos
    eval      every eval_every iterations, on a fixed evaluation seed range (otpr/evaluation.py)
    save      every checkpoint_every iterations (otpr/checkpoint.py)

Resume: a run directory that holds ``checkpoints/last`` continues from it, and a run killed at
any moment and resumed gives the uninterrupted run's metrics and weights exactly (on one machine
and library build, CPU, fixed seed; wall-time fields and ``perf/`` aside). The checkpoint holds
the networks, optimizers, every RNG (python, numpy, torch, the algorithm's generators, the
loop's replay-sampling generator), the replay, the counters, and the training envs' episodes in
progress; the metrics file is cut back to the checkpoint. A kill before the first checkpoint
restarts the run with an empty metrics file.

The episodes in progress are saved as *replays*, not as simulator snapshots: the training envs
are ``envs.make(..., resumable=True)``, so every episode starts from ``reset(seed=s)`` (an
autoreset draws ``s`` from the member's own generator) and each member records the chunks it
executed since. The checkpoint stores, per member, ``s``, its generators and those chunks, and
the loop's own per-episode bookkeeping (observations, returns, replay rows of the episodes)::

    run:     member i  reset(seed=s) -> c1 -> c2 -> c3 | save {s, rng, [c1, c2, c3]}, obs_i
    resume:  fresh env reset(seed=s) -> c1 -> c2 -> c3 | obs == obs_i ? go on : CheckpointError

A replay that does not re-create the stored observation is a ``CheckpointError`` naming the
member, never silently other data. Why replay: one mechanism for every suite, since each
suite's seeded reset fixes the episode's start (envs/base.py) and MuJoCo steps deterministically
on one machine, where a snapshot needs each suite's hidden state (Meta-World's per-task
attributes, robosuite's controller state, Kitchen's noise generator) and silently misses what
it forgets. Verified exactly end to end on Meta-World, the replay alone on robosuite and Franka
Kitchen; CALVIN (pybullet) is untested. Its limits: a resume re-simulates up to one episode
per member; it holds only where the simulator repeats itself (same machine and build: a
mismatch is reported, not hidden); and the training episodes draw other goals than autoresets
that continue the env's own generator would (same distribution). The evaluation env needs
nothing: every evaluation resets it from ``task.eval_seed``. Building and replaying envs leaves
the global RNGs as they were, so the first collection after a resume draws what the
uninterrupted run drew.

Pixels (``task.pixels=true``): the same loop with an encoder (``otpr/pixels.py``). The envs'
observations are frames (and the robot's own state); the frozen encoder turns each into a
feature vector as it arrives, so ``algo.act``, the replay, the demo windows and the episodes
saved in a checkpoint hold features, never images. The demos are encoded once (cached on disk);
with ``policy.encoder.train`` behaviour cloning trains the encoder on random crops of the demo
frames first, then it is frozen and the demos encoded again. The encoder is saved with the
policy (``encoder.safetensors``).

``run`` holds the run directory's lock (``checkpoint.RunLock``) while it trains, so a second
process is refused. A newest checkpoint that cannot be read (a file missing, truncated or not
parsing) is set aside with a warning and the run resumes from the previous one
(``checkpoint.resume_candidates``). A non-finite training metric or weight stops the run with
a ``FloatingPointError`` naming it and the iteration, before anything non-finite is saved.
"""

from __future__ import annotations

import random
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

import envs
from otpr import checkpoint as ckpt_io
from otpr import evaluation, faults
from otpr.algos import Step, finite_or_raise, make_algorithm
from otpr.buffer import ReplayBuffer, TrainingData
from otpr.config import Config, ConfigError, to_dict
from otpr.data import make_windows
from otpr.demos import demo_transitions, load_demos, task_spec_of
from otpr.logger import MetricsLogger
from otpr.pixels import (
    PixelFeatures,
    PixelWindows,
    build_encoder,
    check_pixels,
    default_cache_dir,
    feature_dataset,
    fix_feature_range,
    freeze,
    image_key,
    pixel_env_kwargs,
    pixel_spec,
    proprio_slice,
)
from otpr.report import summarize


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def rng_neutral() -> Iterator[None]:
    """The global python, numpy and torch RNGs leave the block as they entered it (env
    construction and replay: when they happen must not change what training draws)."""
    state = ckpt_io.rng_state()
    try:
        yield
    finally:
        ckpt_io.set_rng_state(state)


@dataclass
class LoopState:
    """The loop's counters and evaluation history (``training_state/loop.json``)."""

    phase: str = "init"
    """init -> pretrained -> finetune -> done."""
    iteration: int = 0
    env_steps: int = 0
    """Every executed env step (each action of a chunk counts)."""
    episodes: int = 0
    pretrain_steps: int = 0
    wall_time_s: float = 0.0
    evals: list[dict[str, Any]] = field(default_factory=list)
    """Evaluation records, oldest first (with their ``eval_settings``)."""
    success_ids: list[int] = field(default_factory=list)
    """Replay rows of successful online episodes (``algo.success_to_demos``)."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoopState:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class Trainer:
    """Owns the algorithm, the replay, the envs and the run directory of one run."""

    def __init__(self, cfg: Config, run_dir: str | Path) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed)
        self.state_spec = self.spec = task_spec_of(cfg)
        if cfg.task.pixels:
            check_pixels(cfg, self.spec)
        demos = load_demos(cfg, self.spec, progress=cfg.progress)
        # the encoder argument: None for states, frames -> features for pixels (otpr/pixels.py)
        self.encoder: PixelFeatures | None = None
        self.image_demos = None  # the demos with their frames (pixels)
        self.feature_info: dict[str, Any] = {}  # how the demo features were had (cache)
        if cfg.task.pixels:
            net = build_encoder(cfg)
            self.encoder = PixelFeatures(net, cfg.task.image_size, cfg.policy.encoder.batch_size)
            self.spec = pixel_spec(self.spec, cfg, net.out_dim)
            self.image_demos = demos
            demos = self._encode_demos()
        self.algo = make_algorithm(cfg, self.spec)
        success = [bool(ep.success) for ep in demos]
        # how many demos the run learns from and how many succeed (summaries, meta.json)
        self.demo_facts = {"num_demos": len(success), "demo_success": float(np.mean(success))}
        self._use_demos(demos)
        self.algo.policy.normalizer.fit(self.demo_obs, self.demo_act)
        if self.encoder is not None and cfg.policy.encoder.train:
            fix_feature_range(self.algo.policy.normalizer, self.encoder.encoder.out_dim)
        self.algo.prepare(self.demo_obs, self.demo_act)
        self.rng = np.random.default_rng(cfg.seed)
        self.data = TrainingData(self.buffer, self.demo_obs, self.demo_act, self.rng, cfg.device)
        self.state = LoopState()
        self.data.success_ids = self.state.success_ids
        self.logger = MetricsLogger(
            self.run_dir, cfg.tensorboard, to_dict(cfg) if cfg.wandb else None
        )
        self._train_env = None
        self._eval_env = None
        self._obs: np.ndarray | None = None
        self._ep_return: np.ndarray | None = None
        self._ep_ids: list[list[int]] = []
        self._t0 = time.time()
        self._wall_at_start = 0.0

    # ------------------------------------------------------------------ observations
    def _features(self, obs: np.ndarray) -> np.ndarray:
        """What the policy, the critics and the replay see of raw env observations: the
        observations themselves, or with pixels their encoded features."""
        return obs if self.encoder is None else self.encoder(obs)

    def _encode_demos(self) -> Any:
        """The image demos with every frame encoded by the (frozen) encoder, from the feature
        cache when it holds this data and encoder (``otpr.pixels.feature_dataset``)."""
        cfg = self.cfg
        demos, self.feature_info = feature_dataset(
            self.image_demos,
            self.encoder.encoder,
            image_key(cfg),
            proprio_slice(cfg, self.state_spec),
            cfg.policy.encoder.batch_size,
            default_cache_dir(cfg, self.image_demos),
        )
        return demos

    def _use_demos(self, demos: Any) -> None:
        """Cut the demo windows and start the replay with the demo transitions."""
        t, a = self.cfg.task, self.cfg.algo
        self.demos = demos
        self.demo_obs, self.demo_act = make_windows(demos, t.obs_history, t.horizon)
        self.buffer = ReplayBuffer(
            a.buffer_capacity, (t.obs_history, self.spec.obs_dim), (t.horizon, self.spec.action_dim)
        )
        if a.demos_in_replay:
            demo = demo_transitions(demos, t.obs_history, t.horizon, t.act_steps, t.gamma)
            demo["reward"] = demo["reward"] * t.reward_scale
            self.buffer.add(**demo)
        if hasattr(self, "data"):  # demos encoded again: what the algorithm learns from too
            self.data.buffer = self.buffer
            self.data.demo_obs, self.data.demo_act = self.demo_obs, self.demo_act

    def _reencode_demos(self) -> None:
        """After the encoder changed (trained, or loaded from a checkpoint): the demos, their
        windows and the replay's demo transitions from its features."""
        if self.encoder is not None:
            self._use_demos(self._encode_demos())

    def _modules(self) -> dict[str, torch.nn.Module]:
        """The networks a checkpoint holds: the algorithm's, and the encoder with pixels."""
        modules = dict(self.algo.modules())
        if self.encoder is not None:
            modules["encoder"] = self.encoder.encoder
        return modules

    # ------------------------------------------------------------------ envs
    def _make_env(
        self,
        num_envs: int,
        seed: int,
        retry_failed_starts: int = 0,
        resumable: bool = False,
        **extra: Any,
    ) -> Any:
        """The task's vector env; ``extra`` adds to (or replaces) ``vectorization`` and
        ``task.env_kwargs``."""
        t = self.cfg.task
        kwargs = {"vectorization": t.vectorization, **t.env_kwargs}
        if t.pixels:
            proprio = proprio_slice(self.cfg, self.state_spec)
            kwargs.update(pixel_env_kwargs(self.cfg), pixel_obs=True, proprio=proprio)
        kwargs.update(extra)
        with rng_neutral():
            return envs.make(
                t.name,
                num_envs=num_envs,
                seed=seed,
                obs_history=t.obs_history,
                act_steps=t.act_steps,
                max_episode_steps=t.max_episode_steps,
                retry_failed_starts=retry_failed_starts,
                resumable=resumable,
                **kwargs,
            )

    def _train_seed(self) -> int:
        # Training members are seeded seed * num_envs + i: disjoint across run seeds.
        return self.cfg.seed * self.cfg.task.num_envs

    @property
    def train_env(self) -> Any:
        if self._train_env is None:
            n = self.cfg.task.num_envs
            seed = self._train_seed()
            env = self._make_env(n, seed, self.cfg.algo.retry_failed_starts, resumable=True)
            self._train_env = env
            with rng_neutral():
                obs, _ = env.reset(seed=seed)
            self._obs = self._features(obs)
            self._ep_return = np.zeros(n)
            self._ep_ids = [[] for _ in range(n)]
        return self._train_env

    @property
    def eval_env(self) -> Any:
        if self._eval_env is None:
            self._eval_env = self._make_env(self.cfg.task.eval_num_envs, self.cfg.task.eval_seed)
        return self._eval_env

    def _episodes(self) -> dict[str, Any] | None:
        """The training envs' episodes in progress and the loop's bookkeeping of them
        (``training_state/episodes.json``); None before the envs exist."""
        if self._train_env is None:
            return None
        return {
            "members": envs.episode_states(self._train_env),
            "obs": self._obs.tolist(),
            "ep_return": self._ep_return.tolist(),
            "ep_ids": self._ep_ids,
        }

    def _restore_episodes(self, episodes: dict[str, Any] | None, ckpt: Path) -> None:
        """Re-create the training envs' episodes of a checkpoint by replay (module docstring);
        ``CheckpointError`` naming the member whose replay does not give the stored
        observation."""
        if self._train_env is not None:  # restored twice: the episodes of the last one
            self._train_env.close()
            self._train_env = None
        if episodes is None:
            return  # saved before any collection: the envs start fresh, as they did
        path = ckpt / "training_state" / "episodes.json"
        n = self.cfg.task.num_envs
        try:
            members = episodes["members"]
            obs = np.asarray(episodes["obs"], dtype=np.float32)
            ep_return = np.asarray(episodes["ep_return"], dtype=np.float64)
            ep_ids = [[int(k) for k in ids] for ids in episodes["ep_ids"]]
        except (KeyError, TypeError, ValueError) as err:
            raise ckpt_io.CheckpointError(f"{path}: not an episodes record ({err})") from None
        if len(members) != n or len(obs) != n:
            raise ckpt_io.CheckpointError(
                f"{path}: {len(members)} env members, this run has task.num_envs={n}; resume "
                "with the config the run was saved with"
            )
        self._train_env = self._make_env(
            n, self._train_seed(), self.cfg.algo.retry_failed_starts, resumable=True
        )
        with rng_neutral():
            replayed = envs.restore_episodes(self._train_env, members)
        if self.encoder is not None:  # stored as features: compare features
            feats = self._features(np.stack([got["obs"] for got in replayed]))
            replayed = [dict(got, obs=f) for got, f in zip(replayed, feats, strict=True)]
        for i, (member, got) in enumerate(zip(members, replayed, strict=True)):
            chunks = len(member["actions"])
            if got["ended_at"] is not None:
                why = f"the replay ended the episode at chunk {got['ended_at']}"
            elif got["obs"].shape != obs[i].shape:
                why = f"observation shape {got['obs'].shape}, stored {obs[i].shape}"
            elif not np.array_equal(got["obs"], obs[i]):
                diff = float(np.abs(got["obs"] - obs[i]).max())
                why = f"the observation differs from the stored one by up to {diff:.3g}"
            else:
                continue
            raise ckpt_io.CheckpointError(
                f"{path}: training env member {i}: replaying its episode (reset seed "
                f"{member['seed']}, {chunks} chunks) does not re-create it: {why}; the "
                "simulator did not repeat itself (another machine or library build?)"
            )
        self._obs, self._ep_return, self._ep_ids = obs, ep_return, ep_ids

    def close(self) -> None:
        for env in (self._train_env, self._eval_env):
            if env is not None:
                env.close()
        self.logger.close()

    # ------------------------------------------------------------------ checkpoints
    def _loop_json(self) -> dict[str, Any]:
        self.state.success_ids = self.data.success_ids
        return asdict(self.state)

    def save(self, evaluated: bool = False) -> Path:
        """A full checkpoint (resume point), or with ``evaluated`` the weights alone under
        ``checkpoints/evaluated/`` (``ckpt_io.save_evaluated``)."""
        self.state.wall_time_s = self.wall_time()
        t = self.cfg.task
        meta = {
            "algo": self.cfg.algo.name,
            "task": t.name,
            "suite": self.spec.suite,
            "obs_dim": self.spec.obs_dim,
            "action_dim": self.spec.action_dim,
            "obs_horizon": t.obs_history,
            "horizon": t.horizon,
            "act_steps": t.act_steps,
            "obs_keys": list(self.spec.obs_keys),
            "max_episode_steps": t.max_episode_steps,
            "phase": self.state.phase,
            "iteration": self.state.iteration,
            "env_steps": self.state.env_steps,
            **self.demo_facts,
        }
        name = f"step_{self.state.env_steps:012d}_it{self.state.iteration:05d}"
        modules = self._modules()
        self._finite_or_raise({}, f"iteration {self.state.iteration}")  # never saved
        if evaluated:
            return ckpt_io.save_evaluated(
                self.run_dir, name, to_dict(self.cfg), meta, modules, self._loop_json()
            )
        rng = ckpt_io.rng_state(self.algo.generators())
        rng["loop_numpy"] = self.rng.bit_generator.state
        return ckpt_io.save_checkpoint(
            self.run_dir,
            name,
            to_dict(self.cfg),
            meta,
            modules,
            self.algo.optimizers(),
            rng,
            self.buffer.state_dict(),
            self._loop_json(),
            episodes=self._episodes(),
        )

    def _finite_or_raise(self, metrics: dict[str, float], where: str) -> None:
        """Stop the run on a non-finite metric or weight (``FloatingPointError`` naming them,
        ``where`` and the last checkpoint, which stays the newest: nothing after it is saved)."""
        try:
            finite_or_raise(metrics, where)
            bad = [
                f"{name}.{key}"
                for name, module in self.algo.modules().items()
                for key, value in module.state_dict().items()
                if value.is_floating_point() and not bool(torch.isfinite(value).all())
            ]
            if bad:
                more = " ..." if len(bad) > 5 else ""
                raise FloatingPointError(
                    f"non-finite weights at {where}: {', '.join(bad[:5])}{more}; the run stops here"
                )
        except FloatingPointError as err:
            raise FloatingPointError(f"{err}; {self._last_good()}") from None

    def _last_good(self) -> str:
        """Where the run's newest checkpoint is, for messages that stop a run."""
        last = self.run_dir / "checkpoints" / "last"
        if not last.is_file():
            return "no checkpoint written yet"
        return f"the last checkpoint, {last.parent / last.read_text().strip()}, is left as it was"

    def restore(self, path: str | Path, weights_only: bool = False) -> None:
        """Load a checkpoint: its policy weights only (start fine-tuning from a pretrained
        policy, of any algorithm: ``ckpt_io.start_weights`` says which) or everything
        (resume the same run; from a run directory, an unreadable newest checkpoint is set
        aside with a warning and the one before it resumed)."""
        if weights_only:
            ckpt = ckpt_io.resolve(path)
            self._check_dims(ckpt, ckpt_io.read_meta(ckpt))
            self._start_from(ckpt)
        else:
            self._resume(self._resume_point(path))
        self.algo.prepare(self.demo_obs, self.demo_act)

    def load_acting_networks(self, path: str | Path) -> None:
        """The algorithm's networks besides the policy from ``path``, a checkpoint this
        algorithm wrote: what evaluation acts with beside the policy (IDQL's critic that
        selects among candidates, DSRL's noise actor, OTPR's critic under
        ``algo.eval_mode=best``) is the checkpoint's, never a fresh initialisation."""
        ckpt = ckpt_io.resolve(path)
        written_by = ckpt_io.read_meta(ckpt).get("algo")
        if written_by != self.cfg.algo.name:
            raise ckpt_io.CheckpointError(
                f"{ckpt / 'meta.json'}: algo: written by algo={written_by}, evaluated as "
                f"algo={self.cfg.algo.name}"
            )
        policy = ("policy", "policy_ema")
        others = {k: m for k, m in self.algo.modules().items() if k not in policy}
        ckpt_io.load_modules(ckpt, others)

    def _check_dims(self, ckpt: Path, meta: dict[str, Any]) -> None:
        """A checkpoint of another task may start this run (a planner pretrained on mt10
        fine-tuned on reach-v3) when its policy fits: the same observation and action widths
        and the same horizons T_o and H. Else one ``CheckpointError`` line naming the key."""
        for key in ("obs_dim", "action_dim"):
            if meta.get(key) != getattr(self.spec, key):
                raise ckpt_io.CheckpointError(
                    f"{ckpt / 'meta.json'}: checkpoint {key}={meta.get(key)} does not match "
                    f"task {self.cfg.task.name!r} ({getattr(self.spec, key)})"
                )
        t = self.cfg.task
        for key, ours, name in (
            ("obs_horizon", t.obs_history, "task.obs_history"),
            ("horizon", t.horizon, "task.horizon"),
        ):
            if key in meta and meta[key] != ours:
                raise ckpt_io.CheckpointError(
                    f"{ckpt / 'meta.json'}: checkpoint {key}={meta[key]} does not match "
                    f"{name}={ours} of this run; set {name}={meta[key]}"
                )

    def _resume_point(self, path: str | Path) -> ckpt_io.ResumePoint:
        """The newest full checkpoint of ``path`` that reads completely; the unreadable ones
        newer than it are set aside, each with a warning naming its bad file."""
        candidates = ckpt_io.resume_candidates(path)
        if not candidates:
            raise ckpt_io.CheckpointError(f"{path}: no full checkpoint (step_*) to resume from")
        bad: list[tuple[Path, ckpt_io.CheckpointError]] = []
        for ckpt in candidates:
            try:
                point = ckpt_io.read_resume_point(ckpt, list(self._modules()))
            except ckpt_io.CorruptCheckpointError as err:
                bad.append((ckpt, err))
                continue
            for old, err in bad:
                ckpt_io.set_aside(old, ckpt, err)
            return point
        first = bad[0][1]
        raise ckpt_io.CorruptCheckpointError(
            f"{first}; and no older readable checkpoint to resume from"
        )

    def _start_from(self, ckpt: Path) -> None:
        modules = self.algo.modules()
        ema = self.algo.ema
        plan = ckpt_io.start_weights(ckpt, self.cfg.weights, keeps_average=ema is not None)
        ckpt_io.load_modules(ckpt, {stored: modules[ours] for ours, stored in plan.items()})
        if self.encoder is not None:
            ckpt_io.load_modules(ckpt, {"encoder": self.encoder.encoder})
            self._reencode_demos()
        if ema is not None:
            if "policy_ema" not in plan:
                ema.reset_to(self.algo.policy)
            # the loaded weights are trained ones, not a random start the warm-up forgets fast
            ema.end_warmup()
        # This run starts at these weights: keep their evaluation (the one at the checkpoint's
        # own env step; 0 for a pretrained checkpoint) as its starting level, and only if it
        # was measured as this run measures and of the weights loaded (an average's evaluation
        # says nothing of the trained weights next to it).
        loop = ckpt_io.read_loop_state(ckpt, missing_ok=True)
        at, settings = loop.get("env_steps", 0), self.eval_settings()
        kept = [
            dict(e, env_steps=0, iteration=0)
            for e in loop.get("evals", [])
            if e["env_steps"] == at and e.get("eval_settings") == settings
        ]
        same = plan["policy"] == ckpt_io.acting_weights(ckpt) or "policy_ema" in plan
        # measured on the checkpoint's task: a planner pretrained on mt10 starts reach-v3 at a
        # level measured anew on reach-v3
        same = same and ckpt_io.read_meta(ckpt).get("task") == self.cfg.task.name
        self.state.evals = kept[-1:] if same else []
        self.state.phase = "pretrained"

    def _resume(self, point: ckpt_io.ResumePoint) -> None:
        ckpt, meta = point.path, point.meta
        self._check_dims(ckpt, meta)
        if meta.get("algo") != self.cfg.algo.name:
            raise ckpt_io.CheckpointError(
                f"{ckpt}: algo: the checkpoint was written by algo={meta.get('algo')}, this run "
                f"is algo={self.cfg.algo.name}; start a new run from it with checkpoint=<it>"
            )
        if self.algo.ema is not None and ckpt_io.acting_weights(ckpt) != "policy_ema":
            raise ckpt_io.CheckpointError(
                f"{ckpt}: no policy_ema.safetensors, but this run has algo.ema_decay="
                f"{self.cfg.algo.ema_decay}; resume it with the config it was saved with"
            )
        point.load_modules(self._modules())
        self._reencode_demos()  # before the replay is loaded: it replaces the demo rows
        ts = point.training
        optimizers = ckpt / "training_state" / "optimizers.pt"
        for name, opt in self.algo.optimizers().items():
            if name not in ts["optimizers"]:
                raise ckpt_io.CheckpointError(
                    f"{optimizers}: no state of optimizer {name!r}; resume with the config the "
                    "run was saved with"
                )
            opt.load_state_dict(ts["optimizers"][name])
        if ts["replay"] is not None:
            self.buffer.load_state_dict(ts["replay"])
        self.state = LoopState.from_dict(ts["loop"])
        self.data.success_ids = self.state.success_ids
        self._restore_episodes(ts["episodes"], ckpt)
        ckpt_io.set_rng_state(ts["rng"], self.algo.generators())
        self.rng.bit_generator.state = ts["rng"]["loop_numpy"]
        self._wall_at_start = float(self.state.wall_time_s)
        self._t0 = time.time()
        self.logger.truncate_after(self.state.env_steps)

    def wall_time(self) -> float:
        return self._wall_at_start + time.time() - self._t0

    # ------------------------------------------------------------------ phases
    def behaviour_cloning(self) -> None:
        """``algo.pretrain_steps`` DSM steps on the demo windows (cosine-decayed AdamW)."""
        a = self.cfg.algo
        policy = self.algo.policy
        params = list(policy.parameters())
        frames = None  # with policy.encoder.train: the demo windows as frames
        if self.encoder is not None and self.cfg.policy.encoder.train:
            net = self.encoder.encoder
            net.train()
            net.requires_grad_(True)
            params += list(net.parameters())
            proprio = proprio_slice(self.cfg, self.state_spec)
            frames = PixelWindows(
                self.image_demos, image_key(self.cfg), proprio, self.cfg.task.obs_history
            )
            crops = torch.Generator().manual_seed(self.cfg.seed)
        opt = torch.optim.AdamW(params, lr=a.pretrain_lr, weight_decay=1e-6)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(a.pretrain_steps, 1))
        obs = torch.as_tensor(self.demo_obs, device=self.algo.device)
        act = torch.as_tensor(self.demo_act, device=self.algo.device)
        bar = tqdm(
            range(a.pretrain_steps), desc="pretrain", disable=not self.cfg.progress, leave=False
        )
        for step in bar:
            idx = torch.as_tensor(self.rng.integers(0, len(obs), a.pretrain_batch_size))
            batch = obs[idx] if frames is None else frames.obs(idx.numpy(), net, crops)
            info = self.algo.pretrain_step(batch, act[idx], opt)
            sched.step()
            if step % 100 == 0 or step == a.pretrain_steps - 1:
                finite_or_raise(info, f"pretraining step {step}")
                self.logger.log(
                    {"env_steps": 0, "iteration": 0, "pretrain_step": step, **info}, step=step
                )
        if frames is not None:  # frozen from here on; the demos as this encoder sees them
            freeze(net)
            self._reencode_demos()
            self.algo.prepare(self.demo_obs, self.demo_act)
        self.state.pretrain_steps = a.pretrain_steps
        self.state.phase = "pretrained"

    def pretrain(self) -> dict[str, float]:
        """Behaviour cloning, then the pretrained evaluation and a checkpoint."""
        self.behaviour_cloning()
        result = self.evaluate_point()
        faults.kill_point("evaluated:0")
        self.save()
        faults.kill_point("saved:0")
        return result

    def evaluate_point(self) -> dict[str, float]:
        """A point of the run's curve: ``evaluate``, then (``algo.keep_evaluated``) the weights
        it measured, kept under ``checkpoints/evaluated/``."""
        result = self.evaluate()
        if self.cfg.algo.keep_evaluated:
            self.save(evaluated=True)
        return result

    def eval_settings(self) -> dict[str, Any]:
        """What this run's evaluations depend on besides the weights."""
        return evaluation.settings(self.cfg, self.algo.acting_policy, self.algo.eval_settings())

    def _eval_act(self, obs: np.ndarray, generator: torch.Generator) -> np.ndarray:
        """How an evaluation acts (``evaluation.ActFn``)."""
        return self.algo.act(self._features(obs), explore=False, generator=generator)[0]

    def evaluate(self) -> dict[str, float]:
        """Success rate, return and subtasks over ``eval_episodes`` on the fixed eval seeds,
        recorded in the run's evaluation history and logged."""
        t = self.cfg.task
        with evaluation.evaluating(self.cfg, self.algo.acting_policy):
            out = evaluation.run_episodes(
                self.eval_env,
                self._eval_act,
                t.eval_episodes,
                t.eval_num_envs,
                t.eval_seed,
                t.act_steps,
            )
        record = {"env_steps": self.state.env_steps, "iteration": self.state.iteration, **out}
        self.state.evals.append(dict(record, eval_settings=self.eval_settings()))
        self.logger.log(dict(record, wall_time_s=self.wall_time()), step=self.state.env_steps)
        return out

    def film(self, episodes: int, out_dir: str | Path, prefix: str = "") -> list[Path]:
        """The evaluation's first ``episodes`` episodes of the acting policy as mp4 files in
        ``out_dir`` (``otpr.video``: run again on the evaluation's seeds with rendering on; the
        evaluation env, the run's RNGs and its records are untouched). ``RenderError`` (one
        line naming ``MUJOCO_GL``) when the frames cannot be drawn."""
        from envs.render import RenderError, choose_gl, render_failure
        from otpr.video import film_episodes

        t = self.cfg.task
        if episodes < 1:
            return []
        choose_gl()
        render: dict[str, Any] = {"render_mode": "rgb_array", "image_size": self.cfg.video_size}
        if t.env_kwargs.get("pixels") or t.pixels:  # renders for the policy at its size: keep it
            render.pop("image_size")
        try:
            env = self._make_env(
                t.eval_num_envs, t.eval_seed, vectorization="sync", record_frames=True, **render
            )
        except RenderError:
            raise
        except Exception as err:  # the same env renders nothing otherwise: its renderer failed
            raise render_failure(err) from err
        try:
            with evaluation.evaluating(self.cfg, self.algo.acting_policy), rng_neutral():
                return film_episodes(
                    env,
                    self._eval_act,
                    episodes,
                    t.eval_num_envs,
                    t.eval_seed,
                    t.act_steps,
                    out_dir,
                    self.cfg.video_size,
                    prefix=prefix,
                    progress=self.cfg.progress,
                )
        finally:
            env.close()

    def collect(self) -> dict[str, float]:
        """``steps_per_iter`` decisions in every training env, stored as chunk transitions."""
        t, a = self.cfg.task, self.cfg.algo
        env = self.train_env
        gammas = t.gamma ** np.arange(t.act_steps)
        successes, returns = [], []
        timing: dict[str, float] = defaultdict(float)
        acted: dict[str, float] = defaultdict(float)  # the algorithm's act info, summed
        fresh_successes = []  # episodes on a fresh start (algo.retry_failed_starts)
        for decision in range(a.steps_per_iter):
            tic = time.perf_counter()
            actions, info = self.algo.act(self._obs, explore=True)
            timing["perf/time_sample_s"] += time.perf_counter() - tic
            for key, value in info.items():
                acted[key] += value
            tic = time.perf_counter()
            next_obs, reward, term, trunc, infos = env.step(actions[:, : t.act_steps])
            next_obs = self._features(next_obs)
            timing["perf/time_env_s"] += time.perf_counter() - tic
            faults.kill_point(f"collect:{self.state.iteration + 1}:{decision}")
            done = term | trunc
            learn_term = term | (trunc & t.timeout_is_terminal)  # what the learners see
            rewards = (
                np.array(infos["rewards"])
                if "rewards" in infos
                else np.zeros((len(done), t.act_steps))
            )
            steps = np.array(infos["steps"]) if "steps" in infos else np.zeros(len(done), int)
            true_next = next_obs.copy()
            for i in range(len(done)):  # the rows buffer.add below writes, the last one included
                self._ep_ids[i].append(self.buffer.total_added + i)
            if done.any():
                ended = np.flatnonzero(done)
                final_obs = self._features(np.stack([infos["final_obs"][i] for i in ended]))
                fin = infos["final_info"]
                for i in np.flatnonzero(done):
                    rewards[i] = fin["rewards"][i]
                    steps[i] = fin["steps"][i]
                    true_next[i] = final_obs[np.searchsorted(ended, i)]
                    successes.append(float(fin["success"][i]))
                    if "attempt" in fin and fin["attempt"][i] == 0:
                        fresh_successes.append(float(fin["success"][i]))
                    returns.append(self._ep_return[i] + reward[i])
                    if a.success_to_demos and fin["success"][i]:
                        self.data.success_ids.extend(self._ep_ids[i])
                    self._ep_ids[i] = []
            step = Step(
                obs=self._obs,
                actions=actions,
                reward=(rewards * gammas[None]).sum(1) * t.reward_scale,
                discount=t.gamma ** steps.astype(np.float64),
                terminated=learn_term,
                done=done,
                next_obs=true_next,
            )
            self.algo.observe(step)
            self.buffer.add(
                obs=step.obs,
                actions=step.actions,
                reward=step.reward,
                discount=step.discount,
                next_obs=step.next_obs,
                terminated=step.terminated.astype(np.float32),
            )
            self._ep_return = np.where(done, 0.0, self._ep_return + reward)
            self.state.env_steps += int(steps.sum())
            self.state.episodes += int(done.sum())
            self._obs = next_obs
        out = {**timing, **acted}
        if successes:
            out["train/success"] = float(np.mean(successes))
            out["train/return"] = float(np.mean(returns))
            out["train/episodes"] = len(successes)
        if fresh_successes:
            out["train/first_try_success"] = float(np.mean(fresh_successes))
            out["train/first_try_episodes"] = len(fresh_successes)
        return out

    def finetune(self) -> None:
        a = self.cfg.algo
        bar = tqdm(
            total=a.iterations,
            initial=self.state.iteration,
            desc="fine-tune",
            disable=not self.cfg.progress,
            leave=False,
        )
        while self.state.iteration < a.iterations:
            tic = time.time()
            steps_before = self.state.env_steps
            metrics = self.collect()
            metrics.update(self.algo.update(self.data, self.state.iteration))
            self._finite_or_raise(metrics, f"iteration {self.state.iteration + 1}")
            self.state.iteration += 1
            it = self.state.iteration
            elapsed = time.time() - tic
            metrics["perf/env_steps_per_s"] = (self.state.env_steps - steps_before) / elapsed
            metrics["perf/iteration_s"] = elapsed
            record = {"env_steps": self.state.env_steps, "iteration": it, **metrics}
            self.logger.log(dict(record, wall_time_s=self.wall_time()), step=self.state.env_steps)
            self.state.phase = "finetune"
            if it % a.eval_every == 0 or it == a.iterations:
                res = self.evaluate_point()
                bar.set_postfix(success=f"{res['eval/success']:.2f}")
                faults.kill_point(f"evaluated:{it}")
            if it % a.checkpoint_every == 0 or it == a.iterations:
                self.save()
                faults.kill_point(f"saved:{it}")
            bar.update(1)
        bar.close()
        self.state.phase = "done"

    def summary(self) -> dict[str, Any]:
        return summary_of(self.cfg, self.state, self.demo_facts, self.wall_time())


def summary_of(
    cfg: Config, state: LoopState, demo_facts: dict[str, Any], wall_time_s: float
) -> dict[str, Any]:
    """The run summary, a function of the config, the demos' facts (``Trainer.demo_facts``,
    also in a checkpoint's meta.json) and the loop state with its stored evaluations."""
    run = {
        "task": cfg.task.name,
        "algo": cfg.algo.name,
        **cfg.algo.describe(cfg),
        "seed": cfg.seed,
        **demo_facts,
    }
    out = summarize(state.evals, run, state.env_steps, state.iteration)
    out["eval_episodes"] = cfg.task.eval_episodes
    out["wall_time_s"] = round(wall_time_s, 1)
    return out


def run(
    cfg: Config,
    run_dir: str | Path,
    stages: tuple[str, ...] = ("pretrain", "finetune"),
    video: int = 0,
) -> dict[str, Any]:
    """Run the configured stages in ``run_dir`` (resuming if it holds a checkpoint), then film
    ``video`` evaluation episodes of the final policy next to curves.png
    (``final_episode_000_success.mp4``; ``Trainer.film``). A video that cannot be rendered is
    reported in one line on stderr, and the run stands."""
    from envs.render import RenderError
    from otpr.report import write_report

    lock = ckpt_io.RunLock(run_dir)  # one training process per run directory
    lock.acquire()
    try:
        trainer = Trainer(cfg, run_dir)
        try:
            (trainer.run_dir / "config.yaml").write_text(_yaml(to_dict(cfg)))
            ckpt_io.remove_partial(trainer.run_dir)  # a killed run's half-written checkpoint
            has_ckpt = bool(ckpt_io.resume_candidates(trainer.run_dir))
            if cfg.resume and has_ckpt:
                trainer.restore(trainer.run_dir)
            else:
                # a run that starts over (killed before its first checkpoint, or resume=false)
                # starts its metrics file over too
                trainer.logger.truncate_after(-1)
                if cfg.checkpoint is not None:
                    trainer.restore(cfg.checkpoint, weights_only=True)
            if "pretrain" in stages and trainer.state.phase == "init":
                trainer.pretrain()
            if "finetune" in stages and cfg.algo.iterations > 0:
                if trainer.state.phase == "init":
                    raise ConfigError(
                        "checkpoint: fine-tuning needs a pretrained policy: run the pretrain "
                        "stage or pass "
                        "checkpoint=<pretrained run dir>"
                    )
                if not any(e["env_steps"] == 0 for e in trainer.state.evals):
                    trainer.evaluate_point()
                trainer.finetune()
            summary = trainer.summary()
            write_report(trainer.run_dir, summary)
            if video > 0:
                try:
                    paths = trainer.film(video, trainer.run_dir, prefix="final_")
                    print("video: " + ", ".join(str(p) for p in paths))
                except RenderError as err:
                    print(f"video: not written: {err}", file=sys.stderr)
            return summary
        finally:
            trainer.close()
    finally:
        lock.release()


def _yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)
