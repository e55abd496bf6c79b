"""TensorBoard: graph-side summary ops, summary writing, validation views, event reading, the launcher."""
