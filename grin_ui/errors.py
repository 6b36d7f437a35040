"""The one exception type for problems a user can cause (bad input, a model that will not fit, ...).

Its message is meant to be shown as is: in the dashboard as an error toast, in the CLI as one line on stderr with
exit status 2. Bugs stay ordinary exceptions.
"""


class GrinError(Exception):
    """A problem caused by user input or the environment, with a message a person can act on."""


class Cancelled(GrinError):
    """The action was cancelled by its visitor; the model was restored to its state before the action."""
