"""One folder per template family; each is registered by one line in training/registry.py."""
