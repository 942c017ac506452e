"""A tiny offline world of coloured shapes with a CLIP-style model trained on it."""
