"""The few errors autolabel raises on purpose.

The CLI turns each into one line on stderr and its exit code; anything else is a bug
and keeps its traceback.
"""


class AutolabelError(Exception):
    """A known, user-facing failure: the message says what was expected and what came."""

    exit_code = 1


class ConfigError(AutolabelError):
    """A bad flag, config file or config key."""

    exit_code = 2


class InputError(AutolabelError):
    """Bad input data: an ontology, a media file, a product folder, a dataset."""

    exit_code = 1


class MissingWeightsError(AutolabelError):
    """Model weights that are neither local nor downloadable."""

    exit_code = 2


class OutputError(AutolabelError):
    """An output location that cannot be used without losing or mixing data."""

    exit_code = 1
