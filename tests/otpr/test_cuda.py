"""Every registered algorithm and the policy's samplers on a CUDA device (skipped without one).

Each algorithm runs what the loop runs (pretraining steps, collection decisions, one update,
evaluation) on the toy problem of ``conftest.py`` with ``device=cuda``: every network stays on
the GPU, the metrics are finite and the update moves the networks it trains. The losses and
samples of the same weights and batch match between the CPU and the GPU within float32
round-off: the algorithms' CPU generators (``policies.sde.generator_device``) draw the same
noise for a policy on either device.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch

from otpr import checkpoint as ckpt_io
from otpr.algos import Algorithm, Step, algo_class, finite_or_raise, registered
from otpr.buffer import TrainingData

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DEVICE = "cuda"
CLOSE = {"rtol": 1e-4, "atol": 1e-5}  # float32 round-off between CPU and GPU kernels

# name -> (variant, algo overrides, ot overrides, the modules an update must change; None:
# at least one). A registered algorithm not listed runs with its defaults.
VARIANTS: dict[str, list[tuple[str, dict, dict, set[str] | None]]] = {
    "bc": [("", {}, {}, set())],  # no online update: pretraining only
    "otpr": [
        # algo=otpr_paper: H of masked neural potentials on replay pairs (after a few dual
        # steps H may be 0 on every pair: the demo pairs' uniform weights move the policy)
        ("paper", {"guidance": "H", "actor_targets": "replay", "demo_weights": "uniform"},
         {"masked": True}, {"policy", "critic", "potentials"}),
        ("H-unmasked", {"guidance": "H", "sample_mode": "softmax"}, {"masked": False},
         {"critic", "potentials"}),
        # algo=otpr: Hc on resampled candidates, a uniform demo anchor
        ("default", {"guidance": "Hc", "actor_targets": "resampled", "demo_weights": "uniform",
          "actor_target_states": 16, "eval_mode": "best"}, {}, {"policy", "critic"}),
    ],
    "idql": [("", {"num_samples": 4}, {}, {"policy", "critic"})],
    "dql": [("", {}, {}, {"policy", "policy_ema", "critic"})],
    "dppo": [("", {}, {}, {"policy", "value"}), ("bc", {"bc_coef": 0.5}, {}, {"policy", "value"})],
    "dsrl": [
        ("sac", {"variant": "sac"}, {}, {"noise_actor", "noise_critic", "temperature"}),
        ("na", {"variant": "na"}, {},
         {"noise_actor", "noise_critic", "action_critic", "temperature"}),
    ],
}  # fmt: skip
BUILT_IN = sorted(n for n in registered() if algo_class(n).__module__.startswith("otpr.algos."))
CASES = [
    pytest.param(name, algo, ot, trained, id="-".join(filter(None, (name, variant))))
    for name in BUILT_IN
    for variant, algo, ot, trained in VARIANTS.get(name, [("", {}, {}, None)])
]


def _tensors(algo: Algorithm) -> Iterator[tuple[str, torch.Tensor]]:
    """Every parameter and buffer (non-persistent ones too) of the algorithm's networks."""
    for module_name, module in algo.modules().items():
        for key, t in [*module.named_parameters(), *module.named_buffers()]:
            yield f"{module_name}.{key}", t


def _off_device(algo: Algorithm) -> list[str]:
    return [k for k, t in _tensors(algo) if t.device.type != DEVICE]


def _snapshot(algo: Algorithm) -> dict[str, dict[str, torch.Tensor]]:
    return {n: {k: v.clone() for k, v in m.state_dict().items()} for n, m in algo.modules().items()}


def _changed(algo: Algorithm, before: dict[str, dict[str, torch.Tensor]]) -> set[str]:
    return {
        n
        for n, m in algo.modules().items()
        if any(not torch.equal(before[n][k], v) for k, v in m.state_dict().items())
    }


def _pretrain(algo: Algorithm, data: TrainingData) -> dict[str, float]:
    """Two behaviour-cloning steps on the demos, as the loop's pretraining takes them."""
    obs = torch.as_tensor(data.demo_obs[:32], device=algo.device)
    act = torch.as_tensor(data.demo_act[:32], device=algo.device)
    optimizer = torch.optim.Adam(algo.policy.parameters(), lr=1e-3)
    algo.pretrain_step(obs, act, optimizer)
    return algo.pretrain_step(obs, act, optimizer)


