"""nnexp: YAML experiments for the classic networks of Nielsen's and Saitoh's books."""

__version__ = "0.1.0"
