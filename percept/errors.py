"""The one exception type for failures a user can cause and fix."""


class PerceptError(Exception):
    """A problem with the user's input, named together with how to fix it.

    Command-line tools print the message on one line and exit with status 2.
    """
