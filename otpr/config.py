"""Typed structured configs, one dataclass per Hydra group (``configs/<group>/*.yaml``).

Every field has a one-line docstring (the string literal below it). Unknown keys are rejected
by Hydra's struct mode against these schemas; invalid values are rejected in ``__post_init__``
with a message that names the key (``ConfigError``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import MISSING


class ConfigError(ValueError):
    """A config value is invalid; the message names the key."""


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


# What `weights` may name: a checkpoint's acting policy (its average when the run kept one) or
# its trained one (otpr/checkpoint.py: policy_weights).
WEIGHTS = ("acting", "trained")


def _one_of(value: Any, key: str, options: tuple) -> None:
    _check(value in options, key, f"must be one of {list(options)}, got {value!r}")


@dataclass
class DemoConfig:
    """Where demonstrations come from."""

    path: str | None = None
    """Local demo file/dir; None -> generate with the scripted expert into data/ (cached)."""
    format: str = "robomimic"
    """robomimic | d4rl | minari | calvin."""
    obs_keys: list[str] | None = None
    """robomimic obs keys to concatenate, in order; None -> the file's recorded order."""
    filter_key: str | None = None
    """robomimic mask/<filter> to read (e.g. 'train'); None -> all demos."""
    num_episodes: int = 10
    """Episodes to generate when path is None."""
    quality: str = "noisy"
    """Generated data quality preset: expert | near_optimal | noisy | dart | suboptimal | mixed
    (otpr/demos.py)."""
    action_noise: float | None = None
    """Override the preset's Gaussian action noise std (clipped actions)."""
    seed: int = 1_000_000
    """First seed of the demo episodes (disjoint from training and evaluation seeds)."""

    def __post_init__(self) -> None:
        _one_of(self.format, "task.demos.format", ("robomimic", "d4rl", "minari", "calvin"))
        _one_of(
            self.quality,
            "task.demos.quality",
            ("expert", "near_optimal", "noisy", "dart", "suboptimal", "mixed"),
        )
        _check(self.num_episodes >= 1, "task.demos.num_episodes", "must be >= 1")
        if self.action_noise is not None:
            _check(self.action_noise >= 0, "task.demos.action_noise", "must be >= 0")


@dataclass
class TaskConfig:
    """The environment, its horizons and the data that comes with it."""

    name: str = MISSING
    """Task name for envs.make (reach-v3, can, kitchen-complete, ...)."""
    max_episode_steps: int = 150
    """Episode time limit in env steps (truncation, not termination)."""
    obs_history: int = 2
    """T_o: observations the policy conditions on."""
    horizon: int = 8
    """H: action steps the policy predicts per decision."""
    act_steps: int = 4
    """T_a <= H: action steps executed per decision."""
    num_envs: int = 8
    """Parallel training envs (member i seeded seed + i)."""
    vectorization: str = "sync"
    """sync | async vector env."""
    gamma: float = 0.99
    """Discount per env step (a chunk of k steps discounts by gamma**k)."""
    timeout_is_terminal: bool = False
    """Learn from an episode that reaches ``max_episode_steps`` as from a terminal one (no value
    after it) instead of bootstrapping V of its last state. Success is scored within the time
    limit and the state has no clock, so with a discount near 1 a bootstrapped value credits a
    policy for what it would do after the limit (on Can: keep holding the can, docs/results.md
    2j). Evaluation and reported returns are unchanged."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for the task factory (e.g. reward: sparse)."""
    reward_scale: float = 1.0
    """Multiplies rewards stored for the critic (reported returns stay unscaled)."""
    eval_episodes: int = 50
    """Episodes per evaluation."""
    eval_num_envs: int = 10
    """Parallel evaluation envs."""
    eval_seed: int = 100_000
    """First evaluation seed: a fixed range, disjoint from training and demo seeds."""
    demos: DemoConfig = field(default_factory=DemoConfig)
    """Demonstrations."""

    def __post_init__(self) -> None:
        _check(self.obs_history >= 1, "task.obs_history", "must be >= 1")
        _check(self.horizon >= 1, "task.horizon", "must be >= 1")
        _check(
            1 <= self.act_steps <= self.horizon,
            "task.act_steps",
            f"must be in [1, task.horizon={self.horizon}], got {self.act_steps}",
        )
        _check(self.num_envs >= 1, "task.num_envs", "must be >= 1")
        _check(self.eval_num_envs >= 1, "task.eval_num_envs", "must be >= 1")
        _check(self.eval_episodes >= 1, "task.eval_episodes", "must be >= 1")
        _check(0.0 < self.gamma <= 1.0, "task.gamma", f"must be in (0, 1], got {self.gamma}")
        _check(self.max_episode_steps >= 1, "task.max_episode_steps", "must be >= 1")
        _check(self.reward_scale > 0, "task.reward_scale", "must be > 0")
        _one_of(self.vectorization, "task.vectorization", ("sync", "async"))


