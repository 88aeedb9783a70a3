"""Scripted experts that follow ``envs.base.ScriptedExpert`` and read privileged sim state."""

from envs.experts.robomimic import CanExpert, LiftExpert, SquareExpert, make_robomimic_expert

__all__ = ["CanExpert", "LiftExpert", "SquareExpert", "make_robomimic_expert"]
