"""Typed exceptions raised at the edges of the toolkit (files, configs, CLI, public API).

Every user mistake surfaces as a subclass of :class:`DaganError` with a one-line message that says
what is wrong and, where possible, how to fix it. CLIs turn these into exit code 2.
"""


class DaganError(Exception):
    """Base class of every error the toolkit raises on purpose."""

    exit_code = 2


class ConfigError(DaganError, ValueError):
    """A config file or value is missing, unknown or of the wrong type (the message names the key)."""


class CheckpointError(DaganError):
    """A checkpoint cannot be read, is unsafe, or does not fit the model (lists the offending keys)."""


class InputError(DaganError, ValueError):
    """An input image, video or tensor is missing, unreadable or of an unsupported shape."""


class NoFaceError(InputError):
    """No face was found where one is required (suggests ``--no-crop``)."""


class MissingWeightsError(DaganError, FileNotFoundError):
    """Pretrained weights of a third-party model (face detector, VGG19, LPIPS, ...) are not on disk.

    The message names the missing file and where to put it; nothing is downloaded behind the user's back
    when downloads are impossible.
    """


class DatasetError(DaganError):
    """A dataset folder is missing, empty, or holds videos too short for the requested sampling."""


class TrainingError(DaganError):
    """Training cannot continue (e.g. repeated non-finite losses)."""


class OutputError(DaganError):
    """An output cannot be written (exists and ``--overwrite`` not given, or the folder is not writable)."""
