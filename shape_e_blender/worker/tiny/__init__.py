"""Tiny random Shap-E pipelines for tests and the offline self-test (``write_tiny_pipeline``)."""
