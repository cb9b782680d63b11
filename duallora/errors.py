"""Exceptions that the command lines report as one clean line instead of a traceback."""


class KitError(Exception):
    """A problem with the user's input (files, folders, options): shown as one line, exit 2."""
