"""The model: the architectures, test-time views, and the copy that ships."""
