"""Conversion of original TensorFlow VATT checkpoints to the transformers format (TensorFlow is imported lazily)."""
