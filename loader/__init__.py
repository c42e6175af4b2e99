"""User space of the multicast forwarder: pinned instance, membership model, devmap sync, controller.

* ``pins``       -- the bpffs layout of an instance (``/sys/fs/bpf/pybpfasm/<instance>/...``)
* ``instance``   -- create / re-open / remove an instance (maps, programs, XDP links)
* ``membership`` -- who is subscribed to what, from IGMP v1/v2/v3 events (pure Python)
* ``devmaps``    -- keeps the kernel's hash of per-group devmaps equal to the membership
* ``controller`` -- the event loop: ring buffer -> membership -> devmaps
"""
