"""Landlock for a candidate process: what it may read, write, connect to and signal.

A candidate is untrusted code: evolution searches for every way to a better
score, reading the validation text from disk or editing evocode's sources
included. Landlock (Linux ≥ 5.13) lets an unprivileged process give up
rights for itself and every process it starts, irrevocably. A confined
candidate may read and execute only beneath the read-only paths it is given,
write only beneath the read-write ones, make no TCP connection and bind no
TCP port, and neither signal nor reach an abstract unix socket outside its own
domain (so it cannot signal the worker that started it).

Use it in two steps so that the second can run in a freshly forked child of a
process that imported torch: `prepare_confinement` (in the parent) finds the
libc functions, builds the ctypes structures and works out every rule;
`Confinement.apply` (in the child, before any candidate code) only opens
the paths, adds the rules and restricts itself: no library loading, no
threads, small allocations. `confine` does both at once.

The rights are those of the ABI the kernel reports; an older kernel gets what
it supports (no TCP rules below ABI 4, no signal scoping below ABI 6). Where
Landlock is missing nothing is restricted and the state says why, so the
caller can record that its result was not sandboxed.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from evocode.data import PACKAGED, Corpus

# Syscall numbers from the generic table, shared by x86_64 and aarch64.
_SYSCALLS = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446)}
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38
_PROC_SELF = "/proc/self"

# Filesystem rights, with the ABI that introduced each (linux/landlock.h).
_EXECUTE = 1 << 0
_WRITE_FILE = 1 << 1
_READ_FILE = 1 << 2
_READ_DIR = 1 << 3
_ABI1_FS = (1 << 13) - 1  # execute … make_sym
_REFER = 1 << 13  # ABI 2
_TRUNCATE = 1 << 14  # ABI 3
_IOCTL_DEV = 1 << 15  # ABI 5
_FILE_ONLY = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE | _IOCTL_DEV
_READ_ONLY = _EXECUTE | _READ_FILE | _READ_DIR
# Network rights (ABI 4): handled and never granted, so no TCP bind or connect at all.
_NET_TCP = (1 << 0) | (1 << 1)
# Scopes (ABI 6): abstract unix sockets and signals stay inside the domain.
_SCOPED = (1 << 0) | (1 << 1)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # __attribute__((packed)) in the kernel's header: 12 bytes
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _fs_rights(abi: int) -> int:
    rights = _ABI1_FS
    if abi >= 2:
        rights |= _REFER
    if abi >= 3:
        rights |= _TRUNCATE
    if abi >= 5:
        rights |= _IOCTL_DEV
    return rights


def _ruleset_size(abi: int) -> int:
    """Older kernels reject the fields they do not know, so pass only those of the ABI."""
    return 8 if abi < 4 else 16 if abi < 6 else 24


class SandboxError(OSError):
    """Landlock is there but the confinement could not be applied; the candidate must not run unconfined."""


@dataclass(frozen=True)
class Rule:
    """Rights granted beneath one path (or on one file)."""

    path: str
    access: int


class Confinement:
    """Everything needed to confine the calling process, prepared so that `apply` is fork-safe."""

    def __init__(
        self, state: str, abi: int, rules: list[Rule],
        syscall: Callable[..., int] | None = None, prctl: Callable[..., int] | None = None,
    ) -> None:
        self.state = state
        self.abi = abi
        self.rules = rules
        self._paths = [os.fsencode(rule.path) for rule in rules]
        self._syscall = syscall
        self._prctl = prctl
        self._numbers = _SYSCALLS.get(platform.machine(), (0, 0, 0))
        # The structures and their pointers are made here, so the child only fills in numbers.
        self._attr = _RulesetAttr(_fs_rights(abi), _NET_TCP if abi >= 4 else 0, _SCOPED if abi >= 6 else 0)
        self._attr_ref = ctypes.byref(self._attr)
        self._attr_size = ctypes.c_size_t(_ruleset_size(abi))
        self._beneath = _PathBeneathAttr()
        self._beneath_ref = ctypes.byref(self._beneath)

    def apply(self) -> str:
        """Confine this process and its future children; returns the state for the record.

        Raises SandboxError when Landlock is available but refuses the rules:
        running the candidate unconfined while the record says otherwise
        would be worse than not running it.
        """
        if self._syscall is None:
            return self.state
        create, add_rule, restrict_self = self._numbers
        if self._prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise SandboxError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        ruleset = self._syscall(create, self._attr_ref, self._attr_size, 0)
        if ruleset < 0:
            raise SandboxError(ctypes.get_errno(), "landlock_create_ruleset failed")
        try:
            for rule, path in zip(self.rules, self._paths):
                self._add(add_rule, ruleset, rule, path)
            if self._syscall(restrict_self, ruleset, 0) != 0:
                raise SandboxError(ctypes.get_errno(), "landlock_restrict_self failed")
        finally:
            os.close(ruleset)
        return self.state

    def _add(self, add_rule: int, ruleset: int, rule: Rule, path: bytes) -> None:
        # Opened here, not in prepare: /proc/self must name the confined process, not its parent.
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except (FileNotFoundError, PermissionError):
            return  # nothing there to grant, or nothing this user could reach anyway; stays denied
        try:
            self._beneath.parent_fd = fd
            self._beneath.allowed_access = rule.access
            if self._syscall(add_rule, ruleset, _RULE_PATH_BENEATH, self._beneath_ref, 0) != 0:
                raise SandboxError(ctypes.get_errno(), f"landlock_add_rule for {rule.path} failed")
        finally:
            os.close(fd)


def landlock_abi() -> tuple[int, str]:
    """The kernel's Landlock ABI version, or 0 and the reason it cannot be used."""
    if not sys.platform.startswith("linux"):
        return 0, f"Landlock is Linux only (this is {sys.platform})"
    if platform.machine() not in _SYSCALLS:
        return 0, f"no Landlock syscall numbers known for {platform.machine()}"
    libc = ctypes.CDLL(None, use_errno=True)
    abi = libc.syscall(_SYSCALLS[platform.machine()][0], None, ctypes.c_size_t(0), _CREATE_RULESET_VERSION)
    if abi >= 1:
        return abi, ""
    reasons = {errno.ENOSYS: "this kernel has no Landlock", errno.EOPNOTSUPP: "Landlock is disabled in this kernel (boot option lsm=)"}
    code = ctypes.get_errno()
    return 0, reasons.get(code, f"landlock_create_ruleset failed: {os.strerror(code)}")


