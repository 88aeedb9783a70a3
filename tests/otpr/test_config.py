import pytest
from omegaconf.errors import ConfigKeyError

from otpr.config import ConfigError, apply_debug, from_dict, to_dict


def test_unknown_key_is_rejected_with_its_name() -> None:
    with pytest.raises(ConfigKeyError, match="lamb"):
        from_dict({"task": {"name": "reach-v3"}, "ot": {"lamb": 0.1}})


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"ot": {"lam": -1.0}}, "ot.lam"),
        ({"task": {"act_steps": 9, "horizon": 8}}, "task.act_steps"),
        ({"algo": {"guidance": "Z"}}, "algo.guidance"),
        ({"policy": {"sampler": "heun"}}, "policy.sampler"),
        ({"task": {"demos": {"quality": "great"}}}, "task.demos.quality"),
        ({"algo": {"demo_fraction": 1.0}}, "algo.demo_fraction"),
        ({"algo": {"retry_failed_starts": -1}}, "algo.retry_failed_starts"),
        ({"algo": {"weight_clip": -1.0}}, "algo.weight_clip"),
        ({"policy": {"temperature": 1.5}}, "policy.temperature"),
        (
            {"algo": {"eval_deterministic": True}, "policy": {"sampler": "euler_maruyama"}},
            "algo.eval_deterministic",
        ),
    ],
)
def test_invalid_values_name_the_key(override: dict, key: str) -> None:
    data = {"task": {"name": "reach-v3"}}
    for group, values in override.items():
        data.setdefault(group, {}).update(values)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        from_dict(data)


def test_round_trip_and_debug_shrinks() -> None:
    cfg = from_dict({"task": {"name": "reach-v3"}, "seed": 4})
    again = from_dict(to_dict(cfg))
    assert again == cfg
    cfg.debug = True
    apply_debug(cfg)
    assert cfg.algo.iterations <= 3 and cfg.task.eval_episodes <= 2 and cfg.seed == 4
