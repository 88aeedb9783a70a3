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
        _check(self.seed >= 0, "task.demos.seed", f"must be >= 0, got {self.seed}")
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
    after it) instead of bootstrapping V of its last state; evaluation and returns unchanged."""
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
    pixels: bool = False
    """Learn from camera images (encoded by ``policy.encoder``) instead of the low-dim state;
    the demos are rendered with images (robomimic layout, ``obs/<camera>_image``)."""
    camera: str | None = None
    """The camera of ``task.pixels`` (robosuite: agentview, robot0_eye_in_hand, ...); None:
    the suite's view (robosuite agentview, Meta-World's and Kitchen's default camera)."""
    image_size: int = 84
    """Side of the square frames of ``task.pixels``, in pixels."""
    proprio: bool = True
    """With ``task.pixels``: append the robot's own state (robosuite eef pose and gripper,
    Meta-World hand and gripper, Kitchen joint positions) to the image features."""

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
        _check(self.eval_seed >= 0, "task.eval_seed", f"must be >= 0, got {self.eval_seed}")
        _check(0.0 < self.gamma <= 1.0, "task.gamma", f"must be in (0, 1], got {self.gamma}")
        _check(self.max_episode_steps >= 1, "task.max_episode_steps", "must be >= 1")
        _check(self.reward_scale > 0, "task.reward_scale", "must be > 0")
        _one_of(self.vectorization, "task.vectorization", ("sync", "async"))
        _check(
            self.image_size >= 32,
            "task.image_size",
            f"must be >= 32 (the ResNet trunk downsamples 32x), got {self.image_size}",
        )


@dataclass
class EncoderConfig:
    """The image encoder of ``task.pixels`` runs (policies/encoder.py)."""

    weights: str | None = None
    """A local file of ImageNet ``resnet18`` weights (.safetensors or a torch file); None: the
    trunk starts random (nothing is downloaded)."""
    num_keypoints: int = 32
    """Spatial-softmax keypoints; the features are their (x, y): 2 * num_keypoints wide."""
    crop: float = 0.9
    """Side of the crop as a fraction of the image: random while the encoder trains, centred
    when it encodes (1: no crop)."""
    train: bool = False
    """Train the encoder with the policy during behaviour cloning (random crops), then freeze it;
    false: it stays as loaded (random or ``weights``) throughout."""
    batch_size: int = 128
    """Frames per batch when the frozen encoder encodes demos."""
    cache_dir: str | None = None
    """Where encoded demo features are cached; None: ``features/`` beside the demo file."""

    def __post_init__(self) -> None:
        _check(self.num_keypoints >= 1, "policy.encoder.num_keypoints", "must be >= 1")
        _check(0.0 < self.crop <= 1.0, "policy.encoder.crop", f"must be in (0, 1], got {self.crop}")
        _check(self.batch_size >= 1, "policy.encoder.batch_size", "must be >= 1")


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
    (1: the sampler as derived; < 1: nearer the mode), in collection and evaluation."""
    min_std: float = 0.0
    """Floor of every denoising step's noise std (DPPO's ``min_sampling_denoising_std``) in
    collection and evaluation (0: none). ``algo=dppo`` needs it > 0."""
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """The image encoder (read with ``task.pixels=true``)."""

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
    """What the loop reads of every algorithm: pretraining, the schedule, acting, the replay.

    Each algorithm subclasses it with its own settings (``otpr/algos/<name>.py``) and is selected
    with ``algo=<name>`` (``configs/algo/<name>.yaml``); a key of another algorithm is rejected.
    """

    name: str = MISSING
    """The registered algorithm (otpr/algos): otpr | dppo | idql | dql | dsrl | bc | yours."""
    pretrain_steps: int = 4000
    """Behaviour-cloning (DSM) gradient steps on the demos."""
    pretrain_batch_size: int = 256
    """Batch size of pretraining."""
    pretrain_lr: float = 1e-3
    """Learning rate of pretraining (cosine-decayed)."""
    iterations: int = 40
    """Online iterations (collect, then update)."""
    steps_per_iter: int = 40
    """Policy decisions per env per iteration."""
    warmup_iterations: int = 2
    """First iterations in which only the critics learn (the policy waits)."""
    actor_lr: float = 3e-4
    """Learning rate of the policy during fine-tuning."""
    ema_decay: float = 0.0
    """EMA of the policy's weights over every policy step (0: off). The average is evaluated and
    is what ``load_policy`` returns; the algorithm says whether it also collects."""
    eval_deterministic: bool = False
    """Evaluate without injected noise (DDIM eta 0, no policy.min_std floor; only x_T is drawn);
    collection keeps the sampler's noise. Needs sampler ddim or dpm_solver_pp_2m."""
    success_to_demos: bool = False
    """Successful online episodes join the demo pairs that behaviour-cloning terms draw from."""
    retry_failed_starts: int = 0
    """Restart a failed training episode from the same initial state, up to this many times in a
    row (0: every episode starts fresh); ``train/first_try_success`` counts fresh starts only."""
    buffer_capacity: int = 250_000
    """Replay capacity in decisions."""
    demos_in_replay: bool = True
    """Seed the replay buffer with the demo transitions."""
    eval_every: int = 5
    """Evaluate every N iterations (and after the last)."""
    checkpoint_every: int = 5
    """Checkpoint every N iterations (and after the last)."""
    keep_evaluated: bool = True
    """Keep the weights of every evaluated point under checkpoints/evaluated/ (no replay)."""

    def __post_init__(self) -> None:
        _check(
            isinstance(self.retry_failed_starts, int) and self.retry_failed_starts >= 0,
            "algo.retry_failed_starts",
            f"must be an int >= 0, got {self.retry_failed_starts!r}",
        )
        for key in ("pretrain_steps", "iterations", "warmup_iterations"):
            _check(getattr(self, key) >= 0, f"algo.{key}", "must be >= 0")
        _check(0.0 <= self.ema_decay < 1.0, "algo.ema_decay", "must be in [0, 1) (0: off)")
        for key in ("steps_per_iter", "eval_every", "checkpoint_every", "buffer_capacity"):
            _check(getattr(self, key) >= 1, f"algo.{key}", "must be >= 1")
        for key in ("pretrain_lr", "actor_lr"):
            _check(getattr(self, key) > 0, f"algo.{key}", "must be > 0")

    def check(self, cfg: Config) -> None:
        """Checks across groups (e.g. a sampler this algorithm needs); raises ConfigError."""

    def shrink_for_debug(self) -> None:
        """``debug=true``: cap this algorithm's own budgets (the base ones are capped by
        :func:`apply_debug`)."""

    def describe(self, cfg: Config) -> dict[str, Any]:
        """What a run summary records of this algorithm's variant (e.g. OTPR's guidance)."""
        return {}


