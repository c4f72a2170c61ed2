"""``python -m service.cli``: the same commands as the ``dualtune`` script."""

from service.cli import main

main()
