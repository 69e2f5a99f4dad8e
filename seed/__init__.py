"""Demo data (DESIGN.md §6)."""
