"""One module per console page (a Flask blueprint each)."""
