"""``otpr-bench bench=<name>``: every (task, algorithm, seed) of a benchmark spec, fairly, then
the report.

A spec is ``configs/bench/<name>.yaml`` (:class:`BenchSpec`): tasks, algorithm configs, seeds, a
fine-tuning budget in env steps and the evaluation protocol. The command works in three phases,
each one Hydra multirun of this same app through the ``launcher`` group (joblib processes on this
machine, ``launcher=slurm`` submits the same jobs through submitit)::

    pretrain   one behaviour-cloning run per (task, seed):  <out>/<task>/bc_s<seed>
    finetune   every algorithm from that checkpoint:         <out>/<task>/<algo>_s<seed>
    evaluate   each final policy (and each start) on the task's fixed evaluation seeds, in
               every mode the spec asks for (stochastic / noise-free):
                                                            <out>/<task>/evals/<run>_<mode>

and then writes ``report.md`` (the table: pretrained -> fine-tuned, mean +- standard error over
seeds, env steps, wall time, the command), ``report.json`` and one plot per task (every
algorithm's mean success curve with a standard-error band over seeds) under ``<out>``, and a
copy under ``report_dir`` when one is given (``docs/bench``). ``merge_report=<report.json>``
keeps the rows of an earlier report of the same spec that this run has no finished seed of, so
a narrowed re-run (``bench.algos=[bc,dql]``) updates its rows of a committed table.

Fair by construction: every algorithm of a (task, seed) starts from the same checkpoint, so from
the same demos; the budget becomes each algorithm's iteration count from its own env steps per
iteration (``num_envs x steps_per_iter x act_steps``; episodes ended by success make a run use
slightly fewer, and the table reports what each run counted: every executed env step, chunks
included); every policy is evaluated by ``otpr-eval`` on the same seeds and episodes.

Re-running the command skips what finished (a run with its ``summary.json`` at the planned
iteration count, an evaluation newer than its run) and resumes what was interrupted (a run
directory with a checkpoint continues from it). ``bc`` in ``algos`` is the pretrained policy
itself, evaluated like the others.
"""

from __future__ import annotations

import json
import math
import shlex
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from otpr.config import ConfigError

CONFIGS = Path(__file__).parents[1] / "configs"
EVAL_MODES = ("stochastic", "noisefree")
PHASES = ("pretrain", "finetune", "evaluate")

#: the console command of each kind of job, and the function that runs it in-process
_COMMANDS = {
    "pretrain": ("otpr-pretrain", "pretrain_main"),
    "finetune": ("otpr-finetune", "finetune_main"),
    "evaluate": ("otpr-eval", "eval_main"),
}


