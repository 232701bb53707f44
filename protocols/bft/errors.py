"""Errors of the Byzantine agreement protocol, named by condition."""

from __future__ import annotations

from config.errors import ProtocolError


class BftError(ProtocolError):
    """Root of the Byzantine agreement errors."""


class InvalidKeyError(BftError):
    """A seed or public key is not a valid nkeys user key."""


class MalformedMessageError(BftError):
    """Bytes on a ``coord.bft`` subject are not a well-formed protocol message."""


class CertificateError(BftError):
    """A decision certificate does not prove what it claims."""


class InvalidProposalError(BftError):
    """A participant was asked to propose a value its own validation rejects."""


class MembershipError(BftError):
    """The group's membership cannot run the protocol (too few members, or we are not one)."""


class InvalidInstanceError(BftError):
    """A group or instance id cannot be a subject token, or is reserved (starts with ``_``)."""


class DecisionTimeoutError(BftError):
    """No decision was reached within the caller's deadline."""


class TransportUnavailableError(BftError):
    """NATS refused a subscription or publish the protocol needs."""
