"""User-facing errors: the CLI prints the message (no traceback) and exits with code 2."""


class PropensityError(Exception):
    """An error caused by input or configuration; its message says what to fix."""


class ConfigError(PropensityError):
    """A YAML config that does not validate: names the file and the field."""


class DataError(PropensityError):
    """Input data that breaks the contract: names the file, the column and the offending rows."""


class NotEnoughDataError(PropensityError):
    """Too few rows or positives to train or evaluate."""
