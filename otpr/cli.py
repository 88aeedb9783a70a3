"""Console scripts, each a Hydra app over ``configs/``.

otpr            the whole job: demos if missing -> pretrain -> fine-tune -> evaluate -> report
otpr-demos      scripted demonstrations in robomimic hdf5 (task=can num_episodes=100 ...)
otpr-pretrain   behaviour cloning only (writes a checkpoint with the pretrained evaluation)
otpr-finetune   fine-tune from checkpoint=<pretrained run or checkpoint dir>
otpr-eval       evaluate checkpoint=<run or checkpoint dir>
otpr-report     rebuild summary.json/curves.png of run_dir=<run>, or compare several runs

``<command> --help`` prints what the command does, what it needs and an example (``HELP``);
``--hydra-help`` prints Hydra's own.

A refused command (a malformed demo file, an invalid setting, a missing checkpoint: see
``otpr.errors``) prints one line, ``<command>: error: <what>``, exits with status 2 and leaves no
run directory behind (:class:`UndoRefusedRun`); ``OTPR_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import otpr.algos  # noqa: F401  registers the algorithms' config schemas (group algo)
from otpr.config import Config, ConfigError, TaskConfig, apply_debug, from_dict, to_dict
from otpr.errors import ERRORS_HELP, UsageError, refusal, run_command

CONFIG_PATH = "pkg://configs"


@dataclass
class DemosConfig:
    """otpr-demos: scripted demonstrations."""

    task: TaskConfig = field(default_factory=TaskConfig)
    """Task group (its env_kwargs and max_episode_steps are used)."""
    num_episodes: int = 100
    """Episodes to record."""
    quality: str = "expert"
    """expert | near_optimal | noisy | dart | suboptimal | mixed (otpr/demos.py)."""
    out: str | None = None
    """Output hdf5 path (default data/<task>_<quality>_n<N>_s<seed>.hdf5)."""
    seed: int = 1_000_000
    """First episode seed."""
    action_noise: float | None = None
    """Override the preset's action noise std."""
    jitter: float | None = None
    """Override the preset's waypoint jitter."""
    detour_prob: float | None = None
    """Override the preset's per-step detour probability."""
    mixture: float = 0.5
    """Expert fraction when quality=mixed."""
    only_success: bool = False
    """Keep only successful episodes."""
    debug: bool = False
    """Record at most 3 episodes."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        if self.num_episodes < 1:
            raise ConfigError("num_episodes: must be >= 1")
        if not 0.0 <= self.mixture <= 1.0:
            raise ConfigError("mixture: must be in [0, 1]")
        if self.seed < 0:
            raise ConfigError(f"seed: must be >= 0, got {self.seed}")


@dataclass
class ReportConfig:
    """otpr-report: rebuild summary.json / curves.png, or compare runs."""

    run_dir: str | None = None
    """One run directory to rebuild the report of."""
    runs: list[str] = field(default_factory=list)
    """Several run directories to compare on one plot."""
    out: str | None = None
    """Comparison plot path (default compare.png)."""


cs = ConfigStore.instance()
cs.store(name="base_config", node=Config)
cs.store(name="base_demos", node=DemosConfig)
cs.store(name="base_report", node=ReportConfig)


def _to_config(raw: DictConfig) -> Any:
    """The typed config of ``raw``; an invalid value raises ``ConfigError`` naming the key and,
    where the check did not say it, the value given."""
    try:
        cfg = OmegaConf.to_object(raw)
    except ConfigError as err:
        key, _, what = str(err).partition(": ")
        try:
            value = OmegaConf.select(raw, key, default=None, throw_on_missing=False)
        except OmegaConfBaseException:
            value = None
        if "got" in what or value is None:
            raise
        raise ConfigError(f"{key}: {what}, got {value!r}") from err
    except OmegaConfBaseException as err:  # e.g. a mandatory value (???) left unset
        key = getattr(err, "full_key", None) or "config"
        raise ConfigError(f"{key}: {str(err).splitlines()[0]}") from err
    unknown = _unknown_keys(raw, cfg)
    if unknown:
        key, owner = unknown[0]
        raise ConfigError(
            f"{key}: not a setting of {owner} (a key appended with + is refused: nothing would "
            "read it)"
        )
    task = getattr(cfg, "task", None)
    if task is not None:
        import envs

        try:
            envs.suite_of(task.name)
        except ValueError as err:
            raise ConfigError(f"task.name: {err}") from None
    return cfg


@dataclass
class _RunDirState:
    """What a run directory held when a command started (:class:`UndoRefusedRun`)."""

    path: Path
    created: list[Path]
    """The directories that did not exist yet: the run directory, then its missing parents."""
    files: dict[Path, bytes | int | None]
    """In a directory that existed: each file Hydra or the job's start may write there, as it
    was (its bytes; a log: its size; None: absent)."""


class _Refused(BaseException):
    """Carries a refusal from :class:`UndoRefusedRun` past Hydra, which would otherwise print
    "Error executing job with overrides" first (it catches ``Exception`` only), to ``_entry``."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class UndoRefusedRun(Callback):
    """A refused command leaves nothing behind (``hydra.callbacks`` in configs/*.yaml).

    Hydra makes the run directory, ``.hydra/`` and the ``<job>.log`` before the command's
    function runs. When that function refuses its input (``otpr.errors.refusal``), this removes
    the run directory and the parents this invocation made; a directory that existed before (a
    run being resumed; ``.`` for otpr-report) stays, with ``.hydra/*``, the log and
    ``config.yaml`` put back as they were. The refusal then goes on to ``_entry`` as
    :class:`_Refused`. A failure that is a bug keeps its directory and log.
    """

    def __init__(self) -> None:
        self.state: _RunDirState | None = None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self.state = _run_dir_state(config)
        except Exception:  # an unresolvable run dir: Hydra itself reports it
            self.state = None

    def on_run_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        state, self.state = self.state, None
        error = job_return._return_value
        if job_return.status != JobStatus.FAILED or refusal(error) is None:
            return  # done, or a bug: its run directory and log are evidence
        if state is not None and Path(config.hydra.runtime.output_dir) == state.path:
            _undo(state)  # (another directory than recorded at the start: touch nothing)
        raise _Refused(error)


