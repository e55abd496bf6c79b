"""graphcnn: build CNNs from scratch as TF1-style TensorFlow graphs, train them, see inside them.

Importing the package does not import TensorFlow, so that :mod:`graphcnn.runtime` can set
TensorFlow's environment first. The public API lives in the submodules:

- :mod:`graphcnn.config` and :mod:`graphcnn.presets`: what to build and train;
- :mod:`graphcnn.model`: layers, the network and the training graph;
- :mod:`graphcnn.data`: dataset sources and the ``tf.data`` pipeline;
- :mod:`graphcnn.train`: the training loop, checkpoints, summaries, run directories;
- :mod:`graphcnn.predict` and :mod:`graphcnn.evaluate`: restore a checkpoint and use it.
"""

__version__ = "0.1.0"