def prepare_confinement(
    read_only: Iterable[str | os.PathLike], read_write: Iterable[str | os.PathLike], unreadable: Iterable[str | os.PathLike] = (),
) -> Confinement:
    """Work out, in the parent, the rules that `Confinement.apply` will enforce in the child.

    read_only: read and execute beneath these (directories or single files).
    read_write: every filesystem right beneath these.
    unreadable: paths beneath a read-only one that must stay unreadable
        (Landlock only grants, so their read-only ancestor is split: the
        directories on the way stay listable, everything beside them readable).
    Paths that do not exist are skipped.
    """
    abi, why = landlock_abi()
    if abi == 0:
        return Confinement(f"none: {why}", 0, [])
    everything = _fs_rights(abi)
    hidden = {_resolved(p) for p in unreadable}
    rules = [rule for path in read_only for rule in _read_rules(_resolved(path), hidden)]
    rules += [Rule(_resolved(path), everything) for path in read_write]
    rules = [Rule(r.path, r.access & _FILE_ONLY) if _is_file(r.path) else r for r in rules]
    libc = ctypes.CDLL(None, use_errno=True)
    return Confinement(f"landlock ABI {abi}", abi, list(dict.fromkeys(rules)), libc.syscall, libc.prctl)


def _resolved(path: str | os.PathLike) -> str:
    """The real path, so that containment is judged on what the kernel sees; /proc/self stays itself.

    Resolved here, /proc/self would name the parent that prepares the rules,
    not the child that applies them.
    """
    path = os.fspath(path)
    if path == _PROC_SELF or path.startswith(_PROC_SELF + os.sep):
        return path
    return os.path.realpath(path)


