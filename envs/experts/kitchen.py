"""A scripted Franka Kitchen expert: handle waypoints in object frames + differential IK.

Each goal subtask is a short script of end-effector (EE) pose targets, written in the frame of
the object it acts on, for example the microwave door's handle at the door angle ``theta``::

    approach   EE 10 cm in front of the handle, fingers open
    reach      EE site just in front of the handle axis (the pads around it), fingers open
    grasp      fingers close (hold pose)
    articulate follow the handle at theta_cmd = theta_now + lead until theta passes the goal
    release    fingers open
    retreat    EE 10 cm back along the approach axis

Object frames at any joint value come from forward kinematics on a scratch ``MjData``
(``mj_kinematics`` with only that joint changed), so the waypoints follow the door, slide, knob
or switch as it moves. The kettle is grasped from above at its handle and carried along body
waypoints (lift, over the top-left burner, down). Subtasks run in the task set's D4RL order.

Control (privileged: reads the true ``MjData`` of the env it is reset with; ``obs`` is unused).
The EE pose error ``e = [p* - p; log(R* R^T)]`` (site ``end_effector``, world frame), clipped
per step, maps to joint increments by damped least squares on the site Jacobian
(``mujoco.mj_jacSite``, arm columns; joints a step would push past their limits are locked)::

    dq = J^T (J J^T + lambda^2 I)^-1 W e  +  (I - J^+ J) k_null (q_home - q)  +  tau_bias / k_p

The last term is gravity feed-forward for the position servos (FrankaKitchen-v1's actuators are
pure P servos, ``k_p`` = 870 / 120 N m/rad). FrankaKitchen-v1 sends the servos
``q + 2 a dt`` (``dt`` = 0.08 s), so the arm action is ``a = dq / (2 dt)`` clipped to [-1, 1];
the fingers get +1 (open) or -1 (close).

``jitter`` (metres): each subtask draws one Gaussian offset (std ``jitter``, clipped to 2 std)
added to all its EE waypoints, so a jittered expert systematically grasps off-centre within an
episode rather than shaking (its success rate per subtask: docs/results.md, benchmarks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import gymnasium as gym
import mujoco
import numpy as np

ARM_DOF = 7
EE_SITE = "end_effector"
ACT_SCALE = 2.0  # FrankaKitchen-v1: joint velocity = 2 * action (act_rng)
OPEN, CLOSE = 1.0, -1.0
# A nominal arm posture for the null-space term (FrankaKitchen-v1's initial arm pose).
Q_HOME = np.array([0.148, -1.768, 1.844, -2.477, 0.260, 0.713, 1.595])

Pose = tuple[np.ndarray, np.ndarray]  # (position (3,), rotation matrix (3, 3))


def _rot(x: Sequence[float], y: Sequence[float], z: Sequence[float]) -> np.ndarray:
    """Rotation matrix whose columns are the given axes."""
    return np.stack([np.asarray(x, float), np.asarray(y, float), np.asarray(z, float)], axis=1)


# EE site axes: z = approach (out of the fingertips), y = finger closing axis, x = y cross z.
# Grasp orientations relative to the object body frame:
_R_FRONT = _rot((0, 0, 1), (1, 0, 0), (0, 1, 0))  # approach body +y, fingers along body x
_R_KNOB = _rot((0, 1, 0), (1, 0, 0), (0, 0, -1))  # approach knob -z (into the oven), bar vertical
_R_TOP = _rot((1, 0, 0), (0, -1, 0), (0, 0, -1))  # approach -z (down), fingers along body y


def _compose(a: Pose, b: Pose) -> Pose:
    return a[0] + a[1] @ b[0], a[1] @ b[1]


def _inverse(a: Pose) -> Pose:
    return -a[1].T @ a[0], a[1].T


def _rotvec(r: np.ndarray) -> np.ndarray:
    """Axis * angle of a rotation matrix (shortest way round)."""
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, r.reshape(-1))
    if quat[0] < 0:
        quat = -quat
    vel = np.zeros(3)
    mujoco.mju_quat2Vel(vel, quat, 1.0)
    return vel


@dataclass
class _Segment:
    """One scripted segment: an EE target, a gripper command and a completion test."""

    target: Callable[[], Pose]
    gripper: float
    done: Callable[[], bool]
    max_steps: int
    on_enter: Callable[[], None] | None = None
    name: str = ""


@dataclass
class _Articulation:
    """A 1-DoF object acted on through a handle frame attached to one of its bodies."""

    joint: str
    body: str
    goal: float  # commanded final joint value (past D4RL's goal threshold)
    done_at: float  # the segment ends once the joint is beyond this value
    point: tuple[float, float, float]  # where the EE site goes, in the body frame
    rot: np.ndarray = field(default_factory=lambda: _R_FRONT)  # EE orientation in the body frame
    grasp: bool = True  # False: push with closed fingers
    rotate: bool = False  # the EE orientation follows the body (knob twist) or stays fixed
    pitch: float = 0.0  # tilt of the approach about the finger axis (rad, < 0: downwards)
    lead: float = 0.15  # how far the commanded joint value runs ahead of the actual one
    standoff: float = 0.10  # approach distance in front of the handle (m)


# The EE site sits 5 cm behind the fingertips; the finger pads span 1 cm behind to 5 cm in front
# of it. Handles, in their body frames: the microwave's vertical capsule (radius 2 cm) at
# (0.475, -0.108, 0) in the door, grasped 1.2 cm in front of the site (deep: the door is pulled
# mostly along the approach axis, i.e. by friction; at 2.5 cm a 1 cm waypoint offset made it slip);
# the slide cabinet's at (-0.183, -0.123, 0) in its link, 2.5 cm in front (pulled along the finger
# axis); the knob bar from z = 0.02 to 0.056 in the knob body (approach -z, tilted 0.7 rad down
# so that wrist joint 6 stays off its limit while twisting); the light switch lever tip at
# (0.0315, -0.075, 0), pushed towards -x by the side of the closed fingers.
ARTICULATIONS: dict[str, _Articulation] = {
    "microwave": _Articulation(
        joint="microwave",
        body="microdoorroot",
        goal=-0.85,
        done_at=-0.7,
        point=(0.475, -0.108 - 0.012, 0.0),
    ),
    "slide cabinet": _Articulation(
        joint="slide_cabinet",
        body="slidelink",
        goal=0.32,
        done_at=0.27,
        point=(-0.183, -0.123 - 0.025, 0.0),
        lead=0.06,
    ),
    "bottom burner": _Articulation(
        joint="knob_Joint_2",
        body="knob 2",
        goal=-1.0,
        done_at=-0.72,
        point=(0.0, 0.0, 0.075),
        rot=_R_KNOB,
        rotate=True,
        pitch=-0.7,
        lead=0.3,
    ),
    "light switch": _Articulation(
        joint="light_switch",
        body="lightswitchroot",
        goal=-0.7,
        done_at=-0.55,
        point=(0.0315 + 0.055, -0.075 - 0.02, 0.0),
        grasp=False,
        lead=0.6,
    ),
}

# Kettle: FrankaKitchen-v1's goal puts the kettle at (-0.23, 0.75, 1.62) (top-left burner); it
# counts once within 0.3 (7-D pose distance), and carrying it further than y = 0.56 makes the
# wrist (link 6) hit the burner knobs under the hood, so it is set down at y = 0.56 (distance
# ~0.19). Grasped from above, the handle axis (0.259 above the origin) 1 cm below the EE site.
KETTLE_HANDLE = (0.0, 0.0, 0.259 + 0.01)
KETTLE_LIFT = 0.05
KETTLE_GOAL_XY = (-0.23, 0.56)


class KitchenExpert:
    """Scripted expert for a list of FrankaKitchen subtasks (see the module docstring).

    Supported subtasks: microwave, kettle, light switch, slide cabinet, bottom burner.
    """

    def __init__(
        self,
        subtasks: Sequence[str],
        jitter: float = 0.0,
        max_lin_step: float = 0.05,
        max_ang_step: float = 0.25,
        damping: float = 0.05,
        rot_weight: float = 0.5,
        null_gain: float = 0.05,
    ) -> None:
        supported = set(ARTICULATIONS) | {"kettle"}
        unknown = [t for t in subtasks if t not in supported]
        if unknown:
            raise ValueError(
                f"KitchenExpert cannot script subtasks {unknown}: expected some of "
                f"{sorted(supported)}"
            )
        if jitter < 0:
            raise ValueError(f"jitter must be >= 0 (metres), got {jitter}")
        self.subtasks = tuple(subtasks)
        self.jitter = float(jitter)
        self.max_lin_step = max_lin_step
        self.max_ang_step = max_ang_step
        self.damping = damping
        self.rot_weight = rot_weight
        self.null_gain = null_gain
        self._segments: list[_Segment] = []
        self._index = 0
        self._steps = 0

    # ----------------------------------------------------------------------------- simulator
    def reset(self, env: gym.Env, rng: np.random.Generator) -> None:
        sim = env.unwrapped
        if hasattr(sim, "sim_env"):
            sim = sim.sim_env
        self._model = sim.model
        self._data = sim.data
        self._dt = float(self._model.opt.timestep * sim.robot_env.frame_skip)
        self._scratch = mujoco.MjData(self._model)
        self._site = self._model.site(EE_SITE).id
        self._kp = self._model.actuator_gainprm[:ARM_DOF, 0].copy()
        self._limits = self._model.jnt_range[:ARM_DOF].copy()
        self._jacp = np.zeros((3, self._model.nv))
        self._jacr = np.zeros((3, self._model.nv))
        self._segments = []
        for task in self.subtasks:
            offset = np.zeros(3)
            if self.jitter > 0:
                offset = np.clip(rng.normal(0.0, self.jitter, 3), -2 * self.jitter, 2 * self.jitter)
            if task == "kettle":
                self._segments += self._kettle_script(offset)
            else:
                self._segments += self._articulation_script(ARTICULATIONS[task], offset)
        self._index = 0
        self._steps = 0
        if self._segments[0].on_enter is not None:
            self._segments[0].on_enter()

    def _ee(self) -> Pose:
        d = self._data
        return d.site_xpos[self._site].copy(), d.site_xmat[self._site].reshape(3, 3).copy()

    def _joint(self, name: str) -> tuple[int, float]:
        adr = int(self._model.jnt_qposadr[self._model.joint(name).id])
        return adr, float(self._data.qpos[adr])

    def _body_pose(self, body: str, adr: int | None = None, value: float | None = None) -> Pose:
        """Pose of ``body`` with joint qpos[adr] set to ``value`` (forward kinematics only)."""
        s = self._scratch
        s.qpos[:] = self._data.qpos
        if adr is not None:
            s.qpos[adr] = value
        mujoco.mj_kinematics(self._model, s)
        bid = self._model.body(body).id
        return s.xpos[bid].copy(), s.xmat[bid].reshape(3, 3).copy()

    def _reached(
        self, target: Callable[[], Pose], tol: float = 0.012, rot_tol: float = 0.1
    ) -> Callable[[], bool]:
        def done() -> bool:
            p, r = self._ee()
            pt, rt = target()
            return bool(
                np.linalg.norm(pt - p) < tol and np.linalg.norm(_rotvec(rt @ r.T)) < rot_tol
            )

        return done

    def _after(self, n: int) -> Callable[[], bool]:
        return lambda: self._steps >= n

    # ----------------------------------------------------------------------------- scripts
    def _articulation_script(self, art: _Articulation, offset: np.ndarray) -> list[_Segment]:
        adr, _ = self._joint(art.joint)
        sign = np.sign(art.goal - self._data.qpos[adr])
        point = np.asarray(art.point)
        c, s = np.cos(art.pitch), np.sin(art.pitch)
        grasp_rot = art.rot @ np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
        state: dict[str, Pose] = {}

        def site_target(back: float = 0.0) -> Pose:
            pos, rot = _compose(self._body_pose(art.body), (point, grasp_rot))
            return pos - back * rot[:, 2] + offset, rot

        def grab() -> None:
            frame = self._body_pose(art.body)
            p, r = self._ee()
            if art.rotate:
                state["hold"] = _compose(_inverse(frame), (p, r))
            else:  # the EE keeps its orientation and its offset from the handle point
                state["hold"] = (p - (frame[0] + frame[1] @ point), r)

        def follow() -> Pose:
            now = self._data.qpos[adr]
            cmd = now + sign * art.lead
            cmd = min(cmd, art.goal) if sign > 0 else max(cmd, art.goal)
            frame = self._body_pose(art.body, adr, cmd)
            if art.rotate:
                return _compose(frame, state["hold"])
            return frame[0] + frame[1] @ point + state["hold"][0], state["hold"][1]

        def past() -> bool:
            return bool(sign * (self._data.qpos[adr] - art.done_at) > 0)

        def mark_end() -> None:
            state["end"] = self._ee()

        def retreat() -> Pose:
            pos, rot = state["end"]
            return pos - art.standoff * rot[:, 2], rot

        grip = OPEN if art.grasp else CLOSE
        approach = lambda: site_target(art.standoff)  # noqa: E731
        reach = lambda: site_target()  # noqa: E731
        hold = lambda: state["end"]  # noqa: E731
        return [
            _Segment(approach, grip, self._reached(approach, 0.03), 60, None, "approach"),
            _Segment(reach, grip, self._reached(reach), 40, None, "reach"),
            _Segment(reach, CLOSE, self._after(4 if art.grasp else 0), 4, None, "grasp"),
            _Segment(follow, CLOSE, past, 80, grab, "articulate"),
            _Segment(hold, OPEN, self._after(3 if art.grasp else 0), 3, mark_end, "release"),
            _Segment(retreat, OPEN, self._reached(retreat, 0.04), 30, None, "retreat"),
        ]

    def _kettle_script(self, offset: np.ndarray) -> list[_Segment]:
        state: dict[str, Pose] = {}
        handle = (np.asarray(KETTLE_HANDLE), _R_TOP)

        def kettle() -> Pose:
            return self._body_pose("kettle")

        def grasp_pose(up: float = 0.0) -> Pose:
            # Grasp orientation from the kettle's yaw only (it stands upright).
            pos, rot = kettle()
            yaw = np.arctan2(rot[1, 0], rot[0, 0])
            c, s = np.cos(yaw), np.sin(yaw)
            upright = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
            p, r = _compose((pos, upright), handle)
            return p + np.array([0.0, 0.0, up]) + offset, r

        def grab() -> None:
            state["hold"] = _compose(_inverse(kettle()), self._ee())
            pos, rot = kettle()
            lift = pos + np.array([0.0, 0.0, KETTLE_LIFT])
            above = np.array([KETTLE_GOAL_XY[0], KETTLE_GOAL_XY[1], lift[2]])
            down = np.array([KETTLE_GOAL_XY[0], KETTLE_GOAL_XY[1], pos[2] - 0.01])
            state["lift"], state["above"], state["down"] = (
                (lift, rot),
                (above, rot),
                (down, rot),
            )

        def carry(key: str) -> Callable[[], Pose]:
            return lambda: _compose(state[key], state["hold"])

        def kettle_at(key: str, tol: float) -> Callable[[], bool]:
            return lambda: bool(np.linalg.norm(kettle()[0] - state[key][0]) < tol)

        def kettle_down() -> bool:
            return bool(kettle()[0][2] < state["down"][0][2] + 0.02)

        def mark_end() -> None:
            state["end"] = self._ee()

        def up() -> Pose:
            pos, rot = state["end"]
            return pos + np.array([0.0, 0.0, 0.08]), rot

        approach = lambda: grasp_pose(0.1)  # noqa: E731
        reach = lambda: grasp_pose()  # noqa: E731
        return [
            _Segment(approach, OPEN, self._reached(approach, 0.03), 60, None, "approach"),
            _Segment(reach, OPEN, self._reached(reach), 40, None, "reach"),
            _Segment(reach, CLOSE, self._after(5), 5, None, "grasp"),
            _Segment(carry("lift"), CLOSE, kettle_at("lift", 0.02), 30, grab, "lift"),
            _Segment(carry("above"), CLOSE, kettle_at("above", 0.03), 60, None, "carry"),
            _Segment(carry("down"), CLOSE, kettle_down, 15, None, "lower"),
            _Segment(lambda: state["end"], OPEN, self._after(3), 3, mark_end, "release"),
            _Segment(up, OPEN, self._reached(up, 0.03), 15, None, "retreat"),
        ]

    # ----------------------------------------------------------------------------- control
    @property
    def segment(self) -> str:
        """Name of the running segment (``done`` once the script is over)."""
        if self._index >= len(self._segments):
            return "done"
        return self._segments[self._index].name

    def _advance(self) -> None:
        for _ in range(len(self._segments)):
            if self._index >= len(self._segments):
                return
            seg = self._segments[self._index]
            if not (seg.done() or self._steps >= seg.max_steps):
                return
            self._index += 1
            self._steps = 0
            if self._index < len(self._segments):
                nxt = self._segments[self._index]
                if nxt.on_enter is not None:
                    nxt.on_enter()

    def act(self, obs: np.ndarray) -> np.ndarray:
        if not self._segments:
            raise RuntimeError("KitchenExpert.act() called before reset(env, rng)")
        self._advance()
        if self._index >= len(self._segments):
            target, grip = self._ee(), OPEN
        else:
            seg = self._segments[self._index]
            target, grip = seg.target(), seg.gripper
        self._steps += 1
        action = np.empty(9, dtype=np.float32)
        action[:ARM_DOF] = self._ik(*target)
        action[ARM_DOF:] = grip
        return action

    def _ik(self, p_target: np.ndarray, r_target: np.ndarray) -> np.ndarray:
        """Damped-least-squares joint increment to the target pose, as an arm action.

        Joints that the step would push past their limits (less a 0.05 rad margin) are locked
        and the step is solved again without them.
        """
        m, d = self._model, self._data
        p, r = self._ee()
        e_p = p_target - p
        n = np.linalg.norm(e_p)
        if n > self.max_lin_step:
            e_p *= self.max_lin_step / n
        e_r = _rotvec(r_target @ r.T)
        n = np.linalg.norm(e_r)
        if n > self.max_ang_step:
            e_r *= self.max_ang_step / n
        mujoco.mj_jacSite(m, d, self._jacp, self._jacr, self._site)
        w = np.array([1.0, 1.0, 1.0] + [self.rot_weight] * 3)
        jac_full = np.vstack([self._jacp[:, :ARM_DOF], self._jacr[:, :ARM_DOF]]) * w[:, None]
        err = np.concatenate([e_p, e_r]) * w
        q = d.qpos[:ARM_DOF].copy()
        lo, hi = self._limits[:, 0] + 0.05, self._limits[:, 1] - 0.05
        free = np.ones(ARM_DOF)
        for _ in range(3):
            jac = jac_full * free
            jjt = jac @ jac.T + self.damping**2 * np.eye(6)
            dq = jac.T @ np.linalg.solve(jjt, err)
            pinv = jac.T @ np.linalg.solve(jjt, jac)
            dq += free * ((np.eye(ARM_DOF) - pinv) @ (self.null_gain * (Q_HOME - q)))
            blocked = ((q + dq < lo) & (dq < 0)) | ((q + dq > hi) & (dq > 0))
            if not (blocked & (free > 0)).any():
                break
            free[blocked] = 0.0
        dq += d.qfrc_bias[:ARM_DOF] / self._kp  # gravity feed-forward for the P servos
        return np.clip(dq / (ACT_SCALE * self._dt), -1.0, 1.0)


def make_kitchen_expert(task: str, jitter: float = 0.0) -> KitchenExpert:
    """The scripted expert for a kitchen task set (``kitchen-complete`` etc.)."""
    from envs.kitchen import KITCHEN_TASKS

    if task not in KITCHEN_TASKS:
        raise ValueError(f"no kitchen expert for {task!r}: expected one of {list(KITCHEN_TASKS)}")
    return KitchenExpert(KITCHEN_TASKS[task].extra["subtasks"], jitter=jitter)
