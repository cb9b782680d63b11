"""TLS certificates and SuperNode key pairs for a secured federation on this machine.

Runs in: the launcher's process (it writes the material every process reads).

What a coordinating centre and its sites set up for a real deployment (docs/DEPLOYMENT.md,
"Running it across three hospitals"), made here with ``cryptography`` for ``flower-local
--tls`` and the tests: a certificate authority, a SuperLink certificate signed by it
(subjectAltName 127.0.0.1 and localhost, the names the SuperNodes and the ``flwr`` CLI connect
to), and one EC P-384 key pair per SuperNode in OpenSSH format (what ``ssh-keygen -t ecdsa -b
384`` writes and what ``flwr supernode register`` and ``flower-supernode
--auth-supernode-private-key`` read).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

LIFETIME = datetime.timedelta(days=2)  # a localhost federation lasts a run, not a year


@dataclass(frozen=True)
class NodeKey:
    private: Path
    public: Path


@dataclass(frozen=True)
class TlsMaterial:
    """Paths of the CA certificate, the SuperLink's certificate and key, and node keys."""

    folder: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    nodes: dict[str, NodeKey] = field(default_factory=dict)


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if private:
        os.chmod(path, 0o600)
    return path


def make_node_key(folder: Path, name: str) -> NodeKey:
    """An EC P-384 key pair for one SuperNode (OpenSSH private and public key files)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH)
    return NodeKey(_write(folder / f"{name}_key", private, private=True),
                   _write(folder / f"{name}_key.pub", public + b"\n"))


def make_tls_material(folder: Path, node_names: list[str]) -> TlsMaterial:
    """A CA, a SuperLink certificate for 127.0.0.1/localhost, and a key pair per node."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = Path(folder)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "duallora localhost CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + LIFETIME)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                            crl_sign=True, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA256()))
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                               "localhost")]))
                   .issuer_name(ca_name).public_key(server_key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + LIFETIME)
                   .add_extension(x509.SubjectAlternativeName([
                       x509.DNSName("localhost"),
                       x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                  critical=True)
                   .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]),
                                  critical=False)
                   .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    material = TlsMaterial(
        folder,
        _write(folder / "ca.crt", ca_cert.public_bytes(pem)),
        _write(folder / "server.pem", server_cert.public_bytes(pem)),
        _write(folder / "server.key", server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
            private=True),
        {name: make_node_key(folder / "nodes", name) for name in node_names})
    return material
