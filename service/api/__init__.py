"""The HTTP API (FastAPI): schemas, dependencies, routes and the app factory."""