@dataclass
class BenchSpec:
    """A benchmark: what runs, on what budget, evaluated how (``configs/bench/<name>.yaml``)."""

    name: str = "reach"
    """The benchmark's name (its output goes under runs/bench/<name> unless ``out`` is set)."""
    tasks: list[str] = field(default_factory=lambda: ["reach"])
    """Task configs (configs/task/<name>.yaml)."""
    algos: list[str] = field(default_factory=lambda: ["bc", "otpr", "dppo"])
    """Algorithm configs (configs/algo/<name>.yaml); ``bc`` is the pretrained policy itself."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Seeds; each seed has one pretrained checkpoint per task, shared by every algorithm."""
    env_steps: int = 50_000
    """Fine-tuning budget per run in env steps (every executed env step, chunks included)."""
    eval_modes: list[str] = field(default_factory=lambda: list(EVAL_MODES))
    """How final policies are evaluated: stochastic (the sampler's noise) and/or noisefree
    (DDIM eta 0, no std floor); the first is the table's headline column."""
    eval_episodes: int = 0
    """Evaluation episodes per policy (0: the task's ``task.eval_episodes``)."""
    task_overrides: dict[str, list[str]] = field(default_factory=dict)
    """Extra overrides per task name, for pretraining and fine-tuning (e.g. can: [...])."""
    pretrain_overrides: dict[str, list[str]] = field(default_factory=dict)
    """Extra overrides per task name for its pretraining only, after ``task_overrides`` (a BC
    recipe's steps or EMA that the fine-tuning runs must not inherit; can: [experiment=can])."""
    algo_overrides: dict[str, list[str]] = field(default_factory=dict)
    """Extra overrides per algorithm config (e.g. dppo: [algo.eval_every=2])."""
    out: str | None = None
    """Output directory (default runs/bench/<name>)."""

    def __post_init__(self) -> None:
        def known(group: str, names: list[str], key: str, extra: tuple[str, ...] = ()) -> None:
            have = {p.stem for p in (CONFIGS / group).glob("[!_]*.yaml")} | set(extra)
            for n in names:
                if n not in have:
                    raise ConfigError(f"bench.{key}: {n!r} is not one of {sorted(have)}")

        for key in ("tasks", "algos", "seeds", "eval_modes"):
            values = list(getattr(self, key))
            if not values:
                raise ConfigError(f"bench.{key}: must not be empty")
            if len(set(values)) != len(values):
                raise ConfigError(f"bench.{key}: has a repeated entry, got {values}")
        known("task", list(self.tasks), "tasks")
        known("algo", list(self.algos), "algos", ("bc",))
        # overrides may name what this run leaves out (bench.algos=[bc,otpr] of a spec with
        # dppo's), but not what does not exist
        known("task", list(self.task_overrides), "task_overrides")
        known("task", list(self.pretrain_overrides), "pretrain_overrides")
        known("algo", list(self.algo_overrides), "algo_overrides")
        for mode in self.eval_modes:
            if mode not in EVAL_MODES:
                raise ConfigError(
                    f"bench.eval_modes: expected entries of {EVAL_MODES}, got {mode!r}"
                )
        for s in self.seeds:
            if not isinstance(s, int) or s < 0:
                raise ConfigError(f"bench.seeds: must be ints >= 0, got {s!r}")
        if self.env_steps < 1:
            raise ConfigError(f"bench.env_steps: must be >= 1, got {self.env_steps}")
        if self.eval_episodes < 0:
            raise ConfigError(f"bench.eval_episodes: must be >= 0, got {self.eval_episodes}")

    @property
    def out_dir(self) -> Path:
        return Path(self.out or f"runs/bench/{self.name}")


@dataclass
class BenchConfig:
    """otpr-bench: run a benchmark spec and write its report."""

    bench: BenchSpec = field(default_factory=BenchSpec)
    """The spec (``bench=<name>`` picks configs/bench/<name>.yaml)."""
    stage: str = "all"
    """all | report (only rebuild the report from what has finished)."""
    report_dir: str | None = None
    """Also copy report.md, report.json and the plots here (e.g. docs/bench)."""
    merge_report: str | None = None
    """A ``report.json`` of the same spec from elsewhere (another machine, an earlier checkout):
    its rows that this run has no finished seed of are kept in the report, so part of a table
    can be re-run (``bench.tasks``/``bench.algos`` narrowed) without re-running the rest."""
    debug: bool = False
    """Every run with debug=true (tiny budgets; the plan and report are the same)."""
    phase: str | None = None
    """Internal: the phase a launcher job belongs to."""
    job: int | None = None
    """Internal: the index of the job a launcher runs."""

    def __post_init__(self) -> None:
        if self.stage not in ("all", "report"):
            raise ConfigError(f"stage: expected all or report, got {self.stage!r}")
        if self.phase is not None and self.phase not in PHASES:
            raise ConfigError(f"phase: expected one of {PHASES}, got {self.phase!r}")


ConfigStore.instance().store(name="base_bench", node=BenchConfig)


