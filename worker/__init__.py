"""The sweep driver: runs a sweep's trials on Ray Tune and tracks them in MLflow."""
