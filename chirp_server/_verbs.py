"""The Chirp server's requests: one declarative table, one small handler per verb.

Theory of operation
-------------------
cctools' server parses a request line by trying ``sscanf`` patterns in a fixed
order and taking the first that converts every argument. ``scan`` does the
same: the verb's letters must start the line, each argument skips C
whitespace first, an integer is ``[+-]digits`` (saturating at 64 bits) and a
string is the next run of non-whitespace; trailing text is ignored. So
``stat /a junk`` is ``stat /a``, ``pread 3 10 5x`` is a pread, and
``statfs /`` never reaches ``stat`` because ``statfs`` comes first. A line no
pattern matches is answered -8 (INVALID_REQUEST), as cctools answers ENOSYS.

``VERBS`` declares each verb once, in cctools' order, in the manner of
pyftpdlib's ``proto_cmds``: its argument names (which give their kinds), the
arguments that must not be negative, the ACL right it needs and a help line.
``dispatch`` runs the generic part in cctools' order -- parse, the
non-negative checks, the declared ACL check -- and then the handler. Verbs
whose checks are interleaved with other work (open, putfile, mkdir, ...) say
``need=None`` and check inside the handler, in the same order as cctools.

The handlers themselves (``h.rpc_*``) are in ``_server_handlers``.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from chirp_server import _acl as acl
from chirp_server import _handlers as h
from chirp_server._fs import fix_path
from chirp_server._handlers import Reply, Request, Session
from drivers.chirp.codec import chirp_code_for_errno

__all__ = ["VERBS", "Need", "Verb", "answer_code", "dispatch", "scan"]

_INT64 = (-(2**63), 2**63 - 1)
_SPACE = b" \t\n\v\f\r"
_INT_RE = re.compile(rb"[+-]?[0-9]+")
_WORD_RE = re.compile(rb"[^ \t\n\v\f\r]+")
#: Argument names and their kinds: paths are decoded and confined, strings kept as sent.
_PATH_ARGS = frozenset({"path", "old", "new"})
_STR_ARGS = frozenset({"name", "subject", "rights", "target", "algorithm", "letters"})


@dataclass(frozen=True, slots=True)
class Need:
    """An ACL right a verb needs: ``how`` is check, check_link or check_dir on ``arg``."""

    how: str
    flags: int
    arg: str = "path"


@dataclass(frozen=True, slots=True)
class Verb:
    name: str
    args: tuple[str, ...]
    handler: Callable[[Session, Request], Reply]
    need: Need | None
    nonneg: tuple[str, ...]
    help: str


def _fail(code: int) -> OSError:
    return OSError(code, os.strerror(code))


# -- parsing ------------------------------------------------------------------------------------


def scan(line: bytes, verb: str, args: tuple[str, ...]) -> Request | None:
    """Match ``line`` against ``verb`` and its arguments like cctools' sscanf; None if not."""
    if not line.startswith(verb.encode()):
        return None
    pos = len(verb)
    ints: dict[str, int] = {}
    strs: dict[str, str] = {}
    for name in args:
        while pos < len(line) and line[pos] in _SPACE:
            pos += 1
        if name in _PATH_ARGS or name in _STR_ARGS:
            word = _WORD_RE.match(line, pos)
            if word is None:
                return None
            raw = word.group()
            strs[name] = fix_path(raw) if name in _PATH_ARGS else os.fsdecode(raw)
        else:
            word = _INT_RE.match(line, pos)
            if word is None:
                return None
            ints[name] = min(max(int(word.group()), _INT64[0]), _INT64[1])
        pos = word.end()
    return Request(verb, ints, strs)


def dispatch(session: Session, line: bytes) -> tuple[str, Reply]:
    """Run one request line; returns the verb name ("?" if none) and the reply.

    Raises:
        OSError: the request failed; its errno is the answer.
    """
    for verb in VERBS.values():
        request = scan(line, verb.name, verb.args)
        if request is not None:
            break
    else:
        raise _fail(errno.ENOSYS)
    if any(request.i(name) < 0 for name in verb.nonneg):
        raise _fail(errno.EINVAL)
    if verb.need is not None:
        check = getattr(session.acl, verb.need.how)
        check(request.s(verb.need.arg), session.subject, verb.need.flags)
    return verb.name, verb.handler(session, request)


def answer_code(exc: OSError) -> int:
    return chirp_code_for_errno(exc.errno or 0)


# -- the table ------------------------------------------------------------------------------------

_R, _W, _L, _A = acl.READ, acl.WRITE, acl.LIST, acl.ADMIN


def _v(
    name: str,
    args: str,
    handler: Callable[[Session, Request], Reply],
    need: Need | None,
    help: str,
    nonneg: str = "",
) -> Verb:
    return Verb(name, tuple(args.split()), handler, need, tuple(nonneg.split()), help)


def _path(flags: int, arg: str = "path") -> Need:
    return Need("check", flags, arg)


def _self(flags: int) -> Need:
    return Need("check_link", flags)


def _dir(flags: int) -> Need:
    return Need("check_dir", flags)


