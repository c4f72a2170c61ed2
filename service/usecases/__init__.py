"""What the service does, one function per request; routes and the CLI call these."""
