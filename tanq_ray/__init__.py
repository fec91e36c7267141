"""tanq-ray: the TANQ cross-modality domain-adaptation recipe on Ray, tracked in MLflow."""

__version__ = "0.1.0"
