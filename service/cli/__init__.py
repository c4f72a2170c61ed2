"""The ``dualtune`` command line (ARCHITECTURE §3.7)."""

from dualtune.service.cli import client_commands, server_commands, spec_commands
from dualtune.service.cli.console import app

__all__ = ["app", "client_commands", "main", "server_commands", "spec_commands"]


def main() -> None:
    app()
