"""The errors a user can cause; each message names the file, key or check at fault."""


class CnnpipeError(Exception):
    """Base class: stages print these as one clear line and exit non-zero."""


class DataError(CnnpipeError):
    """A dataset file is missing, malformed or fails verification."""


class ValidationFailed(CnnpipeError):
    """One or more Great Expectations checks failed; the message lists each one."""


class ModelError(CnnpipeError):
    """A model file cannot be used (not a model, unsafe, wrong shape)."""


class OutputError(CnnpipeError):
    """An output cannot be written (permission denied, read-only or full disk); the previous
    output at that path is left as it was."""


class RegistryError(CnnpipeError):
    """A registry request that cannot be honoured (unknown model, no @previous, ...)."""


class ConcurrentPromotion(RegistryError):
    """Another promotion moved @champion while this one ran."""
