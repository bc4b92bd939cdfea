"""Real services as local processes, for integration tests: PostgreSQL, an S3-compatible server
(moto) with a bucket, and an MLflow tracking server that keeps runs in that PostgreSQL and
artifacts in that bucket: infra/compose.yaml's stores on loopback, without Docker.

A test module loads the fixtures as a plugin (registered for the whole session, so every module that
names it shares one set of services)::

    pytest_plugins = ["services"]   # fixtures: s3, mlflow_stack

    def test_something(mlflow_stack, tmp_path):
        env = mlflow_stack.subprocess_env()            # MLFLOW_TRACKING_URI + S3 credentials/endpoint
        subprocess.run(["centernet", "precompute", ..., "--out", mlflow_stack.s3.uri("shards/train")],
                       env=env, check=True)

Everything binds to 127.0.0.1 on free ports and lives in one temporary directory; processes run in
their own process groups and are stopped, and the directory removed, at the end of the session, also
when a start fails. PostgreSQL's ``initdb`` refuses to run as root: as root, the server programs run
as the machine's ``postgres`` user (``runuser``) on a data directory it owns. Tests that need
PostgreSQL are skipped, with the reason, only where its server programs are not installed.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

LOOPBACK = "127.0.0.1"
BIN = Path(sys.executable).parent
PG_BIN_ENV = "CENTERNET_PG_BIN"  # directory with initdb/pg_ctl, to override the search
START_ATTEMPTS = 3  # a free port can be taken between choosing it and the server binding it
SERVICE_DIR_PREFIX = "centernet-services-"
OWNER_RECORD = "owner.pid"  # in a service dir: the pid of the process that made it
PROCESS_RECORD = ".process"  # beside a log: "<pid>\n<command line>" of the process writing it
# Variables of the surrounding shell that would point a child process at other services.
_FOREIGN_PREFIXES = ("AWS_", "MLFLOW_")
_FOREIGN_NAMES = ("RAY_ADDRESS", "PREFECT_API_URL")
# No telemetry from processes started here (the network is loopback only).
_QUIET_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "RAY_USAGE_STATS_ENABLED": "0"}


@dataclass(frozen=True)
class S3Server:
    """An S3-compatible endpoint with one bucket, and the credentials to use it."""

    endpoint_url: str
    bucket: str
    access_key_id: str = "centernet-test"
    secret_access_key: str = "centernet-test-secret"
    region: str = "us-east-1"

    def uri(self, key: str = "") -> str:
        """``s3://<bucket>/<key>``."""
        return f"s3://{self.bucket}/{key.lstrip('/')}"

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to reach this endpoint: pyarrow and boto3 read ``AWS_ENDPOINT_URL_S3``,
        MLflow's S3 artifact client ``MLFLOW_S3_ENDPOINT_URL``; no instance-metadata lookups."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def subprocess_env(self, extra: Mapping[str, str] | None = None, *, inherit: bool = True) -> dict[str, str]:
        """Environment for a child process that uses this endpoint (see :func:`child_env`)."""
        return child_env({**self.env, **(extra or {})}, inherit=inherit)

    def client(self):
        """A boto3 S3 client for this endpoint."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=self.region,
                            aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key)


@dataclass(frozen=True)
class Postgres:
    """A running PostgreSQL server and one database on it."""

    port: int
    user: str = "mlflow"
    password: str = "mlflow-test"
    database: str = "mlflow"
    host: str = LOOPBACK

    @property
    def uri(self) -> str:
        """SQLAlchemy/MLflow URI: ``postgresql://user:password@127.0.0.1:port/database``."""
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"


@dataclass(frozen=True)
class MlflowStack:
    """An MLflow tracking server on PostgreSQL (backend store) and S3 (proxied artifacts)."""

    tracking_uri: str
    postgres: Postgres
    s3: S3Server
    artifacts_destination: str
    started_in_s: dict[str, float] = field(default_factory=dict)  # per service, for reports

    @property
    def env(self) -> dict[str, str]:
        """``MLFLOW_TRACKING_URI`` and the S3 variables (see :attr:`S3Server.env`)."""
        return {"MLFLOW_TRACKING_URI": self.tracking_uri, **self.s3.env}

    def subprocess_env(self, extra: Mapping[str, str] | None = None, *, inherit: bool = True) -> dict[str, str]:
        """Environment for a child process that uses the stack: the stack's variables instead of any
        MLflow/AWS/Ray settings of the surrounding shell, ``extra`` last (see :func:`child_env`)."""
        return child_env({**self.env, **(extra or {})}, inherit=inherit)


