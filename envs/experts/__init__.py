"""Scripted experts that follow ``envs.base.ScriptedExpert`` and read privileged sim state.

Import the suite's module (``envs.experts.robomimic``, ``envs.experts.kitchen``) or use
``envs.make_expert(task)``; nothing is imported here, so a missing simulator package only
matters for the suite that needs it.
"""
