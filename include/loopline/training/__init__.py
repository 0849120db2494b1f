"""Training the fraud detector: config, model, MLflow pyfunc wrapper and the training entry point."""
