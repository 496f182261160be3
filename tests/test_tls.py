"""HTTPS: the emulator serves TLS, the client trusts a given CA and refuses any other, clearly."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import pytest
import trustme
from click.testing import CliRunner

from batchedit import ConfigError, ImClient, Secret, SigSource, client_context
from batchedit.cli import main
from batchedit.emulator import Emulator, EmulatorConfig, Faults, Store
from batchedit.emulator.tls import make_certificate
from batchedit.im import usersig
from batchedit.im.tls import check_certificate
from batchedit.retry import RetryPolicy
from batchedit.runner import RunConfig, run_batch
from tests.conftest import EmulatorProcess, Running, ServerFactory, cli_env
from tests.helpers import ADMIN, SDKAPPID, SECRET, read_results, seed_messages, write_edits

StartEmulator = Callable[..., EmulatorProcess]
StartTls = Callable[..., Awaitable[Running]]


def _server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*(names or ("127.0.0.1",))).configure_cert(context)
    return context


@pytest.fixture
def start_tls(aiohttp_server: ServerFactory) -> StartTls:
    """Start an emulator on 127.0.0.1 over HTTPS with the given server context (or plain HTTP)."""

    async def start(context: ssl.SSLContext | None) -> Running:
        config = EmulatorConfig(
            sdkappid=SDKAPPID, secret_key=SECRET, rate_limit=None, retention_days=None
        )
        emulator = Emulator(config, faults=Faults())
        server = await aiohttp_server(emulator.app(), host="127.0.0.1", ssl=context)
        return Running(emulator, server)

    return start


def _write_ca(ca: trustme.CA, path: Path) -> Path:
    ca.cert_pem.write_to_path(str(path))
    return path


async def _run(running: Running, tmp_path: Path, count: int, ca_file: Path | None) -> RunConfig:
    targets = seed_messages(running.emulator.store, count)
    edits = write_edits(tmp_path / "e.jsonl", [{**t, "CloudCustomData": "tls"} for t in targets])
    config = RunConfig(
        results=tmp_path / "r.jsonl",
        endpoint=running.url,
        sig=SigSource(SDKAPPID, ADMIN, secret_key=Secret(SECRET)),
        rate=None,
        policy=RetryPolicy.zero_wait(),
        ca_file=ca_file,
    )
    with edits.open("rb") as source:
        await run_batch(source, config)
    return config


async def test_run_over_tls_with_the_ca_edits_every_message(
    start_tls: StartTls, tmp_path: Path
) -> None:
    """A run over https that trusts the server's CA edits every message, each once."""
    ca = trustme.CA()
    running = await start_tls(_server_context(ca))
    assert running.url.startswith("https://")
    await _run(running, tmp_path, 200, _write_ca(ca, tmp_path / "ca.pem"))
    final = read_results(tmp_path / "r.jsonl")
    assert [row["outcome"] for row in final.values()] == ["ok"] * 200
    assert running.emulator.traffic.of("openim/modify_c2c_msg").arrivals == 200


@pytest.mark.parametrize(
    ("trust", "names", "reason"),
    [
        ("system", (), "(unable to get local issuer certificate)"),
        ("other CA", (), "(unable to get local issuer certificate)"),
        ("server's CA", ("example.com",), "(IP address mismatch, certificate is not valid for "),
    ],
)
async def test_untrusted_certificate_refuses_the_run_before_anything_is_sent(
    trust: str, names: tuple[str, ...], reason: str, start_tls: StartTls, tmp_path: Path
) -> None:
    """A certificate that does not verify is a ConfigError naming --ca-file; nothing is sent or
    written, and the message holds no UserSig."""
    ca = trustme.CA()
    running = await start_tls(_server_context(ca, *names))
    ca_file = {
        "system": None,
        "other CA": _write_ca(trustme.CA(), tmp_path / "other.pem"),
        "server's CA": _write_ca(ca, tmp_path / "ca.pem"),
    }[trust]
    with pytest.raises(ConfigError) as caught:
        await _run(running, tmp_path, 5, ca_file)
    message = str(caught.value)
    assert message.startswith(
        f"127.0.0.1:{running.server.port}: certificate verify failed {reason}"
    )
    assert message.endswith(
        ": pass --ca-file (or set TIM_CA_FILE) with the certificate of the CA that signed the "
        "server's, and check the host name in the endpoint"
    )
    assert "usersig" not in message.lower()
    assert not (tmp_path / "r.jsonl").exists()
    assert running.emulator.traffic.of("openim/modify_c2c_msg").arrivals == 0