@dataclass
class Job:
    """One command of a phase: the console command, its overrides and what marks it done."""

    phase: str
    name: str
    """``<task>/<run>`` (or ``<task>/evals/<run>_<mode>``), also the output's relative path."""
    overrides: list[str]
    task: str
    algo: str
    seed: int
    mode: str | None = None

    @property
    def command(self) -> str:
        return " ".join([_COMMANDS[self.phase][0], *map(shlex.quote, self.overrides)])


def _iterations(spec: BenchSpec, task: str, algo: str, debug: bool) -> dict[str, int]:
    """The iterations that fit ``algo`` on ``task`` in the budget, the env steps of one iteration
    at most, and the iterations the runs will make (fewer under ``debug``)."""
    from hydra import compose

    from otpr.cli import _to_config
    from otpr.config import apply_debug

    given = [f"task={task}", f"algo={algo}", *_extra(spec, task, algo)]
    cfg = _to_config(compose("config", given))
    per_iter = cfg.task.num_envs * cfg.algo.steps_per_iter * cfg.task.act_steps
    its = math.ceil(spec.env_steps / per_iter)
    runs = its
    if debug:
        runs = apply_debug(_to_config(compose("config", [*given, "debug=true"]))).algo.iterations
        runs = min(runs, its)
    return {"iterations": its, "env_steps_per_iteration": per_iter, "runs_make": runs}


def _modes(spec: BenchSpec, task: str, algo: str) -> list[str]:
    """The evaluation modes of the spec that ``algo`` has (DSRL evaluates noise-free only)."""
    from hydra import compose

    from otpr.cli import _to_config

    name = "otpr" if algo == "bc" else algo  # otpr-pretrain's checkpoints are algo=otpr
    given = [f"task={task}", f"algo={name}", *_extra(spec, task, None if algo == "bc" else algo)]
    modes = []
    for mode in spec.eval_modes:
        det = "true" if mode == "noisefree" else "false"
        try:
            _to_config(compose("config", [*given, f"algo.eval_deterministic={det}"]))
        except ConfigError:
            continue
        modes.append(mode)
    return modes


def _extra(spec: BenchSpec, task: str, algo: str | None) -> list[str]:
    extra = list(spec.task_overrides.get(task, []))
    if algo is not None:
        extra += list(spec.algo_overrides.get(algo, []))
    return extra


def plan(spec: BenchSpec, debug: bool = False) -> dict[str, Any]:
    """Every job of ``spec`` by phase, and each fine-tuning run's iteration count."""
    out = spec.out_dir
    jobs: dict[str, list[Job]] = {p: [] for p in PHASES}
    budgets: dict[str, dict[str, int]] = {}
    modes: dict[str, list[str]] = {}
    dbg = ["debug=true"] if debug else []
    episodes = [f"task.eval_episodes={spec.eval_episodes}"] if spec.eval_episodes else []
    for task in spec.tasks:
        for algo in spec.algos:
            modes[f"{task}/{algo}"] = _modes(spec, task, algo)
            if algo != "bc":
                budgets[f"{task}/{algo}"] = _iterations(spec, task, algo, debug)
        for seed in spec.seeds:
            start = out / task / f"bc_s{seed}"
            jobs["pretrain"].append(
                Job(
                    "pretrain",
                    f"{task}/bc_s{seed}",
                    [f"task={task}", f"seed={seed}", *_extra(spec, task, None)]
                    + [*spec.pretrain_overrides.get(task, []), *dbg]
                    + [f"hydra.run.dir={start}"],
                    task,
                    "bc",
                    seed,
                )
            )
            for algo in spec.algos:
                run = start
                if algo != "bc":
                    run = out / task / f"{algo}_s{seed}"
                    its = budgets[f"{task}/{algo}"]["iterations"]
                    jobs["finetune"].append(
                        Job(
                            "finetune",
                            f"{task}/{algo}_s{seed}",
                            [f"task={task}", f"algo={algo}", f"seed={seed}", f"checkpoint={start}"]
                            + [f"algo.iterations={its}", *_extra(spec, task, algo), *dbg]
                            + [f"hydra.run.dir={run}"],
                            task,
                            algo,
                            seed,
                        )
                    )
                for mode in modes[f"{task}/{algo}"]:
                    det = "true" if mode == "noisefree" else "false"
                    name = f"{task}/evals/{algo}_s{seed}_{mode}"
                    jobs["evaluate"].append(
                        Job(
                            "evaluate",
                            name,
                            [f"checkpoint={run}", f"algo.eval_deterministic={det}", *episodes]
                            + ["progress=false", f"hydra.run.dir={out / name}"],
                            task,
                            algo,
                            seed,
                            mode,
                        )
                    )
    return {"jobs": jobs, "budgets": budgets, "modes": modes}


