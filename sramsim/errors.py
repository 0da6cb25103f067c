"""Errors that mean "bad input": the CLI prints them as one line and exits with status 2."""


class InputError(ValueError):
    """Bad input from the user: a wrong path, shape, voltage, option or file."""


class ProfileError(InputError):
    """A chip profile file that is missing, corrupt, foreign or inconsistent (message names it)."""


class DataError(InputError):
    """A dataset that is missing or malformed (message says where it was looked for and how to get it)."""
