"""``import timm`` beside a torchvision wheel that does not match the installed torch.

Why this module exists: the torchvision wheel on this package index is a CUDA build. Next to
the CPU torch its compiled operators do not load, and ``import torchvision`` (which timm does
at import) stops in ``torchvision/_meta_registrations.py`` with ``RuntimeError: operator
torchvision::nms does not exist`` while registering a fake kernel for that operator. timm needs
none of torchvision's compiled operators (models, transforms and layers are plain torch), so on
exactly that error the missing operator schemas are declared and the import is tried again;
calling ``torchvision.ops.nms`` still fails, as it would have. Any other error, or a torchvision
that imports, is left alone.
"""

from __future__ import annotations

import re
import sys
from types import ModuleType

import torch

# "operator torchvision::nms does not exist" (then qnms, declared the same way)
_MISSING_OP = re.compile(r"^operator (torchvision::q?nms) does not exist$")
_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"


def import_timm() -> ModuleType:
    """The ``timm`` module, importing it through the workaround above when (and only when)
    torchvision fails with a missing ``nms``/``qnms`` operator."""
    for _ in range(3):  # nms, then qnms, then the import that works
        try:
            import timm

            return timm
        except RuntimeError as err:
            missing = _MISSING_OP.match(str(err))
            if missing is None:
                raise
            # the failed import left half-initialised modules behind: drop them, declare the
            # operator's schema (no kernel: nothing here calls it) and import again
            for name in [m for m in sys.modules if m.split(".")[0] in ("torchvision", "timm")]:
                del sys.modules[name]
            torch.library.define(missing.group(1), _SCHEMA)
    import timm

    return timm
