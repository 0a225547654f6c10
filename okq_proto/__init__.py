"""okq_proto: the sans-I/O core of the okq driver (being written)."""
