"""dualtune-credit: an example dualtune plugin (docs/plugins.md in the dualtune repository).

* ``catalog``: the torch-free descriptions the entry points name (``GERMAN_CREDIT``,
  ``GROUP_FNR``) and their parameters.
* ``task``: ``GermanCredit``, the UCI German credit data and a tabular model.
* ``constraint``: ``GroupFalseNegativeRate``, the ``group_fnr`` constraint kind.
"""
