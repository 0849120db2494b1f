"""The assets that hand work from one Loopline DAG to the next, defined once.

Producers list them in ``outlets``, consumers in ``schedule``; the event ``extra`` carries the
metadata (batch id, model version, reason) the consumer needs.
"""

from airflow.sdk import Asset

# A landing-zone batch passed Great Expectations and was published to the curated store.
VALIDATED_BATCH = Asset(name="loopline.validated_batch", uri="loopline://validated_batch")
# Feature aggregates for a batch interval were materialised offline and online.
FEATURES = Asset(name="loopline.features", uri="loopline://features")
# Something (drift, a person) asked for a new model; the extra says why.
RETRAIN_REQUESTED = Asset(name="loopline.retrain_requested", uri="loopline://retrain_requested")
# A model version passed the benchmark gate and holds the alias "challenger".
CHALLENGER = Asset(name="loopline.challenger", uri="loopline://challenger")
