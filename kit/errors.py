"""The one exception a user sees: a problem with their input, told in one line."""


class KitError(Exception):
    """Bad input from a file or a user (a missing column, a misspelled key, NaN scores...).

    Scripts print it as one line (`error: ...`) and exit with status 2; no traceback.
    The message names the file or parameter and says what is wrong.
    """
