"""The errors hf_tbar raises on purpose: one base class, one subclass per kind of failure.

Library code raises these (they also subclass the built-in type older code caught, e.g. ``ValueError``),
and the ``hf-tbar`` command turns each into one line ``hf-tbar <command>: error: <message>`` with the
class's ``exit_code``:

| exit | class | meaning |
|---|---|---|
| 1 | anything else | an unexpected failure (a bug): ``--debug`` shows the traceback |
| 2 | :class:`ConfigError` | a bad argument or configuration value (argparse's usage code) |
| 3 | ``SafetyGateError`` | the sanitized model fails the publication gate |
| 4 | ``HubPushError`` | the Hub or the network refused the push |
| 5 | :class:`InputError` | the input model, data or trigger cannot be used |
| 6 | :class:`OutputError` | an output location is refused or cannot be written |
| 7 | ``NoBackdoorDetectedError`` | an unknown-trigger run found nothing to remove |
| 8 | ``NoFeasibleScaleError`` | no negation scale meets the accuracy constraints |
| 130 | ``KeyboardInterrupt`` | interrupted (Ctrl-C); nothing that looks complete is left |
"""

from __future__ import annotations

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_UNEXPECTED",
    "ConfigError",
    "DataError",
    "HfTbarError",
    "InputError",
    "ModelAtChanceError",
    "ModelLoadError",
    "OutputError",
    "OutputExistsError",
]

#: Exit status of an unexpected failure (not an :class:`HfTbarError`).
EXIT_UNEXPECTED = 1
#: Exit status after Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


class HfTbarError(Exception):
    """Base class of every error hf_tbar raises on purpose; ``exit_code`` is the CLI's exit status for it."""

    exit_code: int = EXIT_UNEXPECTED


class ConfigError(HfTbarError, ValueError):
    """A configuration or argument value is invalid (the message names the field and the value)."""

    exit_code = 2


class InputError(HfTbarError, ValueError):
    """An input (model, dataset, trigger, label) cannot be used; the message names it."""

    exit_code = 5


class ModelLoadError(InputError):
    """A model folder or Hub id cannot be loaded as the model it should be (names the file or tensor)."""


class DataError(InputError):
    """Images, labels or a dataset are unusable (wrong range, NaN, missing column or split...)."""


class ModelAtChanceError(InputError):
    """The model's clean accuracy on the task is near chance (:func:`hf_tbar.metrics.near_chance`): it does not
    solve this task with these class names and prompt templates, so nothing it says about a backdoor (or about
    its removal) can be trusted. Raised before any work unless forced."""


class OutputError(HfTbarError, ValueError):
    """An output location is refused (overlaps an input, not empty, parent is a file) or not writable."""

    exit_code = 6


class OutputExistsError(OutputError, FileExistsError):
    """The output exists and holds files; pass ``overwrite=True`` (``--overwrite``) to replace it."""
