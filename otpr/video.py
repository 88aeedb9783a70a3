"""Videos of evaluation episodes: what a policy does, as mp4 files a person can watch.

Which episodes. ``video=N`` films the evaluation's first N episodes (``evaluation.play_episodes``
order: round * eval_num_envs + member) by running them again with the same code path: the same
vector env of ``task.eval_num_envs`` members seeded from ``task.eval_seed``, the same acting
policy in the same sampling context, the same generator seeded from ``task.eval_seed``; only
the members are built with ``render_mode="rgb_array"`` and wrapped in ``envs.RecordFrames``,
and the run stops as soon as the N filmed episodes have ended. The evaluation itself never
renders, so its numbers cannot depend on the video; rendering reads the simulator without
changing it, so the filmed episodes are the evaluation's own (tests/otpr/test_video.py checks
each filmed outcome against the evaluation's, and the metrics with and without video)::

    evaluation   members 0..M-1, seeds eval_seed + i, generator(eval_seed)   -> eval/* metrics
    filming      the same, rendering on, until episodes 0..N-1 have ended     -> N mp4 files

Files. ``<out_dir>/<prefix>episode_<k:03d>_<success|fail>.mp4``, k the episode's place in the
evaluation; the outcome is the episode's own (success at some step). An episode of T steps is
T + 1 frames (the reset's, then one per step), ``video_size`` square, at the env's control rate
(``render_fps``: Meta-World 80, robosuite 20, Kitchen 12 frames/s), so it plays in real time.
Frames come from the env's ``render()`` (the suite's camera, offscreen: ``envs/render.py``
chooses ``MUJOCO_GL``); a frame of another size (an env that renders at its own image size) is
resized.

Writer. OpenCV's FFmpeg with the MPEG-4 Part 2 codec (fourcc ``mp4v``): the one mp4 encoder in
the opencv-python wheel (its FFmpeg has no H.264 encoder, and imageio has no ffmpeg plugin
installed). VLC, mpv, ffmpeg and QuickTime play it; web browsers do not (they want H.264:
``ffmpeg -i in.mp4 -c:v libx264 -pix_fmt yuv420p out.mp4``). Each file is written under a
temporary name and renamed when its episode ends.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from otpr.evaluation import ActFn, Episode, play_episodes

FOURCC = "mp4v"


def video_name(index: int, success: bool, prefix: str = "") -> str:
    """The file name of episode ``index``: ``<prefix>episode_003_success.mp4`` / ``_fail``."""
    return f"{prefix}episode_{index:03d}_{'success' if success else 'fail'}.mp4"


class Mp4Writer:
    """Writes RGB uint8 frames to an mp4 file (``mp4v``), ``size`` x ``size`` pixels."""

    def __init__(self, path: str | Path, fps: float, size: int) -> None:
        import cv2

        self.path = Path(path)
        self.size = int(size)
        self.frames = 0
        self._writer = cv2.VideoWriter(
            str(self.path), cv2.VideoWriter_fourcc(*FOURCC), float(fps), (self.size, self.size)
        )
        if not self._writer.isOpened():
            raise RuntimeError(
                f"{self.path}: OpenCV cannot write mp4 ({FOURCC}) here; is opencv-python's "
                "FFmpeg backend present (cv2.getBuildInformation(), Video I/O)?"
            )

    def write(self, frame: np.ndarray) -> None:
        import cv2

        frame = np.asarray(frame, dtype=np.uint8)
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"{self.path}: expected an HxWx3 RGB frame, got shape {frame.shape}")
        if frame.shape[:2] != (self.size, self.size):
            frame = cv2.resize(frame, (self.size, self.size), interpolation=cv2.INTER_AREA)
        self._writer.write(np.ascontiguousarray(frame[..., ::-1]))  # OpenCV wants BGR
        self.frames += 1

    def close(self) -> None:
        self._writer.release()


class _Film:
    """The observer of ``play_episodes`` that routes each member's frames to the file of its
    episode and names the file by the outcome when the episode ends."""

    def __init__(
        self, count: int, num_envs: int, out_dir: Path, prefix: str, size: int, fps: float
    ) -> None:
        self.count, self.num_envs = count, num_envs
        self.out_dir, self.prefix, self.size, self.fps = out_dir, prefix, size, fps
        self.writers: dict[int, Mp4Writer] = {}
        self.written: list[Path] = []
        self.on_written: Any = None

    def stepped(self, env: Any) -> None:
        for member, frames in enumerate(env.call("pop_frames")):
            for episode, frame in frames:
                index = episode * self.num_envs + member
                if index >= self.count:
                    continue
                if index not in self.writers:
                    part = self.out_dir / f".{self.prefix}episode_{index:03d}.part.mp4"
                    self.writers[index] = Mp4Writer(part, self.fps, self.size)
                self.writers[index].write(frame)

    def finished(self, episode: Episode) -> None:
        writer = self.writers.pop(episode.index)
        writer.close()
        if writer.frames != episode.steps + 1:  # the reset's frame and one per step
            raise RuntimeError(
                f"{writer.path}: {writer.frames} frames for an episode of {episode.steps} steps"
            )
        path = self.out_dir / video_name(episode.index, episode.success, self.prefix)
        os.replace(writer.path, path)
        self.written.append(path)
        if self.on_written is not None:
            self.on_written(path)

    def abandon(self) -> None:
        for writer in self.writers.values():
            writer.close()
            writer.path.unlink(missing_ok=True)
        self.writers.clear()


def film_members(count: int, num_envs: int) -> list[int]:
    """How many episodes each member films so that episodes 0..count-1 are filmed (episode k
    is member k % num_envs's round k // num_envs)."""
    return [max(0, math.ceil((count - i) / num_envs)) for i in range(num_envs)]


def film_episodes(
    env: Any,
    act: ActFn,
    count: int,
    num_envs: int,
    seed: int,
    act_steps: int,
    out_dir: str | Path,
    size: int,
    prefix: str = "",
    fps: float | None = None,
    progress: bool = False,
) -> list[Path]:
    """Films episodes 0..count-1 of ``play_episodes(env, act, count, num_envs, seed,
    act_steps)`` into ``out_dir`` (module docstring); returns the files, in episode order.

    ``env``: the evaluation's vector env built with ``record_frames=True`` and members that
    render (``render_mode="rgb_array"``). Earlier videos of the same ``prefix`` in ``out_dir``
    are replaced. ``fps`` defaults to the env's ``render_fps``.
    """
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob(f"{prefix}episode_[0-9][0-9][0-9]*_*.mp4"):
        old.unlink()
    if fps is None:
        fps = float(env.get_attr("metadata")[0].get("render_fps") or 20)
    env.set_attr("film_episodes", film_members(count, num_envs))
    film = _Film(count, num_envs, out, prefix, size, fps)
    bar = tqdm(total=count, desc="video", disable=not progress, leave=False)
    film.on_written = lambda _: bar.update(1)
    try:
        play_episodes(env, act, count, num_envs, seed, act_steps, observer=film)
    finally:
        film.abandon()  # the partial files of an interrupted run
        bar.close()
    return sorted(film.written)
