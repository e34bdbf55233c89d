"""The model stage: loading (registry, PyPI-embedded GGUF, hub, local, tiny), the site table
per architecture, interventions in a context manager, and the RelP replacement model.
"""
