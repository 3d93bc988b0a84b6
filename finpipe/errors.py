"""The one exception type for mistakes a user can make (bad file, bad param, bad column).

The CLI turns it into a single line on stderr and a non-zero exit code; anything else that
escapes is a bug in finpipe and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's inputs or params, described in one line."""

    exit_code = 2


class ValidationFailed(UserError):
    """Data were read fine but too many rows failed validation."""

    exit_code = 1
