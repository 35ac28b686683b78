"""``make bench``: what the pipeline costs on top of plain Keras, how close training gets to the
machine's limit, time to accuracy, orchestration cost and inference speed. Figures, not tests."""
