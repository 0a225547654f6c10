"""Fuzz targets for the okq codecs and machines (atheris-compatible)."""
