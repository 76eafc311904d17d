"""The one error type users see: a problem with their input, told in one line (exit code 2)."""


class UserError(Exception):
    """Bad input from the user. The message names the problem and, where there is one, the fix."""
