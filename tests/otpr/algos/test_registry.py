"""Algorithms are plug-ins: the loop knows none by name, a new one needs no edit to the loop,
every registered one runs end to end, and a checkpoint holds exactly its algorithm's networks."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import otpr.loop
from otpr import cli  # noqa: F401  registers the schemas
from otpr.algos import Algorithm, register_algo, registered
from otpr.algos.base import _REGISTRY
from otpr.config import AlgoConfig, ConfigError, apply_debug, from_dict

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent


def test_builtin_algorithms_are_registered() -> None:
    assert {"otpr", "dppo", "bc"} <= set(registered())


def test_the_loop_names_no_algorithm() -> None:
    """otpr/loop.py's code (imports and prose aside) holds no algorithm's name or parts."""
    tree = ast.parse(Path(otpr.loop.__file__).read_text())
    words: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Name):
            words.add(node.id)
        elif isinstance(node, ast.Attribute):
            words.add(node.attr)
        elif isinstance(node, ast.arg):
            words.add(node.arg)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if " " not in node.value:  # a key or a name, not a docstring or a message
                words.add(node.value)
    tokens = {t.lower() for w in words for t in re.split(r"[^A-Za-z0-9]+|_", w) if t}
    forbidden = set(registered()) | {"ppo", "iql", "critic", "potentials", "guidance", "ot"}
    assert not tokens & forbidden, tokens & forbidden


@dataclass
class ToyConfig(AlgoConfig):
    """A toy algorithm: pulls its policy's first bias towards a target."""

    name: str = "toy"
    """toy."""
    target: float = 0.5
    """Where the bias goes."""


@register_algo("toy", ToyConfig)
class Toy(Algorithm):
    """Acts with the policy, counts what it observes, and learns a scalar of its own."""

    def __init__(self, cfg, spec) -> None:
        super().__init__(cfg, spec)
        self.scale = torch.nn.Linear(1, 1)
        self.opt = torch.optim.SGD(self.scale.parameters(), lr=0.5)
        self.observed = 0
        self.updates: list[int] = []

    def observe(self, step) -> None:
        self.observed += len(step.done)

    def update(self, data, iteration: int) -> dict[str, float]:
        batch = data.batch(8)
        loss = (self.scale.bias - self.cfg.algo.target).square().sum()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.updates.append(iteration)
        return {"toy/loss": float(loss.detach()), "toy/batch": float(len(batch["obs"]))}

    def modules(self) -> dict[str, torch.nn.Module]:
        return {**super().modules(), "scale": self.scale}

    def optimizers(self) -> dict:
        return {**super().optimizers(), "scale": self.opt}


def _toy_cfg(**algo):
    cfg = from_dict(
        {
            "task": {"name": "reach-v3"},
            "algo": {"name": "toy", **algo},
            "debug": True,
            "progress": False,
            "tensorboard": False,
        }
    )
    return apply_debug(cfg)


def test_a_registered_toy_algorithm_runs_through_the_unchanged_loop(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    try:
        cfg = _toy_cfg(target=0.25)
        assert isinstance(cfg.algo, ToyConfig) and cfg.algo.target == 0.25
        with pytest.raises(Exception, match="guidance"):
            _toy_cfg(guidance="H")  # another algorithm's key
        trainer = otpr.loop.Trainer(cfg, tmp_path / "toy")
        assert isinstance(trainer.algo, Toy)
        trainer.pretrain()
        trainer.finetune()
        algo = trainer.algo
        assert algo.updates == list(range(cfg.algo.iterations))
        decisions = cfg.algo.iterations * cfg.algo.steps_per_iter * cfg.task.num_envs
        assert algo.observed == decisions
        records = [json.loads(x) for x in (tmp_path / "toy" / "metrics.jsonl").open()]
        assert [r["toy/loss"] for r in records if "toy/loss" in r][-1] < 0.25**2
        summary = trainer.summary()
        trainer.close()
        assert summary["algo"] == "toy" and "guidance" not in summary
        last = tmp_path / "toy" / "checkpoints" / (tmp_path / "toy/checkpoints/last").read_text()
        stored = sorted(p.stem for p in last.glob("*.safetensors"))
        assert stored == ["policy", "scale"]  # exactly the algorithm's modules
        assert json.loads((last / "meta.json").read_text())["algo"] == "toy"
        # resume restores the toy's own network and optimizer
        bias = float(algo.scale.bias.detach())
        resumed = otpr.loop.Trainer(cfg, tmp_path / "toy")
        resumed.restore(tmp_path / "toy")
        assert float(resumed.algo.scale.bias.detach()) == pytest.approx(bias)
        assert resumed.state.iteration == cfg.algo.iterations
        resumed.close()
    finally:
        _REGISTRY.pop("toy", None)


def test_unknown_algorithm_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="algo.name.*'nope'"):
        from_dict({"task": {"name": "reach-v3"}, "algo": {"name": "nope"}})


