"""The operator console: server-rendered pages over the ledger, schedules, tenants and
queues, with safe actions (``python -m console``, ``jobctl console``; docs/console.md)."""
