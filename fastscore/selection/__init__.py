"""Selection: the scores read once into columns (``table``), the budget primitives
(``budget``), the input's groups and duplicates (``inputs``), coverage over clusters
(``coverage``) and the rule that chooses (``selector``). A scores file enters, a subset
leaves.
"""