#: Every verb the server answers, in cctools' matching order. Anything else is -8,
#: including the RPCs a plain file server has no use for (tickets, jobs, thirdput,
#: search, allocations, audit, localpath, whoareyou, setrep, debug).
VERBS: dict[str, Verb] = {
    v.name: v
    for v in (
        _v("pread", "fd length offset", h.rpc_pread, None, "n + n bytes", "length"),
        _v(
            "sread",
            "fd length stride_length stride_skip offset",
            h.rpc_sread,
            None,
            "strided read",
            "length stride_length stride_skip",
        ),
        _v("pwrite", "fd length offset", h.rpc_pwrite, None, "+ length bytes -> n"),
        _v(
            "swrite",
            "fd length stride_length stride_skip offset",
            h.rpc_swrite,
            None,
            "strided write",
        ),
        _v("whoami", "length", h.rpc_whoami, None, "caller's subject, truncated", "length"),
        _v("readlink", "path length", h.rpc_readlink, _self(_R), "link text, truncated", "length"),
        _v("getlongdir", "path", h.rpc_getlongdir, _dir(_L), "names + lstat lines, blank line"),
        _v("getdir", "path", h.rpc_getdir, _dir(_L), "names, blank line"),
        _v("getacl", "path", h.rpc_getacl, None, "'subject rights' lines, blank line; no check"),
        _v("getfile", "path", h.rpc_getfile, None, "needs r: length + bytes"),
        _v(
            "putfile",
            "path mode length",
            h.rpc_putfile,
            None,
            "needs w or p: 0, bytes, length",
            "length",
        ),
        _v("getstream", "path", h.rpc_getstream, None, "needs r: 0 + bytes until close"),
        _v("putstream", "path", h.rpc_putstream, None, "needs w or p: 0, bytes until close"),
        _v(
            "open",
            "path letters mode",
            h.rpc_open,
            None,
            "needs r/w by flags, p to create, l for dirs",
        ),
        _v("close", "fd", h.rpc_close, None, "0"),
        _v("fchmod", "fd mode", h.rpc_fchmod, None, "0"),
        _v("fchown", "fd uid gid", h.rpc_fchown, None, "0 (ignored)"),
        _v("fsync", "fd", h.rpc_fsync, None, "0"),
        _v("ftruncate", "fd length", h.rpc_ftruncate, None, "0", "length"),
        _v("fgetxattr", "fd name", h.rpc_fgetxattr, None, "n + value"),
        _v("flistxattr", "fd", h.rpc_flistxattr, None, "n + NUL-terminated names"),
        _v("fsetxattr", "fd name length flags", h.rpc_fsetxattr, None, "+ length bytes -> 0"),
        _v("fremovexattr", "fd name", h.rpc_fremovexattr, None, "0"),
        _v("unlink", "path", h.rpc_unlink, None, "needs d"),
        _v("access", "path mode", h.rpc_access, None, "needs r/w/x (l for x on a directory)"),
        _v("chmod", "path mode", h.rpc_chmod, None, "needs w on the directory or the file"),
        _v("chown", "path uid gid", h.rpc_chown, _path(_W), "0 (ignored)"),
        _v("lchown", "path uid gid", h.rpc_chown, _path(_W), "0 (ignored)"),
        _v("truncate", "path length", h.rpc_truncate, _path(_W), "0", "length"),
        _v("rename", "old new", h.rpc_rename, None, "needs r+d on old, w on new"),
        _v("getxattr", "path name", h.rpc_getxattr, _path(_R), "n + value"),
        _v("lgetxattr", "path name", h.rpc_getxattr, _path(_R), "n + value"),
        _v("listxattr", "path", h.rpc_listxattr, _path(_R), "n + names"),
        _v("llistxattr", "path", h.rpc_listxattr, _path(_R), "n + names"),
        _v("setxattr", "path name length flags", h.rpc_setxattr, None, "needs w after the data"),
        _v("lsetxattr", "path name length flags", h.rpc_setxattr, None, "needs w after the data"),
        _v("removexattr", "path name", h.rpc_removexattr, _path(_W), "0"),
        _v("lremovexattr", "path name", h.rpc_removexattr, _self(_W), "0"),
        _v("link", "old new", h.rpc_link, None, "needs r+w on old, w on new"),
        _v("symlink", "target path", h.rpc_symlink, _path(_W), "0; target stored verbatim"),
        _v("setacl", "path subject rights", h.rpc_setacl, _dir(_A), "0"),
        _v("resetacl", "path rights", h.rpc_resetacl, _dir(_A), "0: caller gets rights + a"),
        _v("mkdir", "path mode", h.rpc_mkdir, None, "needs v (reserve ACL) or w (copied ACL)"),
        _v("rmdir", "path", h.rpc_rmdir, None, "needs d; .__* files do not count"),
        _v("rmall", "path", h.rpc_rmall, None, "needs d; recursive"),
        _v("utime", "path atime mtime", h.rpc_utime, _path(_W), "0"),
        _v("fstat", "fd", h.rpc_fstat, None, "0 + stat line"),
        _v("fstatfs", "fd", h.rpc_fstatfs, None, "0 + statfs line"),
        _v("statfs", "path", h.rpc_statfs, _path(_L), "0 + statfs line"),
        _v("stat", "path", h.rpc_stat, _path(_L), "0 + stat line"),
        _v("lstat", "path", h.rpc_lstat, _self(_L), "0 + stat line"),
        _v("md5", "path", h.rpc_md5, _path(_R), "16 + digest"),
        _v("hash", "algorithm path", h.rpc_hash, _path(_R), "n + digest (md5, sha1)"),
    )
}