@dataclass
class PolicyConfig:
    """The score network, the VP-SDE and the sampler."""

    name: str = "mlp"
    """mlp (residual MLP) | unet (1-D temporal U-Net)."""
    hidden: list[int] = field(default_factory=lambda: [256, 256, 256])
    """Residual-MLP widths."""
    time_emb_dim: int = 32
    """Sinusoidal time-embedding size."""
    unet_down_dims: list[int] = field(default_factory=lambda: [64, 128])
    """U-Net channel widths per level."""
    unet_kernel_size: int = 3
    """U-Net Conv1d kernel size."""
    schedule: str = "linear"
    """VP-SDE beta schedule: linear | cosine."""
    beta_min: float = 0.1
    """Linear schedule beta(0)."""
    beta_max: float = 20.0
    """Linear schedule beta(1)."""
    t_min: float = 1e-3
    """Smallest diffusion time."""
    sampler: str = "ddim"
    """ddim | euler_maruyama | dpm_solver_pp_2m."""
    num_steps: int = 10
    """Denoising steps per sample."""
    eta: float = 1.0
    """DDIM stochasticity (0: deterministic, 1: DDPM-like)."""
    temperature: float = 1.0
    """Sampling temperature in [0, 1]: x_T ~ N(0, tau^2 I) and every step's noise scaled by tau
    (1: the sampler as derived; < 1: nearer the mode). Acts in collection and evaluation. On
    Can, 0.5 took BC from 0.82 to 0.38 (docs/results.md section 2f)."""
    min_std: float = 0.0
    """Floor of every denoising step's noise std (DPPO's ``min_sampling_denoising_std``), in
    collection and evaluation alike. 0: the sampler as derived. ``algo=dppo`` needs it > 0: the
    last DDIM step is deterministic, so its log-probability would be undefined."""

    def __post_init__(self) -> None:
        _one_of(self.name, "policy.name", ("mlp", "unet"))
        _one_of(self.schedule, "policy.schedule", ("linear", "cosine"))
        _one_of(self.sampler, "policy.sampler", ("ddim", "euler_maruyama", "dpm_solver_pp_2m"))
        _check(self.num_steps >= 1, "policy.num_steps", "must be >= 1")
        _check(self.eta >= 0, "policy.eta", "must be >= 0")
        _check(0 <= self.temperature <= 1, "policy.temperature", "must be in [0, 1]")
        _check(self.min_std >= 0, "policy.min_std", "must be >= 0 (0: no floor)")
        _check(0 < self.beta_min < self.beta_max, "policy.beta_min", "need 0 < beta_min < beta_max")
        _check(0 < self.t_min < 1, "policy.t_min", "must be in (0, 1)")
        _check(all(h > 0 for h in self.hidden), "policy.hidden", "widths must be > 0")