def _run_dir(job: Job, spec: BenchSpec) -> Path:
    return spec.out_dir / job.name


def done(job: Job, spec: BenchSpec, budgets: dict[str, dict[str, int]]) -> bool:
    """Whether ``job`` finished: a run's summary at the planned iterations; an evaluation newer
    than the checkpoint it evaluated."""
    path = _run_dir(job, spec)
    if job.phase == "evaluate":
        result = path / "eval.json"
        run = spec.out_dir / job.task / f"{job.algo}_s{job.seed}"
        summary = run / "summary.json"
        return (
            result.is_file()
            and summary.is_file()
            and result.stat().st_mtime >= summary.stat().st_mtime
        )
    summary = path / "summary.json"
    if not summary.is_file():
        return False
    if job.phase == "pretrain":
        return True
    planned = budgets[f"{job.task}/{job.algo}"]["runs_make"]
    return json.loads(summary.read_text()).get("iterations", 0) >= planned


def run_job(job: Job) -> int:
    """Run one job's console command in a child process (its output: ``<run dir>.log``)."""
    command, func = _COMMANDS[job.phase]
    code = f"import sys; sys.argv[0] = {command!r}; from otpr.cli import {func}; {func}()"
    run_dir = Path(next(o for o in job.overrides if o.startswith("hydra.run.dir="))[14:])
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{run_dir}.log", "a") as log:
        log.write(f"$ {job.command}\n")
        log.flush()
        return subprocess.call([sys.executable, "-c", code, *job.overrides], stdout=log, stderr=log)


def forwarded_overrides(given: Any) -> list[str]:
    """The command line's overrides that the launcher's multirun must repeat: every task override
    and the ``hydra.launcher.*`` ones (``hydra.launcher.n_jobs=1``), which Hydra keeps apart."""
    launcher = [o for o in given.hydra if o.startswith("hydra.launcher.")]
    return list(given.task) + launcher


def _launch(phase: str, ids: list[int], overrides: list[str]) -> None:
    """One Hydra multirun of this app over ``ids`` (the ``launcher`` group decides where)."""
    args = [o for o in overrides if not o.startswith(("phase=", "job=", "stage="))]
    cmd = [sys.executable, "-m", "otpr.bench", "-m", *args, f"phase={phase}"]
    cmd.append("job=" + ",".join(map(str, ids)))
    subprocess.run(cmd, check=False)


def _mean_se(xs: list[float]) -> tuple[float, float]:
    a = np.asarray(xs, dtype=float)
    se = float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else float("nan")
    return float(a.mean()), se


def format_mean_se(xs: list[float]) -> str:
    """``mean +- standard error`` of ``xs`` (the mean alone for one value, - for none)."""
    if not xs:
        return "-"
    m, se = _mean_se(xs)
    return f"{m:.3f} +- {se:.3f}" if len(xs) > 1 else f"{m:.3f}"


