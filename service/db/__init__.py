"""The service's database: rows, engine, migrations and the repository that owns them."""
