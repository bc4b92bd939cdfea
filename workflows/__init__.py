"""Workflows on Ray and MLflow: training (Ray Train), searches (Ray Tune), the model registry, using models, the pipeline flow, and the `centernet` command line."""
