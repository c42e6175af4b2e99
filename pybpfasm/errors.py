"""Which exceptions are the user's doing (printed as one line) rather than bugs."""

from __future__ import annotations


class UserError(Exception):
    """Base class for errors a CLI user caused: bad input, missing privilege, no such object."""


def is_user_error(exc: BaseException) -> bool:
    """True for errors to print as one line: our user-error classes, OS errors, bad values."""
    from pybpfasm.builder import AssemblyError
    from pybpfasm.isa import DecodeError, EncodingError

    user_types: tuple[type[BaseException], ...] = (UserError, AssemblyError, EncodingError, DecodeError, OSError)
    try:
        from pybpfasm.cli.main import CliError

        user_types += (CliError,)
    except ImportError:  # pragma: no cover
        pass
    return isinstance(exc, user_types)
