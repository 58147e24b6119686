"""The one exception type for bad input, shared by every stage."""


class UserError(Exception):
    """Bad input (file, field, expected value): the CLI prints it as one line, no traceback."""


class TraceError(UserError):
    """A trace store that is missing, corrupt, incomplete or of the wrong shape."""
