"""Card-fraud detection: the built-in use case (simulated card transactions, late fraud labels)."""
