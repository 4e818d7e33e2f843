"""The gateway behind a locked-down Mosquitto: TLS (a CA the test makes), a user and
password, and the per-project ACL of docker-compose (deploy/mosquitto/), each on a
Mosquitto the test starts on a free port."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path
from urllib.parse import quote, urlparse

import pytest

from tests.certs import issue
from tests.conftest import ROOT
from tests.mqtt_client import (
    MOSQUITTO,
    MOSQUITTO_PASSWD,
    Session,
    Tls,
    project_file,
    try_connect,
)

pytestmark = pytest.mark.skipif(
    not (os.path.exists(MOSQUITTO) and os.path.exists(MOSQUITTO_PASSWD))
    and not os.environ.get("CI"),
    reason="no mosquitto",
)

DEPLOY = ROOT / "deploy" / "mosquitto"


def password_file(path: Path, users: dict[str, str]) -> Path:
    """A Mosquitto password file made with mosquitto_passwd, as an operator makes one."""
    for i, (user, password) in enumerate(users.items()):
        create = ["-c"] if i == 0 else []
        argv = [MOSQUITTO_PASSWD, *create, "-b", str(path), user, password]
        subprocess.run(argv, check=True, capture_output=True)
    return path


def with_user(url: str, user: str, password: str) -> str:
    parsed = urlparse(url)
    return f"{parsed.scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{parsed.netloc}"


def turn(session: Session, project: str, message: str) -> dict:
    sid = uuid.uuid4().hex[:12]
    session.send(project, {"session_id": sid, "message": message})
    ((topic, body),) = session.take(1)
    assert topic == f"{project}/assistant_response/{sid}"
    return body


def test_tls_with_a_ca_of_the_tests_own(miner, settings, processes, tmp_path):
    certs = tmp_path / "certs"
    ca = issue(certs, "mqtt-ca", is_ca=True)
    server = issue(certs, "mosquitto", ca=ca, ip="127.0.0.1")
    gateway_pair = issue(certs, "gateway", ca=ca)
    client_pair = issue(certs, "client", ca=ca)
    conf = (
        "listener {port} 127.0.0.1\nallow_anonymous true\n"
        f"cafile {ca.cert}\ncertfile {server.cert}\nkeyfile {server.key}\n"
        "require_certificate true\n"
    )
    plain_url, _ = processes.mosquitto(conf)
    url = plain_url.replace("mqtt://", "mqtts://")
    # plain MQTT on the TLS port: no CONNACK, the broker closes the connection
    assert try_connect(plain_url).startswith("closed")
    # TLS without a client certificate: refused (require_certificate)
    assert try_connect(url, Tls(ca.cert)).startswith("closed")
    project = project_file(tmp_path)
    miner("0")
    gw = processes.gateway(
        settings,
        url,
        str(tmp_path / "projects.toml"),
        MIA_MQTT_TLS_CA_FILE=str(ca.cert),
        MIA_MQTT_TLS_CERT_FILE=str(gateway_pair.cert),
        MIA_MQTT_TLS_KEY_FILE=str(gateway_pair.key),
    )
    assert "MQTT gateway on mqtts://127.0.0.1:" in gw.output()
    tls = Tls(ca.cert, client_pair.cert, client_pair.key)
    client = Session(url, [f"{project}/assistant_response/+"], tls)
    try:
        assert turn(client, project, "hello over tls")["response"] == "echo: hello over tls"
    finally:
        client.close()


def test_a_user_and_password_wrong_refused_right_served(miner, settings, processes, tmp_path):
    secret = "p@ss:w/rd %"  # the URL carries it percent-encoded
    passwd = password_file(tmp_path / "passwd", {"gw": secret, "client": "c-secret"})
    conf = f"listener {{port}} 127.0.0.1\nallow_anonymous false\npassword_file {passwd}\n"
    url, _ = processes.mosquitto(conf)
    assert try_connect(url) == "Not authorized"  # anonymous access is off
    project = project_file(tmp_path)
    projects = str(tmp_path / "projects.toml")
    wrong = processes.gateway(settings, with_user(url, "gw", "guess"), projects, ready=False)
    refused = wrong.wait_health("refused")
    assert wrong.health()[0] == 503 and refused["subscribed"] is False
    assert "MQTT connect refused" in wrong.output() and "Not authorized" in wrong.output()
    miner("0")
    processes.gateway(settings, with_user(url, "gw", secret), projects)  # 200: subscribed
    client = Session(with_user(url, "client", "c-secret"), [f"{project}/assistant_response/+"])
    try:
        assert turn(client, project, "hello, logged in")["response"] == "echo: hello, logged in"
    finally:
        client.close()


def deploy_conf(port_free_conf: str, passwd: Path) -> str:
    """deploy/mosquitto/mosquitto.conf as the test runs it: its own port, the test's
    password file, the repository's ACL file, no persistence; every other line as is."""
    swap = {
        "listener": "listener {port} 127.0.0.1",
        "password_file": f"password_file {passwd}",
        "acl_file": f"acl_file {DEPLOY / 'acl'}",
        "persistence": "persistence false",
        "persistence_location": None,
    }
    lines = []
    for raw in port_free_conf.splitlines():
        word = raw.split(maxsplit=1)[0] if raw.strip() and not raw.startswith("#") else ""
        if word in swap:
            if swap[word] is not None:
                lines.append(swap[word])
        else:
            lines.append(raw.replace("{", "{{").replace("}", "}}"))
    return "\n".join(lines) + "\n"


