"""critics.TwinQ: both heads on concat(obs, act), Polyak targets, shape refusals."""

from __future__ import annotations

import pytest
import torch

from critics.twin_q import TwinQ


def test_heads_score_the_concatenated_input_and_targets_start_equal() -> None:
    torch.manual_seed(0)
    q = TwinQ(3, 2, hidden=[8], polyak=0.25)
    obs, act = torch.randn(5, 3), torch.randn(5, 2)
    out = q(obs, act)
    x = torch.cat([obs, act], dim=1)
    assert out.shape == (2, 5)
    assert torch.allclose(out[1], q.heads[1](x).squeeze(-1))
    assert not torch.allclose(out[0], out[1])  # two independently initialised heads
    assert torch.equal(q.target(obs, act), out.detach())


def test_polyak_moves_the_targets_a_fraction_of_the_way() -> None:
    torch.manual_seed(0)
    q = TwinQ(3, 2, hidden=[8], polyak=0.25)
    old = [p.clone() for p in q.target_heads.parameters()]
    with torch.no_grad():
        for p in q.heads.parameters():
            p.add_(1.0)
    q.update_targets()
    for before, online, target in zip(old, q.heads.parameters(), q.target_heads.parameters()):
        assert torch.allclose(target, 0.75 * before + 0.25 * online)
        assert not target.requires_grad
    targets = {id(t) for t in q.target_heads.parameters()}
    assert not any(id(p) in targets for p in q.heads.parameters())  # copies, not shared


def test_shapes_and_a_critic_without_targets_are_refused_by_name() -> None:
    q = TwinQ(3, 2, hidden=[8], targets=False)
    with pytest.raises(ValueError, match="act must be"):
        q(torch.zeros(4, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="obs must be"):
        q(torch.zeros(4, 2), torch.zeros(4, 2))
    with pytest.raises(RuntimeError, match="no target"):
        q.target(torch.zeros(4, 3), torch.zeros(4, 2))
    q.update_targets()  # nothing to follow: a no-op
    with pytest.raises(ValueError, match="polyak"):
        TwinQ(3, 2, polyak=0.0)