def _collect_and_update(
    algo: Algorithm, data: TrainingData, decisions: int = 2, num_envs: int = 8
) -> tuple[dict[str, float], list[np.ndarray]]:
    """One iteration of ``otpr.loop.Trainer`` without envs: ``decisions`` collection decisions
    (act, observe, replay) of ``num_envs`` members, then the update. Returns its metrics and
    the chunks collected."""
    rng = np.random.default_rng(1)
    obs = data.demo_obs[:num_envs]
    chunks, zeros = [], np.zeros(num_envs, np.float32)
    for _ in range(decisions):
        actions, _ = algo.act(obs, explore=True)
        next_obs = np.clip(obs + rng.normal(0, 0.1, obs.shape), -1, 1).astype(np.float32)
        reward = rng.normal(size=num_envs).astype(np.float32)
        discount = np.full(num_envs, 0.99**2, np.float32)
        algo.observe(Step(obs, actions, reward, discount, zeros, zeros, next_obs))
        data.buffer.add(obs=obs, actions=actions, reward=reward, discount=discount,
                        next_obs=next_obs, terminated=zeros)  # fmt: skip
        chunks.append(actions)
        obs = next_obs
    return algo.update(data, iteration=0), chunks


@pytest.mark.parametrize(("name", "algo_cfg", "ot_cfg", "trained"), CASES)
def test_algorithm_trains_and_acts_on_the_gpu(
    make_toy_algo: Callable[..., Algorithm],
    make_toy_data: Callable[..., TrainingData],
    name: str,
    algo_cfg: dict,
    ot_cfg: dict,
    trained: set[str] | None,
) -> None:
    algo = make_toy_algo(name, device=DEVICE, ot=ot_cfg, **algo_cfg)
    assert algo.device.type == DEVICE and not _off_device(algo)
    data = make_toy_data(algo)
    start = _snapshot(algo)
    finite_or_raise(_pretrain(algo, data), "pretraining")
    assert "policy" in _changed(algo, start)  # the behaviour-cloning steps ran on the GPU
    if algo.cfg.algo.iterations > 0:  # bc has no online phase
        before = _snapshot(algo)
        metrics, chunks = _collect_and_update(algo, data)
        assert metrics and finite_or_raise(metrics, "the update") is metrics
        changed = _changed(algo, before)
        assert changed >= trained if trained is not None else changed, (changed, trained)
        for chunk in chunks:
            assert isinstance(chunk, np.ndarray) and chunk.shape == (8, 4, 2)
            assert np.isfinite(chunk).all()
    assert not _off_device(algo)
    # evaluation: repeatable from the evaluation's own (CPU) generator, as otpr.evaluation seeds
    obs = data.demo_obs[:5]
    first, _ = algo.act(obs, explore=False, generator=torch.Generator().manual_seed(3))
    again, _ = algo.act(obs, explore=False, generator=torch.Generator().manual_seed(3))
    assert first.shape == (5, 4, 2) and np.isfinite(first).all()
    np.testing.assert_allclose(first, again, atol=1e-6)


