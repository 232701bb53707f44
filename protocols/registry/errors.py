"""Errors of the agent registry, named by the condition that caused them."""

from __future__ import annotations

from config.errors import ProtocolError


class RegistryError(ProtocolError):
    """The agent registry could not do what it was asked."""


class InvalidEntryError(RegistryError):
    """An entry has a missing or malformed field."""


class InvalidQueryError(RegistryError):
    """A query names an unknown operator, a bad path or a bad value."""


class EntryExistsError(RegistryError):
    """A create found a live entry under the same id."""


class RevisionMismatchError(RegistryError):
    """A compare-and-set write found another revision than the one expected."""


class NotRegisteredError(RegistryError):
    """A heartbeat or update named an id this registry did not register."""


class RegistrationTakenError(RegistryError):
    """The entry under our id now belongs to another process."""


class RegistryUnavailableError(RegistryError):
    """The registry bucket could not be reached or refused a write."""


class RegistryClosedError(RegistryError):
    """The registry was closed, or its watch of the bucket ended."""
