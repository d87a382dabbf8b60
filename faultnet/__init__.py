"""Fault injection between client and server.

``faults`` holds the decisions as data and pure functions; ``proxy`` (an asyncio
TCP proxy on 127.0.0.1) and ``kernel`` (client, NAT router and server in private
namespaces under ``unshare -Urnm``) are the two back-ends, joined behind one
interface with the server faults (crash, freeze, restart) in ``backends``;
``pytest_plugin`` has the fixtures, ``matrix`` the fault matrix, ``cli`` the
``aviary faultnet`` command.
"""
