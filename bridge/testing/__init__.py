"""Testing helpers users get too (filled in by the local endpoint's owner)."""