def collect(spec: BenchSpec, planned: dict[str, Any]) -> dict[str, Any]:
    """Every finished number of the benchmark, by task and algorithm (``report.json``)."""
    out = spec.out_dir
    result: dict[str, Any] = {
        "spec": asdict(spec),
        "budgets": planned["budgets"],
        "modes": planned["modes"],
        "tasks": {},
    }
    for task in spec.tasks:
        per_algo: dict[str, Any] = {}
        for algo in spec.algos:
            rows: dict[str, Any] = {"seeds": [], "env_steps": [], "wall_time_s": [], "curves": []}
            for mode in spec.eval_modes:
                rows[mode], rows[f"pretrained_{mode}"] = [], []
            for seed in spec.seeds:
                run = f"{algo}_s{seed}"
                evals = {}
                modes = planned["modes"][f"{task}/{algo}"]
                for mode in modes:
                    p = out / task / "evals" / f"{run}_{mode}" / "eval.json"
                    q = out / task / "evals" / f"bc_s{seed}_{mode}" / "eval.json"
                    if p.is_file() and q.is_file():
                        evals[mode] = (
                            json.loads(p.read_text())["eval/success"],
                            json.loads(q.read_text())["eval/success"],
                        )
                summary = out / task / run / "summary.json"
                if len(evals) < len(modes) or not summary.is_file():
                    continue  # not finished: the table holds finished seeds only
                s = json.loads(summary.read_text())
                rows["seeds"].append(seed)
                rows["env_steps"].append(s["env_steps"])
                rows["wall_time_s"].append(s["wall_time_s"])
                for mode, (final, start) in evals.items():
                    rows[mode].append(final)
                    rows[f"pretrained_{mode}"].append(start)
                rows["curves"].append(eval_curve(out / task / run) if algo != "bc" else [])
            rows["command"] = _command(planned, task, algo)
            rows["curve_noisefree"] = _curve_is_noisefree(out / task, algo, spec.seeds)
            per_algo[algo] = rows
        result["tasks"][task] = per_algo
    return result


def check_same_spec(kept: dict[str, Any], new: dict[str, Any], source: str) -> None:
    """Raise ``ConfigError`` unless two specs (``report.json``'s ``spec``) agree on what makes
    their numbers comparable: the name, budget, seeds and evaluation protocol."""
    for key in ("name", "env_steps", "seeds", "eval_modes", "eval_episodes"):
        if kept.get(key) != new.get(key):
            raise ConfigError(
                f"merge_report: {source} has bench.{key}={kept.get(key)!r}, this run "
                f"{new.get(key)!r}; only reports of the same spec merge"
            )


def merge_results(kept: dict[str, Any], new: dict[str, Any], source: str) -> dict[str, Any]:
    """``new`` (:func:`collect`'s result) with every (task, algorithm) row of ``kept`` (an
    earlier ``report.json`` of the same spec, read from ``source``) that ``new`` has no finished
    seed of; tasks and algorithms in ``kept``'s order, then ``new``'s. The spec's budget, seeds
    and evaluation modes must match, or the merged table would mix protocols."""
    check_same_spec(kept["spec"], new["spec"], source)
    tasks: dict[str, Any] = {}
    for task in list(kept["tasks"]) + [t for t in new["tasks"] if t not in kept["tasks"]]:
        old_rows, new_rows = kept["tasks"].get(task, {}), new["tasks"].get(task, {})
        tasks[task] = {}
        for algo in list(old_rows) + [a for a in new_rows if a not in old_rows]:
            fresh = new_rows.get(algo)
            tasks[task][algo] = fresh if fresh and fresh["seeds"] else old_rows.get(algo, fresh)
    spec = dict(new["spec"], tasks=list(tasks))
    spec["algos"] = list(dict.fromkeys(a for rows in tasks.values() for a in rows))
    return {
        "spec": spec,
        "budgets": {**kept["budgets"], **new["budgets"]},
        "modes": {**kept["modes"], **new["modes"]},
        "tasks": tasks,
    }