def test_each_algorithm_config_takes_only_its_own_keys() -> None:
    def compose_cfg(*overrides: str):
        with initialize_config_module("configs", version_base="1.3"):
            return OmegaConf.to_object(compose("config", overrides=list(overrides)))

    assert compose_cfg("algo=dppo", "algo.bc_coef=0.5").algo.bc_coef == 0.5
    assert compose_cfg("algo.guidance=Q").algo.guidance == "Q"
    gae = compose_cfg("algo=otpr_gae", "algo.ot_coef=0.5")
    assert gae.algo.ot_coef == 0.5 and gae.algo.clip == 0.01 and gae.policy.min_std == 0.1
    for overrides in (
        ("algo=dppo", "algo.guidance=Q"),
        ("algo=otpr_gae", "algo.actor_update=ppo"),
        ("algo.epochs=3",),
        ("algo=bc", "algo.epochs=3"),
    ):
        with pytest.raises(Exception, match=overrides[-1].split("=")[0].split(".")[-1]):
            compose_cfg(*overrides)
    with pytest.raises(Exception, match="algo.iterations"):
        compose_cfg("algo=bc", "algo.iterations=5")  # bc only pretrains


@pytest.mark.slow
@pytest.mark.parametrize("name", ["otpr", "otpr_gae", "dppo", "idql", "dql", "dsrl", "sodp", "bc"])
def test_every_registered_algorithm_runs_from_the_command_line(tmp_path: Path, name: str) -> None:
    """``otpr algo=<name> debug=true``: a summary, and a checkpoint with exactly the modules
    of the algorithm (no untrained critic in a DPPO checkpoint)."""
    assert name in registered()
    run_dir = tmp_path / name
    out = subprocess.run(
        [str(BIN / "otpr"), f"algo={name}", "debug=true", "progress=false",
         f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["algo"] == name and summary["pretrained_success"] is not None
    ckpt = run_dir / "checkpoints" / (run_dir / "checkpoints" / "last").read_text()
    stored = sorted(p.stem for p in ckpt.glob("*.safetensors"))
    expected = {
        "otpr": ["critic", "policy", "potentials"],
        "dppo": ["policy", "value"],
        "otpr_gae": ["critic", "policy", "value"],
        "idql": ["critic", "policy"],
        "dql": ["critic", "policy", "policy_ema"],
        "dsrl": ["noise_actor", "noise_critic", "policy", "temperature"],
    }
    assert stored == expected.get(name, ["policy"])
    assert summary["final_success"] is not None and summary["iterations"] == (
        0 if name == "bc" else 3
    )


def test_a_checkpoint_of_the_old_format_is_refused_in_one_line(tmp_path: Path) -> None:
    from otpr import checkpoint as ckpt_io

    ckpt = tmp_path / "checkpoints" / "step_0"
    ckpt.mkdir(parents=True)
    (tmp_path / "checkpoints" / "last").write_text("step_0")
    (ckpt / "meta.json").write_text(json.dumps({"format_version": 1, "obs_dim": 39}))
    (ckpt / "config.yaml").write_text("algo:\n  name: dppo\n  ppo_epochs: 10\n")
    with pytest.raises(ckpt_io.CheckpointError, match="format_version: expected 3, got 1"):
        ckpt_io.load_policy(tmp_path)
    out = subprocess.run(
        [str(BIN / "otpr-eval"), f"checkpoint={tmp_path}", f"hydra.run.dir={tmp_path / 'e'}"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode != 0
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "format_version" in lines[0] and "Traceback" not in out.stderr


def test_commands_explain_themselves() -> None:
    def help_of(cmd: str) -> str:
        out = subprocess.run([str(BIN / cmd), "--help"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    main, evaluate = help_of("otpr"), help_of("otpr-eval")
    assert main != evaluate
    assert main.startswith("otpr: the whole job") and "algo=<name>" in main
    assert "Required: checkpoint=" in evaluate and "Example" in evaluate
    for name in registered():
        assert name in main  # the algorithms one can choose
    assert "checkpoint=" in help_of("otpr-finetune") and "run_dir=" in help_of("otpr-report")


def test_public_api_runs_the_readme_example() -> None:
    """``from otpr import CompatibilitySampler, load_policy``, and the README's plug-in example
    (the Gymnasium loop) runs as written."""
    from otpr import CompatibilitySampler, load_policy

    assert callable(load_policy) and CompatibilitySampler.__module__ == "otpr.sampler"
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    example = next(b for b in blocks if "gym.make" in b)
    scope: dict = {}
    torch.manual_seed(0)
    exec(compile(example, "README.md", "exec"), scope)  # noqa: S102
    assert scope["t"] == 199 and np.isfinite(scope["obs"]).all()