def child_env(env: Mapping[str, str], *, inherit: bool = True) -> dict[str, str]:
    """Environment for a child process: ``os.environ`` (``inherit``) or only PATH, HOME and the
    locale, without MLflow/AWS/Ray-address settings, then no-telemetry switches, then ``env``."""
    if inherit:
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(_FOREIGN_PREFIXES) and k not in _FOREIGN_NAMES}
    else:
        base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR") if k in os.environ}
    base["PATH"] = f"{BIN}{os.pathsep}{base.get('PATH', '')}"
    return {**base, **_QUIET_ENV, **env}


# --- processes ------------------------------------------------------------------------------------

def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def spawn(cmd: list[str], log: Path, env: Mapping[str, str]) -> subprocess.Popen:
    """Start ``cmd`` in its own process group (so it can be stopped with its children), output to
    ``log``; its pid and command line are recorded beside the log for :func:`remove_stale_service_dirs`."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=dict(env), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    log.with_name(log.name + PROCESS_RECORD).write_text(f"{proc.pid}\n{' '.join(cmd)}")
    return proc


def stop(proc: subprocess.Popen, *, grace_s: float = 15.0, signal_first: int = signal.SIGTERM) -> None:
    """``signal_first`` (SIGTERM) to the process group, SIGKILL after ``grace_s``."""
    for sig in dict.fromkeys((signal_first, signal.SIGKILL)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=grace_s)
            break
        except subprocess.TimeoutExpired:
            continue
    # children of an exited leader may linger in its group
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def log_tail(log: Path, chars: int = 3000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def wait_until(ready: Callable[[], bool], *, what: str, timeout_s: float,
               proc: subprocess.Popen | None = None, log: Path | None = None) -> float:
    """Poll ``ready()`` until true; returns the seconds waited. ``RuntimeError`` with the log's tail
    when ``proc`` exits first or ``timeout_s`` passes."""
    start = time.monotonic()
    while not ready():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} while starting; "
                               f"its log ({log}):\n{log_tail(log) if log else ''}")
        if time.monotonic() - start > timeout_s:
            raise RuntimeError(f"{what} not ready after {timeout_s:.0f} s; its log ({log}):\n"
                               f"{log_tail(log) if log else ''}")
        time.sleep(0.25)
    return time.monotonic() - start


def http_answers(url: str, *, ok_only: bool = True) -> bool:
    """Whether ``url`` answers (with a 2xx status when ``ok_only``)."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return not ok_only
    except (OSError, ValueError):
        return False


def start_on_free_port(command: Callable[[int], list[str]], *, what: str, ready_url: str, log: Path,
                       env: Mapping[str, str], timeout_s: float, ok_only: bool = True) -> tuple[subprocess.Popen, int]:
    """Start ``command(port)`` on a free loopback port and wait until ``ready_url`` (``{port}``
    filled in) answers; another port when it exits first (the port was taken meanwhile).
    Returns the process and its port."""
    for attempt in range(START_ATTEMPTS):
        port = free_port()
        proc = spawn(command(port), log, env)
        try:
            wait_until(lambda: http_answers(ready_url.format(port=port), ok_only=ok_only), what=what,
                       timeout_s=timeout_s, proc=proc, log=log)
            return proc, port
        except RuntimeError:
            stop(proc)
            if attempt == START_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


