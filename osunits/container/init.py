#!/usr/bin/python3 -I -S
"""osunits-init: PID 1 of an osunits service container ("command mode").

Runs INSIDE the container with the container's own /usr/bin/python3; stdlib only,
and deliberately only C modules (_signal, _socket, select, pwd, grp, time) so the
interpreter stays small: it lives as long as the container does.

Started by systemd-nspawn (Boot=no) as

    /usr/bin/python3 -I -S -c "import sys; sys.path[:0] = ['/run/osunits/lib'];
        import init; sys.exit(init.main(sys.argv))" -- /usr/bin/prog arg...

(imported, so that Python uses the bytecode osunits ships in /run/osunits/lib/__pycache__;
run as a script, `init.py -- PROGRAM`, it works the same)

and configured by these environment variables (removed from the service's own
environment; any other variable, OSUNITS_-prefixed or not, is passed through):

    OSUNITS_READY          none | notify | tcp:PORT | tcp:HOST:PORT | http:URL | command:CMDLINE
    OSUNITS_READY_TIMEOUT  seconds (default 90; 0 = no limit of our own)
    OSUNITS_USER           user to run the service as (default root)
    OSUNITS_STATE          ':'-separated directories: created if missing, and given to
                           the user if root-owned (not recursive)
    OSUNITS_WORKDIR        working directory of the service (default /)
    OSUNITS_CONFIG         space-separated PATH:MODE: copy /run/osunits/config/PATH (the
                           rendered config, bound read-only) to PATH, owned by root and
                           the user's group, so a service user can read a 0640 file
    OSUNITS_STOP_GRACE     seconds the other processes get after the service exits (3)

What it does: links /etc/hosts to /run/osunits/hosts/hosts (osunits' hosts file, in a
bound directory, so that a rewrite reaches a running container), starts the service,
waits until the readiness check passes, then sends READY=1 to $NOTIFY_SOCKET (nspawn,
NotifyReady=yes), which makes the host unit systemd-nspawn@NAME.service active. nspawn
252 accepts READY=1/STATUS= only from the container's PID 1, so with `notify` the
service gets a socket of ours and we re-send. It reaps every process, forwards
signals, turns nspawn's stop signal (KillSignal=, SIGRTMIN+3/+4 from machinectl) into
SIGTERM for the service, and exits with the service's exit status. On a readiness
timeout it says so on stderr (the journal), stops the service and exits with status
124.
"""

import _signal
import _socket
import os
import select
import sys
import time

PROG = "osunits-init"
EXIT_TIMEOUT = 124
EXIT_USAGE = 2
EXIT_NSPAWN_REBOOT = 133
CONFIG_SRC = "/run/osunits/config"
# The host's hosts file, in a bound directory: a link to it sees each rewrite, where a
# bind of the file itself would keep the copy of the container's start.
HOSTS_SRC = "/run/osunits/hosts/hosts"
CONTROL_VARS = ("OSUNITS_CONFIG", "OSUNITS_READY", "OSUNITS_READY_TIMEOUT", "OSUNITS_USER",
                "OSUNITS_STATE",
                "OSUNITS_WORKDIR", "OSUNITS_STOP_GRACE")
# A tcp/http probe is a connect on loopback: cheap enough to try every 50 ms, and each
# try later than needed delays every dependent (bench/README.md, start-up benchmark).
BACKOFF_FIRST, BACKOFF_FACTOR, BACKOFF_MAX = 0.02, 1.5, 0.05
BACKOFF_MAX_COMMAND = 0.25
NOTIFY_DIR = "/run/osunits"

SIGRTMIN = _signal.SIGRTMIN
# Signals that mean "stop the container": SIGTERM (KillSignal=SIGTERM), the systemd
# halt/poweroff/reboot/kexec signals nspawn or machinectl send, SIGPWR.
STOP_SIGNALS = {_signal.SIGTERM: _signal.SIGTERM, _signal.SIGINT: _signal.SIGINT,
                _signal.SIGPWR: _signal.SIGTERM,
                SIGRTMIN + 3: _signal.SIGTERM, SIGRTMIN + 4: _signal.SIGTERM,
                SIGRTMIN + 5: _signal.SIGTERM, SIGRTMIN + 6: _signal.SIGTERM}
PASS_SIGNALS = (_signal.SIGHUP, _signal.SIGUSR1, _signal.SIGUSR2, _signal.SIGQUIT,
                _signal.SIGWINCH)
