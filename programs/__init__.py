"""The multicast forwarder's XDP programs and the event layout they share with the controller.

``downstream`` runs on every downstream port (IGMP snooping, container-to-container
multicast), ``upstream`` on the upstream interface (group lookup, broadcast redirect).
``events`` declares the ring-buffer record and the statistics counters.
"""
