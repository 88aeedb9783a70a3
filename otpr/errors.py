"""One-line errors for every console command.

A command refuses what it cannot use (a malformed demo file, an invalid setting, a checkpoint
of another format, a missing file, an optional package that is not installed) with one line
on stderr and exit status 2::

    otpr-pretrain: error: demos.hdf5: data/demo_3/actions: expected shape [120, dim], got (119, 7)

``OTPR_DEBUG=1`` prints the full traceback instead of the line (the status stays 2). Any other
exception is a bug and keeps its traceback. :func:`refusal` decides which is which and words
the line; :func:`run_command` applies it around a command's body.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable
from typing import NoReturn

#: The environment variable that shows a refused command's full traceback.
DEBUG_ENV = "OTPR_DEBUG"

#: Optional packages (top-level module) and the pip extra that installs them; None: not on PyPI.
OPTIONAL_PACKAGES: dict[str, str | None] = {
    "robosuite": "robomimic",
    "gymnasium_robotics": "kitchen",
    "minari": "kitchen",
    "timm": "pixels",
    "submitit": "slurm",
    "hydra_plugins": "slurm",
    "diffusers": "bench",
    "calvin_env": None,
}


#: What every command's ``--help`` says about refusals and the debug switch.
ERRORS_HELP = f"""\
Bad input (a malformed demo file, an invalid setting, a missing checkpoint, file or optional
package) is refused with one line on stderr, '<command>: error: <what>', exit status 2 and
nothing written; {DEBUG_ENV}=1 prints the full traceback instead.
"""


class UsageError(ValueError):
    """A command was given something it cannot use; the message names the setting or path."""


def debug_enabled() -> bool:
    """Whether ``OTPR_DEBUG`` asks for full tracebacks."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def one_line(text: str) -> str:
    """``text`` with its lines joined by spaces (a message that must fit on one line)."""
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _classes(module: str, *names: str) -> tuple[type, ...]:
    """Exception classes of ``module`` when it is already imported: an exception of a module
    that was never imported cannot have been raised, and importing it here could be slow."""
    mod = sys.modules.get(module)
    return tuple(getattr(mod, n) for n in names if hasattr(mod, n)) if mod else ()


def _missing_module(err: BaseException) -> str | None:
    """The optional package whose absence caused ``err`` (or its cause), else None."""
    for e in (err, err.__cause__, err.__context__):
        if isinstance(e, ImportError) and e.name:
            root = e.name.split(".")[0]
            if root in OPTIONAL_PACKAGES:
                return root
    return None


def _hydra_message(err: BaseException) -> str:
    """Hydra's config errors span several lines (the options, the search path); keep what
    names the key and the choices."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    head = lines[0].rstrip(".") if lines else type(err).__name__
    missing = getattr(err, "missing_cfg_file", None)
    options = getattr(err, "options", None)
    if missing and options is not None:  # a group option that does not exist: task=nosuch
        group, _, name = str(missing).rpartition("/")
        what = f"{group}={name}" if group else str(missing)
        return f"{what}: no such config, expected one of: {', '.join(options)}"
    override = getattr(err, "override", None)
    if override:  # the override grammar
        return f"{override}: {head}"
    cause = err.__cause__
    omegaconf_errors = _classes("omegaconf.errors", "OmegaConfBaseException")
    if omegaconf_errors and isinstance(cause, omegaconf_errors):
        return _omegaconf_message(cause)  # (not Hydra's hint to append the key with +)
    return head


def _omegaconf_message(err: BaseException) -> str:
    """OmegaConf's first line, prefixed by the full key it is about."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    head = lines[0] if lines else type(err).__name__
    key = getattr(err, "full_key", None)
    return f"{key}: {head}" if key and not head.startswith(f"{key}:") else head


def refusal(err: BaseException) -> str | None:
    """The one-line message for an exception that refuses bad input, or None for a bug.

    Refusals: ``DatasetError`` (and CALVIN's ``CalvinDatasetError``), ``ConfigError``,
    ``CheckpointError``, :class:`UsageError`, ``RenderError`` (no offscreen rendering for a
    video: it names ``MUJOCO_GL``), Hydra's and OmegaConf's config errors (an unknown
    key, a missing group option, a value of the wrong type), ``FileNotFoundError`` and an
    ``ImportError`` of an optional package (``OPTIONAL_PACKAGES``; ``CalvinUnavailableError``),
    and the ``FloatingPointError`` of a run stopped on a non-finite loss or weight (its message
    names the value, the iteration and the last good checkpoint).
    """
    from otpr.config import ConfigError
    from otpr.data.dataset import DatasetError

    named = (
        DatasetError,
        ConfigError,
        UsageError,
        *_classes("otpr.checkpoint", "CheckpointError"),
        *_classes("envs.calvin", "CalvinDatasetError", "CalvinUnavailableError"),
        *_classes("envs.render", "RenderError"),
    )
    if isinstance(err, named):
        return one_line(str(err)) or type(err).__name__
    if isinstance(err, FloatingPointError):  # a run stopped on a non-finite loss or weight
        return one_line(str(err)) or "non-finite value"
    hydra_errors = _classes("hydra.errors", "ConfigCompositionException", "OverrideParseException")
    if hydra_errors and isinstance(err, hydra_errors):
        return _hydra_message(err)
    omegaconf_errors = _classes("omegaconf.errors", "OmegaConfBaseException")
    if omegaconf_errors and isinstance(err, omegaconf_errors):
        return _omegaconf_message(err)
    if isinstance(err, FileNotFoundError):
        if err.filename is not None:
            return f"{err.filename}: {err.strerror or 'not found'}"
        return one_line(str(err)) or "file not found"
    if isinstance(err, ImportError):
        package = _missing_module(err)
        if package is None:
            return None
        if not isinstance(err, ModuleNotFoundError):
            return one_line(str(err))  # a message that already says what to install
        extra = OPTIONAL_PACKAGES[package]
        hint = f"pip install 'otpr[{extra}]'" if extra else "see the README"
        return f"{package} is not installed, and this command needs it ({hint})"
    return None


def run_command(prog: str, body: Callable[[], int | None]) -> int:
    """Run a command's ``body``; a refusal (:func:`refusal`) prints ``<prog>: error: <what>``
    on stderr (with ``OTPR_DEBUG=1``: the traceback) and returns 2. Returns ``body``'s status
    (None: 0); a bug propagates with its traceback."""
    try:
        status = body()
    except Exception as err:
        message = refusal(err)
        if message is None:
            raise
        if debug_enabled():
            traceback.print_exception(type(err), err, err.__traceback__)
        else:
            print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    return 0 if status is None else int(status)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are refusals (:class:`UsageError`): one line, status 2,
    from :func:`run_command`, instead of argparse's usage block."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)
