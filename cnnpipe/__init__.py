"""cnnpipe: reproducible training and shipping of convolutional networks."""

__version__ = "0.1.0"
