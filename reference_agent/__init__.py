"""The ptrace interposition agent behind ``aviary run``.

A program's syscall takes this path: the seccomp filter built from ``table``
stops the calls the namespace may need; ``agent`` reads each at its stop as a
``call.Call``; ``namespace`` decides where its path leads (local, remote,
refused); a handler (``sys_*``) answers it natively or through a driver from
``drivers``, with remote descriptors kept in ``files``. ``program`` puts the
table and the agent together; ``sandbox`` adds the path policy.
"""
