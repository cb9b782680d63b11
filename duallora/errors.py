"""Exceptions that the command lines report as one clean line instead of a traceback."""


class KitError(Exception):
    """A problem with the user's input (files, folders, options): shown as one line, exit 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised by a long command's handler (see ``flower.localhost.run``) so that the same
    teardown as for Ctrl-C runs; the command line then exits 143 (128 + SIGTERM), as a process
    killed by SIGTERM would, instead of Ctrl-C's 130."""
