"""otpr-bench: the plan is fair by construction, finished work is skipped, the report's numbers
are the runs' numbers, and the command runs a small spec end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from otpr.bench import (
    BenchSpec,
    Job,
    collect,
    done,
    forwarded_overrides,
    merge_results,
    plan,
    write_report,
)
from otpr.config import ConfigError

ROOT = Path(__file__).parents[2]


@pytest.fixture
def hydra_configs():
    with initialize_config_module("configs", version_base="1.3"):
        yield


def _spec(tmp_path: Path, **kw) -> BenchSpec:
    base = dict(
        name="t",
        tasks=["reach"],
        algos=["bc", "otpr", "dppo"],
        seeds=[0, 1],
        env_steps=50_000,
        algo_overrides={"dppo": ["algo.eval_every=2"]},
        out=str(tmp_path / "out"),
    )
    base.update(kw)
    return BenchSpec(**base)


@pytest.mark.parametrize(
    "kw, key",
    [
        ({"tasks": ["reech"]}, "bench.tasks: 'reech'"),
        ({"algos": ["bc", "otpr", "sac"]}, "bench.algos: 'sac'"),
        ({"seeds": []}, "bench.seeds: must not be empty"),
        ({"seeds": [0, 0]}, "bench.seeds: has a repeated entry"),
        ({"seeds": [-1]}, "bench.seeds: must be ints >= 0"),
        ({"eval_modes": ["greedy"]}, "bench.eval_modes"),
        ({"env_steps": 0}, "bench.env_steps: must be >= 1"),
        ({"algo_overrides": {"idql2": []}}, "bench.algo_overrides: 'idql2'"),
    ],
)
def test_a_bad_spec_is_refused_by_key(tmp_path, kw, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[")):
        _spec(tmp_path, **kw)


def test_every_algorithm_of_a_seed_starts_from_one_checkpoint_within_the_budget(
    tmp_path, hydra_configs
):
    spec = _spec(tmp_path)
    planned = plan(spec)
    jobs = planned["jobs"]
    out = tmp_path / "out"
    assert [j.name for j in jobs["pretrain"]] == ["reach/bc_s0", "reach/bc_s1"]
    for j in jobs["finetune"]:
        assert f"checkpoint={out}/reach/bc_s{j.seed}" in j.overrides
        assert f"seed={j.seed}" in j.overrides
    # reach: 8 envs x 40 decisions x 4 steps for OTPR, x 75 decisions for DPPO
    assert planned["budgets"]["reach/otpr"]["env_steps_per_iteration"] == 1280
    assert planned["budgets"]["reach/dppo"]["env_steps_per_iteration"] == 2400
    its = {j.algo: j.overrides for j in jobs["finetune"] if j.seed == 0}
    assert "algo.iterations=40" in its["otpr"]  # ceil(50000 / 1280)
    assert "algo.iterations=21" in its["dppo"]  # ceil(50000 / 2400)
    assert "algo.eval_every=2" in its["dppo"] and "algo.eval_every=2" not in its["otpr"]
    # every policy (the BC start too) in both modes, on the same evaluation settings
    assert len(jobs["evaluate"]) == 3 * 2 * 2
    bc_evals = [j for j in jobs["evaluate"] if j.algo == "bc" and j.seed == 1]
    assert {j.mode for j in bc_evals} == {"stochastic", "noisefree"}
    assert all(f"checkpoint={out}/reach/bc_s1" in j.overrides for j in bc_evals)
    det = {j.mode: j.overrides for j in bc_evals}
    assert "algo.eval_deterministic=true" in det["noisefree"]
    assert "algo.eval_deterministic=false" in det["stochastic"]


def test_pretrain_overrides_reach_the_pretraining_only(tmp_path, hydra_configs):
    spec = _spec(
        tmp_path,
        algos=["bc", "otpr"],
        seeds=[0],
        task_overrides={"reach": ["task.num_envs=4"]},
        pretrain_overrides={"reach": ["algo.ema_decay=0.99", "algo.pretrain_steps=123"]},
    )
    jobs = plan(spec)["jobs"]
    (pre,) = jobs["pretrain"]
    (fine,) = jobs["finetune"]
    assert "algo.ema_decay=0.99" in pre.overrides and "task.num_envs=4" in pre.overrides
    assert not any(o.startswith(("algo.ema_decay", "algo.pretrain_steps")) for o in fine.overrides)
    assert "task.num_envs=4" in fine.overrides
    with pytest.raises(ConfigError, match="bench.pretrain_overrides: 'caan'"):
        _spec(tmp_path, pretrain_overrides={"caan": []})


def test_the_can_spec_starts_every_method_from_the_can_recipe_bc_at_one_budget(
    tmp_path, hydra_configs
):
    import yaml

    from otpr.cli import _to_config

    fields = yaml.safe_load((ROOT / "configs" / "bench" / "can.yaml").read_text())
    spec = BenchSpec(**{**fields, "out": str(tmp_path / "out")})
    planned = plan(spec)

    def config_of(job: Job):
        """The config a job's command composes (its run dir and start checkpoint aside)."""
        keep = [o for o in job.overrides if not o.startswith(("hydra.", "checkpoint="))]
        return _to_config(compose("config", keep))

    (pre,) = planned["jobs"]["pretrain"]
    bc = config_of(pre)
    recipe = _to_config(compose("config", ["experiment=can"]))
    for key in ("pretrain_steps", "ema_decay", "pretrain_batch_size", "pretrain_lr"):
        assert getattr(bc.algo, key) == getattr(recipe.algo, key), key
    assert bc.policy.hidden == recipe.policy.hidden == [512, 512, 512]
    assert bc.task.obs_history == recipe.task.obs_history == 2
    assert bc.task.demos.num_episodes == 20
    # one budget: the same iterations of the same env steps for every method, from one start
    budgets = planned["budgets"]
    assert {b["iterations"] for b in budgets.values()} == {125}
    assert {b["env_steps_per_iteration"] for b in budgets.values()} == {2400}
    starts = {o for j in planned["jobs"]["finetune"] for o in j.overrides if "checkpoint=" in o}
    assert len(starts) == 1
    for job in planned["jobs"]["finetune"]:
        cfg = config_of(job)
        assert cfg.algo.ema_decay == 0.0, job.algo  # the BC's EMA stays in pretraining
        # DPPO keeps its V-only warm-up; the critic-based methods wait for their critics
        assert cfg.algo.warmup_iterations == (2 if job.algo == "dppo" else 5), job.algo
    assert all("task.eval_episodes=200" in j.overrides for j in planned["jobs"]["evaluate"])


