"""Data loading: sources (digits, folder, idx, npz, pickle), splitting and image-file validation.

See :mod:`graphcnn.data.sources` (``load_dataset``), :mod:`graphcnn.data.dataset` (what it returns)
and :mod:`graphcnn.data.scan`.
"""
