"""A fleet on one machine: Debian's PostgreSQL server and an S3-protocol server listening on
a bridge, and worker "hosts" that are network namespaces joined to that bridge by veth
pairs. Each host runs `mediaq` commands and workers through `ip netns exec` with its own
MEDIAQ_HOME and host id, reaching the servers only over the bridge, as separate machines
reach a shared server. Everything is torn down by the context managers, also when a test
fails (and what a killed test run left is swept at the next start)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml

from tests.helpers import MEDIAQ, MediaqEnv, free_port, missing_tool_reason, wait_for

NETNS_PREFIX = "mqfleet-"  # mqfleet-<pid>-<tag>-h<i>: the pid tells a stale one
OWNER = "mediaq_owner"  # the database owner the hosts log in as: not a superuser


def debian_pg_bin() -> Path | None:
    """The newest Debian PostgreSQL server's bin folder (postgresql-NN), or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                   else 0)
    return found[-1].parent if found else None


def why_no_fleet() -> str | None:
    """Why this machine cannot run the fleet tests (a skip reason), or None."""
    if os.geteuid() != 0:
        return "the fleet tests need root (network namespaces, veth pairs, a bridge)"
    if shutil.which("ip") is None:
        return "the fleet tests need iproute2's ip"
    if debian_pg_bin() is None:
        return missing_tool_reason("pg_ctlcluster")
    return None


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


def _dead(pid: str) -> bool:
    return pid.isdigit() and not Path(f"/proc/{pid}").exists()