def _run_dir_state(config: DictConfig) -> _RunDirState:
    path = Path(os.path.abspath(str(OmegaConf.select(config, "hydra.run.dir"))))
    created, p = [], path
    while not p.exists() and p != p.parent:
        created.append(p)
        p = p.parent
    files: dict[Path, bytes | int | None] = {}
    if not created:
        watched = [path / "config.yaml", path / f"{config.hydra.job.name}.log"]
        if config.hydra.output_subdir is not None:
            sub = path / str(config.hydra.output_subdir)
            watched += [sub / f"{name}.yaml" for name in ("config", "hydra", "overrides")]
        for f in watched:
            if not f.is_file():
                files[f] = None
            else:
                files[f] = f.stat().st_size if f.suffix == ".log" else f.read_bytes()
    return _RunDirState(path, created, files)


def _undo(state: _RunDirState) -> None:
    if state.created:
        shutil.rmtree(state.created[0], ignore_errors=True)
        for parent in state.created[1:]:
            try:
                parent.rmdir()  # only while empty: another command may be writing there
            except OSError:
                break
        return
    for f, before in state.files.items():
        if before is None:
            f.unlink(missing_ok=True)
            if f.parent != state.path and f.parent.is_dir() and not any(f.parent.iterdir()):
                f.parent.rmdir()
        elif isinstance(before, int):
            if f.is_file() and f.stat().st_size > before:
                os.truncate(f, before)
        elif not f.is_file() or f.read_bytes() != before:
            f.write_bytes(before)


def _unknown_keys(raw: DictConfig, cfg: Any, prefix: str = "") -> list[tuple[str, str]]:
    """The keys of ``raw`` (``+key=value`` overrides) that no field of the typed ``cfg``
    holds, with the class they are missing from; free-form dicts (``task.env_kwargs``) take
    any key."""
    if not is_dataclass(cfg):
        return []
    names = {f.name for f in fields(cfg)}
    unknown = []
    for key in raw:
        if key not in names:
            unknown.append((f"{prefix}{key}", type(cfg).__name__))
        elif isinstance(raw[key], DictConfig):
            unknown += _unknown_keys(raw[key], getattr(cfg, str(key)), f"{prefix}{key}.")
    return unknown


