"""okq_transports: the I/O around the sans-I/O core (``okq_proto``).

The clients (``okq_transports.sync``, ``.asyncio``, ``.trio``, ``.redis``), the embedded server
(``okq_transports.server``), the ``okq`` command line (``okq_transports.cli``) and the pytest
plugin.  This package itself holds only the distribution's version.
"""

import okq_proto as _proto

#: The okq distribution's version (one source: ``okq_proto.__version__``).
__version__: str = _proto.__version__

__all__ = ["__version__"]
