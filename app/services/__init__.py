"""Services: one module per concern; each owns its invariants and its transaction."""