def _read_rules(path: str, hidden: set[str]) -> list[Rule]:
    """Read-only rights beneath path, except beneath the hidden paths inside it."""
    if path in hidden:
        return []
    inside = [h for h in hidden if h.startswith(path.rstrip(os.sep) + os.sep)]
    if not inside or not os.path.isdir(path):
        return [Rule(path, _READ_ONLY)]
    # Listing stays allowed beneath path (names only); each entry is granted or split again.
    rules = [Rule(path, _READ_DIR)]
    for entry in sorted(os.listdir(path)):
        rules += _read_rules(os.path.join(path, entry), hidden)
    return rules


def _is_file(path: str) -> bool:
    return os.path.exists(path) and not os.path.isdir(path)


def confine(
    read_only: Iterable[str | os.PathLike], read_write: Iterable[str | os.PathLike], unreadable: Iterable[str | os.PathLike] = (),
) -> str:
    """Confine the calling process now (see `prepare_confinement`); returns `landlock ABI N` or `none: <why>`."""
    return prepare_confinement(read_only, read_write, unreadable).apply()


def interpreter_paths() -> list[str]:
    """What any Python program with torch needs to read: the interpreter, its libraries, devices and CPU facts."""
    import site

    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    site_dirs = set(site.getsitepackages()) | {site.getusersitepackages()}
    return sorted(prefixes | site_dirs | set(_SYSTEM_READ_ONLY))


# Found by tracing the seed script confined (strace -e trace=%file): shared libraries and their
# loader cache, the random device, the process's own /proc entries, and the CPU facts torch reads;
# and the system's programs, so that a candidate may start a tool (which is confined as it is).
_SYSTEM_READ_ONLY = (
    "/usr/bin", "/bin", "/usr/lib", "/usr/lib64", "/lib", "/lib64", "/etc/ld.so.cache",
    "/dev/urandom", "/proc/self", "/proc/cpuinfo", "/sys/devices/system/cpu",
)
# Written by ordinary programs (subprocess.DEVNULL); a sink, so writable.
_SYSTEM_READ_WRITE = ("/dev/null",)
# What the CUDA driver opens (the device nodes, its /proc and /sys entries); granted only when
# the candidate may use a GPU.
_CUDA_READ_WRITE = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-caps")
_CUDA_READ_ONLY = ("/proc/driver/nvidia", "/sys/devices", "/sys/bus/pci", "/sys/module/nvidia")


def candidate_confinement(workdir: str, result_dir: str, corpus: Corpus, cuda: bool = False) -> Confinement:
    """The confinement of one candidate program, prepared in its parent.

    Reads: the interpreter and its packages, evocode's own package (not its
    packaged corpora, not the rest of a checkout it was imported from), the
    prepared corpus's meta.json (its splits reach the harness as descriptors
    opened before confinement, so no path to them is readable), and the
    system files listed above. Writes: its working directory and the directory of its result
    record only. With `cuda`, the GPU's device files too.
    """
    import evocode

    package = Path(evocode.__file__).resolve().parent
    root = package.parent
    system = interpreter_paths()
    unreadable = [PACKAGED, *([corpus.hidden_path] if corpus.hidden_path else [])]
    if str(root) not in {_resolved(p) for p in system}:
        # A checkout: tests, benchmarks, run directories and .git are no business of the candidate.
        unreadable += [entry for entry in root.iterdir() if entry != package]
    # Of the corpus only its description: the splits arrive as descriptors opened before confinement.
    read_only = [*system, str(root), str(corpus.directory / "meta.json")]
    read_write = [workdir, result_dir, *_SYSTEM_READ_WRITE]
    if cuda:
        read_only += _CUDA_READ_ONLY
        read_write += [*_CUDA_READ_WRITE, *(str(p) for p in Path("/dev").glob("nvidia[0-9]*"))]
    return prepare_confinement(read_only, read_write, unreadable)
