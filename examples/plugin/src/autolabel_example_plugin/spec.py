"""The base model's spec: what ``--base-model example-color`` is, read by the CLI to build its flags.

This module must stay light: it imports autolabel's registry (dataclasses only), never
numpy, OpenCV or torch. The work is in :mod:`autolabel_example_plugin.color`, imported
when the model is used.
"""

from __future__ import annotations

from autolabel.labelers.registry import BaseModel

EXAMPLE_COLOR = BaseModel(
    name="example-color",
    help=(
        "Example plug-in: one box per blob of saturated red (R>150, G<80, B<80), of the ontology's first "
        "class, score 1.0; no thresholds apply"
    ),
    module="autolabel_example_plugin.color",
    options=(),
    thresholds=(),
)
