"""One sub-package per method; only :mod:`wlora.registry` lists them."""