def test_the_budget_sets_the_iterations(tmp_path, hydra_configs):
    planned = plan(_spec(tmp_path, env_steps=12_800, algos=["otpr"]))
    assert planned["budgets"]["reach/otpr"]["iterations"] == 10
    assert (
        plan(_spec(tmp_path, env_steps=12_801, algos=["otpr"]))["budgets"]["reach/otpr"][
            "iterations"
        ]
        == 11
    )


def _summary(run: Path, iterations: int, env_steps: int = 50_000, wall: float = 100.0) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "summary.json").write_text(
        json.dumps({"iterations": iterations, "env_steps": env_steps, "wall_time_s": wall})
    )


def _eval(out: Path, name: str, success: float) -> None:
    d = out / "reach" / "evals" / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "eval.json").write_text(json.dumps({"eval/success": success}))


def test_done_means_finished_at_the_planned_iterations_and_evaluated_after(tmp_path, hydra_configs):
    spec = _spec(tmp_path, seeds=[0])
    planned = plan(spec)
    out = tmp_path / "out"
    ft = next(j for j in planned["jobs"]["finetune"] if j.algo == "otpr")
    ev = next(j for j in planned["jobs"]["evaluate"] if j.algo == "otpr" and j.mode == "noisefree")
    assert not done(ft, spec, planned["budgets"])
    _summary(out / "reach" / "otpr_s0", iterations=39)  # stopped early, or a smaller budget
    assert not done(ft, spec, planned["budgets"])
    _summary(out / "reach" / "otpr_s0", iterations=40)
    assert done(ft, spec, planned["budgets"])
    _eval(out, "otpr_s0_noisefree", 0.5)
    assert done(ev, spec, planned["budgets"])
    time.sleep(0.01)
    _summary(out / "reach" / "otpr_s0", iterations=40)  # the run changed after its evaluation
    later = time.time() + 5
    os.utime(out / "reach" / "otpr_s0" / "summary.json", (later, later))
    assert not done(ev, spec, planned["budgets"])


