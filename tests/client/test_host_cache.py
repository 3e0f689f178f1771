"""The host token cache (``oauth_cache=host``) against the emulator over real sockets.

Most tests stand in for separate processes with separate in-process caches (``TokenCache``) over one cache directory,
so that the emulator and the clients can share a fake clock; the file lock is an ``flock`` on a file opened afresh by
each holder, which conflicts within one process just as across processes. The single-flight tests at the end start
real processes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_truconnect.client import host_cache
from airflow_provider_truconnect.client.async_client import AsyncTruConnectClient
from airflow_provider_truconnect.client.client import TruConnectClient
from airflow_provider_truconnect.client.config import ClientConfig
from airflow_provider_truconnect.client.errors import TruConnectConfigError, TruConnectServerError
from airflow_provider_truconnect.client.host_cache import FileLock, HostTokenStore, SharedEntry
from airflow_provider_truconnect.client.retry import RetryPolicy
from airflow_provider_truconnect.client.token_cache import TokenCache
from airflow_provider_truconnect.emulator.config import DEFAULT_CLIENT_ID, OTHER_CLIENT_ID
from airflow_provider_truconnect.emulator.server import RunningEmulator
from benchmarks.host_cache_worker import run_together
from tests.conftest import FakeClock

SIM_ROUTE = "/v2/products"


def grants(emu: RunningEmulator) -> dict[str, int]:
    return dict(emu.control.stats()["token_grants_total"])


def total_grants(emu: RunningEmulator) -> int:
    return sum(grants(emu).values())


def config_for(emu: RunningEmulator, *, secret: str | None = None, client_id: str | None = None) -> ClientConfig:
    return ClientConfig.from_connection_fields(
        host=emu.api_base,
        login=client_id or emu.client_id,
        password=secret or emu.client_secret,
        extra={"oauth_url": emu.oauth_url, "oauth_cache": "host"},
    )


class Process:
    """What one task process has: its own in-process cache and client, over the shared cache directory."""

    def __init__(self, emu: RunningEmulator, clock: Callable[[], float], store: HostTokenStore, **kwargs: Any) -> None:
        self.masked: list[str] = []
        self.cache = TokenCache(host_store=store)
        self.client = TruConnectClient(
            config_for(emu, **kwargs),
            token_cache=self.cache,
            clock=clock,
            retry_policy=RetryPolicy(max_retries=0),
            on_new_token=self.masked.append,
        )

    def token(self) -> str:
        return self.client.token().access_token

    def call(self) -> Any:
        return self.client.request("GET", SIM_ROUTE)

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def clocked(truconnect_emulator: RunningEmulator) -> tuple[RunningEmulator, FakeClock]:
    clock = FakeClock()
    assert truconnect_emulator.state is not None
    truconnect_emulator.state.reset(
        truconnect_emulator.config.with_updates({"clock": clock, "rate_limit_per_minute": None})
    )
    return truconnect_emulator, clock


@pytest.fixture
def store(tmp_path: Path) -> HostTokenStore:
    return HostTokenStore(tmp_path / "cache" / "airflow-provider-truconnect")


@pytest.fixture
def processes(clocked: tuple[RunningEmulator, FakeClock], store: HostTokenStore) -> Iterator[Callable[..., Process]]:
    started: list[Process] = []

    def start(**kwargs: Any) -> Process:
        emu, clock = clocked
        started.append(Process(emu, clock, store, **kwargs))
        return started[-1]

    yield start
    for process in started:
        process.close()


# --------------------------------------------------------------------------------------------------- the extra
def test_oauth_cache_extra_is_validated() -> None:
    def build(**extra: Any) -> ClientConfig:
        return ClientConfig.from_connection_fields(host="api.example.com", login="id", password="pw", extra=extra)

    assert build().oauth_cache == "process"
    assert build(oauth_cache=" Host ").oauth_cache == "host"
    assert build(extra__truconnect__oauth_cache="host").oauth_cache == "host"
    for bad in ("shared", 1, True):
        with pytest.raises(TruConnectConfigError, match=r"extra\.oauth_cache"):
            build(oauth_cache=bad)


def test_process_mode_never_touches_the_directory(clocked: tuple[RunningEmulator, FakeClock], tmp_path: Path) -> None:
    emu, clock = clocked
    store = HostTokenStore(tmp_path / "never")
    config = ClientConfig.from_connection_fields(
        host=emu.api_base, login=emu.client_id, password=emu.client_secret, extra={"oauth_url": emu.oauth_url}
    )
    for _ in range(2):
        with TruConnectClient(config, token_cache=TokenCache(host_store=store), clock=clock) as client:
            client.token()
    assert total_grants(emu) == 2
    assert not (tmp_path / "never").exists()


# ------------------------------------------------------------------------------------------------- sharing
def test_processes_share_one_token_and_each_masks_it_once(
    clocked: tuple[RunningEmulator, FakeClock], processes: Callable[..., Process]
) -> None:
    emu, _ = clocked
    first, second = processes(), processes()
    token = first.token()
    assert second.token() == token and second.token() == token
    assert second.call()["data"]
    assert grants(emu) == {"client_credentials": 1}
    # The second process saw the access and the refresh token in the file: both masked, once.
    assert len(second.masked) == 2 and second.masked[0] == token
    assert second.masked == first.masked


def test_directory_and_file_are_private_and_reveal_nothing(
    clocked: tuple[RunningEmulator, FakeClock], processes: Callable[..., Process], store: HostTokenStore
) -> None:
    emu, _ = clocked
    first = processes()
    first.token()
    assert stat.S_IMODE(os.stat(store.directory).st_mode) == 0o700
    files = sorted(p.name for p in store.directory.iterdir())
    assert len(files) == 2 and files[0].endswith(".lock") and files[1].endswith(".token")
    content = (store.directory / files[1]).read_bytes()
    assert stat.S_IMODE(os.stat(store.directory / files[1]).st_mode) == 0o600
    for secret in (emu.client_id, emu.client_secret, *first.masked):
        assert secret not in "".join(files)
        assert secret.encode() not in content


# ------------------------------------------------------------------------------------- files that are ignored
def _flip_last_byte(path: Path, _: Any) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


def _other_version(path: Path, _: Any) -> None:
    data = bytearray(path.read_bytes())
    data[4] = host_cache.FORMAT_VERSION + 1
    path.write_bytes(bytes(data))


def _foreign_key(path: Path, emu: RunningEmulator) -> None:
    # The same token URL, client id and scope (so the same file), encrypted under another secret's key.
    store = HostTokenStore(path.parent)
    entry = store.read(config_for(emu))
    store.write(config_for(emu, secret="another-secret-of-this-client"), entry or SharedEntry())


def _other_clients_file(path: Path, emu: RunningEmulator) -> None:
    store = HostTokenStore(path.parent)
    entry = store.read(config_for(emu))
    other = config_for(emu, client_id=OTHER_CLIENT_ID, secret=emu.config.clients[OTHER_CLIENT_ID])
    store.write(other, entry or SharedEntry())
    os.replace(store.path(other), path)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda path, _: path.unlink(), id="missing"),
        pytest.param(lambda path, _: path.write_bytes(b"\x00garbage" * 10), id="corrupt"),
        pytest.param(lambda path, _: path.write_bytes(b""), id="empty"),
        pytest.param(_flip_last_byte, id="tampered"),
        pytest.param(_other_version, id="wrong-version"),
        pytest.param(_foreign_key, id="foreign-key"),
        pytest.param(_other_clients_file, id="other-client"),
        pytest.param(lambda path, _: os.chmod(path, 0o644), id="readable-by-others"),
        pytest.param(lambda path, _: (path.unlink(), path.symlink_to(path.parent / "elsewhere")), id="symlink"),
    ],
)
def test_a_bad_file_is_ignored_and_replaced(
    clocked: tuple[RunningEmulator, FakeClock],
    processes: Callable[..., Process],
    store: HostTokenStore,
    damage: Callable[[Path, RunningEmulator], None],
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    emu, _ = clocked
    old = processes().token()
    path = store.path(config_for(emu))
    damage(path, emu)
    caplog.set_level(logging.INFO, logger=host_cache.__name__)

    renewed = processes().token()
    assert renewed != old
    assert grants(emu) == {"client_credentials": 2}  # a new grant; never a refresh with what the file held
    assert not path.is_symlink() and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert processes().token() == renewed  # replaced: the next process reads it
    assert total_grants(emu) == 2
    # Said once at INFO (the next renewal repairs it), never louder; a missing file is not worth a line.
    assert ("ignoring" in caplog.text) is (request.node.callspec.id != "missing")
    assert all(record.levelno <= logging.INFO for record in caplog.records)


def test_a_file_of_another_user_is_ignored(
    clocked: tuple[RunningEmulator, FakeClock],
    processes: Callable[..., Process],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    emu, _ = clocked
    old = processes().token()
    caplog.set_level(logging.INFO, logger=host_cache.__name__)
    real_uid = os.getuid()
    # The directory stays ours (its check is made once per store); the file now appears to be someone else's.
    monkeypatch.setattr(host_cache.os, "getuid", lambda: real_uid + 1)
    assert processes().token() != old
    assert "belongs to user id" in caplog.text
    assert total_grants(emu) == 2


# ---------------------------------------------------------------------------------------- expiry and 401
def test_an_expired_token_is_renewed_once_for_everyone(
    clocked: tuple[RunningEmulator, FakeClock], processes: Callable[..., Process]
) -> None:
    emu, clock = clocked
    first, second = processes(), processes()
    old = first.token()
    clock.advance(301)
    renewed = second.token()
    assert renewed != old
    assert first.token() == renewed  # its own copy expired: it takes the file's instead of renewing again
    assert processes().token() == renewed
    # The renewal used the shared refresh token: one client_credentials grant in all, then one refresh.
    assert grants(emu) == {"client_credentials": 1, "refresh_token": 1}
    assert not emu.control.stats()["token_failures_by_error"]


def test_refresh_tokens_rotate_through_the_file(
    clocked: tuple[RunningEmulator, FakeClock], processes: Callable[..., Process]
) -> None:
    emu, clock = clocked
    workers = [processes() for _ in range(3)]
    workers[0].token()
    for round_number in range(4):
        clock.advance(301)
        # Each round a different process renews, with the refresh token the previous renewal stored (single use
        # on this emulator: a stale one would be refused with invalid_grant).
        renewer = workers[round_number % 3]
        token = renewer.token()
        assert all(worker.token() == token for worker in workers)
    assert grants(emu) == {"client_credentials": 1, "refresh_token": 4}
    assert not emu.control.stats()["token_failures_by_error"]


def test_a_revoked_token_is_renewed_once_and_replaced_only_if_still_in_the_file(
    clocked: tuple[RunningEmulator, FakeClock], processes: Callable[..., Process], store: HostTokenStore
) -> None:
    emu, _ = clocked
    first, second = processes(), processes()
    revoked = first.token()
    assert second.token() == revoked
    emu.control.revoke(revoked)

    assert first.call()["data"]  # 401, then a renewal that replaces the file's token
    renewed = first.token()
    assert renewed != revoked
    assert total_grants(emu) == 2
    # The second process meets the same 401 with the same token; the file no longer holds it, so the file is left
    # alone (compare-and-swap) and its newer token is used without another grant.
    assert second.call()["data"]
    assert second.token() == renewed
    entry = store.read(config_for(emu))
    assert entry is not None and entry.token is not None and entry.token.access_token == renewed
    stats = emu.control.stats()
    assert sum(stats["token_grants_total"].values()) == 2 and stats["unauthorized"] == 2


def test_a_rejected_token_is_marked_expired_in_the_file_when_its_renewal_fails(
    clocked: tuple[RunningEmulator, FakeClock], processes: Callable[..., Process], store: HostTokenStore
) -> None:
    emu, _ = clocked
    first = processes()
    revoked = first.token()
    emu.control.revoke(revoked)
    emu.control.add_fault("token", status=503, count=10)
    with pytest.raises(TruConnectServerError):
        first.call()
    entry = store.read(config_for(emu))
    assert entry is not None and entry.token is not None and entry.token.access_token == revoked
    assert entry.token.expires_at == float("-inf") and entry.failures == 1
    assert entry.token.refresh_token  # kept for the next renewal

    emu.control.clear_faults()
    later = processes()
    assert later.token() != revoked  # never adopted: it is marked expired
    assert grants(emu).get("client_credentials", 0) + grants(emu).get("refresh_token", 0) == 2


def test_a_rotated_secret_never_reuses_the_old_token(
    clocked: tuple[RunningEmulator, FakeClock], processes: Callable[..., Process]
) -> None:
    emu, clock = clocked
    old = processes().token()
    assert emu.state is not None
    rotated = {**emu.config.clients, DEFAULT_CLIENT_ID: "rotated-secret-0123456789"}
    emu.state.reset(emu.config.with_updates({"clock": clock, "rate_limit_per_minute": None, "clients": rotated}))

    fresh = processes(secret="rotated-secret-0123456789")
    token = fresh.token()
    assert token != old
    # Neither the old access token nor its refresh token was presented: one client_credentials grant, no failure.
    stats = emu.control.stats()
    assert stats["token_grants_total"] == {"client_credentials": 1}
    assert not stats["token_failures_by_error"] and stats["unauthorized"] == 0
    assert processes(secret="rotated-secret-0123456789").token() == token


# ------------------------------------------------------------------------------------ locking across processes
TOKEN_ROUTE = "POST /auth/realms/tru-staff/protocol/openid-connect/token"


def token_requests(emu: RunningEmulator) -> int:
    return sum(emu.control.stats()["requests_by_route"].get(TOKEN_ROUTE, {}).values())


class _SignallingLock(FileLock):
    def __init__(self, path: Path, wait: float, store: _InstrumentedStore) -> None:
        super().__init__(path, wait)
        self.store = store

    def _try(self) -> bool:
        if super()._try():
            self.store.acquired.set()
            return True
        self.store.waiting.set()
        return False


class _InstrumentedStore(HostTokenStore):
    """A store that reports when its lock is taken or has to wait, and whose writes wait for a signal."""

    def __init__(self, directory: Path, write_after: threading.Event | None = None) -> None:
        super().__init__(directory)
        self.acquired, self.waiting = threading.Event(), threading.Event()
        self.write_after = write_after

    def lock(self, config: ClientConfig) -> FileLock:
        return _SignallingLock(super().lock(config).path, self.lock_wait, self)

    def write(self, config: ClientConfig, entry: SharedEntry) -> None:
        if self.write_after is not None:
            self.write_after.wait(30)
        super().write(config, entry)


def test_a_failed_renewal_is_shared_with_the_processes_that_waited_for_it(
    clocked: tuple[RunningEmulator, FakeClock], store: HostTokenStore
) -> None:
    emu, clock = clocked
    emu.control.add_fault("token", status=503, count=10)
    second_store = _InstrumentedStore(store.directory)
    # The first process fails, and writes its failure only once the second one waits for the lock.
    first_store = _InstrumentedStore(store.directory, write_after=second_store.waiting)
    first, second = Process(emu, clock, first_store), Process(emu, clock, second_store)
    outcome: list[BaseException] = []

    def run_first() -> None:
        try:
            first.token()
        except BaseException as exc:  # noqa: BLE001 - checked below
            outcome.append(exc)

    thread = threading.Thread(target=run_first)
    thread.start()
    try:
        assert first_store.acquired.wait(30)
        with pytest.raises(TruConnectServerError, match="another process on this host") as shared:
            second.token()
    finally:
        second_store.waiting.set()
        thread.join(30)
    assert isinstance(outcome[0], TruConnectServerError) and outcome[0].status_code == 503
    assert shared.value.status_code == 503 and shared.value.retryable and shared.value.sent
    assert token_requests(emu) == 1  # the second process did not repeat the failed request
    first.close()
    second.close()

    # A process that starts after the failure tries again.
    emu.control.clear_faults()
    assert Process(emu, clock, store).token()
    assert token_requests(emu) == 2


def test_threads_of_several_processes_renew_once(
    clocked: tuple[RunningEmulator, FakeClock], processes: Callable[..., Process]
) -> None:
    emu, _ = clocked
    shared = [processes() for _ in range(3)]
    barrier = threading.Barrier(12)
    tokens: list[str] = []

    def call(process: Process) -> None:
        barrier.wait()
        tokens.append(process.token())

    threads = [threading.Thread(target=call, args=(shared[i % 3],)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(tokens) == 12 and len(set(tokens)) == 1
    assert total_grants(emu) == 1


def test_a_stuck_lock_holder_delays_renewal_only_up_to_the_wait_limit(
    clocked: tuple[RunningEmulator, FakeClock], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    emu, clock = clocked
    store = HostTokenStore(tmp_path / "cache", lock_wait=0.05)
    assert store.usable()
    stuck = store.lock(config_for(emu))
    assert stuck.acquire()  # e.g. a process stopped while renewing
    try:
        process = Process(emu, clock, store)
        token = process.token()
        assert "held the lock for more than" in caplog.text
        # The token still reached the file, for everyone else.
        assert Process(emu, clock, store).token() == token
    finally:
        stuck.release()
    assert total_grants(emu) == 1


async def test_async_callers_share_the_file_and_never_block_their_loop(
    clocked: tuple[RunningEmulator, FakeClock], store: HostTokenStore
) -> None:
    emu, clock = clocked
    # "Another process" takes the lock and renews, but writes only when the test says so.
    let_write = threading.Event()
    other_store = _InstrumentedStore(store.directory, write_after=let_write)
    other = Process(emu, clock, other_store)
    other_token: list[str] = []
    thread = threading.Thread(target=lambda: other_token.append(other.token()))
    thread.start()
    safety = threading.Timer(30, let_write.set)  # only if the loop were blocked, so that the test ends
    safety.start()
    masked: list[str] = []

    async def mask(value: str) -> None:
        masked.append(value)

    client = AsyncTruConnectClient(
        config_for(emu), token_cache=TokenCache(host_store=store), clock=clock, on_new_token_async=mask
    )
    try:
        assert other_store.acquired.wait(30)
        waiting = asyncio.ensure_future(client.token())
        for _ in range(20):  # the loop runs other tasks while the token waits for the other process's lock
            await asyncio.sleep(0.005)
            assert not waiting.done()
        let_write.set()
        token = await waiting
    finally:
        let_write.set()
        safety.cancel()
        thread.join(30)
        other.close()
        await client.aclose()
    assert token.access_token == other_token[0]
    assert masked[0] == token.access_token and len(masked) == 2
    assert total_grants(emu) == 1


# -------------------------------------------------------------------------------------- permissions
def test_a_directory_open_to_others_is_refused(
    clocked: tuple[RunningEmulator, FakeClock], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    emu, clock = clocked
    directory = tmp_path / "loose"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    store = HostTokenStore(directory)
    first, second = Process(emu, clock, store), Process(emu, clock, store)
    assert first.token() != second.token()  # each process on its own, as with oauth_cache=process
    assert "chmod 700" in caplog.text and str(directory) in caplog.text
    assert caplog.text.count("Host token cache is off") == 1  # said once per directory
    assert list(directory.iterdir()) == []
    assert total_grants(emu) == 2


@pytest.mark.parametrize("problem", ["symlink", "file", "other-owner"])
def test_a_directory_that_is_not_ours_is_refused(
    clocked: tuple[RunningEmulator, FakeClock],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    problem: str,
) -> None:
    emu, clock = clocked
    directory = tmp_path / "cache"
    if problem == "symlink":
        (tmp_path / "target").mkdir(mode=0o700)
        directory.symlink_to(tmp_path / "target")
    elif problem == "file":
        directory.write_bytes(b"")
    else:
        directory.mkdir(mode=0o700)
        real_uid = os.getuid()
        monkeypatch.setattr(host_cache.os, "getuid", lambda: real_uid + 1)
    store = HostTokenStore(directory)
    assert not store.usable()
    assert "Host token cache is off" in caplog.text
    assert Process(emu, clock, store).token()
    assert list((tmp_path / "target").iterdir() if problem == "symlink" else []) == []


def test_without_fcntl_tokens_are_cached_per_process(
    clocked: tuple[RunningEmulator, FakeClock], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu, clock = clocked
    monkeypatch.setattr(host_cache, "fcntl", None)
    store = HostTokenStore(tmp_path / "cache")
    assert not store.usable()
    assert Process(emu, clock, store).token() != Process(emu, clock, store).token()
    assert total_grants(emu) == 2


def test_default_directory_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert host_cache.default_directory() == tmp_path / "airflow-provider-truconnect"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert host_cache.default_directory() == tmp_path / "home" / ".cache" / "airflow-provider-truconnect"
    assert TokenCache().host_store().directory == tmp_path / "home" / ".cache" / "airflow-provider-truconnect"


def test_no_secret_reaches_the_logs(
    clocked: tuple[RunningEmulator, FakeClock],
    processes: Callable[..., Process],
    store: HostTokenStore,
    all_logs: Any,
) -> None:
    emu, clock = clocked
    first = processes()
    first.token()
    _flip_last_byte(store.path(config_for(emu)), emu)
    second = processes()
    second.token()
    clock.advance(301)
    first.token()
    emu.control.revoke()
    second.call()
    text = all_logs.text()
    assert "ignoring" in text
    for secret in {emu.client_secret, *first.masked, *second.masked}:
        assert secret not in text


# -------------------------------------------------------------------------------------- real processes
def _emulator_conn(emu: RunningEmulator, **extra: Any) -> dict[str, Any]:
    return {
        "host": emu.api_base,
        "login": emu.client_id,
        "password": emu.client_secret,
        "extra": {"oauth_url": emu.oauth_url, **extra},
    }


def test_processes_started_together_request_one_token(truconnect_emulator: RunningEmulator, tmp_path: Path) -> None:
    emu = truconnect_emulator
    conn = _emulator_conn(emu, oauth_cache="host")
    cache_home = str(tmp_path / "xdg")
    reports = run_together(6, conn, lambda _: cache_home)
    assert len({r["token"] for r in reports}) == 1
    assert sorted(r["requests"] for r in reports) == [0, 0, 0, 0, 0, 1]
    assert grants(emu) == {"client_credentials": 1}
    # Processes started later find it in the file.
    again = run_together(3, conn, lambda _: cache_home)
    assert {r["token"] for r in again} == {reports[0]["token"]} and all(r["requests"] == 0 for r in again)
    assert grants(emu) == {"client_credentials": 1}
    assert stat.S_IMODE(os.stat(tmp_path / "xdg" / "airflow-provider-truconnect").st_mode) == 0o700


def test_processes_without_the_extra_or_on_separate_hosts_each_request_one(
    truconnect_emulator: RunningEmulator, tmp_path: Path
) -> None:
    emu = truconnect_emulator
    per_process = run_together(3, _emulator_conn(emu), lambda _: str(tmp_path / "shared"))
    assert [r["requests"] for r in per_process] == [1, 1, 1]
    assert not (tmp_path / "shared").exists()
    separate_hosts = run_together(3, _emulator_conn(emu, oauth_cache="host"), lambda i: str(tmp_path / f"pod{i}"))
    assert [r["requests"] for r in separate_hosts] == [1, 1, 1]
    assert grants(emu) == {"client_credentials": 6}


def test_entry_round_trips_a_failure_without_pickle(tmp_path: Path) -> None:
    config = ClientConfig(client_id="id", client_secret="s3cret-value", api_base="https://api.example.com")
    store = HostTokenStore(tmp_path / "c")
    assert store.usable()
    error = TruConnectServerError("Token endpoint failed", status_code=502, correlation_id="cid-1")
    store.write(config, SharedEntry().failed(error))
    entry = store.read(config)
    assert entry is not None and entry.failures == 1
    rebuilt = entry.failure_error()
    assert type(rebuilt) is TruConnectServerError and rebuilt.status_code == 502 and rebuilt.retryable
    assert "another process on this host: Token endpoint failed" in str(rebuilt) and "cid-1" in str(rebuilt)
    raw = json.dumps(host_cache.encode_failure(error))
    assert "s3cret" not in raw


def test_a_forked_child_does_not_keep_the_parents_lock(tmp_path: Path) -> None:
    config = ClientConfig(client_id="id", client_secret="s3cret-value", api_base="https://api.example.com")
    store = HostTokenStore(tmp_path / "c", lock_wait=0.0)
    assert store.usable()
    held = store.lock(config)
    assert held.acquire()
    read_end, write_end = os.pipe()
    started_read, started_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: say it runs (its fork handlers have run), then wait until told to exit
        os.close(write_end)
        os.write(started_write, b"r")
        os.read(read_end, 1)
        os._exit(0)
    os.close(read_end)
    os.close(started_write)
    try:
        assert os.read(started_read, 1) == b"r"
        held.release()
        other = store.lock(config)
        assert other.acquire()  # the child is still alive, and its copy of the descriptor did not keep the lock
        other.release()
    finally:
        os.write(write_end, b"x")
        os.close(write_end)
        os.close(started_read)
        os.waitpid(pid, 0)
