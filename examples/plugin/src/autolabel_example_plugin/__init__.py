"""An example autolabel plug-in: the base model ``example-color`` and the format ``example-csv``.

Nothing is imported here: the CLI loads :mod:`.spec` (light) to build its flags, and the
labeler's module only when ``--base-model example-color`` runs.
"""