async def test_https_url_to_a_plain_http_server_is_refused(start_tls: StartTls) -> None:
    """An https URL to a server that speaks plain HTTP fails the handshake check with a hint."""
    running = await start_tls(None)
    url = running.url.replace("http://", "https://")
    with pytest.raises(ConfigError, match=r"TLS handshake failed \(.+\): does this endpoint speak"):
        await check_certificate(url, client_context(), 5.0)


async def test_unreachable_or_plain_endpoints_are_left_to_the_run() -> None:
    """The certificate check passes over an http URL and an https port nobody listens on."""
    await check_certificate("http://127.0.0.1:9", client_context(), 5.0)
    await check_certificate("https://127.0.0.1:9", client_context(), 5.0)


async def test_untrusted_certificate_mid_run_is_an_answer_not_an_exception(
    start_tls: StartTls,
) -> None:
    """A call meeting a certificate it cannot verify returns a Reply without a code (retried
    like any connection failure), and its info holds no UserSig."""
    running = await start_tls(_server_context(trustme.CA()))
    sig = SigSource(SDKAPPID, ADMIN, secret_key=Secret(SECRET))
    async with ImClient(running.url, sig, ssl_context=client_context()) as client:
        reply = await client.account_check(["u00"])
    assert reply.code is None
    assert "certificate verify failed" in reply.info
    assert sig.current() not in reply.info


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read --ca-file {path}: No such file or directory"),
        (b"not a certificate\n", "--ca-file {path} holds no PEM certificate"),
    ],
)
def test_ca_file_that_is_missing_or_not_pem(
    content: bytes | None, message: str, tmp_path: Path
) -> None:
    """A CA file that cannot be read or holds no certificate is a ConfigError naming it."""
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        client_context(path)
    assert str(caught.value) == message.format(path=path)


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batchedit", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _seed(tmp_path: Path, count: int) -> tuple[Path, Path]:
    store = Store()
    store.import_account(ADMIN)
    targets = seed_messages(store, count)
    state = tmp_path / "seed.jsonl"
    store.save(state)
    edits = write_edits(tmp_path / "e.jsonl", [{**t, "CloudCustomData": "tls"} for t in targets])
    return state, edits


def test_run_backup_undo_and_plan_over_tls_trust_ca_file_or_env(
    tmp_path: Path, emulator_process: StartEmulator
) -> None:
    """With the CA the emulator made (--tls-ca-out), run, undo and plan all work over https,
    given as --ca-file or TIM_CA_FILE; the undone state is the original."""
    state, edits = _seed(tmp_path, 30)
    original = state.read_bytes()
    ca = tmp_path / "made-ca.pem"
    emulator = emulator_process("--tls", "--tls-ca-out", str(ca), state=state)
    assert emulator.url.startswith("https://127.0.0.1:")
    env = cli_env(emulator.url)
    backup, results = tmp_path / "backup.jsonl", tmp_path / "r.jsonl"
    run = _cli(
        [
            "run",
            str(edits),
            "--results",
            str(results),
            "--backup",
            str(backup),
            "--ca-file",
            str(ca),
        ],
        env,
    )
    assert run.returncode == 0, run.stderr
    assert {row["outcome"] for row in read_results(results).values()} == {"ok"}
    plan = _cli(
        [
            "plan",
            str(edits),
            "--since",
            "2023-01-01",
            "--until",
            "2024-01-01",
            "--set-cloud-custom-data",
            "planned",
            "--preview",
            "1",
            "--ca-file",
            str(ca),
        ],
        env,
    )
    assert plan.returncode == 0, plan.stderr
    assert "+ CloudCustomData: planned" in plan.stdout
    undo = _cli(
        ["undo", str(backup), "--results", str(tmp_path / "u.jsonl")],
        {**env, "TIM_CA_FILE": str(ca)},
    )
    assert undo.returncode == 0, undo.stderr
    assert emulator.stop() == original


