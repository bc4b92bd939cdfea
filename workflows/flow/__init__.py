"""The whole pipeline as one Prefect flow (``centernet run CONFIG.yaml``).

``config``: the pipeline config (one YAML file per recipe, validated before any step runs);
``caching``: cache keys, code versions, retry rules; ``steps``: the Prefect tasks, each calling the
existing step function; ``pipeline``: the flow that orders them; ``prefect_env``: where Prefect keeps
its state and how quiet it is. Nothing here imports Prefect at module level.
"""