def test_the_report_holds_each_finished_seed_and_its_mean_and_standard_error(
    tmp_path, hydra_configs
):
    spec = _spec(tmp_path, seeds=[0, 1, 2], algos=["bc", "otpr"])
    planned = plan(spec)
    out = tmp_path / "out"
    for s, (start, final) in enumerate([(0.5, 0.8), (0.6, 0.9), (0.55, 0.7)]):
        _summary(out / "reach" / f"bc_s{s}", iterations=0, env_steps=0, wall=40.0)
        if s < 2:  # seed 2's fine-tuning has not finished: not in the table
            _summary(out / "reach" / f"otpr_s{s}", iterations=40, env_steps=50_000 + s, wall=250)
            run = out / "reach" / f"otpr_s{s}"
            summary = json.loads((run / "summary.json").read_text())
            (run / "summary.json").write_text(json.dumps(dict(summary, pretrained_success=start)))
            (run / "metrics.jsonl").write_text(  # the start is in the summary, not logged
                "\n".join(
                    json.dumps({"env_steps": x, "eval/success": y})
                    for x, y in [(25_000, (start + final) / 2), (50_000, final)]
                )
            )
        for mode in ("stochastic", "noisefree"):
            _eval(out, f"bc_s{s}_{mode}", start)
            _eval(out, f"otpr_s{s}_{mode}", final - (0.1 if mode == "noisefree" else 0.0))
    result = collect(spec, planned)
    rows = result["tasks"]["reach"]["otpr"]
    assert rows["seeds"] == [0, 1]
    assert rows["stochastic"] == [0.8, 0.9] and rows["pretrained_stochastic"] == [0.5, 0.6]
    assert rows["noisefree"] == pytest.approx([0.7, 0.8])
    assert rows["env_steps"] == [50_000, 50_001]
    assert rows["curves"][0] == [[0, 0.5], [25_000, 0.65], [50_000, 0.8]]
    assert result["tasks"]["reach"]["bc"]["seeds"] == [0, 1, 2]
    written = write_report(spec, result, str(tmp_path / "docs"))
    md = (out / "report.md").read_text()
    # mean 0.85, standard error 0.05 (std 0.0707 / sqrt 2); the start 0.55 +- 0.05
    assert "| reach | otpr | 2 | 0.550 +- 0.050 -> **0.850 +- 0.050** |" in md
    assert "0.550 +- 0.050 -> **0.750 +- 0.050**" in md  # noise-free
    assert "50.0k" in md and "`otpr-finetune task=reach algo=otpr seed=S" in md
    png = out / "reach.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "docs" / "t.md").read_text() == md
    assert (tmp_path / "docs" / "t_reach.png").is_file()
    assert tmp_path / "docs" / "t.json" in written


def _finished(out: Path, algo: str, seed: int, start: float, final: float) -> None:
    _summary(out / "reach" / f"bc_s{seed}", iterations=0, env_steps=0, wall=40.0)
    _summary(out / "reach" / f"{algo}_s{seed}", iterations=40, wall=300.0)
    for mode in ("stochastic", "noisefree"):
        _eval(out, f"bc_s{seed}_{mode}", start)
        _eval(out, f"{algo}_s{seed}_{mode}", final)


def test_a_partial_rerun_merges_into_an_earlier_report_keeping_the_rows_it_did_not_run(
    tmp_path, hydra_configs
):
    earlier = _spec(tmp_path / "a", seeds=[0], algos=["bc", "otpr", "dppo"])
    for algo, final in (("otpr", 0.9), ("dppo", 0.3)):
        _finished(tmp_path / "a" / "out", algo, 0, 0.5, final)
    kept = collect(earlier, plan(earlier))
    # elsewhere, only bc and dppo re-run (dppo with a fix); otpr's runs are not there
    rerun = _spec(tmp_path / "b", seeds=[0], algos=["bc", "dppo"])
    _finished(tmp_path / "b" / "out", "dppo", 0, 0.5, 0.8)
    merged = merge_results(kept, collect(rerun, plan(rerun)), "old.json")
    rows = merged["tasks"]["reach"]
    assert list(rows) == ["bc", "otpr", "dppo"] and merged["spec"]["algos"] == list(rows)
    assert rows["otpr"]["stochastic"] == [0.9]  # kept: this run has no otpr seed
    assert rows["dppo"]["stochastic"] == [0.8]  # replaced by the re-run
    assert set(merged["budgets"]) == {"reach/otpr", "reach/dppo"}
    write_report(rerun, merged, None)
    md = (tmp_path / "b" / "out" / "report.md").read_text()
    assert "| reach | otpr | 1 | 0.500 -> **0.900** |" in md
    assert "| reach | dppo | 1 | 0.500 -> **0.800** |" in md
    # a report of another budget does not merge: its numbers were measured differently
    other = dict(kept, spec=dict(kept["spec"], env_steps=100_000))
    with pytest.raises(ConfigError, match="merge_report: old.json has bench.env_steps=100000"):
        merge_results(other, collect(rerun, plan(rerun)), "old.json")


