"""The bottom of bench: errors, option checks, finite checks, the cache, the environment.

Imports nothing else from bench and no torch at import time.
"""