HANDLED = (_signal.SIGCHLD, *STOP_SIGNALS, *PASS_SIGNALS)

_pending: list[int] = []


def quietly(fn, *args):
    """fn(*args), ignoring OSError (a process already gone, a full pipe...)."""
    try:
        return fn(*args)
    except OSError:
        return None


def log(msg):
    quietly(os.write, 2, f"{PROG}: {msg}\n".encode(errors="replace"))


def _on_signal(signum, frame):
    _pending.append(signum)


# --- talking to nspawn -------------------------------------------------------------

class Notifier:
    """Datagrams to nspawn's $NOTIFY_SOCKET (READY=1, STATUS=)."""

    def __init__(self, path):
        self.addr = None
        if path:
            self.addr = "\0" + path[1:] if path.startswith("@") else path
        self.sock = None

    def send(self, text):
        if not self.addr:
            return
        try:
            if self.sock is None:
                self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
            self.sock.sendto(text.encode(errors="replace"), self.addr)
        except OSError as e:
            log(f"cannot notify {self.addr!r}: {e}")

    def status(self, text):
        self.send("STATUS=" + text)


# --- processes ---------------------------------------------------------------------

def spawn(argv, env, cred=None, cwd=None, output_fd=None):
    """fork+exec as a new session; cred is a pwd entry or None (stay root)."""
    pid = os.fork()
    if pid:
        return pid
    try:
        _signal.set_wakeup_fd(-1)
        for s in HANDLED:
            _signal.signal(s, _signal.SIG_DFL)
        # Python ignores these; exec would keep them ignored.
        _signal.signal(_signal.SIGPIPE, _signal.SIG_DFL)
        _signal.signal(_signal.SIGXFSZ, _signal.SIG_DFL)
        os.setsid()
        if output_fd is not None:
            os.dup2(output_fd, 1)
            os.dup2(output_fd, 2)
        if cred is not None and cred.pw_uid != os.getuid():
            os.initgroups(cred.pw_name, cred.pw_gid)
            os.setgid(cred.pw_gid)
            os.setuid(cred.pw_uid)
        os.chdir(cwd or "/")
        os.execvpe(argv[0], argv, env)
    except OSError as e:
        log(f"cannot run {argv[0]}: {e.strerror or e}")
        os._exit(127 if isinstance(e, FileNotFoundError) else 126)
    except BaseException as e:  # noqa: BLE001 - never return into the parent's code
        log(f"cannot run {argv[0]}: {e!r}")
    os._exit(127)


def kill_all(sig, main_pid):
    """Signal everything left: the whole PID namespace when we are its init."""
    try:
        if os.getpid() == 1:
            os.kill(-1, sig)
        elif main_pid:
            os.killpg(main_pid, sig)
    except OSError:
        pass


# --- readiness checks --------------------------------------------------------------
# A check has .describe(), .start() (begin one attempt, may be a no-op), and
# .poll(now) -> True (ready) / False (not yet) / None (attempt still running).