@dataclass
class OTConfig:
    """The L2-regularised OT potentials u(s), v(a)."""

    masked: bool = True
    """Masked OT with expert keypoints (false: unmasked, OTPR-U)."""
    lam: float = 0.01
    """L2 regularisation lambda (in units of the normalised cost)."""
    lr: float = 1e-4
    """Adam learning rate of the potentials."""
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    """u and v MLP widths."""
    batch_size: int = 64
    """States and actions per dual step (an n x m cost matrix)."""
    steps_per_iter: int = 50
    """Dual steps per iteration (warm-started: networks and optimizer persist)."""
    num_keypoints: int = 16
    """Expert keypoint pairs appended to each dual batch when masked."""
    alpha: float = 0.5
    """Weight of the keypoint-guided cost g in (1 - alpha) * c_Q + alpha * g."""
    rho: float = 1.0
    """Softmax temperature of the keypoint relation vectors."""
    distance: str = "l2"
    """Distance to keypoints: l2 | cosine."""
    cost_normalization: str = "running"
    """running (standardise -Q by an EMA of its std) | none."""

    def __post_init__(self) -> None:
        _check(self.lam > 0, "ot.lam", f"must be > 0, got {self.lam}")
        _check(self.lr > 0, "ot.lr", "must be > 0")
        _check(self.batch_size >= 2, "ot.batch_size", "must be >= 2")
        _check(self.steps_per_iter >= 0, "ot.steps_per_iter", "must be >= 0")
        _check(self.num_keypoints >= 1, "ot.num_keypoints", "must be >= 1")
        _check(0.0 <= self.alpha <= 1.0, "ot.alpha", f"must be in [0, 1], got {self.alpha}")
        _check(self.rho > 0, "ot.rho", "must be > 0")
        _one_of(self.distance, "ot.distance", ("l2", "cosine"))
        _one_of(self.cost_normalization, "ot.cost_normalization", ("running", "none"))