def _run_dir(cfg: Config) -> Path:
    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return Path(cfg.run_dir)


def _given() -> list[str]:
    """The keys given on this command line (``[]`` outside a Hydra app)."""
    try:
        overrides = HydraConfig.get().overrides.task
    except ValueError:
        return []
    return [o.split("=")[0].lstrip("+~") for o in overrides]


def _job(raw: DictConfig, stages: tuple[str, ...]) -> dict[str, Any]:
    from otpr.loop import run

    cfg = apply_debug(_to_config(raw))
    # the whole job films its final policy by default; otpr-pretrain/-finetune when asked
    whole_job = "pretrain" in stages and "finetune" in stages
    video = cfg.video if whole_job or "video" in _given() else 0
    if video:
        from envs.render import check_gl

        check_gl()  # a backend that cannot render is refused now, not after the training
    if cfg.checkpoint is not None:
        from otpr import checkpoint as ckpt_io

        # a missing checkpoint, or one of another format, is refused before the demos load
        # (or are generated into data/)
        ckpt_io.read_meta(cfg.checkpoint)
    run_dir = _run_dir(cfg)
    cfg.run_dir = str(run_dir)
    summary = run(cfg, run_dir, stages, video=video)
    print(json.dumps(summary, indent=2))
    print(f"run dir: {run_dir}")
    return summary


@hydra.main(config_path=CONFIG_PATH, config_name="config", version_base="1.3")
def _main(raw: DictConfig) -> None:
    _job(raw, ("pretrain", "finetune"))


@hydra.main(config_path=CONFIG_PATH, config_name="config", version_base="1.3")
def _pretrain(raw: DictConfig) -> None:
    _job(raw, ("pretrain",))


@hydra.main(config_path=CONFIG_PATH, config_name="config", version_base="1.3")
def _finetune(raw: DictConfig) -> None:
    if raw.checkpoint is None:
        raise UsageError("checkpoint: required, checkpoint=<pretrained run or checkpoint dir>")
    _job(raw, ("finetune",))


# What otpr-eval takes from the command line; everything else comes from the checkpoint.
EVAL_SETTINGS = (
    "task.eval_episodes",
    "task.eval_seed",
    "task.eval_num_envs",
    "algo.eval_mode",
    "algo.eval_num_samples",
    "algo.eval_deterministic",
    "algo.guidance",
    "algo.q_temperature",
    "algo.q_temperature_units",
    "policy.sampler",
    "policy.num_steps",
    "policy.eta",
    "policy.temperature",
    "policy.min_std",
    "device",
    "threads",
    "progress",
    "weights",
    "video",
    "video_size",
)
_RUN_KEYS = ("checkpoint", "run_dir", "resume", "tensorboard", "wandb", "debug")
# A group selection (task=can, ot=unmasked) is compared by the field that tells groups apart.
_GROUP_KEYS = {"task": "task.name", "algo": "algo.name", "policy": "policy.name", "ot": "ot.masked"}


def _get(cfg: Any, key: str) -> Any:
    for name in key.split("."):
        cfg = cfg[name] if isinstance(cfg, dict) else getattr(cfg, name)
    return cfg


def eval_config(checkpoint_cfg: Config, overrides: Config, given: list[str]) -> Config:
    """The config otpr-eval runs: the checkpoint's, with the evaluation settings given on the
    command line (``EVAL_SETTINGS``: episodes, seeds, candidate selection, sampler) applied.

    Any other given key must agree with the checkpoint: a setting that would change what was
    trained (a task, a horizon, network widths) raises ``ConfigError`` naming it, instead of
    being silently ignored.
    """
    cfg = checkpoint_cfg
    for key in given:
        if key in _RUN_KEYS or key.startswith("hydra"):
            continue
        if key in EVAL_SETTINGS:
            group, _, name = key.rpartition(".")
            target = _get(cfg, group) if group else cfg
            if not hasattr(target, name):
                raise ConfigError(f"{key}: not a setting of the checkpoint's algo={cfg.algo.name}")
            setattr(target, name, _get(overrides, key))
            continue
        path = _GROUP_KEYS.get(key, key)
        theirs, ours = _get(checkpoint_cfg, path), _get(overrides, path)
        if theirs != ours:
            raise ConfigError(
                f"{key}={ours!r} differs from the checkpoint's {theirs!r}; a checkpoint is "
                f"evaluated as it was trained, and only these may change: "
                f"{', '.join(EVAL_SETTINGS)}"
            )
    # machine settings always come from this invocation, and so do the weights to evaluate (a
    # checkpoint's own `weights` says what its run started from)
    cfg.device, cfg.threads, cfg.progress = overrides.device, overrides.threads, overrides.progress
    cfg.weights = overrides.weights
    cfg.tensorboard = False
    if "video" not in given:
        cfg.video = 0  # otpr-eval films only when asked (the checkpoint's run had its own)
    return from_dict(to_dict(cfg))  # validated again, with the settings changed


