"""Flywheel: a self-hosted model server that learns from its users."""

__version__ = "0.1.0"
