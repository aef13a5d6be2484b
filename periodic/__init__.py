"""Scheduled jobs: schedules as data, time-zone-correct cadences, tick history, periodiq integration."""
