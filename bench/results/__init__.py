"""Results as plain data: the SweepResult schema, provenance, the reference check against
baselines/ and the verdict. No torch at import time.
"""
