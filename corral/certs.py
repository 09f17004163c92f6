"""A certificate authority and certificates for quick TLS setups (``corral tls generate``).

One CA signs one certificate per role. Every certificate is valid both as a server and
as a client certificate, because every corral process is both: a worker serves data
and connects to the scheduler. Keys are EC P-256: small, fast, supported everywhere.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 365
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class CertFiles:
    """Where one generated certificate and its key live (plus the CA that signed it)."""

    ca_file: Path
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "corral"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _subject_alt_names(hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, days: int
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate small clock skew
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def generate(
    directory: str | os.PathLike[str],
    roles: Iterable[str] = ("node",),
    hosts: Iterable[str] = (),
    days: int = VALID_DAYS,
) -> dict[str, CertFiles]:
    """Write ``ca.pem`` and, per role, ``ROLE.pem`` + ``ROLE-key.pem`` into ``directory``.

    The CA's private key is not kept: nothing more can be signed with it, so a stolen
    directory cannot mint new identities. ``hosts`` go into each certificate's subject
    alternative names, beside localhost and this machine's name, for hostname checks.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    all_hosts = list(dict.fromkeys([*DEFAULT_HOSTS, socket.gethostname(), *hosts]))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("corral CA")
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_cert(out / "ca.pem", ca_cert)
    files = {}
    for role in roles:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            _builder(_name(f"corral {role}"), ca_name, key.public_key(), days)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_subject_alt_names(all_hosts), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
            .sign(ca_key, hashes.SHA256())
        )
        files[role] = CertFiles(out / "ca.pem", out / f"{role}.pem", out / f"{role}-key.pem")
        _write_cert(files[role].cert, cert)
        _write_key(files[role].key, key)
    return files
