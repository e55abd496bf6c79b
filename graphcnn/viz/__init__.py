"""Visualisation helpers.

:mod:`graphcnn.viz.grids` holds graph-mode TensorFlow ops that tile tensors (conv
filters, feature maps, input images) into ``uint8`` images ready for
``tf.compat.v1.summary.image``. :mod:`graphcnn.viz.animation` writes PNG, animated PNG
and animated GIF files from numpy arrays without any imaging library.
"""