def sweep_leftovers() -> None:
    """Remove what fleet test runs whose process is gone (a killed pytest) left behind:
    their namespaces (named after the pid), bridges (the pid in their alias) and
    PostgreSQL servers (the pid in ``owner.pid`` beside the data folder)."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                            timeout=20).stdout
    for line in listed.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(NETNS_PREFIX) and _dead(name.removeprefix(NETNS_PREFIX).split("-")[0]):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)
    links = subprocess.run(["ip", "-o", "link", "show", "type", "bridge"],
                           capture_output=True, text=True, timeout=20).stdout
    for line in links.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        alias = line.partition(" alias ")[2].split()
        if (name.startswith("mqfb") and alias and alias[0].startswith(NETNS_PREFIX)
                and _dead(alias[0].removeprefix(NETNS_PREFIX))):
            subprocess.run(["ip", "link", "del", name], capture_output=True, timeout=20)
    for root in Path(tempfile.gettempdir()).glob("mediaq-fleet-pg-*"):
        owner = root / "owner.pid"
        if owner.exists() and _dead(owner.read_text().strip()):
            pg_bin = debian_pg_bin()
            if pg_bin is not None and (root / "pgdata" / "postmaster.pid").exists():
                subprocess.run([str(pg_bin / "pg_ctl"), "-D", str(root / "pgdata"), "-m",
                                "immediate", "stop"], capture_output=True, timeout=60,
                               user="postgres", group="postgres", cwd=root)
            shutil.rmtree(root, ignore_errors=True)


# -- the bridge and the hosts' namespaces ----------------------------------------------------


@dataclass
class Bridge:
    """A Linux bridge in the root namespace with ``address`` (.1 of a /24 of its own)."""

    name: str
    subnet: str  # "10.A.B" (the /24 without its last octet)

    @property
    def address(self) -> str:
        return f"{self.subnet}.1"


@contextmanager
def bridge() -> Iterator[Bridge]:
    tag = uuid.uuid4().hex[:6]
    # A /24 of its own per run (10.220-249.x: tests/chaos's namespaces use 10.213.x), so
    # concurrent runs (pytest-xdist) do not share addresses.
    subnet = f"10.{220 + int(tag[:2], 16) % 30}.{int(tag[2:4], 16)}"
    br = Bridge(name=f"mqfb{tag}", subnet=subnet)
    ip("link", "add", br.name, "type", "bridge")
    try:
        ip("link", "set", br.name, "alias", f"{NETNS_PREFIX}{os.getpid()}")
        ip("addr", "add", f"{br.address}/24", "dev", br.name)
        ip("link", "set", br.name, "up")
        yield br
    finally:
        subprocess.run(["ip", "link", "del", br.name], capture_output=True, timeout=20)


@dataclass
class Netns:
    """One host's network namespace: ``address`` on the bridge's /24 through a veth pair
    whose root end is ``link``. ``cut()`` takes that end down: packets are lost and
    nothing is refused, as when a cable is pulled."""

    name: str
    link: str
    address: str

    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def cut(self) -> None:
        ip("link", "set", self.link, "down")

    def restore(self) -> None:
        ip("link", "set", self.link, "up")


@contextmanager
def netns(br: Bridge, index: int) -> Iterator[Netns]:
    tag = br.name.removeprefix("mqfb")
    ns = Netns(name=f"{NETNS_PREFIX}{os.getpid()}-{tag}-h{index}", link=f"mqfv{tag}{index}",
               address=f"{br.subnet}.{10 + index}")
    inner = f"mqfi{tag}{index}"
    ip("netns", "add", ns.name)
    try:
        ip("link", "add", ns.link, "type", "veth", "peer", "name", inner)
        ip("link", "set", inner, "netns", ns.name)
        ip("link", "set", ns.link, "master", br.name)
        ip("link", "set", ns.link, "up")
        ip("netns", "exec", ns.name, "ip", "addr", "add", f"{ns.address}/24", "dev", inner)
        ip("netns", "exec", ns.name, "ip", "link", "set", inner, "up")
        ip("netns", "exec", ns.name, "ip", "link", "set", "lo", "up")
        yield ns
    finally:
        # Deleting the namespace destroys the veth pair with it; the link first in case
        # the namespace is already gone.
        subprocess.run(["ip", "link", "del", ns.link], capture_output=True, timeout=20)
        subprocess.run(["ip", "netns", "del", ns.name], capture_output=True, timeout=20)


# -- Debian's PostgreSQL server --------------------------------------------------------------


@dataclass
class DebianPostgres:
    """A cluster of Debian's ``postgresql`` package in a temporary folder, run by the
    ``postgres`` system user (initdb refuses root), listening on the bridge address. The
    test administers it as ``postgres`` over its Unix socket; the hosts log in over TCP as
    a non-superuser with a password (scram-sha-256)."""

    root: Path
    address: str
    bin: Path
    port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: secrets.token_hex(12))

    @property
    def pgdata(self) -> Path:
        return self.root / "pgdata"

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.root}&port={self.port}"

    def url(self, database: str) -> str:
        """What the hosts set as MEDIAQ_DATABASE_URL."""
        return f"postgresql://{OWNER}:{self.password}@{self.address}:{self.port}/{database}"

    def _as_postgres(self, *args: str, timeout: float = 120) -> None:
        subprocess.run(args, check=True, capture_output=True, timeout=timeout, user="postgres",
                       group="postgres", cwd=self.root)

    def init(self) -> None:
        shutil.chown(self.root, "postgres", "postgres")
        self._as_postgres(str(self.bin / "initdb"), "-D", str(self.pgdata), "-U", "postgres",
                          "--auth-local=trust", "--auth-host=scram-sha-256",
                          "--encoding=utf8", "--no-sync")
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write(f"listen_addresses = '{self.address}'\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.root}'\n"
                       "fsync = off\nmax_connections = 200\nlog_min_messages = warning\n"
                       # lock waits past deadlock_timeout and deadlocks' both statements
                       # land in server.log (kept with MEDIAQ_FLEET_PG_LOG)
                       "log_lock_waits = on\n" + os.environ.get("MEDIAQ_FLEET_PG_EXTRA", ""))
        with (self.pgdata / "pg_hba.conf").open("a") as hba:
            subnet = self.address.rsplit(".", 1)[0]
            hba.write(f"host all all {subnet}.0/24 scram-sha-256\n")

    def start(self) -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.pgdata), "-w", "-t", "90",
                          "-l", str(self.root / "server.log"), "start")

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.pgdata), "-w", "-m", mode,
                          "stop")

    def create_owner(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {OWNER} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                         f"PASSWORD '{self.password}'")

    def create_database(self) -> str:
        """A new, empty database owned by the non-superuser owner; its hosts' URL."""
        name = f"mediaq_fleet_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" OWNER {OWNER}')
        return self.url(name)

    def version(self) -> str:
        with psycopg.connect(self.admin_url) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        assert row is not None
        return str(row[0])


@contextmanager
def debian_postgres(address: str) -> Iterator[DebianPostgres]:
    pg_bin = debian_pg_bin()
    assert pg_bin is not None
    root = Path(tempfile.mkdtemp(prefix="mediaq-fleet-pg-"))
    os.chmod(root, 0o755)
    (root / "owner.pid").write_text(str(os.getpid()))
    server = DebianPostgres(root, address, pg_bin)
    try:
        server.init()
        server.start()
        server.create_owner()
        yield server
    finally:
        with suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            server.stop("immediate")
        keep = os.environ.get("MEDIAQ_FLEET_PG_LOG")  # a folder to keep the server's log in
        if keep and (root / "server.log").exists():
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(root / "server.log", Path(keep) / f"{root.name}.log")
        shutil.rmtree(root, ignore_errors=True)


