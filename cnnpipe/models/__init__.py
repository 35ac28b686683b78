"""One builder function per architecture, each returning a ``keras.Model``."""
