"""pybpfasm: a pure-Python eBPF toolchain.

Bytecode is emitted by Python, loaded with raw ``bpf()`` syscalls through
ctypes, attached with netlink, and ring buffers are read straight from mmap.
"""

__version__ = "0.1.0"
