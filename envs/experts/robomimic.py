"""Waypoint experts for the robomimic tasks (envs/robomimic.py) on the OSC_POSE controller.

Each expert is a small state machine over phases (approach above the object, descend, grasp,
lift, transport, place / insert, release, retreat). A phase names a target for the eef site
(position, gripper yaw, gripper command) and ends when the target is reached or after a
time-out. Targets are read from the simulator (privileged object poses), so the expert re-plans
while the object moves.

Control. OSC_POSE moves its goal by ``0.05 m`` / ``0.5 rad`` per unit action (the controller's
``output_max``), so a P-controller that puts the goal on the target is

    a_pos = (p* - p) / 0.05,        a_rot = log(R* R^T) / 0.5,

scaled down together so that no entry exceeds 1 (the direction is kept). ``R*`` points the
gripper straight down with the finger-closing axis at yaw ``psi*``; ``log`` is the rotation
vector in the world frame (OSC_POSE premultiplies its goal orientation by the commanded
rotation). ``psi*`` moves at most 0.4 rad per step towards the phase's yaw, so a large turn goes
the way the phase asks and not the shortest way round.

Yaw. Yaws are *turns*: unwrapped angles of the finger-closing axis (the eef site's x axis)
relative to its yaw at reset. From the reset pose the Panda reached turns of -2.58 rad (wrist
joint at its limit) and +3.4 rad (wrist joint 0.56 rad from its limit); the experts keep to
``TURN_RANGE``. The cube (90-degree symmetric) is
grasped across a face, at the turn of smallest magnitude. The square nut is grasped across its
handle (the handle points along the nut's local x, the fingers close along its local y); then
the nut is turned so that the handle points at the robot (-x, where the peg is easiest to reach:
with the handle pointing away the arm runs out of reach) and its sides are square to the peg.
Of the two grasps (180 degrees apart) the one with the least total turning that stays in
``TURN_RANGE`` is used (the handle ends sideways only if neither grasp can end at -x).

``jitter`` is the standard deviation (metres) of Gaussian offsets added to every waypoint, one
3-vector per phase drawn from the rng at ``reset``; ``jitter=0`` is the deterministic expert.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from envs.base import ScriptedExpert

POS_SCALE = 0.05  # OSC_POSE output_max, metres per unit action
ROT_SCALE = 0.5  # radians per unit action
MAX_TURN_STEP = 0.4  # radians the commanded yaw leads the gripper's
TURN_RANGE = (-2.2, 3.45)  # allowed turns from the reset yaw (wrist joint range, with margin)
YAW_TOL = 0.05
OPEN, CLOSE = -1.0, 1.0


def _wrap(angle: float) -> float:
    """Angle mapped to [-pi, pi)."""
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


def _nearest_equivalent(angle: float, reference: float, period: float) -> float:
    """The angle ``angle + k * period`` closest to ``reference``."""
    return reference + float((angle - reference + period / 2) % period - period / 2)


def _yaw_of_quat_wxyz(q: np.ndarray) -> float:
    """Yaw (rotation about world z) of a MuJoCo ``wxyz`` quaternion."""
    w, x, y, z = q
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


def _down_rotation(yaw: float) -> np.ndarray:
    """Eef site frame pointing straight down with its x (finger-closing) axis at ``yaw``."""
    x = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    z = np.array([0.0, 0.0, -1.0])
    return np.stack([x, np.cross(z, x), z], axis=1)


def _rotvec(r: np.ndarray) -> np.ndarray:
    """Rotation vector (axis * angle) of a rotation matrix, for angles below pi."""
    cos = np.clip((np.trace(r) - 1) / 2, -1.0, 1.0)
    angle = np.arccos(cos)
    skew = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    if angle < 1e-6:
        return skew / 2
    return skew * angle / (2 * np.sin(angle))


class _Phase:
    """One waypoint: eef target, gripper turn and command, and when the phase is over."""

    def __init__(
        self,
        pos: np.ndarray,
        turn: float,
        grip: float,
        tol: float = 0.01,
        wait: int = 0,
        timeout: int = 60,
        done: bool = False,
    ) -> None:
        self.pos, self.turn, self.grip = np.asarray(pos, dtype=float), float(turn), grip
        self.tol, self.wait, self.timeout, self.done = tol, wait, timeout, done


class _WaypointExpert:
    """Shared machinery: privileged sim access, phase stepping, the OSC_POSE P-controller."""

    num_phases = 8

    def __init__(self, jitter: float = 0.0) -> None:
        if jitter < 0:
            raise ValueError(f"jitter must be >= 0 (metres), got {jitter}")
        self.jitter = float(jitter)
        self._env: Any = None
        self._phase = 0
        self._timer = 0
        self._noise = np.zeros((self.num_phases, 3))

    def reset(self, env: gym.Env, rng: np.random.Generator) -> None:
        sim_env = getattr(env.unwrapped, "sim_env", None)
        if sim_env is None or not hasattr(sim_env, "sim"):
            raise TypeError(
                f"{type(self).__name__} needs an envs.robomimic env (with .sim_env), got "
                f"{type(env.unwrapped).__name__}"
            )
        self._env = sim_env
        self._phase = 0
        self._timer = 0
        self._noise = (
            rng.normal(0.0, self.jitter, (self.num_phases, 3))
            if self.jitter > 0
            else np.zeros((self.num_phases, 3))
        )
        self._home_yaw = self._raw_yaw()
        self._last_yaw = self._home_yaw
        self._turn = 0.0
        self._entry = self._eef_pos()
        self._on_reset()

    def _on_reset(self) -> None:
        pass

    @property
    def phase(self) -> int:
        """Index of the current phase (for logging and tests)."""
        return self._phase

    # -- simulator access -------------------------------------------------------------------
    @property
    def _sim(self) -> Any:
        return self._env.sim

    def _eef_pos(self) -> np.ndarray:
        return np.array(self._sim.data.site_xpos[self._env.robots[0].eef_site_id["right"]])

    def _eef_rot(self) -> np.ndarray:
        sid = self._env.robots[0].eef_site_id["right"]
        return np.array(self._sim.data.site_xmat[sid]).reshape(3, 3)

    def _raw_yaw(self) -> float:
        x = self._eef_rot()[:, 0]
        return float(np.arctan2(x[1], x[0]))

    def _update_turn(self) -> None:
        yaw = self._raw_yaw()
        self._turn += _wrap(yaw - self._last_yaw)
        self._last_yaw = yaw

    def _body_pos(self, body_id: int) -> np.ndarray:
        return np.array(self._sim.data.body_xpos[body_id])

    def _body_yaw(self, body_id: int) -> float:
        return _yaw_of_quat_wxyz(np.array(self._sim.data.body_xquat[body_id]))

    def _turn_to(self, yaw: float, period: float) -> float:
        """Turn of least magnitude that puts the closing axis at ``yaw`` (mod ``period``)."""
        return _nearest_equivalent(yaw - self._home_yaw, 0.0, period)

    # -- control ----------------------------------------------------------------------------
    def _plan(self, phase: int) -> _Phase:
        raise NotImplementedError

    def act(self, obs: np.ndarray) -> np.ndarray:
        if self._env is None:
            raise RuntimeError(f"{type(self).__name__}.act called before reset(env, rng)")
        self._update_turn()
        while True:
            step = self._plan(self._phase)
            if step.done or self._phase >= self.num_phases - 1:
                break
            pos_err = np.linalg.norm(step.pos - self._eef_pos())
            turn_err = abs(step.turn - self._turn)
            reached = pos_err < step.tol and turn_err < YAW_TOL and self._timer >= step.wait
            if not (reached or self._timer >= step.timeout):
                break
            self._phase += 1
            self._timer = 0
            self._entry = self._eef_pos()  # where the new phase starts
        self._timer += 1
        return self._command(step.pos, step.turn, step.grip)

    def _command(self, pos: np.ndarray, turn: float, grip: float) -> np.ndarray:
        lead = float(np.clip(turn - self._turn, -MAX_TURN_STEP, MAX_TURN_STEP))
        target_rot = _down_rotation(self._home_yaw + self._turn + lead)
        a_pos = (pos - self._eef_pos()) / POS_SCALE
        a_rot = _rotvec(target_rot @ self._eef_rot().T) / ROT_SCALE
        motion = np.concatenate([a_pos, a_rot])
        peak = np.abs(motion).max()
        if peak > 1.0:
            motion = motion / peak
        return np.concatenate([motion, [grip]]).astype(np.float32)

    def _wp(self, phase: int, pos: np.ndarray) -> np.ndarray:
        """A waypoint with this phase's jitter offset."""
        return np.asarray(pos, dtype=float) + self._noise[phase]


