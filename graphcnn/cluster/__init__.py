"""Training on several processes or machines with TensorFlow's own distributed runtime.

``spec`` (which task this process is: ``TF_CONFIG``), ``graph`` (device placement, the
all-reduce and broadcast ops, the workers' shared state), ``session`` (servers, how each
worker's session starts, how the workers stop together), ``local`` (``graphcnn
cluster-local``: a whole cluster on 127.0.0.1).
"""
