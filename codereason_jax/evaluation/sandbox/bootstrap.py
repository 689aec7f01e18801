"""Process isolation: the bootstrap that becomes processes A, B and C of one sandboxed run.

Run by the harness as ``python -I -S -B bootstrap.py SPEC_JSON`` (see the package docs). It is a
standalone script (standard library and libc through ``ctypes`` only, Python >= 3.8), because the
interpreter may be the system ``python3`` rather than the harness's.
"""

import ctypes
import errno
import json
import os
import signal
import sys
import time

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC, MS_PRIVATE, MS_RELATIME = (
    1024, 2048, 4096, 16384, 1 << 18, 1 << 21)
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x20000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 1, 24, 38, 47
PR_SET_CHILD_SUBREAPER = 36
SYS_MOUNT_SETATTR, AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = 442, -100, 0x8000, 1

# Set by main() from the command line.
spec = {}
RES = -1
SETUP_FAILED = 125
libc = None
report = {}


def emit(obj):
    os.write(RES, (json.dumps(obj) + "\n").encode())


def die(msg):
    try:
        emit({"setup_error": msg[:2000]})
    finally:
        os._exit(SETUP_FAILED)


def simulate_failure(step, what):
    """The test hook (``launch.SIMULATE_FAILURES``): fail `step` as a kernel refusing it would."""
    if step in spec.get("simulate_failures", ()):
        raise OSError(errno.EPERM, "%s: Operation not permitted (simulated by a test hook)"
                      % what)


def check(rc, what):
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, "%s: %s" % (what, os.strerror(err)))


def prctl(option, arg=0, arg3=0):
    check(libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(arg3),
                     ctypes.c_ulong(0), ctypes.c_ulong(0)), "prctl(%d)" % option)


def mount(source, target, fstype, flags, data=None):
    def enc(s):
        return None if s is None else s.encode()

    check(libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
          "mount %s on %s" % (fstype or source or "", target))


def remount_ro(target, extra=MS_NOSUID | MS_NODEV):
    mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | extra)


class MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def unescape(field):  # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = "", 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit():
            out += chr(int(field[i + 1:i + 4], 8))
            i += 4
        else:
            out += field[i]
            i += 1
    return out


def read_only_root():
    simulate_failure("read_only", "could not make / read-only")
    attr = MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    if not spec.get("force_remount_loop"):
        rc = libc.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD), b"/",
                          ctypes.c_uint(AT_RECURSIVE), ctypes.byref(attr),
                          ctypes.c_size_t(ctypes.sizeof(attr)))
        if rc == 0:
            return "mount_setattr"
    keep = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
            "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME}
    with open("/proc/self/mountinfo") as f:
        lines = f.read().splitlines()
    for line in lines:  # parents before children; a later overmount wins on the same path
        fields = line.split()
        target = unescape(fields[4])
        flags = 0
        for opt in fields[5].split(","):
            flags |= keep.get(opt, 0)
        try:
            mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
        except OSError as err:
            # Only mounts that are hidden under another mount (so unreachable) may fail.
            try:
                st = os.statvfs(target)
            except OSError:
                continue
            if not st.f_flag & os.ST_RDONLY:
                raise OSError(err.errno, "could not make %s read-only: %s" % (target, err))
    return "remount"


