"""Data: the batch contract, the landing zone and the write–audit–publish ingest (the transaction
simulator is the fraud use case's: :mod:`loopline.usecases.fraud.simulator`)."""
