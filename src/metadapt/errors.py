"""Errors caused by what the user gave us: the CLI prints them as one line and exits with 2."""


class UserError(Exception):
    """A problem with the user's input; the message names the problem and the fix."""
