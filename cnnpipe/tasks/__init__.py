"""The training core of each task: data in, trained model and curves out (no I/O of params)."""
