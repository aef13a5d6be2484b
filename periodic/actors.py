"""Placeholder owned by the scheduling work (issue 3): the periodic dispatcher actors."""