def _command(planned: dict[str, Any], task: str, algo: str) -> str:
    """The command of one algorithm's runs, with the seed written ``S``."""
    phase = "pretrain" if algo == "bc" else "finetune"
    for j in planned["jobs"][phase]:
        if j.task == task and j.algo == algo:
            return j.command.replace(f"seed={j.seed}", "seed=S").replace(f"_s{j.seed}", "_sS")
    return ""


def eval_curve(run: Path) -> list[list[float]]:
    """(env steps, success) of a run's own evaluations; a run that kept its checkpoint's
    evaluation as its start (measured the same way) logs none at step 0: its summary has it."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    curve = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if "eval/success" in record:
            curve.append([record["env_steps"], record["eval/success"]])
    start = json.loads((run / "summary.json").read_text()).get("pretrained_success")
    if start is not None and not any(x == 0 for x, _ in curve):
        curve.insert(0, [0, start])
    return curve


def _curve_is_noisefree(task_dir: Path, algo: str, seeds: list[int]) -> bool:
    """Whether the runs' own evaluations (the curves) were noise-free (``config.yaml``)."""
    import yaml

    for seed in seeds:
        path = task_dir / f"{algo}_s{seed}" / "config.yaml"
        if path.is_file():
            return bool(
                (yaml.safe_load(path.read_text()).get("algo") or {}).get("eval_deterministic")
            )
    return False


def write_report(spec: BenchSpec, result: dict[str, Any], report_dir: str | None) -> list[Path]:
    """``report.md``, ``report.json`` and ``<task>.png`` under the output (and ``report_dir``)."""
    out = spec.out_dir
    out.mkdir(parents=True, exist_ok=True)
    modes = spec.eval_modes
    lines = [
        f"# Benchmark `{spec.name}`",
        "",
        f"Regenerate: `otpr-bench bench={spec.name}`. Budget {spec.env_steps:,} env steps per "
        f"fine-tuning run; seeds {', '.join(map(str, spec.seeds))}; each (task, seed) has one "
        "pretrained checkpoint shared by every algorithm; final policies evaluated by `otpr-eval` "
        f"on the task's fixed evaluation seeds ({' and '.join(modes)}). Mean +- standard error "
        "over the seeds that finished (n).",
        "",
        "| task | algorithm | n | "
        + " | ".join(f"pretrained -> fine-tuned ({m})" for m in modes)
        + " | env steps | wall (s) | command |",
        "|---|---|---|" + "---|" * len(modes) + "---|---|---|",
    ]
    written = []
    for task, per_algo in result["tasks"].items():
        for algo, rows in per_algo.items():
            cells = []
            for m in modes:
                if rows[m]:
                    start, final = rows[f"pretrained_{m}"], rows[m]
                    cells.append(f"{format_mean_se(start)} -> **{format_mean_se(final)}**")
                elif m not in result["modes"][f"{task}/{algo}"]:
                    cells.append("n/a")  # the algorithm does not evaluate this way
                else:
                    cells.append("-")
            steps = f"{np.mean(rows['env_steps']) / 1000:.1f}k" if rows["env_steps"] else "-"
            wall = f"{np.mean(rows['wall_time_s']):.0f}" if rows["wall_time_s"] else "-"
            lines.append(
                f"| {task} | {algo} | {len(rows['seeds'])} | "
                + " | ".join(cells)
                + f" | {steps} | {wall} | `{rows['command']}` |"
            )
        png = out / f"{task}.png"
        _plot(task, per_algo, png)
        written.append(png)
    lines += [
        "",
        "Curves (`<task>.png`): each run's own evaluations during fine-tuning, mean over seeds "
        "with a standard-error band; an algorithm marked (noise-free) evaluates noise-free "
        "in its runs, the others with the sampler's noise.",
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "report.json").write_text(json.dumps(result, indent=1))
    written += [out / "report.md", out / "report.json"]
    if report_dir:
        dest = Path(report_dir)
        dest.mkdir(parents=True, exist_ok=True)
        for p in list(written):  # reach.png -> <bench>_reach.png, report.md -> <bench>.md
            name = f"{spec.name}_{p.name}" if p.suffix == ".png" else f"{spec.name}{p.suffix}"
            shutil.copyfile(p, dest / name)
            written.append(dest / name)
    return written


