"""Case-management jobs (seed 000): the email sync family, email matching and the scheduled agency jobs."""
