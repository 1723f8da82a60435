"""Audio I/O and corpus readers. Knows nothing of models: every reader emits the one manifest format."""