def test_cli_without_the_ca_exits_2_with_a_hint_and_no_secret(
    tmp_path: Path, emulator_process: StartEmulator
) -> None:
    """run, undo and plan against an https endpoint they cannot verify exit 2 with one line that
    says to pass --ca-file: no traceback, no UserSig, no results, no plan output."""
    state, edits = _seed(tmp_path, 5)
    emulator = emulator_process("--tls", "--tls-ca-out", str(tmp_path / "ca.pem"), state=state)
    sig = usersig.generate(SDKAPPID, SECRET, ADMIN)
    env = cli_env(emulator.url)
    del env["TIM_SECRET_KEY"]
    env["TIM_USERSIG"] = sig
    backup = write_edits(tmp_path / "backup.jsonl", [])
    out = tmp_path / "plan.jsonl"
    commands = [
        ["run", str(edits), "--results", str(tmp_path / "r.jsonl")],
        ["undo", str(backup), "--results", str(tmp_path / "u.jsonl")],
        [
            *("plan", str(edits), "--since", "2023-01-01", "--until", "2024-01-01"),
            *("--set-cloud-custom-data", "x", "--output", str(out)),
        ],
    ]
    port = emulator.url.rsplit(":", 1)[1]
    for command in commands:
        done = _cli(command, env)
        assert done.returncode == 2, done.stderr
        last = done.stderr.splitlines()[-1]
        assert last.startswith(f"Error: 127.0.0.1:{port}: certificate verify failed (")
        assert "pass --ca-file (or set TIM_CA_FILE)" in last
        assert "Traceback" not in done.stderr
        assert sig not in done.stderr + done.stdout
    assert not (tmp_path / "r.jsonl").exists()
    assert not (tmp_path / "u.jsonl").exists()
    assert list(tmp_path.glob("plan.jsonl*")) == []


def test_emulator_serves_a_given_certificate(
    tmp_path: Path, emulator_process: StartEmulator
) -> None:
    """--tls-cert/--tls-key serve the given certificate: a client trusting its CA is answered."""
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    emulator = emulator_process(
        "--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem")
    )
    context = client_context(_write_ca(ca, tmp_path / "ca.pem"))
    with pytest.raises(OSError, match="certificate verify failed"):
        _get(emulator.url, client_context())
    assert isinstance(orjson.loads(_get(emulator.url, context)), dict)


def _get(url: str, context: ssl.SSLContext) -> bytes:
    with urllib.request.urlopen(f"{url}/__emulator/stats", timeout=10, context=context) as r:  # noqa: S310 - loopback only
        data: bytes = r.read()
        return data


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--tls"],
            "--tls makes a new CA at each start: give --tls-ca-out FILE to write it for the "
            "client's --ca-file (or serve your own certificate with --tls-cert)",
        ),
        (["--tls-ca-out", "ca.pem"], "--tls-ca-out needs --tls"),
        (["--tls-key", "key.pem"], "--tls-key needs --tls-cert"),
        (
            ["--tls-cert", "cert.pem", "--tls-ca-out", "ca.pem"],
            "--tls-ca-out writes the CA that --tls makes; --tls-cert brings its own",
        ),
        (["--tls-cert", "nope.pem"], "cannot read --tls-cert nope.pem: No such file or directory"),
        (
            ["--tls-cert", "cert.pem"],
            "--tls-cert cert.pem: not a PEM certificate chain and its unencrypted private key",
        ),
    ],
)
def test_emulator_refuses_unclear_tls_options(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unclear or unusable mix of --tls options exits 2 with one line, writing nothing."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cert.pem").write_text("not a certificate\n")
    result = CliRunner(env={"TIM_SECRET_KEY": "k"}).invoke(main, ["emulator", "--port", "0", *args])
    assert (result.exit_code, result.output) == (2, f"Error: {message}\n")
    assert not (tmp_path / "ca.pem").exists()


def test_made_certificate_without_trustme_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the optional trustme package, --tls says which extra to install."""
    monkeypatch.setitem(sys.modules, "trustme", None)
    with pytest.raises(ConfigError, match=r"pip install 'batchedit\[tls\]'"):
        make_certificate("127.0.0.1")


async def test_made_certificate_names_loopback_and_the_host(tmp_path: Path) -> None:
    """A made certificate verifies, against the made CA, for 127.0.0.1, localhost and a named
    --host, and for no other name."""
    made = make_certificate("emulator.test")
    assert made.ca_pem is not None
    trusted = client_context(_write_bytes(tmp_path / "ca.pem", made.ca_pem))

    async def handshake(name: str) -> None:
        async with asyncio.timeout(10):
            _, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=trusted, server_hostname=name
            )
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    server = await asyncio.start_server(_hang_up, "127.0.0.1", 0, ssl=made.context)
    port = server.sockets[0].getsockname()[1]
    async with server:
        for name in ("127.0.0.1", "localhost", "emulator.test"):
            await handshake(name)
        with pytest.raises(ssl.SSLCertVerificationError):
            await handshake("other.test")


def _hang_up(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
