"""TLS for the embedded broker's client listener, when HRDV_KAFKA_SECURITY_PROTOCOL=SASL_SSL.

The embedded broker gets a self-signed certificate for 127.0.0.1 (made once with `openssl` into
$HRDV_HOME/conf/tls), which is also the CA its clients trust (settings.kafka_ca_file defaults to
it). Against an external cluster, HRDV_KAFKA_CA_FILE names the CA that signed its brokers.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from hrdv.settings import Settings, default_kafka_ca_file
from hrdv.stack.process import StackError


def _dir(settings: Settings) -> Path:
    return default_kafka_ca_file(settings.home).parent


def ca_file(settings: Settings) -> str:
    return settings.kafka_ca_file or str(default_kafka_ca_file(settings.home))


def _keystore(settings: Settings) -> Path:
    return _dir(settings) / "broker.pem"  # private key + certificate, Kafka's PEM keystore


def ensure_certificate(settings: Settings) -> None:
    """A self-signed certificate for 127.0.0.1 (10 years), unless one is already there."""
    keystore, cert = _keystore(settings), default_kafka_ca_file(settings.home)
    if keystore.exists() and cert.exists():
        return
    if shutil.which("openssl") is None:
        raise StackError("kafka: SASL_SSL needs `openssl` to make the broker's certificate "
                         "(apt-get install -y openssl)")
    _dir(settings).mkdir(parents=True, exist_ok=True)
    key = _dir(settings) / "broker.key"
    done = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)], capture_output=True, text=True)
    if done.returncode != 0:
        raise StackError(f"kafka: openssl could not make a certificate:\n{done.stderr[-2000:]}")
    keystore.touch(mode=0o600)
    keystore.chmod(0o600)
    keystore.write_text(key.read_text() + cert.read_text())
    key.unlink()


def broker_settings(settings: Settings) -> str:
    """The client listener's keystore lines, or nothing without TLS. The listener is also the
    inter-broker one, so the broker trusts its own certificate (it checks that at start-up)."""
    if settings.kafka_security_protocol != "SASL_SSL":
        return ""
    ensure_certificate(settings)
    return "\n".join([
        "listener.name.client.ssl.keystore.type=PEM",
        f"listener.name.client.ssl.keystore.location={_keystore(settings)}",
        "listener.name.client.ssl.truststore.type=PEM",
        f"listener.name.client.ssl.truststore.location={default_kafka_ca_file(settings.home)}",
    ])
