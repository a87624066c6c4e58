"""pytest fixtures for testing against bridge's local endpoint (filled in by its owner)."""
