"""Plain values and invariants shared by every layer: errors, ids, statuses and their rules."""
