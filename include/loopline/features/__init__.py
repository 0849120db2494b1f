"""Features: leak-free aggregates, the Feast feature store, training sets and online retrieval."""
