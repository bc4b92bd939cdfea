"""CenterNet ("Objects as Points") in plain PyTorch: targets, models, losses, decoding, evaluation.

This package imports only torch, numpy, opencv and pycocotools (no ray, mlflow or pyarrow).
"""
