"""sparsebench harness: models, sites, interventions (attribution and sweeps build on these)."""

from bench.interventions import intervene
from bench.models import ModelHandle, load_model
from bench.sites import ARCHITECTURES, SiteTable

__all__ = ["ARCHITECTURES", "ModelHandle", "SiteTable", "intervene", "load_model"]
