"""A small application on the bus: a thumbnail renderer (see examples/README.md)."""
