"""The ``pybpfasm`` command line, one module per command family."""
