"""Kill points: where resume tests stop a run with SIGKILL (``OTPR_KILL_AT``).

A run killed at any moment must resume to exactly the run it would have been
(tests/otpr/test_resume.py). The loop and the checkpoint writer name the moments a test wants
to hit deterministically; ``OTPR_KILL_AT=<pattern>`` (``fnmatch``) kills the process at the
first point whose name matches. Unset, a point costs one dictionary lookup. Points::

    collect:<iteration>:<decision>   mid-collection, after the envs stepped, before the
                                     transition is stored (iteration as logged, from 1)
    write:<checkpoint name>          a checkpoint half written (weights, optimizers and RNG
                                     in its temporary directory, the rest not yet)
    saved:<iteration>                right after a full checkpoint (0: the pretrained one)
    evaluated:<iteration>            right after an evaluation was logged
"""

from __future__ import annotations

import os
import signal
from fnmatch import fnmatchcase

ENV = "OTPR_KILL_AT"


def kill_point(name: str) -> None:
    """SIGKILL this process if ``OTPR_KILL_AT`` matches ``name``."""
    pattern = os.environ.get(ENV)
    if pattern and fnmatchcase(name, pattern):
        os.kill(os.getpid(), signal.SIGKILL)
