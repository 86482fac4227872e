"""Named errors. Each one says which file, line or config key is at fault."""


class InstagError(Exception):
    """Base class for every error the package raises on purpose."""


class InputError(InstagError):
    """Bad input data: the message names the file and, where known, the line."""

    def __init__(self, path, message, line=None):
        self.path = str(path)
        self.line = line
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {message}")


class ConfigError(InstagError):
    """A bad setting: the message names the key."""

    def __init__(self, key, message):
        self.key = key
        super().__init__(f"config key '{key}': {message}")
