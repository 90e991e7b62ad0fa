"""The model's own pipeline: feature data sets (SPEC §6), training, evaluation, preprocessing.

``highlightsense preprocess`` turns media clips into feature files, ``highlightsense train``
trains the CRNN on them (also under ``torchrun``), ``highlightsense evaluate`` scores weights on
a data set. ``python -m highlightsense.training`` offers the same three commands.
"""
