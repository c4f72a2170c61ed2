"""The dualtune service and its command line (``dualtune``)."""
