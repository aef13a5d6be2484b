"""Tenants: the registry in the control database, per-tenant sessions and fan-out."""
