"""Does the guidance tell good replay data from bad, and does guided selection drift?

    python -m scripts.diagnose_guidance --run runs/can_ft --checkpoint runs/can_ft/checkpoints/<c>
        [--policy runs/bc_can]

Loads a fine-tuning run's critic, potentials and replay from ``--checkpoint`` (the policy too,
or from ``--policy``, e.g. the BC checkpoint) and prints:

1. Per class of replay pair (demo, online pairs of successful episodes, of failed episodes, of
   unfinished ones): the mean guidance weight w (H for ``algo.guidance=H``), the fraction with
   w > 0, mean target Q and advantage Q - V, and the share of the online weight mass that falls
   on successful episodes (against their count share).
   Online episodes are rebuilt from the replay's order (each step adds one row per env member;
   an episode ends where ``terminated`` is set or the next row's observation is not this row's
   next observation).
2. Selection bias: on demo states, the policy's L candidates; for argmax of w, of Q and of v,
   the mean shift of the chosen candidate from the candidates' mean, per action dimension, in
   units of the candidates' spread. A consistent shift is applied at every control step, so it
   accumulates in closed loop (e.g. a gripper that closes early).
3. Out-of-range observations: the fraction of online observations with a normalised dimension
   beyond +-3 (demo observations lie in [-1, 1]), and those dimensions.
4. Self-consistency: the policy's DSM loss on demo windows, on recent online replay pairs whose
   state is within ``algo.actor_obs_bound`` of the demos' span and on those beyond it, and on
   its own fresh samples at the same states. A loss far above the demos' on its *own* samples
   means the network is extrapolating there, and fitting those pairs would swamp the actor's
   steps (why ``algo.actor_obs_bound`` exists).

It writes nothing to the run but a ``diagnose/`` folder for the loader's own log.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch


def episode_labels(arrays: dict[str, np.ndarray], num_demo: int, num_envs: int) -> np.ndarray:
    """0 demo, 1 online successful episode, 2 online failed (truncated), 3 unfinished."""
    obs, nxt, term = arrays["obs"], arrays["next_obs"], arrays["terminated"]
    size = len(obs)
    labels = np.zeros(size, int)
    online = np.arange(num_demo, size)
    for member in range(num_envs):
        rows = online[(online - num_demo) % num_envs == member]
        start = 0
        for j, row in enumerate(rows):
            ends = term[row] > 0 or (
                j + 1 < len(rows) and not np.array_equal(nxt[row], obs[rows[j + 1]])
            )
            if ends:
                labels[rows[start : j + 1]] = 1 if term[row] > 0 else 2
                start = j + 1
        labels[rows[start:]] = 3
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="run directory (its config.yaml is used)")
    parser.add_argument("--checkpoint", required=True, help="checkpoint with critic + replay")
    parser.add_argument("--policy", default=None, help="take the policy from this checkpoint")
    parser.add_argument("--states", type=int, default=400, help="demo states for section 2")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)

    from otpr import checkpoint as ckpt_io
    from otpr.config import from_dict
    from otpr.demos import demo_transitions
    from otpr.loop import Trainer

    raw = ckpt_io.read_config(args.run)
    raw["tensorboard"] = False
    cfg = from_dict(raw)
    trainer = Trainer(cfg, f"{args.run}/diagnose")
    trainer.restore(args.checkpoint)
    if args.policy:
        src = ckpt_io.resolve(args.policy)
        ckpt_io.load_modules(src, {ckpt_io.acting_weights(src): trainer.agent.acting_policy})
    agent, t = trainer.agent, cfg.task
    arrays = trainer.buffer.state_dict()["arrays"]
    num_demo = 0
    if cfg.algo.demos_in_replay:
        demo = demo_transitions(trainer.demos, t.obs_history, t.horizon, t.act_steps, t.gamma)
        num_demo = len(demo["obs"])
    labels = episode_labels(arrays, num_demo, t.num_envs)

    obs = torch.as_tensor(arrays["obs"])
    acts = torch.as_tensor(arrays["actions"])
    with torch.no_grad():
        h = agent.pair_weights(obs, acts).numpy()
        s, a = agent.state(obs), agent.executed(acts)
        q = agent.critic.target_q(s, a).numpy().ravel()
        adv = q - agent.critic.value(s).numpy().ravel()
    print(f"1. replay pairs by class ({len(obs)} pairs, guidance {cfg.algo.guidance})")
    for k, name in enumerate(("demo", "online success", "online failure", "unfinished")):
        m = labels == k
        if m.any():
            print(
                f"   {name:15s} n={m.sum():6d}  w {h[m].mean():8.3f}  w>0 {np.mean(h[m] > 0):.2f}"
                f"  Q {q[m].mean():7.3f}  Q-V {adv[m].mean():8.4f}"
            )
    succ, fail = labels == 1, labels == 2
    if succ.any() and fail.any():
        mass = h[succ].sum() / max(h[succ].sum() + h[fail].sum(), 1e-12)
        count = succ.sum() / (succ.sum() + fail.sum())
        print(f"   online weight mass on successful episodes {mass:.2f} (count share {count:.2f})")

    demo_obs = torch.as_tensor(trainer.demo_obs)
    pick_rows = torch.linspace(0, len(demo_obs) - 1, min(args.states, len(demo_obs))).long()
    states = demo_obs[pick_rows]
    num = cfg.algo.num_samples
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        cand = agent.acting_policy.sample(states, num, generator=gen)
        hc = agent.candidate_weights(states, cand)
        sc, ac = agent.state(states), agent.executed(cand)
        b, l, d = ac.shape
        flat_s = sc[:, None].expand(b, l, -1).reshape(b * l, -1)
        qc = agent.critic.target_q(flat_s, ac.reshape(b * l, d)).reshape(b, l)
        vc = agent.potentials.v(ac.reshape(b * l, d)).reshape(b, l)
    per_step = ac.reshape(b, l, t.act_steps, -1)
    mean, spread = per_step.mean(1), per_step.std(1).mean((0, 1)).clamp_min(1e-8)
    print(f"2. argmax over {num} candidates on {b} demo states: shift / candidate spread per dim")
    for name, score in (("w", hc), ("Q", qc), ("v", vc)):
        chosen = per_step[torch.arange(b), score.argmax(1)]
        shift = ((chosen - mean).mean((0, 1)) / spread).numpy()
        print(f"   argmax {name}: " + " ".join(f"{x:+.2f}" for x in shift))
    all_zero = float((hc.sum(1) == 0).float().mean())
    print(f"   states whose candidates all have weight 0: {all_zero:.2f}")

    online = labels > 0
    if online.any():
        z = agent.policy.normalizer.normalize_obs(obs[online]).abs().amax(1).numpy()
        far = z > 3
        dims = np.flatnonzero(far.mean(0) > 0.05)
        print(
            f"3. online observations with a normalised dim beyond +-3: {far.any(1).mean():.2f}"
            f" (dims over 5%: {dims.tolist()})"
        )
        # 4. is the policy consistent with itself where the actor would learn?
        rows = np.flatnonzero(online)[-args.states * 4 :]
        o, a_replay = obs[rows], acts[rows]
        inside = agent.in_support(o).bool()
        with torch.no_grad():
            fresh = agent.acting_policy.sample(o, 1, generator=gen)[:, 0]
        d_rows = torch.linspace(0, len(demo_obs) - 1, len(rows)).long()

        def dsm(x: torch.Tensor, y: torch.Tensor) -> float:
            if len(x) == 0:
                return float("nan")
            g = torch.Generator().manual_seed(1)
            pol = agent.acting_policy
            with torch.no_grad():
                losses = [pol.compute_dsm_loss(x, y, generator=g)[0] for _ in range(8)]
            return float(np.mean(losses))

        bound = cfg.algo.actor_obs_bound
        print(f"4. policy DSM loss (8 noise draws; in span = every dim within +-{bound}):")
        demo_act = torch.as_tensor(trainer.demo_act)
        print(f"   demo windows {dsm(demo_obs[d_rows], demo_act[d_rows]):.4f}")
        for name, m in (("in span", inside), ("out of span", ~inside)):
            print(
                f"   online {name:12s} ({float(m.float().mean()):.2f}): replay pairs "
                f"{dsm(o[m], a_replay[m]):.4f}, own fresh samples {dsm(o[m], fresh[m]):.4f}"
            )
    trainer.close()


if __name__ == "__main__":
    main()
