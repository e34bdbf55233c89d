"""Committed reference results, and (later) SAE training for models without pretrained SAEs."""
