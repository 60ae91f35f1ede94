"""TLS and a bearer token. The coordinator serves plaintext today; here its real RunService (on
an in-process coordinator's runtime) is served over TLS by a gRPC server that also demands the
token, as the coordinator will, so that the client's side is checked against real TLS."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

from hivegrid.client import AsyncClient, Client, HivegridError, RunState, Unavailable
from hivegrid.coordinator.server import Coordinator
from hivegrid.coordinator.service.run_service import RunServicer
from hivegrid.v1 import run_pb2_grpc

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command"),
]

TOKEN = "s3cret-token"


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _issue(directory: Path, name: str, subject: str, extensions: str) -> None:
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
        "-subj", subject, "-out", f"{name}.csr", cwd=directory,
    )  # fmt: skip
    (directory / f"{name}.ext").write_text(extensions)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
        cwd=directory,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=hivegrid test CA", cwd=d,
    )  # fmt: skip
    _issue(d, "server", "/CN=localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _issue(d, "client", "/CN=a client", "extendedKeyUsage=clientAuth\n")
    return Pki(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key")


class _RequireToken(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if ("authorization", f"Bearer {TOKEN}") in tuple(details.invocation_metadata or ()):
            return await continuation(details)

        async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid token is required")

        return grpc.unary_unary_rpc_method_handler(refuse)


@dataclass
class TlsServer:
    address: str
    mtls_address: str


@pytest_asyncio.fixture
async def tls_server(pki: Pki) -> AsyncIterator[TlsServer]:
    key, cert, ca = (p.read_bytes() for p in (pki.server_key, pki.server_cert, pki.ca))
    async with Coordinator() as coordinator:
        servers = []
        addresses = []
        for mutual in (False, True):
            server = grpc.aio.server(interceptors=[_RequireToken()])
            run_pb2_grpc.add_RunServiceServicer_to_server(RunServicer(coordinator.runtime), server)
            credentials = grpc.ssl_server_credentials(
                [(key, cert)], root_certificates=ca if mutual else None, require_client_auth=mutual
            )
            port = server.add_secure_port("127.0.0.1:0", credentials)
            await server.start()
            servers.append(server)
            addresses.append(f"127.0.0.1:{port}")
        try:
            yield TlsServer(*addresses)
        finally:
            for server in servers:
                await server.stop(None)


@pytest.mark.asyncio
async def test_tls_with_a_token(tls_server: TlsServer, pki: Pki) -> None:
    async with AsyncClient(tls_server.address, tls_ca=pki.ca, token=TOKEN) as client:
        run_id = await client.submit({"nodes": [{"id": "a", "agent": "echo"}]})
        assert (await client.get_summary(run_id)).state == RunState.RUNNING
        assert run_id in {r.id for r in await client.list_runs()}
        assert await client.cancel(run_id) == RunState.CANCELLED
    # The CA as PEM bytes instead of a path.
    async with AsyncClient(tls_server.address, tls_ca=pki.ca.read_bytes(), token=TOKEN) as c:
        assert await c.list_workers() == []


@pytest.mark.asyncio
async def test_a_missing_or_wrong_token_is_refused(tls_server: TlsServer, pki: Pki) -> None:
    for token in (None, "wrong"):
        async with AsyncClient(tls_server.address, tls_ca=pki.ca, token=token) as client:
            with pytest.raises(HivegridError) as info:
                await client.list_runs()
        assert info.value.code == "unauthenticated"
        assert info.value.details == "a valid token is required"


@pytest.mark.asyncio
async def test_a_client_certificate(tls_server: TlsServer, pki: Pki) -> None:
    async with AsyncClient(
        tls_server.mtls_address,
        tls_ca=pki.ca,
        tls_cert=pki.client_cert,
        tls_key=pki.client_key,
        token=TOKEN,
    ) as client:
        assert await client.list_runs() == []
    async with AsyncClient(tls_server.mtls_address, tls_ca=pki.ca, token=TOKEN) as anonymous:
        with pytest.raises(Unavailable):
            await anonymous.list_runs()


@pytest.mark.asyncio
async def test_plaintext_to_a_tls_port_and_tls_without_the_ca_fail(
    tls_server: TlsServer, pki: Pki
) -> None:
    async with AsyncClient(tls_server.address, token=TOKEN) as plaintext:
        with pytest.raises(Unavailable):
            await plaintext.list_runs()
    # A client certificate alone: TLS with the system's roots, which do not know the test CA.
    untrusted = AsyncClient(
        tls_server.address, tls_cert=pki.client_cert, tls_key=pki.client_key, token=TOKEN
    )
    async with untrusted:
        with pytest.raises(Unavailable):
            await untrusted.list_runs()


def test_bad_tls_options_fail_at_once(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tls_cert and tls_key go together"):
        Client("127.0.0.1:1", tls_ca=pki.ca, tls_cert=pki.client_cert)
    with pytest.raises(ValueError, match=r"tls_ca '.*nope\.pem': No such file"):
        Client("127.0.0.1:1", tls_ca=tmp_path / "nope.pem")