# -- the fleet -------------------------------------------------------------------------------


@dataclass
class Fleet:
    """The servers on the bridge and the hosts' namespaces (module-wide); ``hosts()``
    makes a test's mediaq installations on them."""

    bridge: Bridge
    postgres: DebianPostgres
    namespaces: list[Netns]
    s3_endpoint: str | None = None


@contextmanager
def fleet(hosts: int, s3: bool = False) -> Iterator[Fleet]:
    from tests.s3_server import moto_server

    sweep_leftovers()
    with ExitStack() as stack:
        br = stack.enter_context(bridge())
        namespaces = [stack.enter_context(netns(br, i)) for i in range(hosts)]
        postgres = stack.enter_context(debian_postgres(br.address))
        endpoint = stack.enter_context(moto_server(br.address)) if s3 else None
        yield Fleet(br, postgres, namespaces, endpoint)


@dataclass
class Host(MediaqEnv):
    """One host's mediaq installation: its own MEDIAQ_HOME and host id; every ``mediaq``
    command and worker runs inside its namespace. ``query``/``job`` (from the test's side)
    reach the same server over the bridge."""

    ns: Netns | None = None
    name: str = ""

    @classmethod
    def on(cls, ns: Netns, root: Path, url: str, name: str, **settings: str) -> Host:
        base = MediaqEnv.create(root, url, host_id=name, **settings)
        return cls(root=base.root, url=base.url, env=base.env, inputs=base.inputs,
                   outputs=base.outputs, ns=ns, name=name)

    @property
    def namespace(self) -> Netns:
        assert self.ns is not None
        return self.ns

    def cli(self, *args: str, check: bool = True, timeout: float = 60,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*self.namespace.prefix(), *MEDIAQ, *args], env=self.env,
                                capture_output=True, text=True, timeout=timeout, input=stdin)
        if check and result.returncode != 0:
            raise AssertionError(f"[{self.name}] mediaq {' '.join(args)} failed "
                                 f"({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def start(self, command: str, *args: str, **extra_env: str) -> subprocess.Popen[str]:
        # `ip netns exec` execs the command in place: the Popen's pid is mediaq's own, so
        # a kill -9 reaches the worker, not a wrapper.
        env = {**self.env, **{f"MEDIAQ_{k.upper()}": v for k, v in extra_env.items()}}
        log_path = self.root / f"worker-{len(self.workers)}.log"
        with log_path.open("w") as log_file:
            proc = subprocess.Popen([*self.namespace.prefix(), *MEDIAQ, command, *args],
                                    env=env, text=True, stdout=log_file,
                                    stderr=subprocess.STDOUT)
        self.workers.append(proc)
        return proc

    def kill9(self, proc: subprocess.Popen[str]) -> None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)

    def stop(self, proc: subprocess.Popen[str]) -> None:
        """SIGTERM one process and wait until it has exited (it writes nothing after)."""
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)


@contextmanager
def hosts_on(fl: Fleet, tmp_path: Path, **settings: str) -> Iterator[list[Host]]:
    """A fresh database on the fleet's server and one mediaq installation per namespace
    (``tmp_path/host-N``, host id ``host-N``); every worker stopped at the end."""
    url = fl.postgres.create_database()
    made = [Host.on(ns, tmp_path / f"host-{i}", url, f"host-{i}", **settings)
            for i, ns in enumerate(fl.namespaces)]
    try:
        yield made
    finally:
        for host in made:
            host.namespace.restore()
            host.stop_workers()


def worker_hosts(host: Host, code: str) -> list[dict[str, Any]]:
    """Each step execution of job ``code``: its step, attempt status, error class, and the
    host of the worker that ran it."""
    return host.query(
        "SELECT se.step_id, se.status, se.error_class, se.worker_id, w.host "
        "FROM step_executions se JOIN workflow_jobs j ON j.id = se.job_id "
        "LEFT JOIN workers w ON w.worker_id = se.worker_id "
        "WHERE j.job_code = %s ORDER BY se.id", (code,))


# -- driving the hosts as a user does -----------------------------------------------------


def apply(host: Host, *docs: dict[str, Any]) -> None:
    """`mediaq workflows apply FILE` from ``host``."""
    for doc in docs:
        path = host.root / f"{doc['workflow_code']}.yaml"
        path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        host.cli("workflows", "apply", str(path))


