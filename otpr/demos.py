"""Scripted demonstrations with quality knobs, written in robomimic's hdf5 layout.

Quality presets (every knob can be overridden):

=============  ============  ======  ===========  ====================================
preset         action noise  jitter  detour prob  meaning
=============  ============  ======  ===========  ====================================
expert         0.0           0.0     0.0          the scripted expert as is
near_optimal   0.1           0.005   0.0          small execution noise
noisy          0.3           0.0     0.0          the regime where BC is clearly imperfect
dart           0.3           0.0     0.0          noisy execution, the clean action recorded
suboptimal     0.5           0.02    0.02         noisy, with random detours
mixed          --            --      --           ``mixture`` fraction of expert, rest suboptimal
=============  ============  ======  ===========  ====================================

Also here: :func:`load_demos` (the configured file, or generated demos cached under ``data/``)
and :func:`demo_transitions` (demos as the chunk transitions the loop stores).

Action noise is Gaussian, added to the *clipped* expert action and clipped again. A detour
replaces the expert for ``detour_steps`` steps with one random constant action. ``jitter`` is the
expert's own waypoint noise. The recorded actions are the executed (noisy) ones, except with
``record_clean`` (the ``dart`` preset): then the episode is driven by the noisy action but the
expert's own action is recorded (DART, Laskey et al. 2017, "Noise injection for robust imitation
learning"), so the data show the expert correcting from the states noise leads to. Everything is
deterministic per ``seed``: episode ``i`` uses env seed ``seed + i`` and its own rng.

Multi-task data (``task=mt10`` / ``mt50``, SODP's pretraining set): each episode's reset draws a
task class and the expert of that class acts (``envs.metaworld.MultiTaskExpert``); the
observation carries no task id. Each episode's task and success are kept for analysis only: as
the demo's ``task`` / ``success`` attributes in the file (``Episode.extra["task"]``,
``Episode.success`` when read back) and in the generation record, with the success rate per task
(:func:`success_by_task`). Training windows are cut from observations and actions alone
(``otpr.data.make_windows``), so neither reaches the policy.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

import envs
from otpr.config import Config
from otpr.data import DemoDataset, Episode, make_windows, write_robomimic_hdf5

PRESETS: dict[str, dict[str, float | bool]] = {
    "expert": {"action_noise": 0.0, "jitter": 0.0, "detour_prob": 0.0},
    "near_optimal": {"action_noise": 0.1, "jitter": 0.005, "detour_prob": 0.0},
    "noisy": {"action_noise": 0.3, "jitter": 0.0, "detour_prob": 0.0},
    "dart": {"action_noise": 0.3, "jitter": 0.0, "detour_prob": 0.0, "record_clean": True},
    "suboptimal": {"action_noise": 0.5, "jitter": 0.02, "detour_prob": 0.02},
}
QUALITIES = (*PRESETS, "mixed")


@dataclass
class Quality:
    """Resolved quality knobs of one episode."""

    action_noise: float = 0.0
    jitter: float = 0.0
    detour_prob: float = 0.0
    detour_steps: int = 10
    record_clean: bool = False

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> Quality:
        if name not in PRESETS:
            raise ValueError(f"quality must be one of {list(QUALITIES)}, got {name!r}")
        knobs = dict(PRESETS[name])
        knobs.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**knobs)


def _key_dims(spec: envs.TaskSpec) -> tuple[int, ...]:
    """Widths of ``spec.obs_keys`` (a dict or a sequence in ``extra['obs_key_dims']``)."""
    dims = spec.extra.get("obs_key_dims")
    if dims is None:
        return (spec.obs_dim,)
    if isinstance(dims, dict):
        return tuple(int(dims[k]) for k in spec.obs_keys)
    return tuple(int(d) for d in dims)


def rollout_expert(
    task: str,
    seed: int,
    quality: Quality,
    max_episode_steps: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
    env: Any = None,
    image_key: str | None = None,
) -> tuple[Episode, Any]:
    """One scripted episode; returns it and the env (reuse it for the next episode).
    ``image_key``: also keep the env's rendered frame of every observation under that key
    (``Episode.images``, the frame after the last action in ``final_images``; build the env
    with ``pixels=True``)."""
    if env is None:
        env = envs.make_single(
            task, seed, max_episode_steps=max_episode_steps, **(env_kwargs or {})
        )
    expert = envs.make_expert(task, jitter=quality.jitter)
    rng = np.random.default_rng(seed)
    obs, reset_info = env.reset(seed=seed)
    expert.reset(env, rng)
    low, high = env.action_space.low, env.action_space.high
    rows: dict[str, list] = {"obs": [], "actions": [], "rewards": [], "dones": []}
    frames = [np.asarray(env.render(), np.uint8)] if image_key else []
    success = False
    detour_left, detour_action = 0, None
    while True:
        action = clean = np.clip(expert.act(obs), low, high)
        if detour_left == 0 and quality.detour_prob > 0 and rng.random() < quality.detour_prob:
            detour_left, detour_action = quality.detour_steps, rng.uniform(low, high)
        if detour_left > 0:
            action, detour_left = detour_action, detour_left - 1
        if quality.action_noise > 0:
            action = np.clip(
                action + rng.normal(0.0, quality.action_noise, action.shape), low, high
            )
        next_obs, reward, terminated, truncated, info = env.step(action.astype(np.float32))
        if image_key:
            frames.append(np.asarray(env.render(), np.uint8))
        rows["obs"].append(obs)
        rows["actions"].append(clean if quality.record_clean else action)
        rows["rewards"].append(reward)
        rows["dones"].append(terminated)
        success |= bool(info.get("success", False))
        obs = next_obs
        if terminated or truncated:
            break
    episode = Episode(
        obs=np.asarray(rows["obs"], np.float32),
        actions=np.asarray(rows["actions"], np.float32),
        rewards=np.asarray(rows["rewards"], np.float32),
        dones=np.asarray(rows["dones"], bool),
        success=success,
        final_obs=np.asarray(obs, np.float32),
        extra={"task": str(reset_info.get("task_name", task))},
    )
    if image_key:
        episode.images = {image_key: np.stack(frames[:-1])}
        episode.final_images = {image_key: frames[-1]}
    return episode, env


def success_by_task(dataset: DemoDataset) -> dict[str, dict[str, float]]:
    """Per task (``Episode.extra["task"]``, else the dataset's ``env_name``): episodes and
    success rate, sorted by task name."""
    default = str(dataset.env_args.get("env_name", ""))
    rows: dict[str, list[float]] = defaultdict(list)
    for ep in dataset:
        rows[str(ep.extra.get("task", default))].append(float(bool(ep.success)))
    return {
        name: {"episodes": len(v), "success_rate": float(np.mean(v))}
        for name, v in sorted(rows.items())
    }


def generate_demos(
    task: str,
    num_episodes: int,
    quality: str = "expert",
    seed: int = 1_000_000,
    out: str | Path | None = None,
    max_episode_steps: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
    action_noise: float | None = None,
    jitter: float | None = None,
    detour_prob: float | None = None,
    mixture: float = 0.5,
    only_success: bool = False,
    progress: bool = True,
    image_key: str | None = None,
) -> DemoDataset:
    """Roll out the scripted expert ``num_episodes`` times; write robomimic hdf5 to ``out``.

    ``quality='mixed'`` makes a ``mixture`` fraction of the episodes (chosen by the seed) expert
    and the rest suboptimal. ``only_success`` keeps drawing seeds until ``num_episodes``
    successful episodes exist (capped at 10x attempts). ``task='mt10'`` / ``'mt50'``: each
    episode is one task class drawn by its reset seed; the generation record keeps every
    episode's task (``episode_task``) and the success rate per task (``success_by_task``).
    ``image_key`` (e.g. ``agentview_image``) renders every observation too (``env_kwargs``
    gains ``pixels=True``; ``image_size`` and ``camera`` there choose the frame) and writes the
    frames in robomimic's layout, ``obs/<image_key>`` and ``next_obs/<image_key>``.
    """
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    knobs = {"action_noise": action_noise, "jitter": jitter, "detour_prob": detour_prob}
    pick = np.random.default_rng(seed)
    if image_key:
        env_kwargs = dict(env_kwargs or {}, pixels=True)
    spec = envs.task_spec(task, max_episode_steps=max_episode_steps, **(env_kwargs or {}))
    episodes: list[Episode] = []
    record: dict[str, Any] = {
        "seeds": [],
        "success": [],
        "episode_quality": [],
        "length": [],
        "episode_task": [],
    }
    # the env first (as the first episode would make it): a simulator that is not installed is
    # refused before the progress bar shows
    env = envs.make_single(task, seed, max_episode_steps=max_episode_steps, **(env_kwargs or {}))
    start = time.time()
    attempt = 0
    from tqdm import tqdm

    bar = tqdm(total=num_episodes, desc=f"demos {task}", disable=not progress, leave=False)
    while len(episodes) < num_episodes and attempt < 10 * num_episodes:
        name = quality
        if quality == "mixed":
            name = "expert" if pick.random() < mixture else "suboptimal"
        q = Quality.preset(name, **knobs)
        ep, env = rollout_expert(
            task, seed + attempt, q, max_episode_steps, env_kwargs, env, image_key
        )
        attempt += 1
        if only_success and not ep.success:
            continue
        ep.name = f"demo_{len(episodes)}"
        episodes.append(ep)
        record["seeds"].append(seed + attempt - 1)
        record["success"].append(bool(ep.success))
        record["episode_quality"].append(name)
        record["length"].append(len(ep))
        record["episode_task"].append(ep.extra["task"])
        bar.update(1)
    bar.close()
    env.close()
    if len(episodes) < num_episodes:
        raise RuntimeError(
            f"only {len(episodes)} of {num_episodes} successful episodes in {attempt} attempts"
        )
    env_args = {
        "env_name": task,
        "type": spec.suite,
        "env_kwargs": dict(env_kwargs or {}, max_episode_steps=spec.max_episode_steps),
    }
    generation = {
        "expert": f"envs.make_expert({task!r})",
        "task": task,
        "quality": quality,
        "knobs": asdict(Quality.preset("expert" if quality == "mixed" else quality, **knobs)),
        "mixture": mixture if quality == "mixed" else None,
        "first_seed": seed,
        "success_rate": float(np.mean(record["success"])),
        "wall_time_s": round(time.time() - start, 2),
        **record,
    }
    dataset = DemoDataset(
        episodes=episodes,
        env_args=env_args,
        source=str(out or ""),
        obs_keys=spec.obs_keys or ("state",),
        obs_key_dims=_key_dims(spec),
        metadata={"generation": generation},
    )
    generation["success_by_task"] = success_by_task(dataset)
    if out is not None:
        write_robomimic_hdf5(out, dataset, generation=generation)
    return dataset


def default_demo_path(cfg: Config) -> Path:
    d = cfg.task.demos
    name = f"{cfg.task.name}_{d.quality}_n{d.num_episodes}_T{cfg.task.max_episode_steps}_s{d.seed}"
    if d.action_noise is not None:
        name += f"_noise{d.action_noise:g}"
    if cfg.task.env_kwargs:
        # a different reward or termination makes different demos: key the cache on them
        blob = json.dumps(dict(cfg.task.env_kwargs), sort_keys=True).encode()
        name += "_" + hashlib.sha1(blob).hexdigest()[:8]
    if cfg.task.pixels:  # rendered demos: the camera and size make other files
        from otpr.pixels import image_key

        name += f"_{image_key(cfg)}{cfg.task.image_size}"
    return Path("data") / f"{name}.hdf5"


def task_spec_of(cfg: Config) -> envs.TaskSpec:
    """The task's static facts as the run configures it (horizon and env kwargs)."""
    t = cfg.task
    return envs.task_spec(t.name, max_episode_steps=t.max_episode_steps, **t.env_kwargs)


def load_demos(
    cfg: Config, spec: envs.TaskSpec | None = None, progress: bool = True
) -> DemoDataset:
    """Read the configured demo file, or generate (and cache) scripted demos, for ``spec``
    (default: ``task_spec_of(cfg)``). With ``task.pixels`` the episodes carry the camera's
    frames too (``Episode.images[otpr.pixels.image_key(cfg)]``), rendered when generated."""
    from otpr import data

    if spec is None:
        spec = task_spec_of(cfg)

    d = cfg.task.demos
    images: tuple[str, ...] = ()
    env_kwargs = dict(cfg.task.env_kwargs)
    if cfg.task.pixels:
        from otpr.pixels import image_key, pixel_env_kwargs

        images = (image_key(cfg),)
        env_kwargs.update(pixel_env_kwargs(cfg))
    if d.path is None:
        path = default_demo_path(cfg)
        if not path.exists():
            generate_demos(
                cfg.task.name,
                d.num_episodes,
                d.quality,
                seed=d.seed,
                out=path,
                max_episode_steps=cfg.task.max_episode_steps,
                env_kwargs=env_kwargs,
                action_noise=d.action_noise,
                progress=progress,
                image_key=images[0] if images else None,
            )
        dataset = data.read_robomimic_hdf5(path, action_dim=spec.action_dim, image_keys=images)
    elif d.format == "robomimic":
        dataset = data.read_robomimic_hdf5(
            d.path,
            obs_keys=d.obs_keys,
            filter_key=d.filter_key,
            action_dim=spec.action_dim,
            image_keys=images,
        )
    elif images:
        raise data.DatasetError(
            f"{d.path}: task.pixels reads images from robomimic files only, not {d.format}"
        )
    elif d.format == "d4rl":
        dataset = data.read_d4rl_hdf5(d.path, action_dim=spec.action_dim)
    elif d.format == "minari":
        path = Path(d.path)
        dataset = data.read_minari(path.name, path.parent)
    else:
        dataset = data.read_calvin_episodes(d.path, action_dim=spec.action_dim)
    if dataset.obs_dim != spec.obs_dim or dataset.action_dim != spec.action_dim:
        raise data.DatasetError(
            f"{dataset.source or d.path}: observations/actions are {dataset.obs_dim}/"
            f"{dataset.action_dim}-D, but task {cfg.task.name!r} expects "
            f"{spec.obs_dim}/{spec.action_dim}-D"
        )
    return dataset


def demo_transitions(
    dataset: DemoDataset, obs_horizon: int, horizon: int, act_steps: int, gamma: float
) -> dict[str, np.ndarray]:
    """Chunk transitions of the demos, as the loop would have stored them.

    Decisions are taken every ``act_steps`` steps from t = 0. The last chunk of an episode
    bootstraps from ``final_obs`` when the file has it; without it, a final chunk that ends in a
    time limit (not a terminal state) is dropped rather than given a wrong next observation.
    """
    rows: dict[str, list] = defaultdict(list)
    for ep in dataset:
        T = len(ep)
        obs_all = ep.obs if ep.final_obs is None else np.concatenate([ep.obs, ep.final_obs[None]])
        single = DemoDataset(
            [
                Episode(
                    obs_all,
                    _pad_actions(ep.actions, len(obs_all)),
                    np.zeros(len(obs_all)),
                    np.zeros(len(obs_all), bool),
                )
            ]
        )
        win_obs, win_act = make_windows(single, obs_horizon, horizon)
        for t in range(0, T, act_steps):
            k = min(act_steps, T - t)
            terminated = bool(ep.dones[t : t + k].any())
            if terminated:
                k = int(np.argmax(ep.dones[t : t + k])) + 1
            if t + k == T and not terminated and ep.final_obs is None:
                continue
            rows["obs"].append(win_obs[t])
            rows["actions"].append(win_act[t])
            rows["reward"].append(float(np.sum(ep.rewards[t : t + k] * gamma ** np.arange(k))))
            rows["discount"].append(gamma**k)
            rows["next_obs"].append(win_obs[min(t + k, len(obs_all) - 1)])
            rows["terminated"].append(float(terminated))
            if terminated:
                break
    return {k: np.asarray(v, np.float32) for k, v in rows.items()}


def _pad_actions(actions: np.ndarray, n: int) -> np.ndarray:
    if len(actions) >= n:
        return actions
    return np.concatenate([actions, np.repeat(actions[-1:], n - len(actions), 0)])