class LiftExpert(_WaypointExpert):
    """Lift: grasp the cube across a face and raise it 15 cm (success: 4 cm above the table)."""

    num_phases = 5

    def _on_reset(self) -> None:
        cube_yaw = self._body_yaw(self._env.cube_body_id)
        self._grasp = self._turn_to(cube_yaw, np.pi / 2)
        self._lift_to = self._eef_pos()

    def _plan(self, phase: int) -> _Phase:
        cube = self._body_pos(self._env.cube_body_id)
        g = self._grasp
        if phase == 0:  # above the cube
            return _Phase(self._wp(0, cube + [0, 0, 0.08]), g, OPEN, tol=0.01)
        if phase == 1:  # descend around it
            return _Phase(self._wp(1, cube + [0, 0, -0.005]), g, OPEN, tol=0.006)
        if phase == 2:  # close and wait for the fingers
            return _Phase(self._wp(1, cube + [0, 0, -0.005]), g, CLOSE, tol=1.0, wait=8)
        if phase == 3:
            self._lift_to = self._wp(3, self._entry + [0, 0, 0.15])
            return _Phase(self._lift_to, g, CLOSE, tol=0.01)
        return _Phase(self._lift_to, g, CLOSE, done=True)


class CanExpert(_WaypointExpert):
    """PickPlaceCan: grasp the can from above, carry it over its bin, lower, release, retreat."""

    num_phases = 8
    carry_height = 1.0

    def _on_reset(self) -> None:
        env = self._env
        self._can = env.obj_body_id["Can"]
        # the can's bin quadrant is [bin2_x, bin2_x + w/2] x [bin2_y, bin2_y + d/2]
        # (PickPlace.not_in_bin); its centre is at the edge of the Panda's reach, so drop the can
        # 5 cm inside the quadrant's corner nearest the robot
        self._drop = np.array(env.bin2_pos, dtype=float) + [0.05, 0.05, 0.17]

    def _plan(self, phase: int) -> _Phase:
        can = self._body_pos(self._can)
        drop = self._drop
        if phase == 0:  # a cylinder: grasp at any yaw, keep the reset one
            return _Phase(self._wp(0, can + [0, 0, 0.1]), 0.0, OPEN, tol=0.01)
        if phase == 1:
            return _Phase(self._wp(1, can), 0.0, OPEN, tol=0.008)
        if phase == 2:
            return _Phase(self._wp(1, can), 0.0, CLOSE, tol=1.0, wait=8)
        start = self._entry
        if phase == 3:  # straight up
            return _Phase([start[0], start[1], self.carry_height], 0.0, CLOSE, tol=0.02)
        if phase == 4:  # over the bin
            above = self._wp(4, [drop[0], drop[1], self.carry_height])
            return _Phase(above, 0.0, CLOSE, tol=0.015, timeout=80)
        if phase == 5:
            return _Phase(self._wp(4, drop), 0.0, CLOSE, tol=0.015)
        if phase == 6:
            return _Phase(self._wp(4, drop), 0.0, OPEN, tol=1.0, wait=6)
        return _Phase(self._wp(4, drop) + [0, 0, 0.12], 0.0, OPEN, done=True)