def _connect(family, addr, timeout):
    s = _socket.socket(family, _socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(addr)
    except BaseException:
        s.close()
        raise
    return s


class Check:
    """A readiness check: poll() is True, False (tried, not yet) or None (still trying)."""

    pid = None  # a check's own process, if it runs one
    max_delay = BACKOFF_MAX

    def retry_at(self, now, delay):
        return now + delay

    def reaped(self, status):
        pass

    def stop(self):
        pass


class NoneCheck(Check):
    def describe(self):
        return "none"

    def poll(self, now):
        return True


class NotifyCheck(Check):
    """READY=1 arrives on our socket; the main loop sets .ready."""

    def __init__(self):
        self.ready = False
        self.status = None

    def describe(self):
        return "notify (READY=1 from the service)"

    def poll(self, now):
        return self.ready


def _split_hostport(text, default_port):
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    return host, int(port) if port else default_port


def _targets(host, port):
    if host in ("", "localhost"):
        return [(_socket.AF_INET, ("127.0.0.1", port)), (_socket.AF_INET6, ("::1", port))]
    if ":" in host:
        return [(_socket.AF_INET6, (host, port))]
    try:  # an address literal needs no resolver (which would load NSS modules: ~1 MB)
        _socket.inet_pton(_socket.AF_INET, host)
        return [(_socket.AF_INET, (host, port))]
    except OSError:
        pass
    try:
        return [(ai[0], ai[4][:2]) for ai in
                _socket.getaddrinfo(host, port, 0, _socket.SOCK_STREAM)]
    except OSError:
        return [(_socket.AF_INET, (host, port))]


class TcpCheck(Check):
    """tcp:PORT (127.0.0.1 or ::1 accepts) or tcp:HOST:PORT / tcp:[V6]:PORT."""

    def __init__(self, arg):
        if arg.isdigit():
            self.host, self.port = "", int(arg)
        else:
            self.host, self.port = _split_hostport(arg, 0)
        if not 0 < self.port < 65536:
            raise ValueError(f"bad port in tcp:{arg}")
        self.last_error = None

    def describe(self):
        where = self.host or "127.0.0.1 or [::1]"
        return f"tcp connect to {where}:{self.port}"

    def poll(self, now):
        for family, addr in _targets(self.host, self.port):
            try:
                _connect(family, addr, 1.0).close()
                return True
            except OSError as e:
                self.last_error = e.strerror or str(e)
        return False


class HttpCheck(Check):
    """http(s):URL answers with a status below 400 (a bare GET, no redirects followed)."""

    def __init__(self, url):
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in ("http", "https"):
            raise ValueError(f"bad URL {url!r}")
        self.url, self.tls = url, scheme == "https"
        hostport, slash, path = rest.partition("/")
        self.path = (slash + path) or "/"
        self.path = self.path.split("#", 1)[0]
        self.hostport = hostport.rpartition("@")[2]
        self.host, self.port = _split_hostport(self.hostport, 443 if self.tls else 80)
        self.last_error = None

    def describe(self):
        return f"HTTP status < 400 from {self.url}"

    def _get(self, family, addr, timeout):
        s = _connect(family, addr, timeout)
        try:
            if self.tls:
                import socket
                import ssl
                ctx = ssl._create_unverified_context()  # a liveness probe, not a trust decision
                s = ctx.wrap_socket(socket.socket(fileno=s.detach()),
                                    server_hostname=self.host or None)
                s.settimeout(timeout)
            req = (f"GET {self.path} HTTP/1.0\r\nHost: {self.hostport}\r\n"
                   "User-Agent: osunits-init\r\nAccept: */*\r\nConnection: close\r\n\r\n")
            s.sendall(req.encode())
            buf = b""
            while b"\n" not in buf and len(buf) < 4096:
                chunk = s.recv(1024)
                if not chunk:
                    break
                buf += chunk
        finally:
            s.close()
        line = buf.split(b"\n", 1)[0].split()
        if len(line) < 2 or not line[0].startswith(b"HTTP/") or not line[1].isdigit():
            raise OSError(f"not an HTTP answer: {buf[:60]!r}")
        return int(line[1])

    def poll(self, now):
        host = self.host if self.host not in ("localhost",) else ""
        for family, addr in _targets(host, self.port):
            try:
                code = self._get(family, addr, 2.0)
            except OSError as e:
                self.last_error = e.strerror or str(e)
                continue
            if code < 400:
                return True
            self.last_error = f"HTTP {code}"
            return False
        return False


class CommandCheck(Check):
    """command:CMDLINE exits 0.  Runs as root with the service's environment,
    asynchronously; its output is kept and shown only if the check times out."""

    PER_TRY = 30.0
    max_delay = BACKOFF_MAX_COMMAND

    def __init__(self, cmdline, env):
        self.argv = split_command(cmdline)
        if not self.argv:
            raise ValueError("empty readiness command")
        self.cmdline, self.env = cmdline, env
        self.pid = None
        self.started = 0.0
        self.result = None
        self.last_error = None
        self.out = os.memfd_create("osunits-check", os.MFD_CLOEXEC)

    def describe(self):
        return f"command exits 0: {self.cmdline}"

    def start(self, now):
        os.ftruncate(self.out, 0)
        os.lseek(self.out, 0, os.SEEK_SET)
        self.result, self.started = None, now
        self.pid = spawn(self.argv, self.env, output_fd=self.out)

    def reaped(self, status):
        self.pid = None
        self.result = os.waitstatus_to_exitcode(status)
        if self.result != 0:
            out = os.pread(self.out, 2000, 0).decode(errors="replace").strip()
            self.last_error = f"exit status {self.result}" + (f": {out}" if out else "")

    def retry_at(self, now, delay):
        return max(now + delay, now + (now - self.started))  # slow: not back to back

    def poll(self, now):
        if self.pid is None and self.result is None:
            self.start(now)
            return None
        if self.pid is not None:
            if now - self.started > self.PER_TRY:
                quietly(os.killpg, self.pid, _signal.SIGKILL)
            return None
        ok = self.result == 0
        self.result = None
        return ok

    def stop(self):
        if self.pid is not None:
            quietly(os.killpg, self.pid, _signal.SIGKILL)


def split_command(s):
    """shlex.split() for what shlex.join() writes (quotes and backslashes as in sh),
    without importing shlex (re, enum: ~1.3 MB that would stay for the container's life)."""
    words: list[str] = []
    cur: list[str] = []
    have, i, n = False, 0, len(s)
    while i < n:
        c = s[i]
        if c in " \t\n":
            if have:
                words.append("".join(cur))
                cur, have = [], False
        elif c == "'":
            j = s.find("'", i + 1)
            if j < 0:
                raise ValueError(f"unbalanced quote in {s!r}")
            cur.append(s[i + 1:j])
            i, have = j, True
        elif c == '"':
            i += 1
            while i < n and s[i] != '"':
                if s[i] == "\\" and i + 1 < n and s[i + 1] in '\\"':
                    i += 1
                cur.append(s[i])
                i += 1
            if i >= n:
                raise ValueError(f"unbalanced quote in {s!r}")
            have = True
        elif c == "\\":
            if i + 1 < n:
                i += 1
                cur.append(s[i])
            have = True
        else:
            cur.append(c)
            have = True
        i += 1
    if have:
        words.append("".join(cur))
    return words


def make_check(spec, env):
    kind, _, arg = spec.partition(":")
    if kind in ("", "none"):
        return NoneCheck()
    if kind == "notify":
        return NotifyCheck()
    if kind == "tcp":
        return TcpCheck(arg)
    if kind == "http":
        return HttpCheck(arg)
    if kind == "command":
        return CommandCheck(arg, env)
    raise ValueError(f"unknown readiness check {spec!r}")


# --- setup -------------------------------------------------------------------------

def link_hosts():
    """/etc/hosts -> HOSTS_SRC, if osunits bound one (the root is a volatile overlay)."""
    if not os.path.exists(HOSTS_SRC):
        return
    try:
        if os.readlink("/etc/hosts") == HOSTS_SRC:
            return
    except OSError:  # a regular file, or none
        pass
    tmp = "/etc/.hosts.osunits-new"
    quietly(os.unlink, tmp)
    os.symlink(HOSTS_SRC, tmp)
    os.rename(tmp, "/etc/hosts")


def install_config(entries, cred):
    """Copy each rendered config file into place: root-owned, the service's group, MODE."""
    gid = cred.pw_gid if cred is not None else 0
    for entry in entries.split():
        path, _, mode = entry.rpartition(":")
        with open(CONFIG_SRC + path, "rb") as src:
            data = src.read()
        os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
        tmp = path + ".osunits-new"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fchown(fd, 0, gid)
            os.fchmod(fd, int(mode, 8))
        finally:
            os.close(fd)
        os.rename(tmp, path)


def prepare_state(dirs, cred):
    for d in dirs:
        if not d:
            continue
        try:
            st = os.stat(d)
        except FileNotFoundError:
            os.makedirs(d, 0o755)
            st = os.stat(d)
        if cred is not None and st.st_uid == 0 and cred.pw_uid != 0:
            os.chown(d, cred.pw_uid, cred.pw_gid)


def notify_socket():
    os.makedirs(NOTIFY_DIR, 0o755, exist_ok=True)
    path = NOTIFY_DIR + "/notify"
    quietly(os.unlink, path)
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    s.bind(path)
    os.chmod(path, 0o666)  # the service may run as any user
    s.setblocking(False)
    return s, path


def exit_code(status, stop_sig):
    """The service's wait status as our exit status; a stop we asked for is success."""
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        if stop_sig and -code in (stop_sig, _signal.SIGTERM, _signal.SIGINT):
            return 0
        return 128 - code
    if stop_sig and code == 128 + stop_sig:
        return 0
    return code


# --- main --------------------------------------------------------------------------

def probe_main(args):
    """--probe SPEC TIMEOUT: wait on the host until SPEC (tcp:HOST:PORT, http:URL) passes.

    Used by the cross-host gate units osunits generates (osunits-remote-*.service)."""
    if len(args) != 2:
        log("usage: init --probe SPEC TIMEOUT")
        return EXIT_USAGE
    try:
        check = make_check(args[0], dict(os.environ))
        timeout = float(args[1])
    except ValueError as e:
        log(f"bad probe: {e}")
        return EXIT_USAGE
    t0 = time.monotonic()
    delay, said = 0.05, 0.0
    host_notify = Notifier(os.environ.get("NOTIFY_SOCKET"))
    while True:
        now = time.monotonic()
        if check.poll(now):
            log(f"{check.describe()}: ready after {now - t0:.1f} s")
            return 0
        if now - t0 >= timeout:
            err = getattr(check, "last_error", None)
            log(f"{check.describe()}: not ready after {timeout:.0f} s"
                + (f" (last error: {err})" if err else ""))
            return EXIT_TIMEOUT
        if now - said >= 10:
            said = now
            host_notify.send(f"STATUS=waiting for {check.describe()}")
            if now - t0 >= 10:
                log(f"still waiting for {check.describe()} ({now - t0:.0f} s)")
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)


