"""The chaos layer's errors: one branch of :class:`FoundationError`."""

from __future__ import annotations

from config.errors import FoundationError


class ChaosError(FoundationError):
    """A chaos run, nemesis or proxy could not do what it was asked."""


class NemesisUnavailable(ChaosError):
    """The machine lacks what a nemesis needs (root, ``ip``, ``nft``, a toxiproxy); the reason says what."""
