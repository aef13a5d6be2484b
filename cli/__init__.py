"""``jobctl``, the operator command line (see :mod:`cli.jobctl`)."""