@hydra.main(config_path=CONFIG_PATH, config_name="config", version_base="1.3")
def _eval(raw: DictConfig) -> None:
    from otpr import checkpoint as ckpt_io
    from otpr.loop import Trainer

    if raw.checkpoint is None:
        raise UsageError("checkpoint: required, checkpoint=<run or checkpoint dir>")
    overrides = _to_config(raw)
    given = _given()
    ckpt_io.read_meta(overrides.checkpoint)  # refuses another format before parsing
    cfg = eval_config(from_dict(ckpt_io.read_config(overrides.checkpoint)), overrides, given)
    if cfg.video:
        from envs.render import check_gl

        check_gl()  # a backend that cannot render is refused before the evaluation runs
    run_dir = _run_dir(overrides)
    trainer = Trainer(cfg, run_dir)
    try:
        trainer.restore(overrides.checkpoint, weights_only=True)
        trainer.load_acting_networks(overrides.checkpoint)
        result = trainer.evaluate()
        settings = trainer.eval_settings()
        # the evaluation's first episodes again, filmed (otpr/video.py)
        videos = trainer.film(cfg.video, run_dir / "videos")
    finally:
        trainer.close()
    result["checkpoint"] = str(ckpt_io.resolve(overrides.checkpoint))
    result["weights"] = ckpt_io.policy_weights(overrides.checkpoint, cfg.weights)
    # how the number was taken, so a file tells a noise-free from a stochastic evaluation
    result["eval_deterministic"] = cfg.algo.eval_deterministic
    result["eval_settings"] = settings
    if videos:
        result["videos"] = [str(p.relative_to(run_dir)) for p in videos]
    (run_dir / "eval.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


@hydra.main(config_path=CONFIG_PATH, config_name="demos", version_base="1.3")
def _demos(raw: DictConfig) -> None:
    from otpr.demos import generate_demos

    cfg: DemosConfig = _to_config(raw)
    n = min(cfg.num_episodes, 3) if cfg.debug else cfg.num_episodes
    out = cfg.out or f"data/{cfg.task.name}_{cfg.quality}_n{n}_s{cfg.seed}.hdf5"
    env_kwargs, images = dict(cfg.task.env_kwargs), None
    if cfg.task.pixels:  # rendered too: obs/<camera>_image in robomimic's layout
        from otpr.pixels import image_key, pixel_env_kwargs

        env_kwargs.update(pixel_env_kwargs(cfg))
        images = image_key(cfg)
    ds = generate_demos(
        cfg.task.name,
        n,
        cfg.quality,
        seed=cfg.seed,
        out=out,
        max_episode_steps=cfg.task.max_episode_steps,
        env_kwargs=env_kwargs,
        action_noise=cfg.action_noise,
        jitter=cfg.jitter,
        detour_prob=cfg.detour_prob,
        mixture=cfg.mixture,
        only_success=cfg.only_success,
        progress=cfg.progress,
        image_key=images,
    )
    gen = ds.metadata["generation"]
    print(
        f"wrote {out}: {len(ds)} episodes, {ds.num_steps} steps, "
        f"success {gen['success_rate']:.2f}, {gen['wall_time_s']} s"
    )
    by_task = gen["success_by_task"]
    if len(by_task) > 1:  # a multi-task set (task=mt10 / mt50): the quality of each task
        for name, row in by_task.items():
            print(f"  {name}: {row['episodes']} episodes, success {row['success_rate']:.2f}")


@hydra.main(config_path=CONFIG_PATH, config_name="report", version_base="1.3")
def _report(raw: DictConfig) -> None:
    from otpr.report import compare, write_report

    cfg: ReportConfig = _to_config(raw)
    runs = ([cfg.run_dir] if cfg.run_dir else []) + list(cfg.runs)
    if not runs:
        raise UsageError("run_dir or runs: required, run_dir=<run> or runs=[<run>,<run>,...]")
    for run in runs:
        path = Path(run) / "summary.json"
        has_ckpt = (Path(run) / "checkpoints" / "last").exists()
        summary = json.loads(path.read_text()) if path.exists() else None
        if has_ckpt and (summary is None or _checkpoint_is_newer(Path(run), summary)):
            summary = _summary_of_stopped_run(Path(run))
        if summary is None:
            raise UsageError(f"{path}: not found, nor {run}/checkpoints/last (a run directory?)")
        written = write_report(run, summary)
        print(f"{run}: " + ", ".join(str(p) for p in written.values()))
    if len(runs) > 1 or cfg.out:
        print("wrote", compare(runs, cfg.out or "compare.png"))


def _checkpoint_is_newer(run: Path, summary: dict[str, Any]) -> bool:
    """A run that finished, was extended (resumed with more iterations) and then stopped keeps
    the first finish's summary.json; its last checkpoint is then further along."""
    from otpr import checkpoint as ckpt_io

    return ckpt_io.read_loop_state(run)["iteration"] > summary.get("iterations", 0)


def _summary_of_stopped_run(run: Path) -> dict[str, Any]:
    """The summary of a run that stopped before writing one, from its last checkpoint."""
    from otpr import checkpoint as ckpt_io
    from otpr.loop import LoopState, summary_of

    cfg = from_dict(ckpt_io.read_config(run))
    meta = ckpt_io.read_meta(run)
    state = LoopState.from_dict(ckpt_io.read_loop_state(run))
    facts = {k: meta[k] for k in ("num_demos", "demo_success") if k in meta}
    summary = summary_of(cfg, state, facts, state.wall_time_s)
    summary["stopped_early"] = state.iteration < cfg.algo.iterations
    return summary


_OVERRIDES = """\
Settings are Hydra overrides, key=value (configs/ holds the tree; --cfg job prints the config):
  task=<name>      {tasks}
  algo=<name>      {algos}   (algo.<key>=...: that algorithm's settings)
  policy=mlp|unet  ot=masked|unmasked  experiment=can  seed=N  debug=true  device=cuda
  video=N          (mp4s of N evaluation episodes; 0: none)  video_size=256  (pixels)
  hydra.run.dir=<dir>  (the run directory; default runs/<task>/<algo>/<time>_seed<seed>)
  -m seed=0,1,2    (a sweep, run as local processes)"""

HELP = {
    "otpr": """\
otpr: the whole job: demonstrations (generated by the scripted expert when none are given),
behaviour-cloning pretraining, online fine-tuning, evaluation and a report.

Needs nothing: with no arguments it runs OTPR on Meta-World reach-v3 and writes
runs/reach-v3/otpr/<time>_seed0/ (summary.json, curves.png, metrics.jsonl, checkpoints/, and
final_episode_000_<success|fail>.mp4: an evaluation episode of the final policy; video=0: none).
Re-running a command with the same hydra.run.dir resumes it from its last checkpoint.

Examples:
  otpr
  otpr algo=dppo seed=1
  otpr task=can algo=otpr ot=unmasked algo.guidance=Q seed=3
{errors}""",
    "otpr-pretrain": """\
otpr-pretrain: behaviour cloning on the demonstrations, then the pretrained evaluation and a
checkpoint that otpr-finetune starts from.

Example:
  otpr-pretrain experiment=can hydra.run.dir=runs/can_bc
{errors}""",
    "otpr-finetune": """\
otpr-finetune: online fine-tuning of a pretrained policy (any algorithm's checkpoint; its
policy weights are loaded, the algorithm's other networks start fresh).

Required: checkpoint=<run dir or checkpoint dir>   (weights=acting|trained: which of its policy
weights; acting, the default, is the average when that run kept one)

Example:
  otpr-finetune task=can algo=dppo checkpoint=runs/can_bc task.demos.num_episodes=20
{errors}""",
    "otpr-eval": """\
otpr-eval: evaluate a checkpoint's policy on the task's fixed evaluation seeds; prints and
writes eval.json. The checkpoint's own config is used; only evaluation settings may change:
{eval_settings}

Required: checkpoint=<run dir or checkpoint dir>
video=N films the evaluation's first N episodes into <run dir>/videos/
(episode_000_success.mp4, episode_001_fail.mp4, ...; video_size=256 pixels square).

Examples:
  otpr-eval checkpoint=runs/can_bc task.eval_episodes=200 task.eval_seed=700000 weights=trained
  otpr-eval checkpoint=runs/can_bc video=5
{errors}""",
    "otpr-demos": """\
otpr-demos: record scripted-expert demonstrations as a robomimic-format hdf5 file.

Settings: task=<name> num_episodes=N quality=expert|near_optimal|noisy|dart|suboptimal|mixed
          out=<path> seed=N only_success=true|false action_noise=X detour_prob=X

task=mt10 (or mt50) records a multi-task set, each episode one task class drawn at reset, no
task id in the observation; each episode's task and success are stored for analysis, and the
success rate per task is printed.

Examples:
  otpr-demos task=can num_episodes=100 quality=expert out=data/can_expert.hdf5
  otpr-demos task=mt10 num_episodes=1000 quality=suboptimal action_noise=1.0 \
      out=data/mt10_suboptimal.hdf5
{errors}""",
    "otpr-bench": """\
otpr-bench: run a benchmark spec (configs/bench/<name>.yaml: tasks, algorithms, seeds, an
env-step budget, the evaluation modes) fairly: one pretrained checkpoint per (task, seed) shared
by every algorithm, each algorithm's iterations fitted to the budget, every final policy
evaluated on the same seeds. Skips what finished, resumes what was interrupted, then writes
report.md (the table), report.json and one curve plot per task under runs/bench/<name>.

Settings: bench=<name> bench.seeds=[0,1,2] bench.algos=[bc,otpr,dppo] bench.env_steps=N
          launcher=local|slurm  report_dir=<dir> (a copy of the report)  stage=all|report
          debug=true (every run tiny)

Example:
  otpr-bench bench=reach report_dir=docs/bench
{errors}""",
    "otpr-report": """\
otpr-report: rebuild summary.json and curves.png of a run (also of one that was stopped), or
plot several runs' success curves on one figure.

Required: run_dir=<run> or runs=[<run>,<run>,...]   (out=<png> for the comparison)

Example:
  otpr-report runs=[runs/a,runs/b] out=compare.png
{errors}""",
}


def _help(command: str) -> str:
    from otpr.algos import registered

    tasks = sorted(p.stem for p in (Path(__file__).parents[1] / "configs" / "task").glob("*.yaml"))
    text = HELP[command].format(
        eval_settings="  " + ", ".join(EVAL_SETTINGS), errors="\n" + ERRORS_HELP
    )
    if command in ("otpr", "otpr-pretrain", "otpr-finetune", "otpr-eval"):
        configs = Path(__file__).parents[1] / "configs" / "algo"
        algos = "|".join(sorted({*registered(), *(p.stem for p in configs.glob("[!_]*.yaml"))}))
        text += "\n" + _OVERRIDES.format(tasks="|".join(tasks), algos=algos) + "\n"
    return text


def _entry(command: str, app: Any) -> None:
    """Run a Hydra app as ``command``; ``-h``/``--help`` print the command's own help. A
    refusal prints one line and exits with status 2 (``otpr.errors.run_command``)."""
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        print(_help(command), end="")
        return
    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises the error; otpr.errors words it

    def body() -> None:
        try:
            app()
            return
        except _Refused as refused:
            error = refused.error
        raise error  # outside the except block: its own cause chain, not _Refused, shows

    try:
        status = run_command(command, body)
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous
    if status:
        sys.exit(status)


def report_main() -> None:
    _entry("otpr-report", _report)


def main() -> None:
    _entry("otpr", _main)


def demos_main() -> None:
    _entry("otpr-demos", _demos)


def pretrain_main() -> None:
    _entry("otpr-pretrain", _pretrain)


def finetune_main() -> None:
    _entry("otpr-finetune", _finetune)


def eval_main() -> None:
    _entry("otpr-eval", _eval)


if __name__ == "__main__":
    sys.exit(main())
