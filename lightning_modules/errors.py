"""The one exception type litlab shows as a single line (`litlab: error: ...`) instead of a traceback.

Raise it for what a user can fix: bad input, missing or corrupt data, a checkpoint that does not fit the config.
Bugs stay ordinary exceptions, with their tracebacks.
"""


class LitlabError(Exception):
    """A problem with the user's input, stated in one line that says what is wrong and how to fix it."""