@pytest.mark.parametrize("sampler", ["ddim", "euler_maruyama", "dpm_solver_pp_2m"])
def test_samples_of_the_same_weights_and_seed_match_on_cpu_and_gpu(
    make_toy_algo: Callable[..., Algorithm], sampler: str
) -> None:
    cpu = make_toy_algo("bc", device="cpu", policy={"sampler": sampler}).policy
    gpu = make_toy_algo("bc", device=DEVICE, policy={"sampler": sampler}).policy
    gpu.load_state_dict(cpu.state_dict())
    obs = torch.rand(6, 2, 3) * 2 - 1
    a = cpu.sample(obs, num_samples=3, generator=torch.Generator().manual_seed(0))
    b = gpu.sample(obs.to(DEVICE), num_samples=3, generator=torch.Generator().manual_seed(0))
    assert b.device.type == DEVICE and b.shape == (6, 3, 4, 2)
    torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-4)
    assert a.std() > 0.05  # real samples, not a constant that would match anyway
    # a generator on the GPU serves the GPU policy too
    gen = torch.Generator(device=DEVICE)
    c = gpu.sample(obs, num_samples=3, generator=gen.manual_seed(1))
    torch.testing.assert_close(c, gpu.sample(obs, num_samples=3, generator=gen.manual_seed(1)))
    if sampler == "dpm_solver_pp_2m":
        return
    # the recorded chain (DPPO) and its step log-probabilities
    chain_a = cpu.sample_chain(obs, 2, generator=torch.Generator().manual_seed(4))
    chain_b = gpu.sample_chain(obs, 2, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(chain_b.actions.cpu(), chain_a.actions, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(chain_b.log_probs.cpu(), chain_a.log_probs, rtol=1e-4, atol=1e-3)
    mean, std = gpu.step_mean_std(obs, chain_b.xs[:, 0, 1], torch.ones(6, dtype=torch.long))
    assert mean.device.type == DEVICE and std.device.type == DEVICE


def test_dsm_loss_and_its_gradient_match_on_cpu_and_gpu(
    make_toy_algo: Callable[..., Algorithm],
) -> None:
    """The (weighted) denoising loss of the same weights, batch and seed: t and eps come from
    the CPU generator on both devices."""
    cpu = make_toy_algo("bc", device="cpu").policy
    gpu = make_toy_algo("bc", device=DEVICE).policy
    gpu.load_state_dict(cpu.state_dict())
    g = torch.Generator().manual_seed(0)
    obs, act = torch.rand(32, 2, 3, generator=g), torch.rand(32, 4, 2, generator=g)
    w = torch.rand(32, generator=g)
    losses = []
    for policy in (cpu, gpu):
        loss, _ = policy.compute_dsm_loss(
            obs.to(policy.device),
            act.to(policy.device),
            weights=w.to(policy.device),
            weight_norm="batch_mean",
            generator=torch.Generator().manual_seed(7),
        )
        loss.backward()
        losses.append(loss)
    assert losses[1].device.type == DEVICE and losses[0] > 0
    torch.testing.assert_close(losses[1].cpu(), losses[0], **CLOSE)
    for p_cpu, p_gpu in zip(cpu.parameters(), gpu.parameters(), strict=True):
        torch.testing.assert_close(p_gpu.grad.cpu(), p_cpu.grad, rtol=1e-3, atol=1e-4)


def test_iql_and_ot_dual_losses_match_on_cpu_and_gpu(
    make_toy_algo: Callable[..., Algorithm], make_toy_data: Callable[..., TrainingData]
) -> None:
    """OTPR's IQL critic losses and the masked OT dual (cost matrix, loss, compatibility H)
    of the same networks on the same batch."""
    cpu = make_toy_algo("otpr", device="cpu", guidance="H", ot={"masked": True})
    gpu = make_toy_algo("otpr", device=DEVICE, guidance="H", ot={"masked": True})
    for name, module in cpu.modules().items():
        gpu.modules()[name].load_state_dict(module.state_dict())
    gpu.potentials.set_keypoints(cpu.potentials.key_states, cpu.potentials.key_actions)
    batch = make_toy_data(cpu).batch(64)
    out = []
    for algo in (cpu, gpu):
        tr = algo.transitions({k: v.to(algo.device) for k, v in batch.items()})
        q_loss, _ = algo.critic.compute_q_loss(
            tr["obs"], tr["act"], tr["reward"], tr["next_obs"], tr["terminated"], tr["discount"]
        )
        v_loss, _ = algo.critic.compute_value_loss(tr["obs"], tr["act"])
        states, acts = tr["obs"][:16], tr["act"][16:48]
        cost = algo.potentials.pairwise_cost(states, acts, algo.cost_fn)
        dual, _ = algo.potentials.compute_dual_loss(states, acts, cost)
        h = algo.potentials.compatibility(states, acts[:16], algo.cost_fn)
        out.append([q_loss, v_loss, cost, dual, h])
    assert all(x.device.type == DEVICE for x in out[1])
    assert out[0][0] > 0 and out[0][2].std() > 0
    for x_cpu, x_gpu in zip(out[0][:4], out[1][:4], strict=True):
        torch.testing.assert_close(x_gpu.detach().cpu(), x_cpu.detach(), **CLOSE)
    # H = (u + v - c)_+ / (2 lam) magnifies the round-off by 1 / (2 lam) = 50
    torch.testing.assert_close(out[1][4].cpu(), out[0][4], rtol=1e-3, atol=1e-3)


def test_unet_policy_trains_and_samples_on_the_gpu(
    make_toy_algo: Callable[..., Algorithm],
) -> None:
    algo = make_toy_algo("bc", device=DEVICE, policy={"name": "unet", "unet_down_dims": [16, 32]})
    net = algo.policy
    before = [p.clone() for p in net.parameters()]
    obs, act = torch.rand(16, 2, 3, device=DEVICE), torch.rand(16, 4, 2, device=DEVICE)
    info = algo.pretrain_step(obs, act, torch.optim.Adam(net.parameters(), lr=1e-3))
    finite_or_raise(info)
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    chunk = net.rsample(obs, generator=torch.Generator().manual_seed(0), num_steps=2)
    chunk.square().mean().backward()  # through the reverse chain, on the GPU
    assert chunk.device.type == DEVICE and torch.isfinite(chunk).all()
    assert all(p.grad is not None and p.grad.device.type == DEVICE for p in net.parameters())
    assert not _off_device(algo)


def test_checkpoint_rng_state_restores_the_gpu_generator() -> None:
    """Draws without a generator on the GPU (the policy's DSM noise in training) replay after
    a resume: ``rng.json`` keeps the GPU's default generator."""
    torch.randn(1, device=DEVICE)  # CUDA is initialised
    text = json.dumps(ckpt_io._rng_to_json(ckpt_io.rng_state()))
    state = ckpt_io._rng_from_json(json.loads(text))
    assert "torch_cuda/0" in state
    expect = torch.randn(5, device=DEVICE)
    torch.randn(3, device=DEVICE)
    ckpt_io.set_rng_state(state)
    assert torch.equal(torch.randn(5, device=DEVICE), expect)
