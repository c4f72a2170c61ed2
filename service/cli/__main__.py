"""``python -m dualtune.service.cli``: the same commands as the ``dualtune`` script."""

from dualtune.service.cli import main

main()