def test_a_launcher_job_index_out_of_range_is_refused(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run(
        [sys.executable, "-m", "otpr.bench", "bench=reach", f"bench.out={out}", "phase=pretrain"]
        + ["job=7"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "otpr-bench: error: job: expected an index into the pretrain jobs, got 7"
    ]
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no log, no launcher directory


@pytest.mark.parametrize("kept_steps", [None, 100_000])
def test_a_merge_report_that_cannot_merge_is_refused_before_any_run(tmp_path, kept_steps):
    out, merge = tmp_path / "out", tmp_path / "old.json"
    if kept_steps is not None:  # a report of the same bench at another budget
        spec = dict(name="reach", env_steps=kept_steps, seeds=[0, 1, 2], eval_modes=[])
        merge.write_text(json.dumps({"spec": spec, "tasks": {}}))
    r = subprocess.run(
        [sys.executable, "-m", "otpr.bench", "bench=reach", f"bench.out={out}"]
        + [f"merge_report={merge}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 2
    expected = "is not a file" if kept_steps is None else "has bench.env_steps=100000"
    assert expected in r.stderr and r.stderr.startswith("otpr-bench: error: merge_report: ")
    assert not out.exists()  # nothing ran


def test_the_launcher_multirun_repeats_the_launcher_overrides_hydra_keeps_apart():
    # hydra.launcher.n_jobs=1 on otpr-bench's command line must reach the multirun that runs
    # the jobs; other hydra.* overrides belong to the bench process alone
    given = ["bench=reach", "bench.seeds=[1]", "hydra.launcher.n_jobs=1", "hydra.job.chdir=true"]
    with initialize_config_module("configs", version_base="1.3"):
        cfg = compose(config_name="benchmark", overrides=given, return_hydra_config=True)
    assert forwarded_overrides(cfg.hydra.overrides) == [
        "bench=reach",
        "bench.seeds=[1]",
        "hydra.launcher.n_jobs=1",
    ]


def test_a_job_names_its_console_command():
    job = Job("finetune", "reach/otpr_s0", ["task=reach", "seed=0"], "reach", "otpr", 0)
    assert job.command == "otpr-finetune task=reach seed=0"


@pytest.mark.slow
def test_otpr_bench_runs_a_small_spec_end_to_end_and_skips_it_the_second_time(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "otpr.bench", "bench=reach", "bench.algos=[bc,otpr]"]
    cmd += ["bench.seeds=[0]", "bench.eval_modes=[noisefree]", f"bench.out={out}", "debug=true"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    result = json.loads((out / "report.json").read_text())
    rows = result["tasks"]["reach"]
    assert rows["otpr"]["seeds"] == [0] and rows["bc"]["seeds"] == [0]
    summary = json.loads((out / "reach" / "otpr_s0" / "summary.json").read_text())
    assert rows["otpr"]["env_steps"] == [summary["env_steps"]] and summary["env_steps"] > 0
    start = json.loads((out / "reach" / "evals" / "bc_s0_noisefree" / "eval.json").read_text())
    assert rows["otpr"]["pretrained_noisefree"] == [start["eval/success"]]
    assert "| reach | otpr | 1 |" in (out / "report.md").read_text()
    stamps = {p: p.stat().st_mtime for p in out.rglob("summary.json")}
    stamps |= {p: p.stat().st_mtime for p in out.rglob("eval.json")}
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert r.returncode == 0
    for phase in ("pretrain", "finetune", "evaluate"):
        assert f"{phase}: 0 of" in r.stdout
    assert all(p.stat().st_mtime == t for p, t in stamps.items())


def test_an_algorithm_is_evaluated_only_in_the_modes_it_has(tmp_path, hydra_configs):
    """DSRL acts with its noise actor's mean (noise-free only): no stochastic evaluation job,
    and its report cell says n/a rather than waiting for one."""
    spec = _spec(tmp_path, algos=["bc", "dsrl"], seeds=[0])
    planned = plan(spec)
    assert planned["modes"]["reach/dsrl"] == ["noisefree"]
    assert planned["modes"]["reach/bc"] == ["stochastic", "noisefree"]
    evals = {(j.algo, j.mode) for j in planned["jobs"]["evaluate"]}
    assert evals == {("bc", "stochastic"), ("bc", "noisefree"), ("dsrl", "noisefree")}
    out = tmp_path / "out"
    _summary(out / "reach" / "bc_s0", iterations=0, env_steps=0)
    _summary(out / "reach" / "dsrl_s0", iterations=40)
    for name, value in [("bc_s0_stochastic", 0.5), ("bc_s0_noisefree", 0.4)]:
        _eval(out, name, value)
    _eval(out, "dsrl_s0_noisefree", 0.6)
    result = collect(spec, planned)
    assert result["tasks"]["reach"]["dsrl"]["noisefree"] == [0.6]
    write_report(spec, result, None)
    assert "| reach | dsrl | 1 | n/a | 0.400 -> **0.600** |" in (out / "report.md").read_text()
