"""A small segmentation project: the model and the loss live in their own modules."""
