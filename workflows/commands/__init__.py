"""One module per ``centernet`` sub-command (see workflows/cli.py)."""
