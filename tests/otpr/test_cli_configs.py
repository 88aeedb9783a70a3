"""The Hydra tree composes into the typed schema, and bad overrides name the key."""

import subprocess
import sys

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from otpr import cli  # noqa: F401  registers the schemas
from otpr.config import Config


def _compose(*overrides: str, hydra_cfg: bool = False):
    with initialize_config_module("configs", version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra_cfg)


@pytest.mark.parametrize(
    "task", ["reach", "pick-place", "push", "mt10", "lift", "can", "square", "kitchen-complete"]
)
def test_every_task_config_validates(task: str) -> None:
    cfg = OmegaConf.to_object(_compose(f"task={task}"))
    assert isinstance(cfg, Config) and cfg.task.act_steps <= cfg.task.horizon


def test_ablations_are_one_override() -> None:
    cfg = OmegaConf.to_object(_compose("ot=unmasked", "algo.guidance=Q", "policy=unet"))
    assert not cfg.ot.masked and cfg.algo.guidance == "Q" and cfg.policy.name == "unet"


def test_dppo_is_one_group_choice_that_sets_its_noise_floor() -> None:
    cfg = OmegaConf.to_object(_compose("algo=dppo", "task=can"))
    assert cfg.algo.name == "dppo" and cfg.policy.min_std > 0 and cfg.algo.ema_decay == 0
    assert cfg.algo.eval_deterministic  # DPPO evaluates without injected noise
    assert cfg.task.name == "can" and cfg.algo.steps_per_iter * cfg.task.act_steps == 300


def test_launchers() -> None:
    local = _compose(hydra_cfg=True)
    assert "joblib" in local.hydra.launcher._target_.lower()
    slurm = _compose("launcher=slurm", hydra_cfg=True)
    assert "submitit" in slurm.hydra.launcher._target_.lower()


def test_bad_override_names_the_key(tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "otpr.cli", "ot.lam=-1", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0 and "ot.lam" in out.stderr + out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "otpr.cli", "algo.guidence=Q", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0 and "guidence" in out.stderr + out.stdout


def test_eval_config_applies_evaluation_settings_and_refuses_training_ones() -> None:
    from otpr.cli import eval_config
    from otpr.config import ConfigError

    trained = OmegaConf.to_object(_compose("task=can", "task.horizon=8"))
    given = ["task=can", "policy.eta=0", "policy.num_steps=20", "task.eval_episodes=7", "seed=0"]
    overrides = OmegaConf.to_object(_compose(*given))
    cfg = eval_config(trained, overrides, [g.split("=")[0] for g in given])
    assert (cfg.policy.eta, cfg.policy.num_steps, cfg.task.eval_episodes) == (0.0, 20, 7)
    assert cfg.task.horizon == 8 and cfg.tensorboard is False
    # the weights to evaluate are this invocation's, not what the checkpoint's run started from
    trained.weights = "trained"
    assert eval_config(trained, overrides, [g.split("=")[0] for g in given]).weights == "acting"
    overrides = OmegaConf.to_object(_compose("task=can", "weights=trained"))
    assert eval_config(trained, overrides, ["task", "weights"]).weights == "trained"
    with pytest.raises(Exception, match="weights"):
        OmegaConf.to_object(_compose("weights=ema"))

    # a training setting that differs from the checkpoint is an error naming it
    for bad in ("task.horizon=4", "task=lift", "ot=unmasked", "policy.hidden=[64]"):
        overrides = OmegaConf.to_object(_compose("task=can", bad))
        trained = OmegaConf.to_object(_compose("task=can"))
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            eval_config(trained, overrides, ["task", bad.split("=")[0]])


def test_experiment_recipe_sets_the_groups_and_yields_to_the_command_line() -> None:
    cfg = OmegaConf.to_object(_compose("experiment=can"))
    assert cfg.task.name == "can" and cfg.task.obs_history == 2
    assert cfg.policy.hidden == [512, 512, 512] and cfg.algo.ema_decay == 0.999
    assert cfg.algo.success_to_demos and cfg.algo.num_samples == 1
    cfg = OmegaConf.to_object(_compose("experiment=can", "task.demos.num_episodes=20", "seed=1"))
    assert cfg.task.demos.num_episodes == 20 and cfg.seed == 1
    cfg = OmegaConf.to_object(_compose("experiment=kitchen"))
    assert cfg.task.name == "kitchen-complete" and cfg.task.demos.action_noise == 0.2
    assert cfg.policy.hidden == [512, 512, 512] and cfg.algo.pretrain_steps == 20000
    assert cfg.algo.name == "otpr" and cfg.algo.iterations == 80