@dataclass
class AlgoConfig:
    """Pretraining and online fine-tuning."""

    name: str = "otpr"
    """otpr | bc (pretrain only, no fine-tuning) | dppo (PPO through the denoising chain,
    Ren et al. 2024; the ``ppo_*`` settings)."""
    guidance: str = "H"
    """What weighs candidates and DSM samples: H (OTPR) | Q | A (expectile advantage) | uniform."""
    num_samples: int = 8
    """L: candidate chunks per state during collection."""
    sample_mode: str = "sample"
    """Collection choice among candidates: sample | argmax | softmax."""
    q_temperature: float = 1.0
    """Temperature of exp(Q / temperature) weights (guidance Q)."""
    eval_mode: str = "single"
    """Evaluation: single (L = 1) | best (argmax over eval_num_samples candidates)."""
    eval_num_samples: int = 8
    """Candidates per state when eval_mode = best."""
    eval_deterministic: bool = False
    """Evaluate without injected noise (DDIM eta 0, no policy.min_std floor; only x_T is drawn),
    as DPPO evaluates; collection keeps the sampler's noise. Needs sampler ddim or
    dpm_solver_pp_2m."""
    pretrain_steps: int = 4000
    """Behaviour-cloning (DSM) gradient steps on the demos."""
    pretrain_batch_size: int = 256
    """Batch size of pretraining."""
    pretrain_lr: float = 1e-3
    """Learning rate of pretraining (cosine-decayed)."""
    iterations: int = 40
    """Online iterations."""
    steps_per_iter: int = 40
    """Policy decisions per env per iteration."""
    warmup_iterations: int = 2
    """Iterations with critic and potential updates only (the actor waits)."""
    critic_updates_per_iter: int = 200
    """IQL gradient steps per iteration."""
    critic_batch_size: int = 256
    """IQL batch size."""
    critic_lr: float = 3e-4
    """IQL learning rate."""
    critic_hidden: list[int] = field(default_factory=lambda: [256, 256, 256])
    """Q and V MLP widths."""
    expectile: float = 0.7
    """IQL expectile tau."""
    polyak: float = 0.005
    """Target-Q Polyak rate."""
    actor_updates_per_iter: int = 300
    """Weighted-DSM gradient steps per iteration."""
    actor_batch_size: int = 256
    """Actor batch size (replay part + demo part)."""
    actor_lr: float = 3e-4
    """Actor learning rate during fine-tuning."""
    ema_decay: float = 0.0
    """EMA of the policy's weights over pretraining and actor steps (0: off). The averaged
    copy acts (collection, evaluation) and is what ``load_policy`` returns. With algo=dppo the
    trained weights collect (PPO's ratio compares the weights that acted with the ones being
    trained) and the average, updated after every policy gradient step, is evaluated."""
    actor_targets: str = "replay"
    """What the actor fits. replay: the replay's (s, a) pairs weighted by H(s, a). resampled
    (OTPR sec. 4.4): for replay states, L fresh candidates of the current policy weighted by H
    per state (pi'(a|s) ~ pi(a|s) H(s, a)), built once per iteration. Measured on the default
    task (docs/results.md), replay was the steadier of the two at a 50k-step budget."""
    actor_target_states: int = 2048
    """Replay states per iteration for which resampled targets are drawn."""
    actor_recent: int = 0
    """Draw the actor's replay part from the N newest transitions (0: the whole replay). The
    newest data was collected with H-resampling, so fitting it distils the improved behaviour
    (policy iteration); the whole replay lags behind it."""
    demo_fraction: float = 0.25
    """Fraction of each actor batch drawn from the demos."""
    actor_obs_bound: float = 1.5
    """The actor fits only pairs whose normalised observation lies within +-bound in every dim
    (the demos span [-1, 1]); 0 fits all. The critic and potentials still see every state."""
    success_to_demos: bool = False
    """Successful online episodes join the demos the actor's demo part draws from
    (self-imitation: their (state, chunk) pairs anchor the policy as the demos do). The critic,
    the potentials and their keypoints are unchanged."""
    retry_failed_starts: int = 0
    """Restart a training episode that failed from the same initial state, up to this many
    times in a row (0: every episode starts fresh): the collection spends more of its episodes
    on the starts the policy fails. ``train/first_try_success`` is then the policy's success on
    fresh starts, ``train/success`` that of all episodes, retries included. On Can the 20-demo
    BC's failures cluster at starts far from the demos, but its successful retries there are
    worth no more to BC than its other successes (docs/results.md, section 2g)."""
    weight_norm: str = "batch_mean"
    """DSM weight normalisation: none | batch_mean."""
    weight_clip: float = 10.0
    """Cap on the batch-mean-normalised DSM weights (0: no cap). Early in fine-tuning H > 0 on
    only ~4-13% of replay pairs, whose normalised weights then reach 8-25; the cap keeps one
    step from fitting only those (docs/results.md: steadier rise on the default task)."""
    buffer_capacity: int = 250_000
    """Replay capacity in decisions."""
    demos_in_replay: bool = True
    """Seed the replay buffer with the demo transitions (the critic sees their rewards)."""
    ppo_epochs: int = 10
    """dppo: passes over each iteration's rollout."""
    ppo_minibatch_size: int = 1024
    """dppo: (decision, denoising step) samples per policy gradient step."""
    ppo_clip: float = 0.01
    """dppo: ratio clip range of the last denoising step (DPPO's ``clip_ploss_coef``)."""
    ppo_clip_base: float = 0.001
    """dppo: ratio clip range of the first denoising step (``clip_ploss_coef_base``); the steps
    between follow DPPO's exponential schedule with rate ``ppo_clip_rate``."""
    ppo_clip_rate: float = 3.0
    """dppo: curvature of the clip schedule (``clip_ploss_coef_rate``)."""
    ppo_gae_lambda: float = 0.95
    """dppo: GAE lambda over decisions."""
    ppo_denoising_gamma: float = 0.99
    """dppo: an earlier denoising step's advantage is discounted by this per step before the
    last (DPPO's ``gamma_denoising``)."""
    ppo_norm_advantages: bool = True
    """dppo: standardise the rollout's advantages."""
    ppo_target_kl: float = 1.0
    """dppo: stop an iteration's epochs once the mean approximate KL exceeds this (0: never)."""
    ppo_max_grad_norm: float = 1.0
    """dppo: clip of the policy gradient norm (0: none)."""
    ppo_value_lr: float = 1e-3
    """dppo: learning rate of V(s)."""
    ppo_bc_coef: float = 0.0
    """dppo: weight of a behaviour-cloning term added to every policy minibatch step's loss:
    the unweighted DSM loss (SODP eq. 14; SODP's total loss is eq. 15 with weight 1.0) on
    ``ppo_bc_batch_size`` pairs drawn as the OTPR actor draws demo pairs, from the demo windows
    and, with ``algo.success_to_demos``, the pairs of successful online episodes (SODP's target
    buffer of proficient trajectories). 0: plain DPPO."""
    ppo_bc_batch_size: int = 256
    """dppo: pairs per behaviour-cloning term (``ppo_bc_coef``)."""
    ppo_value_hidden: list[int] = field(default_factory=lambda: [256, 256, 256])
    """dppo: V(s) MLP widths."""
    eval_every: int = 5
    """Evaluate every N iterations (and after the last)."""
    checkpoint_every: int = 5
    """Checkpoint every N iterations (and after the last)."""
    keep_evaluated: bool = True
    """Also keep the weights of every evaluated point of the curve, checkpoints/evaluated/
    (modules only, no replay: a few MB each), which rolling retention leaves alone."""

    def __post_init__(self) -> None:
        _one_of(self.name, "algo.name", ("otpr", "bc", "dppo"))
        _one_of(self.guidance, "algo.guidance", ("H", "Q", "A", "uniform"))
        _one_of(self.sample_mode, "algo.sample_mode", ("sample", "argmax", "softmax"))
        _one_of(self.eval_mode, "algo.eval_mode", ("single", "best"))
        _one_of(self.weight_norm, "algo.weight_norm", ("none", "batch_mean"))
        _one_of(self.actor_targets, "algo.actor_targets", ("resampled", "replay"))
        _check(self.actor_target_states >= 1, "algo.actor_target_states", "must be >= 1")
        _check(self.num_samples >= 1, "algo.num_samples", "must be >= 1")
        _check(self.eval_num_samples >= 1, "algo.eval_num_samples", "must be >= 1")
        _check(self.q_temperature > 0, "algo.q_temperature", "must be > 0")
        _check(0.5 <= self.expectile < 1.0, "algo.expectile", "must be in [0.5, 1)")
        _check(0.0 < self.polyak <= 1.0, "algo.polyak", "must be in (0, 1]")
        _check(0.0 <= self.demo_fraction < 1.0, "algo.demo_fraction", "must be in [0, 1)")
        _check(
            isinstance(self.retry_failed_starts, int) and self.retry_failed_starts >= 0,
            "algo.retry_failed_starts",
            f"must be an int >= 0, got {self.retry_failed_starts!r}",
        )
        for key in (
            "pretrain_steps",
            "iterations",
            "warmup_iterations",
            "critic_updates_per_iter",
            "actor_updates_per_iter",
        ):
            _check(getattr(self, key) >= 0, f"algo.{key}", "must be >= 0")
        _check(self.actor_recent >= 0, "algo.actor_recent", "must be >= 0")
        _check(self.actor_obs_bound >= 0, "algo.actor_obs_bound", "must be >= 0 (0: no bound)")
        _check(0.0 <= self.ema_decay < 1.0, "algo.ema_decay", "must be in [0, 1) (0: off)")
        _check(self.weight_clip >= 0, "algo.weight_clip", "must be >= 0 (0: no cap)")
        for key in ("steps_per_iter", "eval_every", "checkpoint_every", "buffer_capacity"):
            _check(getattr(self, key) >= 1, f"algo.{key}", "must be >= 1")
        for key in ("pretrain_lr", "critic_lr", "actor_lr", "ppo_value_lr", "ppo_clip"):
            _check(getattr(self, key) > 0, f"algo.{key}", "must be > 0")
        _check(self.ppo_bc_coef >= 0, "algo.ppo_bc_coef", "must be >= 0")
        for key in ("ppo_epochs", "ppo_minibatch_size", "ppo_bc_batch_size"):
            _check(getattr(self, key) >= 1, f"algo.{key}", "must be >= 1")
        _check(
            0 < self.ppo_clip_base <= self.ppo_clip,
            "algo.ppo_clip_base",
            f"must be in (0, algo.ppo_clip={self.ppo_clip}]",
        )
        _check(self.ppo_clip_rate > 0, "algo.ppo_clip_rate", "must be > 0")
        for key in ("ppo_gae_lambda", "ppo_denoising_gamma"):
            _check(0 <= getattr(self, key) <= 1, f"algo.{key}", "must be in [0, 1]")
        for key in ("ppo_target_kl", "ppo_max_grad_norm"):
            _check(getattr(self, key) >= 0, f"algo.{key}", "must be >= 0 (0: off)")


