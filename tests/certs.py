"""Certificates made for a test: a CA, certificates it signs, a self-signed signer."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(folder: Path, name: str, cert: x509.Certificate, key: rsa.RSAPrivateKey) -> Pair:
    folder.mkdir(parents=True, exist_ok=True)
    pair = Pair(folder / f"{name}.pem", folder / f"{name}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return pair


def issue(
    folder: Path,
    name: str,
    ca: Pair | None = None,
    is_ca: bool = False,
    ip: str | None = None,
) -> Pair:
    """A certificate for ``name`` signed by ``ca`` (self-signed without one)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, signing_key = _name(name), key
    if ca is not None:
        issuer = x509.load_pem_x509_certificate(ca.cert.read_bytes())
        issuer_name = issuer.subject
        loaded = serialization.load_pem_private_key(ca.key.read_bytes(), None)
        assert isinstance(loaded, rsa.RSAPrivateKey)
        signing_key = loaded
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if ip is not None:
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))])
        builder = builder.add_extension(san, critical=False)
    return _write(folder, name, builder.sign(signing_key, hashes.SHA256()), key)
