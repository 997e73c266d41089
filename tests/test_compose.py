"""The compose file, checked by ``docker-compose config`` (Debian's docker-compose; no engine runs here):
it parses, and its services fit together: the service's health check is /readyz, the trainer (a profile,
with a GPU reservation) writes into the models directory the service watches, Redis persists."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = shutil.which("docker-compose")

if COMPOSE is None:
    if os.environ.get("CI"):
        raise RuntimeError("CI=true but docker-compose is missing (.ci/ensure-tools installs it)")
    pytest.skip("needs docker-compose (apt-get install docker-compose)", allow_module_level=True)


FLEET_KEYS = "ops:0123456789abcdef0123"


def compose_config(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([COMPOSE, "-f", str(path), "config"], cwd=path.parent, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "SEQTAG_DATA_DIR": "/corpora", "SEQTAG_API_KEYS": FLEET_KEYS})


def test_compose_file_is_valid_and_consistent():
    result = compose_config(REPO / "docker-compose.yml")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert set(services) == {"redis", "service", "train", "host-a", "host-b", "haproxy"}
    # the fleet profile: hosts of the service's image on the one Redis, each with its own models, behind HAProxy
    # with the repository's configuration (what tests/test_haproxy.py runs)
    fleet = {name: services[name] for name in ("host-a", "host-b", "haproxy")}
    assert all(spec["profiles"] == ["fleet"] for spec in fleet.values())
    for name in ("host-a", "host-b"):
        assert fleet[name]["image"] == services["service"]["image"]
        assert fleet[name]["environment"]["SEQTAG_REDIS_URL"] == services["service"]["environment"]["SEQTAG_REDIS_URL"]
    # both hosts take their API keys from the one variable
    assert {fleet[name]["environment"]["SEQTAG_API_KEYS"] for name in ("host-a", "host-b")} == {FLEET_KEYS}
    assert len({fleet[name]["volumes"][0]["source"] if isinstance(fleet[name]["volumes"][0], dict)
                else fleet[name]["volumes"][0].split(":")[0] for name in ("host-a", "host-b")}) == 2
    proxy = fleet["haproxy"]
    mounted = [v["source"] if isinstance(v, dict) else v.split(":")[0] for v in proxy["volumes"]]
    assert str(REPO / "service" / "haproxy.cfg") in mounted
    assert {proxy["environment"]["SEQTAG_HOST_A"], proxy["environment"]["SEQTAG_HOST_B"]} == {"host-a:8000", "host-b:8000"}

    service, train, redis = services["service"], services["train"], services["redis"]
    assert "/readyz" in " ".join(service["healthcheck"]["test"])
    assert service["environment"]["SEQTAG_REDIS_URL"].startswith("redis://redis:")
    assert int(service["environment"]["SEQTAG_WORKERS"]) > 1  # several workers: sessions must be in Redis
    assert service["depends_on"]["redis"]["condition"] == "service_healthy"

    def mounts(spec):
        return {volume.split(":")[1]: volume for volume in spec["volumes"]}

    models_dir = service["environment"]["SEQTAG_MODELS_DIR"]
    served, written = mounts(service)[models_dir], mounts(train)[models_dir]
    assert served.split(":")[0] == written.split(":")[0] == str(REPO / "models")  # one models directory
    out = train["command"][train["command"].index("--out") + 1]
    assert out.startswith(models_dir + "/")  # the trainer publishes where the service looks
    assert mounts(train)["/data"] == "/corpora:/data:ro"  # SEQTAG_DATA_DIR, read-only
    assert all(arg.startswith("/data/") for flag in ("--train", "--dev")
               for arg in [train["command"][train["command"].index(flag) + 1]])

    assert train["profiles"] == ["train"]  # not started by a plain `docker compose up`
    assert set(train["build"]["args"]["EXTRAS"].split(",")) == {"gpu", "train"}  # seqtag train needs the train extra
    devices = train["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "--appendonly" in redis["command"] and redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert any(volume.endswith(":/data:rw") for volume in redis["volumes"])


def test_dockerfile_serves_what_make_serve_serves():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert 'CMD ["seqtag", "serve"]' in dockerfile  # make serve runs seqtag serve too
    assert "/readyz" in dockerfile and "USER seqtag" in dockerfile
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", "checkpoints", ".git"} <= set(ignored)


def test_a_broken_compose_file_is_refused(tmp_path):
    broken = tmp_path / "docker-compose.yml"
    broken.write_text((REPO / "docker-compose.yml").read_text().replace("  service:\n", "  service:\n    restartt: no\n", 1))
    result = compose_config(broken)
    assert result.returncode != 0 and "restartt" in result.stderr