def test_the_compose_acl_keeps_each_project_to_its_own_topics(miner, settings, processes, tmp_path):
    """Mosquitto with deploy/mosquitto/mosquitto.conf and acl: anonymous access off, the
    gateway user serves both shipped projects, and a project's client user can neither
    read another project's answers nor write its input."""
    conf_text = (DEPLOY / "mosquitto.conf").read_text()
    assert re.search(r"^allow_anonymous false$", conf_text, re.M)
    users = {"mia-gateway": "gw-secret", "restaurant": "r-secret", "sushi_bar": "s-secret"}
    passwd = password_file(tmp_path / "passwd", users)
    url, _ = processes.mosquitto(deploy_conf(conf_text, passwd))
    assert try_connect(url) == "Not authorized"
    miner("0")
    processes.gateway(settings, with_user(url, "mia-gateway", "gw-secret"))  # shipped projects
    # MQTT 5 clients: the broker names a refused publish in its PUBACK
    sushi = Session(
        with_user(url, "sushi_bar", "s-secret"), ["sushi_bar/assistant_response/#"], v5=True
    )
    # Mosquitto 2 acknowledges any subscription, then delivers only what the ACL lets the
    # user read: "#" and the other project's topic bring nothing of sushi_bar's (and "#"
    # nothing of restaurant's own input either, which it may write, not read).
    restaurant = Session(
        with_user(url, "restaurant", "r-secret"),
        ["sushi_bar/assistant_response/#", "#"],
        v5=True,
    )
    try:
        assert turn(sushi, "sushi_bar", "hello there")["response"] == "echo: hello there"
        # sushi_bar's answer went out before restaurant asks anything: had restaurant
        # been let read it, it would have come first
        assert turn(restaurant, "restaurant", "hello")["response"] == "echo: hello"
        assert restaurant.answers.empty()
        # writing another project's input, or spoofing its answers: refused
        assert str(restaurant.send("sushi_bar", {"message": "hi"})) == "Not authorized"
        spoof = restaurant.client.publish("sushi_bar/assistant_response/x", b"{}", qos=1)
        spoof.wait_for_publish(10)
        while True:
            mid, rc = restaurant.acks.get(timeout=10)
            if mid == spoof.mid:
                break
        assert str(rc) == "Not authorized"
        # sushi_bar's next answer is the first thing it gets: nothing spoofed came before
        assert turn(sushi, "sushi_bar", "hi, still mine?")["response"] == "echo: hi, still mine?"
        # its own input is open to it: the gateway answers
        assert str(restaurant.send("restaurant", {"message": "hi", "session_id": "own"})) == (
            "Success"
        )
        ((topic, _),) = restaurant.take(1)
        assert topic == "restaurant/assistant_response/own"
    finally:
        sushi.close()
        restaurant.close()