class SquareExpert(_WaypointExpert):
    """NutAssemblySquare: grasp the handle, square the nut to the peg, lower it over the peg."""

    num_phases = 10
    handle_offset = 0.06  # grasp point along the nut's local x (the free handle spans 0.044..0.079)
    carry_height = 1.0

    def _on_reset(self) -> None:
        env = self._env
        self._nut = env.obj_body_id["SquareNut"]
        self._peg = np.array(env.sim.data.body_xpos[env.peg1_body_id])
        self._grasp, self._place = self._plan_turns(self._body_yaw(self._nut))

    def _plan_turns(self, nut_yaw: float) -> tuple[float, float]:
        """(grasp turn, place turn): fingers across the handle, then the nut squared to the peg.

        The handle should end pointing at the robot (nut yaw pi); where no grasp reaches that
        within ``TURN_RANGE``, pointing sideways (+-pi/2) is the fallback. Among the feasible
        plans the one with the least turning wins.
        """
        lo, hi = TURN_RANGE
        best: tuple[float, float, float] | None = None
        base = _nearest_equivalent(nut_yaw + np.pi / 2 - self._home_yaw, 0.0, 2 * np.pi)
        for final_yaw, penalty in ((np.pi, 0.0), (np.pi / 2, 10.0), (-np.pi / 2, 10.0)):
            for grasp in (base + k * np.pi for k in (-2, -1, 0, 1, 2)):
                if not lo <= grasp <= hi:
                    continue
                # turning the gripper by d turns the nut to nut_yaw + d
                place = _nearest_equivalent(grasp + final_yaw - nut_yaw, grasp, 2 * np.pi)
                for cand in (place - 2 * np.pi, place, place + 2 * np.pi):
                    if lo <= cand <= hi:
                        cost = penalty + abs(grasp) + abs(cand - grasp)
                        if best is None or cost < best[0]:
                            best = (cost, grasp, cand)
        if best is None:  # a grasp turn in [-pi/2, pi/2] always exists, with a sideways place
            raise RuntimeError(f"no feasible grasp for nut yaw {nut_yaw:.3f} in {TURN_RANGE}")
        return best[1], best[2]

    def _handle(self) -> np.ndarray:
        yaw = self._body_yaw(self._nut)
        return self._body_pos(self._nut) + self.handle_offset * np.array(
            [np.cos(yaw), np.sin(yaw), 0.0]
        )

    def _plan(self, phase: int) -> _Phase:
        g, p = self._grasp, self._place
        if phase == 0:
            return _Phase(self._wp(0, self._handle() + [0, 0, 0.08]), g, OPEN, tol=0.01)
        if phase == 1:
            return _Phase(self._wp(1, self._handle()), g, OPEN, tol=0.01, timeout=40)
        if phase == 2:
            return _Phase(self._wp(1, self._handle()), g, CLOSE, tol=1.0, wait=8)
        start = self._entry
        if phase == 3:  # straight up
            return _Phase([start[0], start[1], self.carry_height], g, CLOSE, tol=0.02)
        if phase == 4:  # turn the nut in the air
            return _Phase([start[0], start[1], self.carry_height], p, CLOSE, tol=0.03)
        # from here on, steer the nut's centre (not the eef) over the peg
        offset = self._eef_pos() - self._body_pos(self._nut)
        over_peg = self._wp(5, [self._peg[0], self._peg[1], 0.0]) + offset
        if phase == 5:
            target = [over_peg[0], over_peg[1], self.carry_height]
            return _Phase(target, p, CLOSE, tol=0.004, timeout=80)
        if phase == 6:  # lower the nut's centre to just above the table, around the peg
            target = [over_peg[0], over_peg[1], 0.86 + offset[2]]
            return _Phase(target, p, CLOSE, tol=0.008, timeout=60)
        if phase == 7:
            return _Phase(start, p, OPEN, tol=1.0, wait=6)
        if phase == 8:
            return _Phase(start + [0, 0, 0.1], p, OPEN, tol=0.02)
        return _Phase(start, p, OPEN, done=True)


_EXPERTS: dict[str, type[_WaypointExpert]] = {
    "lift": LiftExpert,
    "can": CanExpert,
    "square": SquareExpert,
}


def make_robomimic_expert(task: str, jitter: float = 0.0) -> ScriptedExpert:
    """The waypoint expert for ``task`` (``lift``, ``can``, ``square``); see the module doc."""
    if task not in _EXPERTS:
        raise ValueError(f"no robomimic expert for {task!r}: expected one of {list(_EXPERTS)}")
    return _EXPERTS[task](jitter)
