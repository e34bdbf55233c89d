"""The error types a user sees. Each message names the value, what is valid and the option.

A leaf: imports nothing from bench.
"""

from __future__ import annotations


class BadInputError(ValueError):
    """A value given by the user is invalid; the message names it, the option and what is valid."""


class UnknownModelError(ValueError):
    pass


class ModelUnavailableError(RuntimeError):
    pass
