"""The platform's foundation: typed settings, the control database, the ledger models,
the Redis broker, the job context and the one error hierarchy every other package uses."""
