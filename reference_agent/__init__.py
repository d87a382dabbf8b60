"""The ptrace interposition agent behind ``aviary run`` (issue 3: not built yet).

It will trap the syscalls its namespace needs through a seccomp filter,
resolve paths through the mountlist, and hand remote files to ``drivers``.
"""
