"""Self-signed TLS material for the voice gateway.

nextcord always dials the voice gateway with ``wss://``, so the fake server has to
speak TLS.  We mint a throw-away CA and a leaf certificate for 127.0.0.1 once per
process (minting is cheap, but adding a new CA to a shared SSL context for every
test would grow it without bound) and let the bot trust that CA the normal,
verifying way instead of switching certificate checks off.
"""

from __future__ import annotations

import atexit
import datetime
import ipaddress
import shutil
import ssl
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["TlsMaterial", "tls_material", "trust_in_process"]


@dataclass(frozen=True)
class TlsMaterial:
    """Paths of the generated PEM files (they live until the process exits)."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    bundle_file: Path
    """certifi's public roots plus our CA: a drop-in ``SSL_CERT_FILE`` for a bot
    subprocess that must still reach real HTTPS hosts (model downloads)."""

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


_lock = threading.Lock()
_material: TlsMaterial | None = None
_trusted: set[int] = set()


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fakediscord tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _mint(directory: Path) -> TlsMaterial:
    now = datetime.datetime.now(datetime.timezone.utc)
    not_before, not_after = now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("fakediscord test CA")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca_pem)
    cert_file = directory / "voice-cert.pem"
    cert_file.write_bytes(leaf_cert.public_bytes(serialization.Encoding.PEM) + ca_pem)
    key_file = directory / "voice-key.pem"
    key_file.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    bundle_file = directory / "bundle.pem"
    roots = b""
    try:
        import certifi

        roots = Path(certifi.where()).read_bytes()
    except ImportError:  # certifi ships with requests; without it the bundle is just our CA
        pass
    bundle_file.write_bytes(roots + b"\n" + ca_pem)
    return TlsMaterial(ca_file, cert_file, key_file, bundle_file)


def tls_material() -> TlsMaterial:
    """The process-wide certificate set, minted on first use."""
    global _material
    with _lock:
        if _material is None:
            directory = Path(tempfile.mkdtemp(prefix="fakediscord-tls-"))
            atexit.register(shutil.rmtree, directory, True)
            _material = _mint(directory)
        return _material


def trust_in_process(material: TlsMaterial) -> None:
    """Make in-process aiohttp clients (the bot under test) verify our certificate.

    aiohttp builds its verifying SSLContext once, at import time, from the
    default trust store, so ``SSL_CERT_FILE`` set after ``import aiohttp`` has no
    effect.  Loading our CA into that shared context keeps full verification
    (hostname and chain) while accepting only this extra, local-only root.
    """
    from aiohttp import connector

    context = getattr(connector, "_SSL_CONTEXT_VERIFIED", None)
    if not isinstance(context, ssl.SSLContext) or id(context) in _trusted:
        return
    context.load_verify_locations(cafile=str(material.ca_file))
    _trusted.add(id(context))