@dataclass
class Config:
    """A whole run."""

    task: TaskConfig = field(default_factory=TaskConfig)
    """Task group."""
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    """Algorithm group."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """Policy group."""
    ot: OTConfig = field(default_factory=OTConfig)
    """OT group."""
    seed: int = 0
    """Run seed (random, numpy, torch, env members seed + i)."""
    debug: bool = False
    """Shrink every budget so the run finishes in under a minute with the same outputs."""
    device: str = "cpu"
    """Torch device (cpu, cuda, cuda:1, mps)."""
    threads: int = 1
    """torch intra-op threads (0: torch's default). 1 is fastest for these small networks on
    few cores; oversubscribed threads cost 10-25x here."""
    run_dir: str = "runs"
    """Output directory of this run (set by the command line from hydra.run.dir)."""
    checkpoint: str | None = None
    """A checkpoint dir (or run dir) to start from: otpr-finetune / otpr-eval / resume."""
    weights: str = "acting"
    """Which policy weights of ``checkpoint`` to evaluate or fine-tune from: acting (the average
    when that run kept one, ``algo.ema_decay > 0``, else the trained ones) | trained."""
    resume: bool = True
    """If run_dir already holds checkpoints/last, continue from it."""
    tensorboard: bool = True
    """Also write TensorBoard events."""
    wandb: bool = False
    """Also log to Weights & Biases (needs wandb installed)."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self) -> None:
        _check(self.threads >= 0, "threads", "must be >= 0")
        _one_of(self.weights, "weights", WEIGHTS)
        if self.algo.eval_deterministic:
            _one_of(
                self.policy.sampler,
                "policy.sampler (algo.eval_deterministic=true)",
                ("ddim", "dpm_solver_pp_2m"),
            )
        _check(
            self.algo.ppo_bc_coef == 0 or self.algo.name == "dppo",
            "algo.ppo_bc_coef",
            f"acts only with algo=dppo (algo.name={self.algo.name!r}); leave it 0",
        )
        if self.algo.name == "dppo":
            _check(
                self.algo.eval_mode == "single",
                "algo.eval_mode",
                "must be single with algo=dppo (best ranks candidates by the IQL critic, "
                "which algo=dppo does not train)",
            )
            _one_of(self.policy.sampler, "policy.sampler (algo=dppo)", ("ddim", "euler_maruyama"))
            _check(
                self.policy.min_std > 0,
                "policy.min_std",
                "must be > 0 with algo=dppo (every denoising step needs a log-probability)",
            )


def apply_debug(cfg: Config) -> Config:
    """Shrink budgets in place for ``debug=true`` (same code paths and outputs, tiny sizes)."""
    if not cfg.debug:
        return cfg
    t, a, o, p = cfg.task, cfg.algo, cfg.ot, cfg.policy
    t.num_envs = min(t.num_envs, 2)
    t.eval_num_envs = min(t.eval_num_envs, 2)
    t.eval_episodes = min(t.eval_episodes, 2)
    t.max_episode_steps = min(t.max_episode_steps, 40)
    t.demos.num_episodes = min(t.demos.num_episodes, 3)
    a.pretrain_steps = min(a.pretrain_steps, 30)
    a.iterations = min(a.iterations, 3)
    a.warmup_iterations = min(a.warmup_iterations, 1)
    a.steps_per_iter = min(a.steps_per_iter, 10)
    a.critic_updates_per_iter = min(a.critic_updates_per_iter, 5)
    a.actor_updates_per_iter = min(a.actor_updates_per_iter, 5)
    a.eval_every = min(a.eval_every, 2)
    a.checkpoint_every = min(a.checkpoint_every, 2)
    a.critic_batch_size = min(a.critic_batch_size, 64)
    a.actor_batch_size = min(a.actor_batch_size, 64)
    a.pretrain_batch_size = min(a.pretrain_batch_size, 64)
    o.steps_per_iter = min(o.steps_per_iter, 5)
    p.num_steps = min(p.num_steps, 5)
    return cfg


def to_dict(obj: Any) -> Any:
    """A dataclass config as plain dicts/lists (for config.yaml and checkpoints)."""
    if hasattr(obj, "__dataclass_fields__"):
        return {f.name: to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a validated :class:`Config` from :func:`to_dict` output (e.g. a checkpoint)."""
    from omegaconf import OmegaConf

    merged = OmegaConf.merge(OmegaConf.structured(Config), data)
    return OmegaConf.to_object(merged)  # type: ignore[return-value]
