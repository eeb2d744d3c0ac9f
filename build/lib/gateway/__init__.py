"""Hooks gateway: Auth0-compatible extensibility points as signed, durable webhooks."""

__version__ = "0.1.0"
