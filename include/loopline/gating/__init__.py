"""The benchmark gate: a candidate version must beat the champion, be fair, be fast and serve.

``policy`` (gate.yaml), ``holdout`` (the window after training), ``metrics`` and ``decide`` (pure),
``latency`` and ``infra`` (the serving code path, in-process and as a process), ``gate`` (the I/O shell
that records the verdict with the model version), ``card`` (the model card).
"""
