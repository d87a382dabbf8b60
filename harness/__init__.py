"""The ``aviary`` command line: one entry (``cli``) and the options of each command.

It sits on top of everything else and drives it; nothing below imports it.
"""
