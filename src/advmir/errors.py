"""The one error policy of the commands.

A *known bad input* (a missing or damaged artifact, an attack parameter out of range, a codec
setting the codec cannot honour, a fault name that does not exist, a file outside the data
contract, ...) raises a subclass of :class:`InputError` whose message names the input and the fix.
:func:`advmir.cli.main` prints that message as one line and exits 2. Any other exception is an
internal error and keeps its traceback.
"""

from __future__ import annotations


class InputError(Exception):
    """A known bad input; ``str()`` names the input and how to fix it (the command exits 2)."""


class UsageError(InputError, ValueError):
    """Options of a command that do not fit together (e.g. ``--combine`` without ``--table``)."""
