"""Dramatiq middleware, one concern per module."""
