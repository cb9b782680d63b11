"""TLS and SuperNode authentication on loopback, as real sites run them (docs/DEPLOYMENT.md).

``duallora flower-local --tls`` makes a CA, a SuperLink certificate and a key pair per site,
starts the SuperLink with TLS and ``--enable-supernode-auth``, registers every site's key and
trains (``tests/test_flower_faults.py`` trains that way; ``tests/test_flower_run.py``'s Ctrl-C
and SIGTERM tests start docs/DEPLOYMENT.md's ``flower-local --tls`` command); a SuperNode whose
key was never registered is refused by the SuperLink.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from duallora.flower.localhost.launcher import LocalhostFederation, NodeSpec
from duallora.flower.localhost.processes import free_port
from duallora.flower.localhost.tls import make_node_key, make_tls_material

pytestmark = pytest.mark.slow


def test_the_tls_material_chains_to_the_ca_and_names_the_loopback(tmp_path: Path):
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import (
        load_ssh_private_key,
        load_ssh_public_key,
    )

    material = make_tls_material(tmp_path, ["Siemens"])
    ca = x509.load_pem_x509_certificate(material.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(material.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    key = material.nodes["Siemens"]
    private = load_ssh_private_key(key.private.read_bytes(), password=None)
    assert private.public_key() == load_ssh_public_key(key.public.read_bytes())
    assert key.private.stat().st_mode & 0o077 == 0
    assert material.server_key.stat().st_mode & 0o077 == 0


def test_an_unregistered_supernode_is_refused(tmp_path: Path):
    material = make_tls_material(tmp_path / "tls", ["site0"])
    nodes = [NodeSpec("site0", {"partition-id": 0})]
    with LocalhostFederation(tmp_path / "fed", nodes, workers=False, tls=material) as federation:
        rogue = federation.supernode_process("rogue", federation.node_config_file("site0"),
                                             free_port(), make_node_key(tmp_path, "rogue"))
        try:
            rogue.start()
            deadline = time.monotonic() + 120
            while rogue.alive() and time.monotonic() < deadline:
                time.sleep(0.5)
            assert not rogue.alive(), "an unregistered SuperNode kept running"
            assert rogue.popen.returncode != 0
            assert "Failed to activate SuperNode" in rogue.log_path.read_text()
        finally:
            rogue.stop()
        listed = federation._flwr("supernode", "list", "localhost", "--format", "json")
        assert listed.returncode == 0, listed.stderr
        known = json.loads(listed.stdout)["nodes"]
        assert len(known) == 1  # the registered node; the rogue one never became a node
        assert known[0]["status"] == "online"
        assert federation.processes["node:site0"].alive()
