"""Failures of the network and of the services the kit depends on, made for real with a TCP
proxy: every request is answered, in time, in JSON, and nothing written is lost or invented.

A package (unlike the rest of tests/) so that its modules import their helpers relatively,
which lets mypy check them as they are.
"""