def start_workers(hosts: list[Host], *args: str) -> dict[str, subprocess.Popen[str]]:
    """One worker per host (id ``<host>-wN``), once each has registered and says it
    started; worker id -> process."""
    procs: dict[str, subprocess.Popen[str]] = {}
    for host in hosts:
        worker_id = f"{host.name}-w{len(host.workers)}"
        procs[worker_id] = host.start_worker("--id", worker_id, *args)
    for host in hosts:
        proc = host.workers[-1]

        def started(host: Host = host, proc: subprocess.Popen[str] = proc) -> bool:
            assert proc.poll() is None, host.worker_log(proc)[-3000:]
            return "worker:started" in host.worker_log(proc)

        wait_for(started, timeout=90, interval=0.1, message=f"{host.name}'s worker to start")
    return procs


def wait_listening(hosts: list[Host]) -> None:
    """Until each host has a session whose last statement was a LISTEN (its worker's
    listener is subscribed): only then can a NOTIFY alone wake it. Hosts are told apart
    by their sessions' client addresses."""
    def listening() -> bool:
        rows = hosts[0].query("SELECT DISTINCT host(client_addr) AS addr FROM pg_stat_activity"
                              " WHERE query ILIKE 'LISTEN %%'")
        return {h.namespace.address for h in hosts} <= {r["addr"] for r in rows}

    wait_for(listening, timeout=60, interval=0.1, message="every host's worker to LISTEN")


def one_execution_completed(host: Host, code: str) -> list[dict[str, Any]]:
    """The job completed with exactly one completed execution of each step; the rows."""
    job = host.job(code)
    assert job["status"] == "completed", (code, job["status"], job["error_message"])
    rows = worker_hosts(host, code)
    done = Counter(r["step_id"] for r in rows if r["status"] == "completed")
    assert set(done.values()) == {1}, rows
    return rows


# -- object storage ---------------------------------------------------------------------------


@dataclass
class Buckets:
    """An input and an output bucket on the fleet's S3-protocol server, seen from the
    test's side (boto3, unmocked). The output bucket keeps versions, so every write ever
    made at a final key can be read back."""

    s3: Any
    inputs: str
    outputs: str

    @classmethod
    def make(cls, endpoint: str) -> Buckets:
        from tests.s3_server import bucket_name, client

        s3 = client(endpoint)
        made = cls(s3, bucket_name("fleet-in"), bucket_name("fleet-out"))
        for bucket in (made.inputs, made.outputs):
            s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=made.outputs,
                                 VersioningConfiguration={"Status": "Enabled"})
        return made

    def settings(self, endpoint: str) -> dict[str, str]:
        """A host's environment for these buckets: s3:// inputs only, an s3:// output
        root, nothing shared on disk."""
        from tests.s3_server import CREDENTIALS

        return {**CREDENTIALS, "MEDIAQ_S3_ENDPOINT_URL": endpoint,
                "MEDIAQ_INPUT_ROOTS": f"s3://{self.inputs}/uploads/",
                "MEDIAQ_OUTPUT_ROOT": f"s3://{self.outputs}/jobs/",
                "MEDIAQ_S3_SWEEP_SECONDS": "1", "MEDIAQ_S3_MULTIPART_MB": "5"}

    def put(self, key: str, data: bytes) -> str:
        self.s3.put_object(Bucket=self.inputs, Key=f"uploads/{key}", Body=data)
        return f"s3://{self.inputs}/uploads/{key}"

    def get(self, uri: str, version: str | None = None) -> bytes:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        extra = {"VersionId": version} if version else {}
        return bytes(self.s3.get_object(Bucket=bucket, Key=key, **extra)["Body"].read())

    def content_type(self, uri: str) -> str:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        return str(self.s3.head_object(Bucket=bucket, Key=key)["ContentType"])

    def final_keys(self) -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=self.outputs, Prefix="jobs/")
        return sorted(o["Key"] for o in listed.get("Contents", [])
                      if not o["Key"].startswith("jobs/.staging/"))

    def staged_keys(self) -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=self.outputs, Prefix="jobs/.staging/")
        return sorted(o["Key"] for o in listed.get("Contents", []))

    def multipart_uploads(self) -> list[dict[str, Any]]:
        return list(self.s3.list_multipart_uploads(Bucket=self.outputs).get("Uploads", []))

    def versions(self, uri: str) -> list[str]:
        """Every version ever written at the final key of ``uri``."""
        key = uri.removeprefix(f"s3://{self.outputs}/")
        listed = self.s3.list_object_versions(Bucket=self.outputs, Prefix=key)
        return [v["VersionId"] for v in listed.get("Versions", []) if v["Key"] == key]
