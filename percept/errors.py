"""The exception types for failures a user can cause and fix."""


class PerceptError(Exception):
    """A problem with the user's input, named together with how to fix it.

    Command-line tools print the message on one line and exit with status ``exit_status`` (2).
    """

    exit_status = 2


class IncompleteRun(PerceptError):
    """A run that did all it could but left out inputs it could not reach (missing files, storage not
    mounted): what it finished is kept, and the same command run again once they are back completes it.

    Command-line tools print the message on one line and exit with status 1.
    """

    exit_status = 1
