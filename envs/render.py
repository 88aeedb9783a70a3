"""Offscreen rendering: which OpenGL backend MuJoCo uses, and cheap scenes.

MuJoCo renders offscreen through the backend named by ``MUJOCO_GL`` (``egl``: a GPU or Mesa's
software EGL; ``osmesa``: Mesa's software renderer, ``apt-get install libosmesa6``; ``glfw``: a
window system). The choice is made once per process: gymnasium reads it when a renderer is
built, robosuite when it is imported (and forces ``egl`` then if unset), PyOpenGL binds its
platform on first use. So :func:`choose_gl` runs before the first rendering env is built:
with ``MUJOCO_GL`` unset it tries ``egl``, then ``osmesa``, each in a child process that
renders one frame (a backend that fails to load leaves a process unable to try another), and
sets the first that works for this process and its children::

    MUJOCO_GL unset  ->  egl renders? -> egl   else  osmesa renders? -> osmesa   else  RenderError
    MUJOCO_GL set    ->  kept (:func:`check_gl` tries it first; :func:`render_failure` words
                         a failure while filming)

A failure is one line that names the setting (:class:`RenderError`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

#: Backends tried, in order, when ``MUJOCO_GL`` is unset.
BACKENDS = ("egl", "osmesa")

_PROBE = (
    "import mujoco; m = mujoco.MjModel.from_xml_string('<mujoco/>'); "
    "r = mujoco.Renderer(m, 8, 8); r.update_scene(mujoco.MjData(m)); r.render(); r.close()"
)
_tried: dict[str, str | None] = {}  # backend -> None (renders) or why it does not


class RenderError(RuntimeError):
    """Offscreen rendering is unavailable or failed; the message names ``MUJOCO_GL``."""


def _probe(backend: str) -> str | None:
    """None when MuJoCo renders a frame with ``MUJOCO_GL=backend`` (in a child process),
    else the last line of the child's error."""
    if backend not in _tried:
        env = dict(os.environ, MUJOCO_GL=backend)
        env.pop("PYOPENGL_PLATFORM", None)  # mujoco sets it to match the backend
        try:
            done = subprocess.run(
                [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=60
            )
            lines = [x.strip() for x in done.stderr.splitlines() if x.strip()] or [
                f"exit status {done.returncode}"
            ]
            why = None if done.returncode == 0 else lines[-1]
        except subprocess.TimeoutExpired:
            why = "no frame within 60 s"
        _tried[backend] = why
    return _tried[backend]


def choose_gl() -> str:
    """The ``MUJOCO_GL`` backend to render with: the one set, else the first of
    :data:`BACKENDS` that renders (then set in ``os.environ``); :class:`RenderError` if none
    does."""
    current = os.environ.get("MUJOCO_GL")
    if current:
        return current
    failures = []
    for backend in BACKENDS:
        why = _probe(backend)
        if why is None:
            os.environ["MUJOCO_GL"] = backend
            return backend
        failures.append(f"{backend}: {why}")
    raise RenderError(
        f"MUJOCO_GL: no offscreen OpenGL backend renders here ({'; '.join(failures)}); install "
        "EGL (libegl1) or OSMesa (libosmesa6) and set MUJOCO_GL=egl or MUJOCO_GL=osmesa, or turn "
        "videos off with video=0"
    )


def check_gl() -> str:
    """:func:`choose_gl`, and a ``MUJOCO_GL`` that was set is tried too (a child renders one
    frame), so that a command refuses a backend that cannot render before it does any work."""
    preset = os.environ.get("MUJOCO_GL")
    backend = choose_gl()
    why = _probe(preset) if preset else None
    if why is not None:
        others = " or ".join(f"MUJOCO_GL={b}" for b in BACKENDS if b != preset)
        raise RenderError(
            f"MUJOCO_GL={preset}: cannot render offscreen ({why}); set {others} (osmesa needs "
            "libosmesa6), or turn videos off with video=0"
        )
    return backend


def render_failure(err: BaseException) -> RenderError:
    """``err``, raised while building a renderer or drawing a frame, as one line naming
    ``MUJOCO_GL`` and what to set instead."""
    lines = [x.strip() for x in str(err).splitlines() if x.strip()]
    what = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
    gl = os.environ.get("MUJOCO_GL")
    others = " or ".join(f"MUJOCO_GL={b}" for b in BACKENDS if b != gl)
    return RenderError(
        f"MUJOCO_GL={gl or '(unset)'}: rendering failed ({what}); set {others} (osmesa needs "
        "libosmesa6), or turn videos off with video=0"
    )


def fast_render_model(model: Any) -> None:
    """Switch off shadows, reflections and multisampling in a MuJoCo ``MjModel`` (what a frame
    costs to draw, not the physics). Measured with software rendering on two busy cores:
    Meta-World 256x256 ~700 -> ~70 ms a frame, Kitchen 84x84 ~480 -> ~20 ms."""
    model.light_castshadow[:] = 0
    model.mat_reflectance[:] = 0.0
    model.vis.quality.offsamples = 0