@dataclass
class Config:
    """A whole run."""

    task: TaskConfig = field(default_factory=TaskConfig)
    """Task group."""
    algo: AlgoConfig = MISSING
    """Algorithm group (``algo=<name>``; its dataclass is the registered algorithm's)."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """Policy group."""
    ot: OTConfig = field(default_factory=OTConfig)
    """OT group (read by algo=otpr)."""
    seed: int = 0
    """Run seed (random, numpy, torch, env members seed + i)."""
    debug: bool = False
    """Shrink every budget so the run finishes in under a minute with the same outputs."""
    device: str = "cpu"
    """Torch device (cpu, cuda, cuda:1, mps)."""
    threads: int = 1
    """torch intra-op threads (0: torch's default); 1 is fastest for these small networks."""
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
    video: int = 1
    """Evaluation episodes to film as mp4 (0: none): the ``otpr`` job films its final policy
    into the run directory; otpr-pretrain, otpr-finetune and otpr-eval film only when given
    (``video=N``; otpr-eval into ``<run_dir>/videos/``). otpr/video.py."""
    video_size: int = 256
    """Width and height of the video frames in pixels (rendered offscreen: MUJOCO_GL)."""

    def __post_init__(self) -> None:
        _check(self.seed >= 0, "seed", f"must be >= 0 (numpy seeds are unsigned), got {self.seed}")
        _check(self.threads >= 0, "threads", "must be >= 0")
        for key, low in (("video", 0), ("video_size", 16)):
            value = getattr(self, key)
            _check(
                isinstance(value, int) and not isinstance(value, bool) and value >= low,
                key,
                f"must be an int >= {low}, got {value!r}",
            )
        _one_of(self.weights, "weights", WEIGHTS)
        _check(
            isinstance(self.algo, AlgoConfig),
            "algo",
            f"must be a registered algorithm's config, got {type(self.algo).__name__}",
        )
        if self.algo.eval_deterministic:
            _one_of(
                self.policy.sampler,
                "policy.sampler (algo.eval_deterministic=true)",
                ("ddim", "dpm_solver_pp_2m"),
            )
        self.algo.check(self)


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
    a.eval_every = min(a.eval_every, 2)
    a.checkpoint_every = min(a.checkpoint_every, 2)
    a.pretrain_batch_size = min(a.pretrain_batch_size, 64)
    a.shrink_for_debug()
    o.steps_per_iter = min(o.steps_per_iter, 5)
    p.num_steps = min(p.num_steps, 5)
    cfg.video = min(cfg.video, 1)  # one episode of at most max_episode_steps (40) steps
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


DEFAULT_ALGO = "otpr"


def from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a validated :class:`Config` from :func:`to_dict` output (e.g. a checkpoint);
    ``algo.name`` picks the registered algorithm's schema (default otpr)."""
    from omegaconf import OmegaConf

    from otpr.algos import config_class

    name = (data.get("algo") or {}).get("name", DEFAULT_ALGO)
    base = OmegaConf.structured(Config)
    base.algo = OmegaConf.structured(config_class(name))
    merged = OmegaConf.merge(base, data)
    return OmegaConf.to_object(merged)  # type: ignore[return-value]
