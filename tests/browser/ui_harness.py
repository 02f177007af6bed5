"""A real Dagster instance and a real browser for the UI tests and the README screenshots.

``start_pipeline`` builds the instance both of them look at: a local replay folder, a sources file,
a tiny experiment, the ingest of the local folder and one training run with its evaluation, all
launched through GraphQL. ``DagsterStack`` runs ``dagster-webserver`` and ``dagster-daemon`` (the
run queue and the sensors need it) for the repository's ``workspace.yaml`` against a throw-away
``DAGSTER_HOME``, data root and replay folder, on a free loopback port, each in its own process
group so that stopping it also stops the code servers and run workers it started. ``open_browser`` drives Debian's chromium (Playwright cannot download its own
browser everywhere) headless with a fresh profile. ``docs/screenshots.py`` uses the same pieces, so
the pictures in the README show what the browser tests check.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from playwright.sync_api import BrowserContext, Locator, Page, Playwright
from tiny_runs import TINY_EXPERIMENT

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
CHROMIUM = Path(os.environ.get("MELEEWM_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
# The machine running the tests may be small and busy: loading the code location imports torch,
# polars and peppi, and every run starts a fresh Python process.
SERVER_START_TIMEOUT_S = 180.0
RUN_TIMEOUT_S = 300.0
# Pages query a webserver that shares the cores with run workers importing torch.
UI_TIMEOUT_MS = 60_000
TERMINAL_RUN_STATUSES = frozenset({"SUCCESS", "FAILURE", "CANCELED"})


class StackError(RuntimeError):
    """The webserver, the daemon or a run did not do what the caller waited for."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class DagsterStack:
    """One Dagster instance (webserver + daemon) in ``workdir``; see the module docstring.

    ``workdir`` receives ``dagster_home/`` (a copy of the repository's ``dagster.yaml``), ``data/``
    (``MELEEWM_DATA``), ``replays/`` (``MELEEWM_REPLAYS``, filled by the caller) and ``logs/``.
    """

    workdir: Path
    workspace: Path = REPO / "workspace.yaml"
    dagster_yaml: Path = REPO / "dagster_home" / "dagster.yaml"
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def dagster_home(self) -> Path:
        return self.workdir / "dagster_home"

    @property
    def data_root(self) -> Path:
        return self.workdir / "data"

    @property
    def replays(self) -> Path:
        return self.workdir / "replays"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DAGSTER_HOME=str(self.dagster_home),
            MELEEWM_DATA=str(self.data_root),
            MELEEWM_REPLAYS=str(self.replays),
            # The webserver and the daemon must not phone home from a test machine.
            DAGSTER_DISABLE_TELEMETRY="1",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        return env

    def prepare(self) -> None:
        """Create the folders and the instance configuration; the caller may then add replays."""
        for folder in (self.dagster_home, self.data_root, self.replays, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
        settings = {}
        if self.dagster_yaml.is_file():
            settings = yaml.safe_load(self.dagster_yaml.read_text(encoding="utf-8")) or {}
        # Telemetry off in any case: the test instance is throw-away and may have no network.
        settings["telemetry"] = {"enabled": False}
        (self.dagster_home / "dagster.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")

    def start(self) -> None:
        """Start the webserver and the daemon and wait until the code location has loaded."""
        self.prepare()
        self.port = self.port or free_port()
        # Create the SQLite storage once before two processes open it: a webserver and a daemon that
        # both find it missing race on the schema migration ("more than one head present").
        migrate = subprocess.run(
            [str(VENV_BIN / "dagster"), "instance", "migrate"],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
        )
        if migrate.returncode != 0:
            raise StackError(f"`dagster instance migrate` failed:\n{migrate.stdout}{migrate.stderr}")
        self._spawn(
            "webserver",
            [
                str(VENV_BIN / "dagster-webserver"),
                "-w",
                str(self.workspace),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
            ],
        )
        self._spawn("daemon", [str(VENV_BIN / "dagster-daemon"), "run", "-w", str(self.workspace)])
        try:
            self.wait_until_loaded()
        except BaseException:
            self.stop()
            raise

    def _spawn(self, name: str, command: list[str]) -> None:
        log = open(self.logs / f"{name}.log", "wb")
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.processes.append(process)

    def log_tail(self, characters: int = 4000) -> str:
        """The end of every process log, for error messages a person can act on."""
        parts = []
        for log in sorted(self.logs.glob("*.log")):
            text = log.read_text(encoding="utf-8", errors="replace")
            parts.append(f"--- {log} ---\n{text[-characters:]}")
        return "\n".join(parts)

    def wait_until_loaded(self, timeout_s: float = SERVER_START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        last_problem = "no answer yet"
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.poll() is not None:
                    raise StackError(
                        f"{process.args[0]} exited with code {process.returncode}\n{self.log_tail()}"
                    )
            try:
                entries = self.graphql(WORKSPACE_QUERY)["workspaceOrError"]["locationEntries"]
            except (OSError, StackError, KeyError) as error:
                last_problem = str(error)
                time.sleep(1.0)
                continue
            if entries and all(entry["loadStatus"] == "LOADED" for entry in entries):
                errors = [
                    entry["locationOrLoadError"]
                    for entry in entries
                    if entry["locationOrLoadError"]["__typename"] == "PythonError"
                ]
                if errors:
                    raise StackError(f"the code location failed to load: {errors[0]['message']}")
                return
            last_problem = f"location entries: {entries}"
            time.sleep(1.0)
        raise StackError(
            f"dagster-webserver on {self.url} not ready after {timeout_s:.0f}s ({last_problem})\n"
            f"{self.log_tail()}"
        )

    def stop(self) -> None:
        """Stop every process group started here: SIGTERM, then SIGKILL for what lingers."""
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20.0
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            # Children (code servers, run workers) share the group and may outlive the leader.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5.0)
        self.processes.clear()

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        """POST one GraphQL request to the webserver; raise ``StackError`` on GraphQL errors."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            payload = json.loads(response.read())
        if payload.get("errors"):
            raise StackError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]

    def wait_for_run(self, run_id: str, timeout_s: float = RUN_TIMEOUT_S) -> str:
        """Wait until a run ends; return its status. Raise with the run's errors if it does not end."""
        deadline = time.monotonic() + timeout_s
        status = "UNKNOWN"
        while time.monotonic() < deadline:
            run = self.graphql(RUN_STATUS_QUERY, {"runId": run_id})["runOrError"]
            status = run.get("status", run["__typename"])
            if status in TERMINAL_RUN_STATUSES:
                return status
            time.sleep(2.0)
        raise StackError(f"run {run_id} still {status} after {timeout_s:.0f}s\n{self.log_tail()}")

    def run_failure_messages(self, run_id: str) -> list[str]:
        """The error messages a failed run logged, for assertion messages."""
        data = self.graphql(RUN_FAILURES_QUERY, {"runId": run_id})["logsForRun"]
        events = data.get("events", [])
        return [
            f"{event.get('stepKey')}: {event['message']} {json.dumps(event.get('error'))[:2000]}"
            for event in events
            if event["__typename"] in ("ExecutionStepFailureEvent", "RunFailureEvent")
        ]


WORKSPACE_QUERY = """
query {
  workspaceOrError {
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
  }
}
"""

RUN_STATUS_QUERY = """
query RunStatus($runId: ID!) {
  runOrError(runId: $runId) { __typename ... on Run { status } }
}
"""

RUN_FAILURES_QUERY = """
query RunFailures($runId: ID!) {
  logsForRun(runId: $runId) {
    ... on EventConnection {
      events {
        __typename
        ... on MessageEvent { message stepKey }
        ... on ExecutionStepFailureEvent { error { message stack } }
        ... on RunFailureEvent { pipelineName }
      }
    }
  }
}
"""


@contextlib.contextmanager
def open_browser(
    playwright: Playwright, profile_dir: Path, viewport: tuple[int, int] = (1600, 1000)
) -> Iterator[BrowserContext]:
    """Headless Debian chromium with a fresh profile in ``profile_dir``."""
    if not CHROMIUM.is_file():
        raise StackError(f"{CHROMIUM} not found: run `bash scripts/install_browser.sh` (make test does)")
    context = playwright.chromium.launch_persistent_context(
        user_data_dir=str(profile_dir),
        executable_path=str(CHROMIUM),
        headless=True,
        args=list(CHROMIUM_ARGS),
        viewport={"width": viewport[0], "height": viewport[1]},
    )
    try:
        yield context
    finally:
        context.close()


COMMUNITY_DIALOG_HEADING = "Join the Dagster community"


def community_dialog(page: Page) -> Locator:
    return page.get_by_role("dialog").filter(has_text=COMMUNITY_DIALOG_HEADING)


def skip_community_dialog_whenever_shown(page: Page) -> None:
    """Dagster shows a community sign-up dialog a second after the first page load on localhost;
    it covers the page and swallows clicks. Press its "Skip" whenever it appears."""
    dialog = community_dialog(page)
    page.add_locator_handler(
        dialog, lambda: dialog.get_by_role("button", name="Skip").click(), no_wait_after=False
    )


def dismiss_community_dialog(page: Page, appear_timeout_ms: float = 15_000) -> bool:
    """Wait for the first-visit dialog and press "Skip"; return whether it was shown.

    Dagster remembers the dismissal (browser storage and the instance), so later visits go straight
    to the page.
    """
    dialog = community_dialog(page)
    try:
        dialog.wait_for(state="visible", timeout=appear_timeout_ms)
    except Exception:  # noqa: BLE001 - Playwright's TimeoutError: the dialog was already dismissed
        return False
    dialog.get_by_role("button", name="Skip").click()
    dialog.wait_for(state="hidden")
    return True


def copy_replays(source: Path, names: list[str], destination: Path) -> list[Path]:
    """Copy real replays (paths relative to ``source``) flat into ``destination``."""
    destination.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in names:
        target = destination / Path(name).name
        shutil.copyfile(source / name, target)
        copied.append(target)
    return copied


CODE_LOCATION = "meleewm_pipeline.definitions"
LOCAL_SOURCE = "local"
EVALUATION_CONFIG = {"steps": 10, "starts": 2, "game_start_steps": 30}


def retrain_run_config(experiment: str) -> dict:
    return {
        "ops": {
            "encoded_shards": {"config": {"experiment": experiment}},
            "world_model": {"config": {"experiment": experiment}},
            "model_evaluation": {"config": EVALUATION_CONFIG},
        }
    }


@dataclass
class PipelineInstance:
    """A running stack with the local source ingested and one model trained and evaluated."""

    stack: DagsterStack
    sources_file: Path
    experiments_dir: Path
    archives_dir: Path
    setup_run_ids: dict[str, str]

    @property
    def url(self) -> str:
        return self.stack.url

    @property
    def inbox(self) -> Path:
        return self.stack.data_root / "inbox"

    def add_source_entry(self, name: str, archive: Path, description: str) -> None:
        """Append an entry for a local archive to the sources file, as a person edits it."""
        content = yaml.safe_load(self.sources_file.read_text(encoding="utf-8")) or {}
        entries = content.get("sources") or []
        entries.append(
            {"name": name, "url": archive.resolve().as_uri(), "format": "zip", "description": description}
        )
        self.sources_file.write_text(yaml.safe_dump({"sources": entries}), encoding="utf-8")


def write_zip(path: Path, replays: Path, names: tuple[str, ...]) -> Path:
    """A real .zip of real replays, nested in a folder as tournament dumps are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in names:
            archive.write(replays / name, arcname=f"{path.stem}/{Path(name).name}")
    return path


ADD_PARTITION_MUTATION = """
mutation Add($selector: RepositorySelector!, $name: String!, $key: String!) {
  addDynamicPartition(repositorySelector: $selector, partitionsDefName: $name, partitionKey: $key) {
    __typename
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}
"""

LAUNCH_RUN_MUTATION = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
    ... on UnauthorizedError { message }
  }
}
"""


def repository_selector() -> dict:
    return {"repositoryLocationName": CODE_LOCATION, "repositoryName": "__repository__"}


def launch_job(stack: DagsterStack, job: str, run_config: dict, partition: str | None = None) -> str:
    tags = [{"key": "dagster/partition", "value": partition}] if partition else []
    params = {
        "selector": {**repository_selector(), "jobName": job},
        "runConfigData": run_config,
        "executionMetadata": {"tags": tags},
    }
    result = stack.graphql(LAUNCH_RUN_MUTATION, {"params": params})["launchRun"]
    if result["__typename"] != "LaunchRunSuccess":
        raise StackError(f"launching {job} failed: {json.dumps(result)[:3000]}")
    return result["run"]["runId"]


def run_to_success(stack: DagsterStack, job: str, run_config: dict, partition: str | None = None) -> str:
    run_id = launch_job(stack, job, run_config, partition)
    status = stack.wait_for_run(run_id)
    if status != "SUCCESS":
        raise StackError(
            f"run of {job} ({partition or 'unpartitioned'}) ended {status}: "
            f"{stack.run_failure_messages(run_id)}\n{stack.log_tail()}"
        )
    return run_id


def start_pipeline(
    workdir: Path, replay_source: Path, replay_names: list[str], experiment: dict | None = None
) -> PipelineInstance:
    """Start a stack in ``workdir`` whose local source holds ``replay_names`` (paths relative to
    ``replay_source``), ingest that source and train and evaluate one model on it.

    The caller stops ``instance.stack``; on any failure here it is already stopped.
    """
    sources_file = workdir / "sources.yaml"
    sources_file.write_text(yaml.safe_dump({"sources": []}), encoding="utf-8")
    experiments_dir = workdir / "experiments"
    experiments_dir.mkdir(parents=True, exist_ok=True)
    (experiments_dir / "tiny.yaml").write_text(
        yaml.safe_dump(experiment or TINY_EXPERIMENT), encoding="utf-8"
    )
    stack = DagsterStack(
        workdir,
        extra_env={"MELEEWM_SOURCES": str(sources_file), "MELEEWM_EXPERIMENTS": str(experiments_dir)},
    )
    stack.prepare()
    copy_replays(replay_source, replay_names, stack.replays)
    stack.start()
    try:
        added = stack.graphql(
            ADD_PARTITION_MUTATION, {"selector": repository_selector(), "name": "source", "key": LOCAL_SOURCE}
        )["addDynamicPartition"]
        if added["__typename"] != "AddDynamicPartitionSuccess":
            raise StackError(f"cannot add the {LOCAL_SOURCE!r} partition: {added}")
        setup_run_ids = {
            "ingest": run_to_success(stack, "ingest_job", {}, LOCAL_SOURCE),
            "retrain": run_to_success(stack, "retrain_job", retrain_run_config("tiny")),
        }
    except BaseException:
        stack.stop()
        raise
    return PipelineInstance(
        stack=stack,
        sources_file=sources_file,
        experiments_dir=experiments_dir,
        archives_dir=workdir / "archives",
        setup_run_ids=setup_run_ids,
    )
