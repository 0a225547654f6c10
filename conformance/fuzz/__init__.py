"""Fuzz targets for the okq codecs and machines (atheris-compatible).

``python -m conformance.fuzz.differential`` runs the two reply decoders side by side on a
million generated streams and classifies every disagreement (see that module).
"""
