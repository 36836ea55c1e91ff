"""Engines beside the local one (which lives in :mod:`autolabel.pipeline`): where frames are labeled.

Every engine hands :func:`autolabel.pipeline.write_product` the same events in the same order,
so the dataset does not depend on the engine.
"""
