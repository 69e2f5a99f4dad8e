"""Identity: users, sign-in sessions, email changes, the user's own profile."""