def answer_ready_main(args):
    """--answer-ready NAME...: answer one HTTP request on stdin/stdout (socket activation,
    osunits-ready@.service): 200 if systemd-nspawn@NAME.service is active, 503 if not,
    500 if systemd could not be asked (said on stderr, the instance's journal)."""
    allowed = set(args)
    line = sys.stdin.buffer.readline(512).decode("ascii", "replace").split()
    name = line[1].strip("/") if len(line) >= 2 and line[0] == "GET" else ""
    if name not in allowed:
        code, text = 404, "unknown service"
    else:
        import subprocess  # host side only: the container path never imports it
        res = subprocess.run(["systemctl", "is-active", f"systemd-nspawn@{name}.service"],
                             capture_output=True, text=True, check=False)
        # is-active: 0 active, 3 not (inactive, failed, ...), 4 no such unit, else an error
        if res.returncode in (0, 3, 4):
            code, text = (200, "active") if res.returncode == 0 else (503, "not active")
        else:
            code, text = 500, "cannot ask systemd"
            sys.stderr.write(f"osunits-ready: systemctl is-active {name}: exit "
                             f"{res.returncode}: {res.stderr.strip()}\n")
    body = f"{name}: {text}\n".encode()
    sys.stdout.buffer.write(f"HTTP/1.0 {code} {text}\r\nContent-Type: text/plain\r\n"
                            f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    sys.stdout.buffer.flush()
    return 0


def main(argv):
    args = argv[1:]
    if args and args[0] == "--probe":
        return probe_main(args[1:])
    if args and args[0] == "--answer-ready":
        return answer_ready_main(args[1:])
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        log("usage: init -- PROGRAM [ARG...]")
        return EXIT_USAGE
    env = dict(os.environ)
    conf = {k: env.pop(k) for k in CONTROL_VARS if k in env}
    host_notify = Notifier(env.pop("NOTIFY_SOCKET", None))
    ready_spec = conf.get("OSUNITS_READY", "none").strip()
    try:
        timeout = float(conf.get("OSUNITS_READY_TIMEOUT", "90"))
        grace = float(conf.get("OSUNITS_STOP_GRACE", "3"))
        check = make_check(ready_spec, env)
    except ValueError as e:
        log(f"bad configuration: {e}")
        return EXIT_USAGE

    cred = None
    user = conf.get("OSUNITS_USER", "")
    if user and user != "root":
        import pwd
        try:
            cred = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        except (KeyError, ValueError):
            log(f"no such user: {user}")
            return EXIT_USAGE
        env["USER"] = env["LOGNAME"] = cred.pw_name
        if env.get("HOME", "/root") == "/root":
            env["HOME"] = cred.pw_dir
    try:
        prepare_state(conf.get("OSUNITS_STATE", "").split(":"), cred)
    except OSError as e:
        log(f"cannot prepare state directory: {e}")
        return 1
    try:
        link_hosts()
    except OSError as e:
        log(f"cannot link /etc/hosts to {HOSTS_SRC}: {e}")
        return 1
    try:
        install_config(conf.get("OSUNITS_CONFIG", ""), cred)
    except (OSError, ValueError) as e:
        log(f"cannot install config file: {e}")
        return 1

    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    _signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    for s in HANDLED:
        _signal.signal(s, _on_signal)

    nsock = None
    if isinstance(check, NotifyCheck):
        nsock, env["NOTIFY_SOCKET"] = notify_socket()

    t0 = time.monotonic()
    main_pid = spawn(args, env, cred, conf.get("OSUNITS_WORKDIR"))
    what = check.describe()
    host_notify.status(f"starting; waiting for {what}")
    ready = False
    stop_sig = 0  # the signal we forwarded to stop the service
    main_status = None
    delay = BACKOFF_FIRST
    next_try = t0
    deadline = t0 + timeout if timeout > 0 else None
    event_driven = isinstance(check, NotifyCheck)  # woken by the datagram itself

    while True:
        # 1. signals
        while _pending:
            sig = _pending.pop(0)
            if sig == _signal.SIGCHLD:
                continue
            fwd = STOP_SIGNALS.get(sig, sig)
            if sig in STOP_SIGNALS:
                stop_sig = fwd
            quietly(os.kill, main_pid, fwd)
        # 2. reap everything
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid == main_pid:
                main_status = status
            elif pid == check.pid:
                check.reaped(status)
        if main_status is not None:
            break
        now = time.monotonic()
        # 3. readiness
        if not ready and not stop_sig and (now >= next_try or event_driven):
            ok = check.poll(now)
            if ok:
                ready = True
                log(f"ready after {now - t0:.2f} s ({ready_spec})")
                ready_status = getattr(check, "status", None) or f"ready ({ready_spec})"
                host_notify.send(f"READY=1\nSTATUS={ready_status}")
            elif ok is False:
                next_try = check.retry_at(now, delay)
                delay = min(delay * BACKOFF_FACTOR, check.max_delay)
            else:  # an attempt is still running (command): look again soon
                next_try = now + 0.01
        if not ready and not stop_sig and deadline is not None and now >= deadline:
            err = getattr(check, "last_error", None)
            log(f"readiness check failed: {what} not satisfied after {timeout:g} s"
                + (f" (last error: {err})" if err else "") + "; stopping the service")
            host_notify.status(f"readiness timeout: {what}")
            check.stop()
            return stop_all(main_pid, None, grace, EXIT_TIMEOUT)
        # 4. wait for a signal, a notify datagram, or the next attempt
        rlist = [wake_r] + ([nsock] if nsock is not None else [])
        wait = None
        if not ready and not stop_sig:
            wait = None if event_driven else max(0.0, next_try - now)
            if deadline is not None:
                left = max(0.0, deadline - now)
                wait = left if wait is None else min(wait, left)
        try:
            readable, _, _ = select.select(rlist, [], [], wait)
        except InterruptedError:
            readable = []
        if wake_r in readable:
            try:
                while os.read(wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        if nsock is not None and nsock in readable:
            forward_notify(nsock, check, host_notify)

    code = exit_code(main_status, stop_sig)
    if code != 0 or not stop_sig:
        log(f"service {args[0]} exited: " + describe_status(main_status))
    if code == EXIT_NSPAWN_REBOOT:
        # systemd-nspawn@.service has SuccessExitStatus=133 RestartForceExitStatus=133
        # ("the container rebooted"): passing 133 on would restart it as a success.
        log(f"exit status {EXIT_NSPAWN_REBOOT} means 'reboot' to nspawn: exiting with 1")
        code = 1
    return stop_all(main_pid, main_status, grace, code)


def forward_notify(nsock, check, host_notify):
    """Pass the service's STATUS= on; note its READY=1 (sent on by the main loop)."""
    while True:
        try:
            data = nsock.recv(8192)
        except OSError:  # drained (BlockingIOError) or gone
            return
        lines = data.decode(errors="replace").split("\n")
        status = [ln for ln in lines if ln.startswith("STATUS=")]
        if "READY=1" in lines and not check.ready:
            check.ready = True
            check.status = status[-1][7:] if status else None
            return  # let the main loop send READY=1 before any later STATUS=
        if status:
            host_notify.send(status[-1])


def describe_status(status):
    code = os.waitstatus_to_exitcode(status)
    return f"status {code}" if code >= 0 else f"signal {-code}"


def stop_all(main_pid, main_status, grace, code):
    """Stop the service (if still running) and every other process; return code."""
    if main_status is None:
        quietly(os.kill, main_pid, _signal.SIGTERM)
    kill_all(_signal.SIGTERM, main_pid)
    end = time.monotonic() + grace
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return code
        if pid:
            continue
        if time.monotonic() >= end:
            break
        time.sleep(0.02)
    kill_all(_signal.SIGKILL, main_pid)
    if main_status is None:
        quietly(os.kill, main_pid, _signal.SIGKILL)
    end = time.monotonic() + 2
    while time.monotonic() < end:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if not pid:
            time.sleep(0.02)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
