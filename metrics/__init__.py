"""The Prometheus exporter and the metric definitions it serves."""
