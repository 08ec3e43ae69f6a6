"""A real single-node Elasticsearch for tests and benchmarks, started without Docker.

Elastic's server jar, its Netty HTTP/transport module and the test framework's classpath plugin loader
come from Maven Central; a small Java launcher (``bench/es_node/src``) starts the node inside one JVM,
bound to 127.0.0.1. Jars are cached in ``~/.cache/custos/m2`` and the built launcher in
``~/.cache/custos/es-node/<version>/``: only the first run builds (Maven, ~1 min); later runs start a
node in a few seconds and never rebuild unless ``pom.xml`` or the launcher sources change.

    from bench.es_node import start_elasticsearch
    node = start_elasticsearch()          # free port, temporary data dir
    node.url                              # http://127.0.0.1:PORT
    node.kill(); node.restart()           # crash, then come back on the same port and data
    node.stop()

``python -m bench.es_node [--port P] [--data-dir D]`` runs one by hand; ``--build-only`` just builds.
See docs/elasticsearch-for-tests.md for what the node supports (and what it does not).
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["ESNode", "EsBuild", "EsNodeError", "ensure_built", "find_java", "start_elasticsearch"]

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
CACHE = Path(os.environ.get("CUSTOS_CACHE", Path.home() / ".cache" / "custos"))
M2 = Path(os.environ.get("CUSTOS_ES_M2", CACHE / "m2"))
LOG_DIR = Path(os.environ.get("CUSTOS_TEST_LOGS", "/tmp/custos-test-logs"))

# Modest defaults: the machine is shared by many test processes.
DEFAULT_JVM_OPTS: tuple[str, ...] = (
    "-Xms512m",
    "-Xmx1g",
    # ES closes itself from its own shutdown hook; log4j's hook would silence that close.
    "-Dlog4j.shutdownHookEnabled=false",
    "-Dlog4j2.disable.jmx=true",
    "-Dlog4j2.formatMsgNoLookups=true",
    "-Dfile.encoding=UTF-8",
    "-Djava.awt.headless=true",
    # A test node out of memory should die loudly, not limp along.
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:-OmitStackTraceInFastThrow",
)
MIN_JAVA = 17
BUILD_LAYOUT = 2  # bump when the cache layout written by ensure_built() changes


class EsNodeError(RuntimeError):
    """The node could not be built or started; the message says why and where the log is."""


def es_version() -> str:
    """The Elasticsearch version to run: $CUSTOS_ES_VERSION, else the one pinned in pom.xml.

    Any version for which org.elasticsearch:elasticsearch, transport-netty4 and the test framework are
    all on Maven Central works, 8.x (Java 17+) and 9.x (Java 21+); see docs/elasticsearch-for-tests.md.
    """
    override = os.environ.get("CUSTOS_ES_VERSION", "").strip()
    if override:
        if not re.fullmatch(r"\d+\.\d+\.\d+", override):
            raise EsNodeError(f"CUSTOS_ES_VERSION={override!r}: expected a release like 8.19.21 or 9.5.3")
        return override
    match = re.search(r"<elasticsearch\.version>([^<]+)</elasticsearch\.version>", POM.read_text())
    if not match:
        raise EsNodeError(f"{POM}: no <elasticsearch.version> property")
    return match.group(1).strip()


def required_java(version: str) -> int:
    """Elasticsearch 8.x runs on Java 17+, 9.x needs 21+."""
    return MIN_JAVA if int(version.split(".")[0]) < 9 else 21


def _java_major(java: str) -> int | None:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


@cache
def find_java(min_major: int = MIN_JAVA) -> str:
    """A `java` >= min_major: $CUSTOS_ES_JAVA_HOME, $JAVA_HOME, the Debian JDK 17, PATH, /usr/lib/jvm/*."""
    candidates: list[str] = []
    for var in ("CUSTOS_ES_JAVA_HOME", "JAVA_HOME"):
        if os.environ.get(var):
            candidates.append(str(Path(os.environ[var]) / "bin" / "java"))
    candidates += [str(p / "bin" / "java") for p in sorted(Path("/usr/lib/jvm").glob("java-17-openjdk*"))]
    if shutil.which("java"):
        candidates.append(shutil.which("java") or "java")
    candidates += [str(p / "bin" / "java") for p in sorted(Path("/usr/lib/jvm").glob("*"))]
    seen: set[str] = set()
    for java in candidates:
        if java in seen or not Path(java).exists():
            continue
        seen.add(java)
        major = _java_major(java)
        if major is not None and major >= min_major:
            return java
    raise EsNodeError(
        f"no Java {min_major}+ found (tried {sorted(seen) or 'nothing'}); set CUSTOS_ES_JAVA_HOME"
    )


def _build_key(version: str) -> str:
    """Changes when the pom or any launcher source changes, so the cached build is reused otherwise."""
    digest = hashlib.sha256(f"{version}/layout-{BUILD_LAYOUT}".encode())
    for path in [POM, *sorted((HERE / "src").rglob("*.java"))]:
        digest.update(str(path.relative_to(HERE)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class EsBuild:
    version: str
    home: Path  # ~/.cache/custos/es-node/<version>
    args_file: Path  # java @argfile with -cp <launcher jar>:<Elastic jars>
    built: bool  # True when this call ran Maven
    key: str = ""  # changes with every rebuild (pom, sources, version)


def _build_is_current(stamp: Path, args_file: Path, key: str) -> bool:
    if not (stamp.exists() and args_file.exists()):
        return False
    try:
        if json.loads(stamp.read_text()).get("key") != key:
            return False
        classpath = args_file.read_text().split(None, 1)[1].strip().strip('"')
    except (ValueError, IndexError):  # a half-written or foreign file: rebuild
        return False
    # A pruned Maven cache must trigger a rebuild (which re-downloads), not a ClassNotFoundError later.
    return all(Path(p).exists() for p in classpath.split(os.pathsep))


def ensure_built(*, quiet: bool = True, timeout: float = 1200) -> EsBuild:
    """Build the launcher once (idempotent; safe to call from parallel processes: a file lock serialises)."""
    version = es_version()
    home = CACHE / "es-node" / version
    home.mkdir(parents=True, exist_ok=True)
    stamp, args_file, build_dir = home / "build.json", home / "java-classpath.args", home / "build"
    key = _build_key(version)
    with open(home / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits here and then finds the build done
        if _build_is_current(stamp, args_file, key):
            return EsBuild(version, home, args_file, built=False, key=key)
        mvn = shutil.which("mvn")
        if mvn is None:
            raise EsNodeError("Maven (`mvn`) is not installed; it resolves Elasticsearch from Maven Central")
        java = find_java(required_java(version))
        cmd = [
            mvn,
            "-B",
            "-Dstyle.color=never",
            *(["-q"] if quiet else []),
            "-f",
            str(POM),
            f"-Dmaven.repo.local={M2}",
            f"-Dcustos.build.dir={build_dir}",
            f"-Delasticsearch.version={version}",
            f"-Dmaven.compiler.release={required_java(version)}",
            *os.environ.get("CUSTOS_MAVEN_ARGS", "").split(),
            "package",
        ]
        env = {**os.environ, "JAVA_HOME": str(Path(java).resolve().parents[1])}
        try:
            proc = subprocess.run(cmd, env=env, capture_output=quiet, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise EsNodeError(
                f"building the Elasticsearch launcher took over {timeout:.0f}s: {' '.join(cmd)}"
            ) from None
        if proc.returncode != 0:
            detail = (proc.stdout or "")[-3000:] + (proc.stderr or "")[-2000:] if quiet else ""
            raise EsNodeError(f"building the Elasticsearch launcher failed ({' '.join(cmd)}):\n{detail}")
        for stale in home.glob("*app-cds-*"):  # class archives of the previous build no longer match
            stale.unlink(missing_ok=True)
        classpath = (build_dir / "classpath.txt").read_text().strip()
        jar = build_dir / "es-node.jar"
        # Quoted: java argfiles split on whitespace, and a home directory may contain spaces.
        args_file.write_text(f'-cp "{jar}{os.pathsep}{classpath}"\n')
        stamp.write_text(json.dumps({"key": key, "version": version, "built_at": time.time()}))
        return EsBuild(version, home, args_file, built=True, key=key)


def _http_json(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body or b"null")
        except ValueError:
            return exc.code, body.decode(errors="replace")


class ESNode:
    """One Elasticsearch node process. Use `start_elasticsearch()` to get a started one."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        transport_port: int | None = None,
        cluster_name: str = "custos-test",
        settings: Mapping[str, Any] | None = None,
        jvm_opts: Sequence[str] = DEFAULT_JVM_OPTS,
        java: str | None = None,
        startup_timeout: float = 180.0,
        owns_data_dir: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self._port = port or 0  # 0: the OS picks; restarts then reuse the port it picked
        self._transport_port = transport_port or 0
        self.cluster_name = cluster_name
        self.settings = dict(settings or {})
        self.jvm_opts = list(jvm_opts)
        self.java = java
        self.startup_timeout = startup_timeout
        self.owns_data_dir = owns_data_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self.version = es_version()
        self.startup_seconds: float | None = None  # of the last start, for benchmarks and reports
        self._cds_pending: tuple[Path, Path] | None = None

    # --- addresses -------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if not self._port:
            raise EsNodeError("the node has not been started yet, so it has no port")
        return self._port

    @property
    def transport_port(self) -> int:
        return self._transport_port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __repr__(self) -> str:
        state = "running" if self.alive() else "stopped"
        return f"<ESNode {self.version} {state} url=http://127.0.0.1:{self._port} data_dir={self.data_dir}>"

    # --- lifecycle -------------------------------------------------------------------------------
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> ESNode:
        """Start (or start again after stop/kill) on the same port and data dir; wait for yellow/green."""
        if self.alive():
            return self
        build = ensure_built()
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for stale in ("http.ports", "transport.ports"):
            (logs / stale).unlink(missing_ok=True)
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"elasticsearch-{os.getpid()}-{time.monotonic_ns()}.log"
        java = self.java or find_java(required_java(self.version))
        argv = [
            java,
            *self.jvm_opts,
            *self._cds_options(build, java),
            f"-Djava.io.tmpdir={self._tmpdir()}",
            f"@{build.args_file}",
            "io.custos.esnode.Launcher",
            "--http-port",
            str(self._port),
            "--transport-port",
            str(self._transport_port),
            "--dir",
            str(self.data_dir),
            "--cluster-name",
            self.cluster_name,
        ]
        for key, value in self.settings.items():
            argv += ["-E", f"{key}={_setting_str(value)}"]
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            # Own process group, so stop()/kill() reach the JVM and nothing else.
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        try:
            self._wait_ready(started + self.startup_timeout)
        except BaseException:
            self.kill()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _cds_options(self, build: EsBuild, java: str) -> list[str]:
        """Class-data sharing: the first node dumps the ~10k classes it loaded when it stops; every later
        start maps that archive instead of parsing jars, about halving startup. A stale or mismatched
        archive is ignored by the JVM (-Xshare:auto), so this can only make starts faster."""
        self._cds_pending = None
        if os.environ.get("CUSTOS_ES_CDS", "1") == "0" or any(
            "Xshare" in o or "Archive" in o for o in self.jvm_opts
        ):
            return []
        jvm = Path(java).resolve()
        ident = hashlib.sha256(f"{build.key}|{jvm}|{jvm.stat().st_mtime_ns}".encode()).hexdigest()[:16]
        archive = build.home / f"app-cds-{ident}.jsa"
        if archive.exists():
            return [f"-XX:SharedArchiveFile={archive}"]
        tmp = build.home / f".app-cds-{os.getpid()}-{time.monotonic_ns()}.jsa.tmp"
        self._cds_pending = (tmp, archive)
        return [f"-XX:ArchiveClassesAtExit={tmp}"]

    def _settle_cds(self, clean_exit: bool) -> None:
        if self._cds_pending is None:
            return
        tmp, archive = self._cds_pending
        self._cds_pending = None
        if clean_exit and tmp.exists() and tmp.stat().st_size > 0:
            os.replace(tmp, archive)  # atomic: parallel first starts just race to the same content
        else:
            tmp.unlink(missing_ok=True)

    def _tmpdir(self) -> Path:
        tmp = self.data_dir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp

    def _wait_ready(self, deadline: float) -> None:
        ports_file = self.data_dir / "logs" / "http.ports"
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                rc, reason = self.proc.returncode, self._failure_reason()
                raise EsNodeError(
                    f"Elasticsearch exited with {rc} while starting: {reason}\n"
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            if not self._port and ports_file.exists():
                # The node writes the bound address once HTTP is up: "127.0.0.1:PORT" per line.
                text = ports_file.read_text().split()
                if text:
                    self._port = int(text[0].rsplit(":", 1)[1])
                    tports = (self.data_dir / "logs" / "transport.ports").read_text().split()
                    self._transport_port = int(tports[0].rsplit(":", 1)[1]) if tports else 0
            if self._port:
                try:
                    status, body = _http_json(f"{self.url}/_cluster/health?wait_for_status=yellow&timeout=1s")
                    if (
                        status == 200
                        and isinstance(body, dict)
                        and body.get("status") in ("yellow", "green")
                        and body.get("cluster_name") == self.cluster_name
                    ):
                        return
                except (OSError, ValueError):
                    pass  # HTTP not bound yet
            time.sleep(0.2)
        raise EsNodeError(
            f"Elasticsearch did not become yellow/green in {self.startup_timeout:.0f}s; "
            f"log {self.log_path}:\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 60.0) -> int | None:
        """Graceful: SIGTERM, the node flushes and releases its data dir; SIGKILL only after `timeout`."""
        if self.proc is None:
            return None
        if self.alive():
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(30)
        self._settle_cds(clean_exit=self.proc.returncode in (0, 128 + signal.SIGTERM, -signal.SIGTERM))
        return self.proc.returncode

    def kill(self) -> int | None:
        """SIGKILL: a crash. The next start() recovers from the translog, as a real node would."""
        if self.proc is None:
            return None
        if self.alive():
            self._signal(signal.SIGKILL)
            self.proc.wait(30)
        self._settle_cds(clean_exit=False)
        return self.proc.returncode

    def restart(self) -> ESNode:
        """Stop gracefully if running, then start again on the same port and data dir."""
        self.stop()
        return self.start()

    def freeze(self) -> None:
        """SIGSTOP: the node keeps its port but answers nothing (a hung cluster). `thaw()` resumes it."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def destroy(self) -> None:
        """Kill the node and, if this wrapper created the data dir, delete it."""
        self.kill()
        if self.owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    # --- conveniences ----------------------------------------------------------------------------
    def client(self, **kwargs: Any):
        """An official `elasticsearch.Elasticsearch` client for this node."""
        from elasticsearch import Elasticsearch

        kwargs.setdefault("request_timeout", 30)
        return Elasticsearch(self.url, **kwargs)

    def health(self) -> dict[str, Any]:
        return _http_json(f"{self.url}/_cluster/health")[1]

    def _failure_reason(self) -> str:
        """The launcher's one-line reason (it names the root cause, e.g. BindException), if it wrote one."""
        marker = "custos-es-node: failed to start: "
        for line in self.log_tail(1_000_000).splitlines():
            if marker in line:
                return line.split(marker, 1)[1]
        return "no reason logged (see the log)"

    def log_tail(self, chars: int = 4000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def __enter__(self) -> ESNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _setting_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def start_elasticsearch(
    port: int | None = None,
    data_dir: str | Path | None = None,
    *,
    transport_port: int | None = None,
    cluster_name: str = "custos-test",
    settings: Mapping[str, Any] | None = None,
    jvm_opts: Sequence[str] = DEFAULT_JVM_OPTS,
    startup_timeout: float = 180.0,
) -> ESNode:
    """Start a real single-node cluster on 127.0.0.1 and wait until it is yellow or green.

    ``port=None`` lets the OS pick a free port (no race with other test processes); ``data_dir=None``
    uses a temporary directory that is removed at interpreter exit. ``settings`` are extra node
    settings (``-E key=value``), e.g. ``{"http.max_content_length": "10mb"}``.
    """
    owns = data_dir is None
    path = Path(tempfile.mkdtemp(prefix="custos-es-")) if owns else Path(data_dir)  # type: ignore[arg-type]
    path.mkdir(parents=True, exist_ok=True)
    node = ESNode(
        path,
        port=port,
        transport_port=transport_port,
        cluster_name=cluster_name,
        settings=settings,
        jvm_opts=jvm_opts,
        startup_timeout=startup_timeout,
        owns_data_dir=owns,
    )
    # Never leave a JVM behind when the test process ends, whatever path it takes out.
    atexit.register(node.destroy if owns else node.kill)
    try:
        return node.start()
    except BaseException:
        node.destroy()
        raise
