"""Visualisation helpers.

:mod:`graphcnn.viz.grids` holds graph-mode TensorFlow ops that tile tensors (conv
filters, feature maps, input images) into ``uint8`` images ready for
``tf.compat.v1.summary.image``. :mod:`graphcnn.viz.images` works on numpy arrays with
Pillow: PNG bytes and files, animated PNG/GIF, the confusion matrix, captioned image
grids and captioned frames, with text in matplotlib's DejaVu Sans.
"""