def expose(path):
    """Make the directory `path` readable by other users: replace the topmost ancestor that
    others cannot traverse by a tmpfs holding only a read-only bind mount of `path`."""
    path = os.path.realpath(path)
    cur, blocker = "/", None
    for part in [p for p in path.split("/") if p] + [None]:
        if not os.stat(cur).st_mode & 0o001:
            blocker = cur
            break
        if part is not None:
            cur = os.path.join(cur, part)
    if blocker is None:
        return
    if blocker == "/":
        raise OSError(1, "cannot expose %s: / is not traversable" % path)
    fd = os.open(path, os.O_PATH | os.O_DIRECTORY)
    mount("tmpfs", blocker, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=1024,mode=0755")
    os.makedirs(path, mode=0o755, exist_ok=True)
    mount("/proc/self/fd/%d" % fd, path, None, MS_BIND | MS_REC)
    remount_ro(path)
    remount_ro(blocker, MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.close(fd)
    report.setdefault("exposed", []).append(path)


def count_tasks(uid):
    n = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/status" % name) as f:
                    text = f.read()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
            if int(fields.get("Uid", "-1 0").split()[0]) == uid:
                n += int(fields.get("Threads", "1"))
    return n


def unshare():
    is_root = os.geteuid() == 0
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    uid, gid = os.getuid(), os.getgid()
    if not is_root:
        flags |= CLONE_NEWUSER
    simulate_failure("unshare", "unshare")
    check(libc.unshare(ctypes.c_int(flags)), "unshare")
    if not is_root:
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write("0 %d 1" % uid)
        with open("/proc/self/gid_map", "w") as f:
            f.write("0 %d 1" % gid)
    report["user_namespace"] = not is_root


def setup_mounts():
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    report["read_only_root"] = read_only_root()
    for path in spec["expose"]:
        expose(path)
    base, workdir, prog = spec["base_dir"], spec["workdir"], spec["program"]
    with open(prog, "rb") as f:
        source = f.read()
    support = {}  # the runner's files, read before the tmpfs hides them
    for path in spec["support"]:
        with open(path, "rb") as f:
            support[path] = f.read()
    owner = spec["uid"] if spec["uid"] is not None else 0
    group = spec["gid"] if spec["gid"] is not None else 0
    mount("tmpfs", base, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
          "size=1m,nr_inodes=64,mode=0711")
    if support:
        os.mkdir(os.path.dirname(next(iter(support))), 0o755)
        os.chmod(os.path.dirname(next(iter(support))), 0o755)
    for path, data in support.items():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.fchmod(fd, 0o644)  # whatever the harness's umask
        os.write(fd, data)
        os.close(fd)
    os.mkdir(workdir, 0o700)
    mount("tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
          "size=%d,nr_inodes=4096,mode=0700,uid=%d,gid=%d" % (spec["disk_bytes"], owner, group))
    fd = os.open(prog, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, source)
    os.fchown(fd, owner, group)
    os.close(fd)
    remount_ro(base, MS_NOSUID | MS_NODEV | MS_NOEXEC)


def drop_capabilities():
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        prctl(PR_CAPBSET_DROP, cap)
    try:
        prctl(PR_CAP_AMBIENT, 4)  # PR_CAP_AMBIENT_CLEAR_ALL
    except OSError:
        pass


def start_program(nproc_base):
    """In C: limits, privileges, exec. Never returns."""
    import resource
    try:
        lim = spec["limits"]
        for name, value in (("RLIMIT_CORE", 0), ("RLIMIT_AS", lim["as"]),
                            ("RLIMIT_FSIZE", lim["fsize"]), ("RLIMIT_NOFILE", lim["nofile"]),
                            ("RLIMIT_NPROC", nproc_base + lim["nproc"])):
            resource.setrlimit(getattr(resource, name), (value, value))
        resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu"], lim["cpu"] + 1))
        if RES != 3:
            os.dup2(RES, 3)
            os.close(RES)
        os.chdir(spec["workdir"])
        os.umask(0o077)
        if spec["uid"] is not None:
            os.setgroups([])
            os.setresgid(spec["gid"], spec["gid"], spec["gid"])
            os.setresuid(spec["uid"], spec["uid"], spec["uid"])
            if os.geteuid() != spec["uid"] or os.getegid() != spec["gid"]:
                raise OSError(1, "privilege drop did not take effect")
        elif report.get("user_namespace"):
            drop_capabilities()
        prctl(PR_SET_NO_NEW_PRIVS, 1)
        os.execve(spec["python"], spec["argv"], spec["env"])
    except BaseException as err:
        try:
            emit({"setup_error": "starting the program: %r" % (err,)})
        finally:
            os._exit(SETUP_FAILED)


def relay(status):
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else SETUP_FAILED


def children():
    me, kids = str(os.getpid()), []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[1] == me:
                kids.append(int(name))
    return kids


def kill_descendants():
    """Without a PID namespace: B is a child subreaper, so every orphaned descendant of the
    program (double-forked daemons included) is reparented to B. Kill and reap until none."""
    while True:
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            return
        for pid in children():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.005)


def supervise(nproc_base):
    """In B (PID 1 of the new PID namespace when there is one)."""
    try:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        if report.get("namespaces"):
            try:
                simulate_failure("proc", "mount proc on /proc")
                mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
                report["proc_mounted"] = True
            except OSError as err:
                # /proc of the parent PID namespace would show the harness: hide it instead.
                mount("tmpfs", "/proc", "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                      "size=4k,mode=0555")
                report["proc_mounted"] = False
                report["proc_error"] = str(err)
        namespaced = bool(report.get("namespaces"))

        def stop(signum, frame):  # SIGUSR1 from the harness on timeout, or the backstop alarm
            if not namespaced:
                try:
                    os.kill(child, signal.SIGKILL)
                except OSError:
                    pass
                kill_descendants()
            os._exit(124)  # as PID 1 of a namespace, exiting kills everything in it

        child = 0
        signal.signal(signal.SIGALRM, stop)
        signal.signal(signal.SIGUSR1, stop)
        signal.alarm(spec["backstop_s"])
        child = os.fork()
        if child == 0:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.signal(signal.SIGUSR1, signal.SIG_DFL)
            start_program(nproc_base)
        report["program_pid"] = child
        report["supervisor_pid"] = os.getpid()
        emit({"setup": report})
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(RES)
    except BaseException as err:
        die("supervisor: %r" % (err,))
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(SETUP_FAILED)
        except InterruptedError:
            continue
        if pid == child:
            code = relay(status)
            if not namespaced:
                kill_descendants()
            os._exit(code)


def main(argv):
    """In A: load the spec, unshare, mount, start B and relay its exit status."""
    global spec, RES, SETUP_FAILED, libc
    spec = json.loads(argv[1])
    RES = spec["result_fd"]
    SETUP_FAILED = spec["setup_failed_code"]
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        # RLIMIT_NPROC counts the real uid's tasks system-wide: count them on the host /proc.
        nproc_base = count_tasks(spec["uid"] if spec["uid"] is not None else os.getuid())
        report["namespaces"] = False
        report["read_only_root"] = ""
        if spec["namespaces"]:
            try:
                unshare()
                report["namespaces"] = True
            except OSError as err:  # refused: run without namespaces (the harness warns)
                if spec["required"]:
                    raise
                report["namespace_error"] = str(err)
        if report["namespaces"]:
            setup_mounts()  # any failure after unshare is fatal, never a silent downgrade
        sup = os.fork()
    except BaseException as err:
        die("bootstrap: %r" % (err,))
    if sup == 0:
        supervise(nproc_base)
    for fd in (0, 1, 2):
        os.dup2(os.open(os.devnull, os.O_RDWR), fd)
    os.close(RES)
    while True:
        try:
            _, status = os.waitpid(sup, 0)
            os._exit(relay(status))
        except InterruptedError:
            continue


if __name__ == "__main__":
    main(sys.argv)
