"""User-facing errors of `rem`: each names what is wrong and how to fix it."""


class RemError(Exception):
    """Base class of rem's user-facing errors."""


class DataError(RemError):
    """A data set is missing, damaged or malformed."""


class CheckpointError(RemError):
    """A checkpoint is missing, damaged or does not match its description."""


class ConfigError(RemError, ValueError):
    """A configuration that cannot work."""


class IndexSetError(RemError, ValueError):
    """Sample indices that are out of range, duplicated or outside the set they must belong to."""


class StoreError(RemError):
    """A results store that cannot be used: not a rem store, or written with another schema."""


class OutputError(RemError):
    """A result that cannot be written where asked: claimed by another run, already there, or the file
    system refuses (the message says where the result was rescued, if it was)."""


class ArgumentError(RemError, ValueError):
    """A bad argument of a public function (the message names the argument)."""
