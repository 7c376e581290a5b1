"""The one base class of mistakes a user can fix: the CLI reports them as one line, anything else
is a bug and keeps its traceback."""


class UserError(Exception):
    """A problem with what the user gave (config, data, model, attack name): the message says where
    it is, what is wrong and what to do."""
