"""Server-rendered web UI: thin page shells whose data and changes go through the JSON API."""
