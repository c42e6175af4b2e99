"""hello (bpf_code): ``bpf_printk`` on every packet, then XDP_PASS.

The user-space part prints the trace pipe (``cat /sys/kernel/tracing/trace_pipe``).
"""

from __future__ import annotations

from examples import follow_trace
from pybpfasm.dsl import XDP_PASS, trace_printk, xdp


@xdp
def hello(pkt):
    trace_printk("hello world\n")
    return XDP_PASS


def userspace(prog, maps, stop):
    for line in follow_trace(stop):
        print(line, flush=True)
