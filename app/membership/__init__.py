"""Membership: workspaces, features, members, groups and teams, invitations, platform roles, access."""
