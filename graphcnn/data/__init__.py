"""Data loading: sources (digits, folder, idx, npz, pickle), splitting and image-file validation.

See :mod:`graphcnn.data.sources` (``load_dataset``) and :mod:`graphcnn.data.scan`.
"""
