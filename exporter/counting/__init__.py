"""Rows to counts, pure: row parsing, the per-poll tally, snapshots, the tracker, the state file."""
