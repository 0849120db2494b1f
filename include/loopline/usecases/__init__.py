"""Use cases: everything specific to one prediction problem, one package each (``usecases/<name>/``).

The platform packages below never import a use case; they read the one chosen by ``LOOPLINE_USE_CASE``
through :mod:`loopline.config.use_case`. Card-fraud detection (``usecases/fraud``) is the first.
"""
