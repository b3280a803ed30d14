"""Errors caused by what the user gave us: the CLI prints them as one line and exits with 2."""


class UserError(Exception):
    """A problem with the user's input; the message names the problem and the fix."""


class InvalidArgument(UserError, ValueError):
    """A bad argument given to the Python API (a ``ValueError``) that is also the user's to fix: the CLI
    prints it as one line, exit status 2."""
