"""The EMA of policy weights: the update rule, its warm-up and the buffers."""

import pytest
import torch
from torch import nn

from policies.ema import EMA


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.register_buffer("stat", torch.zeros(2))


def test_update_follows_the_warmup_then_the_decay() -> None:
    torch.manual_seed(0)
    net = _Net()
    ema = EMA(net, decay=0.99)
    start = {k: v.clone() for k, v in ema.model.state_dict().items()}
    with torch.no_grad():
        net.lin.weight.add_(1.0)
        net.stat.fill_(5.0)
    ema.update(net)  # n = 0: d = min(0.99, 1 / 10) = 0.1
    expected = 0.1 * start["lin.weight"] + 0.9 * net.lin.weight
    torch.testing.assert_close(ema.model.lin.weight, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(ema.model.stat, torch.full((2,), 5.0))  # copied, not averaged
    assert ema.current_decay() == pytest.approx(2 / 11)
    ema.end_warmup()
    assert ema.current_decay() == 0.99
    before = ema.model.lin.bias.clone()
    with torch.no_grad():
        net.lin.bias.sub_(2.0)
    ema.update(net)
    torch.testing.assert_close(
        ema.model.lin.bias, 0.99 * before + 0.01 * net.lin.bias, rtol=0, atol=1e-6
    )
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_counter_round_trips_and_bad_decay_is_refused() -> None:
    ema = EMA(_Net(), decay=0.9)
    ema.update(_Net())
    other = EMA(_Net(), decay=0.9)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 1 and other.current_decay() == ema.current_decay()
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match="decay"):
            EMA(_Net(), decay=bad)
