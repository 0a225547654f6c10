"""The version of the okq distribution: its one source.

pyproject.toml reads it (``[tool.setuptools.dynamic]``, without importing anything);
``okq_proto.__version__`` and ``okq_transports.__version__`` are this string.
"""

__version__ = "0.1.0"
