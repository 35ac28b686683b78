"""Dataset formats, the scenes generator, manifests and validation."""
