"""The secure local broker's identities: certificates, SCRAM passwords, signing keys and listener config.

State lives under ``<data_dir>/kafka/security`` (0700, never committed)::

    ca.pem, ca.key                  the throwaway CA (``infra.kafka.certs``)
    broker.*                        the broker's certificate (SANs: the listener host, localhost)
    <principal>.pem/.key            a client certificate per principal, CN=<principal>
    credentials.json                SCRAM passwords per principal and the platform signing secret

Listeners of ``LocalKafka(secure=True)``: SASL_SSL (SCRAM-SHA-512 over TLS) on the bootstrap port,
mutual TLS on ``mtls_port`` and the KRaft controller listener, also mutual TLS, so that no port of the
broker accepts an unauthenticated client. Principals: SCRAM user name, or the certificate's CN.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Literal

from infra.kafka.acls import SUPER_USERS, edge_principal, service_principals
from infra.kafka.certs import CertFiles, CertificateAuthority, expiring
from infra.kafka.signing import derive_key

Via = Literal["sasl", "mtls"]
SIMULATOR_SIGNER = "edge-sim-"


class BrokerSecurity:
    """Creates and hands out the identities of one secure local broker."""

    def __init__(self, home: Path, host: str = "127.0.0.1") -> None:
        self.dir = Path(home) / "security"
        self.host = host
        self.credentials_file = self.dir / "credentials.json"

    # --- state -------------------------------------------------------------------------------------
    def _load(self) -> dict[str, object]:
        try:
            return dict(json.loads(self.credentials_file.read_text()))
        except (OSError, ValueError):
            return {}

    def _save(self, doc: dict[str, object]) -> None:
        fd = os.open(self.credentials_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(doc, handle, indent=2, sort_keys=True)

    def ensure(self) -> None:
        """Create what is missing: CA, broker and service certificates, passwords, signing secret."""
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        ca = CertificateAuthority(self.dir)
        doc = self._load()
        passwords = dict(doc.get("passwords", {}))  # type: ignore[call-overload]
        sites = [edge_principal(prefix) for prefix in doc.get("edge_sites", [])]  # type: ignore[attr-defined]
        for principal in (*SUPER_USERS, *service_principals(), *sites):
            passwords.setdefault(principal, secrets.token_urlsafe(24))
            # Certificates are short-lived: a restart after weeks renews what is about to expire.
            if ca.created or expiring(self.dir / f"{principal}.pem"):
                if principal == "broker":
                    ca.issue("broker", server=True, hosts=tuple(dict.fromkeys((self.host, "localhost"))))
                else:
                    ca.issue(principal)
        doc["passwords"] = passwords
        doc.setdefault("signing_secret", secrets.token_hex(32))
        doc.setdefault("edge_sites", [])
        self._save(doc)

    def passwords(self) -> dict[str, str]:
        """SCRAM passwords of every principal (``broker`` authenticates by certificate only)."""
        return {k: v for k, v in dict(self._load().get("passwords", {})).items() if k != "broker"}  # type: ignore[call-overload]

    def signing_secret(self) -> str:
        return str(self._load()["signing_secret"])

    def edge_sites(self) -> list[str]:
        """Camera prefixes of the registered edge sites."""
        return list(self._load().get("edge_sites", []))  # type: ignore[call-overload]

    def add_edge_site(self, camera_prefix: str) -> str:
        """Register an edge site (password, certificate); returns its principal. ACLs: ``acls``."""
        principal = edge_principal(camera_prefix)
        self.ensure()
        doc = self._load()
        sites = list(doc.get("edge_sites", []))  # type: ignore[call-overload]
        if camera_prefix not in sites:
            sites.append(camera_prefix)
        doc["edge_sites"] = sites
        self._save(doc)
        self.ensure()
        return principal

    def identity(self, principal: str) -> CertFiles:
        return CertFiles(
            self.dir / f"{principal}.pem", self.dir / f"{principal}.key", self.dir / f"{principal}.bundle.pem"
        )

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.pem"

    # --- the broker side ---------------------------------------------------------------------------
    def server_properties(self, host: str, port: int, mtls_port: int, controller_port: int) -> dict[str, str]:
        """Listener, TLS, SASL and authorizer properties laid over ``config.server_properties``."""
        broker = self.identity("broker")
        return {
            "listeners": f"SASL_SSL://{host}:{port},MTLS://{host}:{mtls_port},CONTROLLER://{host}:{controller_port}",
            "advertised.listeners": f"SASL_SSL://{host}:{port},MTLS://{host}:{mtls_port}",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,MTLS:SSL,CONTROLLER:SSL",
            # The broker talks to itself (and its controller) with its own certificate: User:broker.
            "inter.broker.listener.name": "MTLS",
            "listener.name.mtls.ssl.client.auth": "required",
            "listener.name.controller.ssl.client.auth": "required",
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(broker.bundle),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_file),
            "ssl.enabled.protocols": "TLSv1.3,TLSv1.2",
            # CN=<name> -> User:<name>, so that certificate and SCRAM principals are the same names.
            "ssl.principal.mapping.rules": "RULE:^CN=([^,]+)$/$1/,DEFAULT",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": ";".join(f"User:{u}" for u in SUPER_USERS),
            "allow.everyone.if.no.acl.found": "false",
        }

    # --- the client side ---------------------------------------------------------------------------
    def client_config(
        self, principal: str, *, bootstrap: str, mtls_bootstrap: str, via: Via = "sasl"
    ) -> dict[str, object]:
        """librdkafka settings for ``principal`` over SCRAM (``sasl``) or its certificate (``mtls``)."""
        conf: dict[str, object] = {"ssl.ca.location": str(self.ca_file)}
        if via == "mtls":
            ident = self.identity(principal)
            conf.update(
                {
                    "bootstrap.servers": mtls_bootstrap,
                    "security.protocol": "ssl",
                    "ssl.certificate.location": str(ident.cert),
                    "ssl.key.location": str(ident.key),
                }
            )
        else:
            conf.update(
                {
                    "bootstrap.servers": bootstrap,
                    "security.protocol": "sasl_ssl",
                    "sasl.mechanism": "SCRAM-SHA-512",
                    "sasl.username": principal,
                    "sasl.password": self.passwords()[principal],
                }
            )
        return conf

    def client_env(
        self, principal: str, *, bootstrap: str, mtls_bootstrap: str, via: Via = "sasl"
    ) -> dict[str, str]:
        """``ITS_*`` variables that make a component connect as ``principal`` (and sign or verify)."""
        env = {"ITS_KAFKA_SECURITY__SSL_CA_LOCATION": str(self.ca_file)}
        if via == "mtls":
            ident = self.identity(principal)
            env.update(
                {
                    "ITS_KAFKA_BOOTSTRAP": mtls_bootstrap,
                    "ITS_KAFKA_SECURITY__PROTOCOL": "SSL",
                    "ITS_KAFKA_SECURITY__SSL_CERTIFICATE_LOCATION": str(ident.cert),
                    "ITS_KAFKA_SECURITY__SSL_KEY_LOCATION": str(ident.key),
                }
            )
        else:
            env.update(
                {
                    "ITS_KAFKA_BOOTSTRAP": bootstrap,
                    "ITS_KAFKA_SECURITY__PROTOCOL": "SASL_SSL",
                    "ITS_KAFKA_SECURITY__SASL_MECHANISM": "SCRAM-SHA-512",
                    "ITS_KAFKA_SECURITY__SASL_USERNAME": principal,
                    "ITS_KAFKA_SECURITY__SASL_PASSWORD": self.passwords()[principal],
                }
            )
        env.update(self.signing_env(principal))
        return env

    def signing_env(self, principal: str) -> dict[str, str]:
        """An edge site gets its own signing key only; the stream processors get the platform secret."""
        secret = self.signing_secret()
        if principal.startswith("edge-"):
            key = derive_key(secret.encode(), principal).hex()
            return {"ITS_KAFKA_SECURITY__SIGNER": principal, "ITS_KAFKA_SECURITY__SIGNING_KEY": key}
        if principal in ("inference", "analytics", "sink"):
            return {"ITS_KAFKA_SECURITY__SIGNING_SECRET": secret}
        if principal == "simulator":
            # Simulated cameras are named sim-<scenario>-NNNN: the simulator signs as that edge site.
            key = derive_key(secret.encode(), SIMULATOR_SIGNER).hex()
            return {"ITS_KAFKA_SECURITY__SIGNER": SIMULATOR_SIGNER, "ITS_KAFKA_SECURITY__SIGNING_KEY": key}
        return {}

    def site_key(self, principal: str) -> str:
        """The hex signing key issued to an edge site (or to the simulator acting as one)."""
        return derive_key(self.signing_secret().encode(), principal).hex()
