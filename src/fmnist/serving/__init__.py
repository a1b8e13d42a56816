"""What ships: the package layout, the SavedModel's signature and the model card."""