def draw_mean_se(ax: Any, curves: list[list[list[float]]], label: str) -> None:
    """The mean of ``curves`` ((env steps, success) pairs, one per seed; see ``eval_curve``) on a
    common grid up to the shortest one's end, with a standard-error band, on matplotlib ``ax``;
    curves of fewer than two points are left out, and nothing is drawn without one."""
    curves = [c for c in curves if len(c) > 1]
    if not curves:
        return
    grid = np.linspace(0, min(c[-1][0] for c in curves), 50)
    ys = np.array([np.interp(grid, [p[0] for p in c], [p[1] for p in c]) for c in curves])
    m = ys.mean(0)
    se = ys.std(0, ddof=1) / math.sqrt(len(ys)) if len(ys) > 1 else np.zeros_like(m)
    ax.plot(grid, m, label=f"{label}, n={len(ys)}")
    ax.fill_between(grid, m - se, m + se, alpha=0.2)


def _plot(task: str, per_algo: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for algo, rows in per_algo.items():
        mode = " (noise-free)" if rows["curve_noisefree"] else ""
        draw_mean_se(ax, rows["curves"], algo + mode)
    ax.set_xlabel("env steps")
    ax.set_ylabel("success")
    ax.set_ylim(0, 1.02)
    ax.set_title(task)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@hydra.main(config_path="pkg://configs", config_name="benchmark", version_base="1.3")
def _bench(raw: DictConfig) -> None:
    from otpr.cli import _to_config

    cfg: BenchConfig = _to_config(raw)
    spec = cfg.bench
    planned = plan(spec, cfg.debug)
    if cfg.phase is not None:  # a launcher job
        if cfg.job is None or not 0 <= cfg.job < len(planned["jobs"][cfg.phase]):
            raise ConfigError(f"job: expected an index into the {cfg.phase} jobs, got {cfg.job}")
        job = planned["jobs"][cfg.phase][cfg.job]
        if not done(job, spec, planned["budgets"]):
            run_job(job)
        return
    merge, kept = cfg.merge_report, None
    if merge:  # read and checked before the runs, not after hours of them
        if not Path(merge).is_file():
            raise ConfigError(f"merge_report: {merge} is not a file (expected a report.json)")
        kept = json.loads(Path(merge).read_text())
        check_same_spec(kept["spec"], asdict(spec), merge)
    overrides = forwarded_overrides(HydraConfig.get().overrides)
    if cfg.stage == "all":
        for phase in PHASES:
            todo = [
                i
                for i, j in enumerate(planned["jobs"][phase])
                if not done(j, spec, planned["budgets"])
            ]
            total = len(planned["jobs"][phase])
            print(f"otpr-bench {spec.name}: {phase}: {len(todo)} of {total} to run")
            if todo:
                _launch(phase, todo, overrides)
            failed = [
                planned["jobs"][phase][i]
                for i in todo
                if not done(planned["jobs"][phase][i], spec, planned["budgets"])
            ]
            for j in failed:
                print(
                    f"otpr-bench {spec.name}: {j.name} did not finish; see {_run_dir(j, spec)}.log"
                )
    result = collect(spec, planned)
    if kept is not None:
        result = merge_results(kept, result, merge)
    written = write_report(spec, result, cfg.report_dir)
    print(f"otpr-bench {spec.name}: wrote " + ", ".join(map(str, written)))


def main() -> None:
    from otpr.cli import _entry

    _entry("otpr-bench", _bench)


if __name__ == "__main__":
    main()
