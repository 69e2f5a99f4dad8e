"""Decision surfaces' shared path: user references, resolution and facts, the AuthZEN service."""
