"""corral on Kubernetes, on paper: the manifests validate against Kubernetes' own schemas
(kubernetes-validate ships them; no cluster or network needed), their commands are ones
corral's CLI accepts, and the image and pods keep the token where docs/deploying.md says.
A real cluster cannot run here."""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path

import click
import pytest

from corral.cli import main
from corral.security import TOKEN_FILE_ENV

yaml = pytest.importorskip("yaml", reason="PyYAML comes with the test extra")
ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
MANIFESTS = list(yaml.safe_load_all((KUBERNETES / "corral.yaml").read_text()))
DOCKERFILE = (KUBERNETES / "Dockerfile").read_text()


def by_kind(kind: str, name: str) -> dict:
    (found,) = [m for m in MANIFESTS if m["kind"] == kind and m["metadata"]["name"] == name]
    return found


def pod(name: str) -> dict:
    return by_kind("Deployment", name)["spec"]["template"]["spec"]


def test_the_manifests_hold_a_scheduler_its_service_and_workers():
    kinds = sorted((m["kind"], m["metadata"]["name"]) for m in MANIFESTS)
    assert kinds == [("Deployment", "corral-scheduler"), ("Deployment", "corral-worker"),
                     ("NetworkPolicy", "corral"), ("Service", "corral-scheduler")]


def test_the_manifests_validate_against_the_kubernetes_schemas():
    validator = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate (in the test extra) is not installed")
    version = validator.latest_version()
    for manifest in MANIFESTS:
        validator.validate(manifest, version, strict=True)
    broken = copy.deepcopy(by_kind("Deployment", "corral-worker"))
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "x"
    with pytest.raises(validator.ValidationError):  # the check can fail
        validator.validate(broken, version, strict=True)


def parse(args: list[str]):
    """The context ``corral ARGS`` would run with: every flag checked, nothing started."""
    name, *rest = args
    # Under corral's own context, as `corral ARGS` runs it: a command's first context
    # fixes (and click caches) its help option, which is `-h` too only under `corral`.
    parent = click.Context(main, info_name="corral", **main.context_settings)
    return main.commands[name].make_context(name, rest, parent=parent)


def test_the_containers_run_commands_corral_accepts():
    scheduler = pod("corral-scheduler")["containers"][0]
    worker = pod("corral-worker")["containers"][0]
    assert parse(scheduler["args"]).params["port"] == 8786
    params = parse(worker["args"]).params
    service = by_kind("Service", "corral-scheduler")
    port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "comm")
    assert params["scheduler_address"] == f"tcp://{service['metadata']['name']}:{port}"
    assert params["worker_ports"] == [8788]
    assert params["nanny_ports"] == [8789]
    assert {p["containerPort"] for p in worker["ports"]} == {8788, 8789}
    selector = service["spec"]["selector"]
    labels = by_kind("Deployment", "corral-scheduler")["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()


def test_the_image_runs_corral_as_a_user_and_reads_the_token_from_the_secret_file():
    assert re.search(r"^ENTRYPOINT \[\"corral\"\]$", DOCKERFILE, re.M)
    user = re.search(r"^USER (\d+)", DOCKERFILE, re.M)
    assert user
    assert int(user.group(1)) != 0
    for source in re.findall(r"^COPY (.+) \S+$", DOCKERFILE, re.M):
        for name in source.split():
            assert (ROOT / name).exists(), f"the Dockerfile copies {name}, which is not here"
    assert "corral" in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    token_file = re.search(rf"{TOKEN_FILE_ENV}=(\S+)", DOCKERFILE).group(1)
    for name in ("corral-scheduler", "corral-worker"):
        spec = pod(name)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == int(user.group(1))
        assert spec["automountServiceAccountToken"] is False
        (container,) = spec["containers"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert "env" not in container  # no token (nor anything else) in the environment
        mount = next(m for m in container["volumeMounts"] if m["name"] == "token")
        assert mount["readOnly"] is True
        assert token_file == f"{mount['mountPath']}/token"
        volume = next(v for v in spec["volumes"] if v["name"] == "token")
        assert volume["secret"]["secretName"] == "corral-token"
        assert volume["secret"]["defaultMode"] & 0o007 == 0  # not for other users
        assert not any("token" in arg for arg in container["args"])


def test_only_corral_pods_reach_corral():
    policy = by_kind("NetworkPolicy", "corral")["spec"]
    assert policy["podSelector"]["matchLabels"] == {"app.kubernetes.io/part-of": "corral"}
    assert policy["ingress"] == [{"from": [{"podSelector": policy["podSelector"]}]}]
    for manifest in MANIFESTS:
        if manifest["kind"] == "Deployment":
            labels = manifest["spec"]["template"]["metadata"]["labels"]
            assert labels["app.kubernetes.io/part-of"] == "corral"
