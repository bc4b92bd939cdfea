"""Workflows on Ray and MLflow: train, tune, evaluate, register, and the command line."""
