"""Matchbox: an open exchange core for prediction markets and betting exchanges."""

__version__ = "0.1.0"
