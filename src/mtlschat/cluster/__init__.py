"""Scaling out on Redis (issue 13): the non-blocking Redis link and the node engine.

``cluster`` may import ``chat``, ``history``, ``ca`` and ``setting``, never ``net`` (the loop
imports it, not the reverse).
"""