@contextlib.contextmanager
def service_dir(prefix: str = SERVICE_DIR_PREFIX) -> Iterator[Path]:
    """A temporary directory for services' data and logs, removed afterwards. Created under the
    system temp dir (not pytest's, which is private to root) and traversable by the ``postgres``
    user, whose data directory lives inside it. Directories left by a killed run are cleaned first."""
    remove_stale_service_dirs(prefix)
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        root.chmod(0o711)
        (root / OWNER_RECORD).write_text(str(os.getpid()))
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def remove_stale_service_dirs(prefix: str = SERVICE_DIR_PREFIX) -> list[Path]:
    """Service directories whose owning process is gone (a run killed before its teardown): stop the
    servers they left running (PostgreSQL daemonises; the others have their own sessions), checked
    against their recorded command lines, and delete the directories. Returns the ones removed."""
    removed = []
    for root in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        try:
            owner = int((root / OWNER_RECORD).read_text())
        except (OSError, ValueError):
            continue  # not made by service_dir, or being created
        if _alive(owner):
            continue
        for record in root.rglob(f"*{PROCESS_RECORD}"):
            pid, _, cmd = record.read_text().partition("\n")
            if cmd and cmd in _cmdline(int(pid)):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(int(pid), signal.SIGKILL)
        for pidfile in root.rglob("postmaster.pid"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                pid = int(pidfile.read_text().splitlines()[0])
                if str(pidfile.parent) in _cmdline(pid):
                    os.kill(pid, signal.SIGQUIT)  # immediate shutdown
        shutil.rmtree(root, ignore_errors=True)
        removed.append(root)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


# --- S3 -------------------------------------------------------------------------------------------

@contextlib.contextmanager
def s3_server(root: Path, *, bucket: str = "centernet") -> Iterator[S3Server]:
    """moto's S3-compatible server on a free loopback port, with ``bucket`` created."""
    exe = BIN / "moto_server"
    if not exe.exists():
        raise FileNotFoundError(f"{exe} not found: install the test tools, pip install -e '.[dev]' (moto[server])")
    proc, port = start_on_free_port(lambda port: [str(exe), "-H", LOOPBACK, "-p", str(port)], what="moto_server",
                                    ready_url=f"http://{LOOPBACK}:{{port}}/", log=root / "moto.log",
                                    env=child_env({}), timeout_s=60, ok_only=False)
    try:
        server = S3Server(endpoint_url=f"http://{LOOPBACK}:{port}", bucket=bucket)
        server.client().create_bucket(Bucket=bucket)
        yield server
    finally:
        stop(proc)


# --- PostgreSQL -----------------------------------------------------------------------------------

def find_postgres_bin() -> Path | None:
    """The directory holding PostgreSQL's ``initdb`` and ``pg_ctl``: ``$CENTERNET_PG_BIN``, PATH, or
    Debian's ``/usr/lib/postgresql/<version>/bin`` (newest version)."""
    candidates: list[Path] = []
    if os.environ.get(PG_BIN_ENV):
        candidates.append(Path(os.environ[PG_BIN_ENV]))
    if shutil.which("pg_ctl"):
        candidates.append(Path(shutil.which("pg_ctl")).resolve().parent)
    versions = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(versions, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    return None


def _server_user() -> tuple[list[str], int, int] | None:
    """As root: (command prefix running as ``postgres``, its uid, gid); otherwise None."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("running as root, and PostgreSQL's initdb refuses root: create a 'postgres' "
                           "user (the postgresql package does) or run the tests as another user") from None
    runuser = shutil.which("runuser")
    if runuser is None:
        raise RuntimeError("running as root needs `runuser` (util-linux) to start PostgreSQL as 'postgres'")
    return [runuser, "-u", "postgres", "--"], entry.pw_uid, entry.pw_gid


@contextlib.contextmanager
def postgres_server(root: Path, bin_dir: Path, *, user: str = "mlflow", password: str = "mlflow-test",
                    database: str = "mlflow") -> Iterator[Postgres]:
    """A PostgreSQL cluster in ``root/pg`` (initdb, password auth over TCP) on a free loopback port,
    with ``database`` created; stopped with ``pg_ctl stop -m fast``."""
    as_server = _server_user()
    prefix = as_server[0] if as_server else []
    pg_dir = root / "pg"
    pg_dir.mkdir(mode=0o700)
    pwfile = pg_dir / "pwfile"
    pwfile.write_text(password + "\n")
    if as_server:
        for path in (pg_dir, pwfile):
            os.chown(path, as_server[1], as_server[2])
        if subprocess.run([*prefix, "test", "-w", str(pg_dir)], timeout=30).returncode != 0:
            raise RuntimeError(f"the postgres user cannot reach {pg_dir} (a parent directory is private): "
                               f"point TMPDIR at a directory every user can traverse, e.g. /tmp")
    data, log = pg_dir / "data", pg_dir / "postgres.log"
    init = subprocess.run([*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", user, f"--pwfile={pwfile}",
                           "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C",
                           "--no-sync", "--no-instructions"],
                          capture_output=True, text=True, timeout=120, env=child_env({}))
    if init.returncode != 0:
        raise RuntimeError(f"initdb {data} failed: {init.stderr.strip()}")
    pg_ctl = [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data)]
    started = False
    try:
        for attempt in range(START_ATTEMPTS):
            port = free_port()
            options = f"-p {port} -k {pg_dir} -c listen_addresses={LOOPBACK} -c fsync=off"
            run = subprocess.run([*pg_ctl, "-l", str(log), "-w", "-t", "60", "-o", options, "start"],
                                 capture_output=True, text=True, timeout=90, env=child_env({}))
            if run.returncode == 0:
                started = True
                break
            if attempt == START_ATTEMPTS - 1:
                raise RuntimeError(f"pg_ctl start failed ({run.stderr.strip()}); log ({log}):\n{log_tail(log)}")
        server = Postgres(port=port, user=user, password=password, database=database)
        subprocess.run([str(bin_dir / "createdb"), "-h", LOOPBACK, "-p", str(port), "-U", user, database],
                       check=True, capture_output=True, timeout=60, env=child_env({"PGPASSWORD": password}))
        yield server
    finally:
        if started:
            stopped = subprocess.run([*pg_ctl, "-m", "fast", "-w", "-t", "30", "stop"],
                                     capture_output=True, timeout=60, env=child_env({}))
            if stopped.returncode != 0:
                _kill_postmaster(data)


def _kill_postmaster(data: Path) -> None:
    """Last resort when ``pg_ctl stop`` fails: SIGKILL the pid in ``postmaster.pid``."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int((data / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, signal.SIGKILL)


# --- MLflow ---------------------------------------------------------------------------------------

class MlflowServer:
    """``mlflow server`` on a loopback port, backend store ``postgres``, artifacts proxied to
    ``s3://<bucket>/<artifacts_prefix>``; it can be killed and started again on the same port (the
    same tracking URI), as a server that crashes and is restarted."""

    def __init__(self, root: Path, postgres: Postgres, s3: S3Server, *, artifacts_prefix: str = "mlartifacts"):
        self.log = root / "mlflow.log"
        self.destination = s3.uri(artifacts_prefix)
        self._postgres = postgres
        # no background job runner (MLflow's GenAI jobs): nothing here uses it
        self._env = child_env({**s3.env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def tracking_uri(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def _command(self, port: int) -> list[str]:
        return [str(BIN / "mlflow"), "server", "--host", LOOPBACK, "--port", str(port), "--workers", "1",
                "--backend-store-uri", self._postgres.uri, "--artifacts-destination", self.destination,
                # SIGTERM: stop within seconds even with client connections still open
                "--uvicorn-opts", "--timeout-graceful-shutdown 3"]

    def start(self, *, timeout_s: float = 300) -> float:
        """Start on a free port, or on the port of the previous start; returns the seconds it took.
        The first start creates MLflow's tables in PostgreSQL (a minute on a busy machine)."""
        began = time.monotonic()
        ready = f"http://{LOOPBACK}:{{port}}/health"
        if self.port is None:
            self.proc, self.port = start_on_free_port(self._command, what="mlflow server", ready_url=ready,
                                                      log=self.log, env=self._env, timeout_s=timeout_s)
        else:
            self.proc = spawn(self._command(self.port), self.log, self._env)
            wait_until(lambda: http_answers(ready.format(port=self.port)), what="mlflow server (restart)",
                       timeout_s=timeout_s, proc=self.proc, log=self.log)
        return time.monotonic() - began

    def kill(self) -> None:
        """SIGKILL the server and its workers at once: a crash, nothing flushed or closed."""
        if self.proc is not None:
            stop(self.proc, signal_first=signal.SIGKILL)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


@contextlib.contextmanager
def mlflow_server(root: Path, postgres: Postgres, s3: S3Server, *,
                  artifacts_prefix: str = "mlartifacts") -> Iterator[MlflowServer]:
    """A started :class:`MlflowServer`, stopped on exit."""
    server = MlflowServer(root, postgres, s3, artifacts_prefix=artifacts_prefix)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def running_mlflow_stack(root: Path, pg_bin: Path, s3: S3Server | None = None) -> Iterator[MlflowStack]:
    """PostgreSQL and the MLflow server on it and on ``s3`` (an S3 server of its own if None), in
    ``root``; everything started here is stopped on exit."""
    timings: dict[str, float] = {}

    def timed(name: str, manager: contextlib.AbstractContextManager):
        start = time.monotonic()
        value = stack.enter_context(manager)
        timings[name] = time.monotonic() - start
        return value

    with contextlib.ExitStack() as stack:
        if s3 is None:
            s3 = timed("s3", s3_server(root))
        postgres = timed("postgres", postgres_server(root, pg_bin))
        server = timed("mlflow", mlflow_server(root, postgres, s3))
        yield MlflowStack(tracking_uri=server.tracking_uri, postgres=postgres, s3=s3,
                          artifacts_destination=server.destination, started_in_s=timings)


# --- Ray ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RayCluster:
    """A Ray cluster of ``ray start`` nodes on this machine, all on 127.0.0.1."""

    address: str  # the head's GCS, 127.0.0.1:PORT (what `--address` takes)
    nodes: int
    temp_dir: Path


# One process holding the nodes: `ray start --address` refuses to join a second node to a head on
# 127.0.0.1 (with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which keeps Ray's guessed addresses on loopback,
# it refuses multi-node; with 1 it rewrites 127.0.0.1 to the machine's address), Ray's test cluster
# does not: each node is a full set of Ray processes (GCS on the head, a raylet each) on 127.0.0.1.
_RAY_CLUSTER_PROCESS = """
import sys, time
from ray.cluster_utils import Cluster
nodes, cpus, temp_dir, dashboard_port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
common = {"num_cpus": cpus, "num_gpus": 0, "object_store_memory": 100 * 2**20}
cluster = Cluster(initialize_head=True, head_node_args={**common, "include_dashboard": False, "temp_dir": temp_dir,
                                                        "dashboard_port": dashboard_port})
try:
    for _ in range(nodes - 1):
        cluster.add_node(**common)
    cluster.wait_for_nodes()
    print(cluster.address, flush=True)
    sys.stdin.read()  # until the test closes it (Ray's nodes handle SIGTERM by draining for 30 s)
finally:
    began = time.monotonic()
    cluster.shutdown()
    print(f"cluster shut down in {time.monotonic() - began:.1f} s", file=sys.stderr, flush=True)
"""


@contextlib.contextmanager
def ray_cluster(root: Path, *, nodes: int = 2, cpus_per_node: int = 1,
                env: Mapping[str, str] | None = None, timeout_s: float = 180) -> Iterator[RayCluster]:
    """A Ray cluster of ``nodes`` nodes with ``cpus_per_node`` CPUs each on 127.0.0.1, its processes
    in one process group with ``env`` (the surrounding shell's MLflow/AWS settings left out, as on a
    fresh machine); shut down and its files removed on exit. Ray's socket paths, under ``root``, must
    stay within 107 bytes: keep ``root`` short."""
    temp_dir = root / "t"
    temp_dir.mkdir()
    log = root / "ray-cluster.log"
    node_env = child_env({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", **(env or {})})
    address_file = root / "ray-cluster.address"
    with open(address_file, "wb") as out, open(log, "ab") as err:
        proc = subprocess.Popen([sys.executable, "-c", _RAY_CLUSTER_PROCESS, str(nodes), str(cpus_per_node),
                                 str(temp_dir), str(free_port())], env=node_env, stdout=out, stderr=err,
                                stdin=subprocess.PIPE, start_new_session=True)
    log.with_name(log.name + PROCESS_RECORD).write_text(f"{proc.pid}\n{' '.join(proc.args)}")
    try:
        wait_until(lambda: address_file.read_text().strip() != "", what="ray cluster", timeout_s=timeout_s,
                   proc=proc, log=log)
        yield RayCluster(address=address_file.read_text().strip(), nodes=nodes, temp_dir=temp_dir)
    finally:
        proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=60)
        stop(proc)  # whatever is left in its process group
        shutil.rmtree(temp_dir, ignore_errors=True)


# --- pytest fixtures ------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def services_root() -> Iterator[Path]:
    """The session's directory for services' data and logs (removed at the end)."""
    with service_dir() as root:
        yield root


@pytest.fixture(scope="session")
def s3(services_root: Path) -> Iterator[S3Server]:
    """An S3-compatible server (moto) on loopback with the bucket ``centernet``."""
    with s3_server(_subdir(services_root, "s3")) as server:
        yield server


@pytest.fixture(scope="session")
def mlflow_stack(services_root: Path, s3: S3Server) -> Iterator[MlflowStack]:
    """MLflow tracking server on PostgreSQL and the session's S3 server (artifacts under
    ``s3://centernet/mlartifacts``); skipped only where PostgreSQL's server programs are absent."""
    pg_bin = find_postgres_bin()
    if pg_bin is None:
        pytest.skip(f"PostgreSQL server programs (initdb, pg_ctl) not found on PATH, in /usr/lib/postgresql/*/bin "
                    f"or ${PG_BIN_ENV}: install PostgreSQL (Debian: apt-get install postgresql)")
    with running_mlflow_stack(_subdir(services_root, "mlflow-stack"), pg_bin, s3) as stack:
        yield stack


def _subdir(root: Path, name: str) -> Path:
    path = root / name
    path.mkdir(mode=0o711)
    path.chmod(0o711)  # mkdir's mode is masked by the umask
    return path
