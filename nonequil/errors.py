"""User-facing errors.

``InputError`` is raised for anything the user can fix (a missing file, a bad argument,
an unstable step).  The CLI prints its message as one ``error: ...`` line and exits with
status 2; the message names the thing that is wrong and says what would be right.
"""


class InputError(Exception):
    """Bad user input: one line naming what is wrong and what would be right."""


class RunError(Exception):
    """A run that started but could not finish (blow-up, disk full, second writer).

    The message names what happened and which partial file / checkpoint were kept.
    """
