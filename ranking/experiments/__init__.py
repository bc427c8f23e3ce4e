"""Experiments: sticky assignment of users to arms, team-draft interleaving, per-arm metrics and their statistics."""
