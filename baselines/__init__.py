"""Committed reference results, and the dictionaries (SAEs, transcoders) that dictionary bases use.

- reference results: JSON files that CI compares new curves against;
- :mod:`baselines.dictionaries`: the ``sae`` and ``transcoder`` bases (``make_dictionary_basis``,
  called by ``bench.bases.make_basis``) from ``path:``, ``release:`` or ``local`` dictionaries;
- :mod:`baselines.training`: SAE training (sae-lens) for models without pretrained SAEs, on the
  corpus of :mod:`baselines.corpus`, with quality from :mod:`baselines.quality`;
- ``python -m baselines train|quality``: the command line.
"""
