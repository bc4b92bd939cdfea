"""Data pipeline on Ray: validate COCO datasets, precompute sharded targets, stream them."""
