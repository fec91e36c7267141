"""The deployment files (deploy/, .dockerignore) checked against the repository.

They parse; every entrypoint, config, path, Secret, ConfigMap and environment
variable they name exists or is read by the code; the image and the `ray up`
nodes install the package the way the Makefile does; the tracking stack is
reachable inside the cluster only; the Ray tasks that configs/paper.yaml
implies fit the worker groups declared for KubeRay and for `ray up`; and the
capacity table in docs/scaling-out.md is the one deploy/capacity.py prints.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import math
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator
from urllib.parse import urlparse

import pytest
import yaml

from tanq_ray.config import Config, load_config

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
DOCKERFILE = DEPLOY / "Dockerfile"
RAY_UP = DEPLOY / "ray-up" / "aws.yaml"
DOCS = [REPO / "docs" / "scaling-out.md", DEPLOY / "README.md"]
PAPER = REPO / "configs" / "paper.yaml"
SHARED_MOUNT = "/mnt/tanq"
SHARED_CLAIM = "tanq-shared"

# Ray resources of the pipeline's fixed-size tasks (tanq_ray/data/ingest.py, tanq_ray/translate.py,
# tanq_ray/segment/predict.py); the train workers and nnUNet folds follow the config (pipeline_demands).
INGEST_TASK = {"CPU": 1.0}
TRANSLATE_ACTOR = {"CPU": 1.0, "GPU": 1.0}  # asks for 1 GPU; an actor needs 1 CPU to be scheduled unless it says otherwise
NNUNET_PREDICT_TASK = {"CPU": 1.0, "GPU": 1.0}

# Environment variables read by the shell, virtual environments, Python and pip rather than by our code.
PLATFORM_VARIABLES = {"PATH", "VIRTUAL_ENV", "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR"}
# A variable with one of these prefixes must be named in that package's source.
TOOL_PREFIXES = {"RAY_": "ray", "MLFLOW_": "mlflow", "nnUNet_": "nnunetv2"}


# ---------------------------------------------------------------- reading the files


def kubernetes_objects() -> list[dict[str, Any]]:
    """Every object of every manifest under deploy/kubernetes."""
    return [doc for path in sorted(KUBERNETES.rglob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def the_object(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in kubernetes_objects() if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''} under deploy/kubernetes, found {len(found)}"
    return found[0]


def ray_up_config() -> dict[str, Any]:
    return yaml.safe_load(RAY_UP.read_text())


def ray_pod_specs(cluster: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Pod spec of the head and of each worker group of a RayCluster, by group name."""
    spec = cluster["spec"]
    pods = {"head": spec["headGroupSpec"]["template"]["spec"]}
    pods |= {group["groupName"]: group["template"]["spec"] for group in spec["workerGroupSpecs"]}
    return pods


def pod_specs(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if obj["kind"] == "RayCluster":
        yield from ray_pod_specs(obj).values()
    elif obj["kind"] in ("Deployment", "StatefulSet", "Job"):
        yield obj["spec"]["template"]["spec"]


def containers() -> Iterator[dict[str, Any]]:
    for obj in kubernetes_objects():
        for pod in pod_specs(obj):
            yield from pod.get("initContainers", []) + pod["containers"]


def runs_our_image(container: dict[str, Any]) -> bool:
    return container["image"].rsplit("/", 1)[-1].startswith("tanq-ray:")


def joined_lines(text: str) -> str:
    """Shell and Dockerfile line continuations (backslash-newline) joined."""
    return re.sub(r"\\\n", " ", text)


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, comments dropped, continuations joined."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
    instructions = []
    for line in joined_lines("\n".join(lines)).splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            instructions.append((word.upper(), rest.strip()))
    return instructions


def dockerfile_args(path: Path) -> dict[str, str]:
    return dict(arg.split("=", 1) for op, arg in dockerfile_instructions(path) if op == "ARG" and "=" in arg)


def makefile_variables() -> dict[str, str]:
    pattern = re.compile(r"^(\w+)\s*[:?]?=\s*(.*?)\s*$")
    return {m[1]: m[2] for line in (REPO / "Makefile").read_text().splitlines() if (m := pattern.match(line))}


def substitute(text: str, variables: dict[str, str]) -> str:
    """``$(NAME)`` and ``${NAME}`` replaced by their values; unknown names left as they are."""
    return re.sub(r"\$[({](\w+)[)}]", lambda m: variables.get(m[1], m[0]), text)


def pip_install_steps(text: str, variables: dict[str, str] | None = None) -> list[str]:
    """What each ``pip install`` installs, in order: requirements and ``-e`` targets, options dropped.

    ``pip install --quiet --index-url URL "torch==2.13.0"`` -> ``torch==2.13.0``.
    """
    steps = []
    for match in re.finditer(r"pip install ([^\n;&|]*)", joined_lines(text)):
        tokens = iter(shlex.split(substitute(match[1], variables or {})))
        step = []
        for token in tokens:
            if token in ("--index-url", "--extra-index-url", "-i"):
                next(tokens)
            elif token == "-e":
                step.append(f"-e {next(tokens)}")
            elif not token.startswith("-"):
                step.append(token)
        steps.append(" ".join(step))
    return steps


def package_steps(steps: list[str]) -> list[str]:
    """The steps that install torch or the project itself."""
    return [step for step in steps if step.startswith(("torch", "-e "))]


def dockerignore_excludes(path: str) -> bool:
    """Whether Docker leaves ``path`` (relative to the repository) out of the build context.

    Patterns are matched against the path and each of its parents; the last
    matching pattern wins and ``!`` patterns re-include.
    """
    excluded = False
    parts = path.split("/")
    for line in (REPO / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        regex = glob_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch("/".join(parts[:depth])) for depth in range(1, len(parts) + 1)):
            excluded = not negated
    return excluded


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Docker's path globs: ``*`` and ``?`` stay within one path element, ``**`` spans any number."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        else:
            out += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
            i += 1
    return re.compile(out)


def ray_up_commands(config: dict[str, Any]) -> list[str]:
    keys = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands")  # fmt: skip
    return [command for key in keys for command in config.get(key, [])]


def exported_names(command: str) -> set[str]:
    """Names a shell command exports: ``export A=1 B=2``."""
    names = set()
    for match in re.finditer(r"export ((?:\w+=\S+\s*)+)", command):
        names |= {assignment.split("=", 1)[0] for assignment in match[1].split()}
    return names


def names_in_package(package: str, names: set[str]) -> set[str]:
    """Which of ``names`` appear in the Python source of an installed package."""
    found: set[str] = set()
    root = Path(importlib.util.find_spec(package).origin).parent
    for path in root.rglob("*.py"):
        text = path.read_text(errors="ignore")
        found |= {name for name in names - found if name in text}
        if found == names:
            break
    return found


def pyproject_value(pattern: str) -> str:
    """The first group of ``pattern`` in pyproject.toml (tomllib is not in Python 3.10)."""
    match = re.search(pattern, (REPO / "pyproject.toml").read_text(), re.MULTILINE)
    assert match, f"pyproject.toml has nothing like {pattern!r}"
    return match[1]


def load_capacity_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_capacity", DEPLOY / "capacity.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- parsing and naming


def test_every_manifest_parses_and_the_cluster_file_fits_rays_schema() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    manifests = sorted(DEPLOY.rglob("*.yaml"))
    assert len(manifests) >= 7
    for path in manifests:
        documents = list(yaml.safe_load_all(path.read_text()))
        if path.is_relative_to(KUBERNETES):
            where = path.relative_to(REPO)
            for doc in documents:
                assert doc and {"apiVersion", "kind", "metadata"} <= set(doc), f"{where}: not a Kubernetes object"
                assert doc["metadata"].get("name"), f"{where}: a {doc['kind']} without a name"
    kinds = {o["kind"] for o in kubernetes_objects()}
    assert {"RayCluster", "RayJob", "PersistentVolumeClaim", "ConfigMap", "Deployment", "StatefulSet", "Service"} <= kinds

    validate_config(prepare_config(ray_up_config()))
    misspelt = ray_up_config() | {"setup_comands": []}
    with pytest.raises(Exception, match="setup_comands"):  # the schema check is real
        validate_config(prepare_config(misspelt))


def test_every_named_entrypoint_config_and_deploy_path_exists() -> None:
    texts = [path.read_text() for path in [*DEPLOY.rglob("*.yaml"), DOCKERFILE, *DOCS]]
    named = set()
    for text in texts:
        named |= set(re.findall(r"\b(?:jobs/\w+\.py|configs/[\w/]+\.yaml|deploy/[\w./-]*\w)", text))
    assert {"jobs/pipeline.py", "configs/paper.yaml", "deploy/Dockerfile"} <= named
    missing = sorted(name for name in named if not (REPO / name).exists())
    assert not missing, f"named in deploy/ or the docs but not in the repository: {missing}"


def test_the_ray_job_runs_the_pipeline_on_the_paper_config_with_outputs_on_the_shared_volume() -> None:
    job = the_object("RayJob")
    cluster = the_object("RayCluster")
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    tokens = shlex.split(job["spec"]["entrypoint"])
    assert tokens[:4] == ["python", "jobs/pipeline.py", "--config", "configs/paper.yaml"]
    config = load_config(REPO / tokens[3], tokens[4:])  # every override is a known key with a valid value
    for path in (config.output_dir, config.data.train_dir, config.data.eval_dir):
        assert str(path).startswith(SHARED_MOUNT + "/"), f"{path} is not on the shared volume {SHARED_MOUNT}"
    assert config.train.use_gpu


def test_environment_variables_are_read_by_the_code_or_the_tools() -> None:
    ours: set[str] = set()
    theirs: set[str] = set()
    for container in containers():
        names = {variable["name"] for variable in container.get("env", [])}
        (ours if runs_our_image(container) else theirs).update(names)
    for op, arguments in dockerfile_instructions(DOCKERFILE):
        if op == "ENV":
            ours |= {assignment.split("=", 1)[0] for assignment in shlex.split(arguments)}
    for command in ray_up_commands(ray_up_config()):
        ours |= exported_names(command)
    assert {"MLFLOW_TRACKING_URI", "RAY_AUTH_MODE"} <= ours

    package_source = "\n".join(path.read_text() for path in (REPO / "tanq_ray").rglob("*.py"))
    by_tool = {name for name in ours | theirs if name.startswith(tuple(TOOL_PREFIXES))}
    unread = {name for name in ours - by_tool - PLATFORM_VARIABLES if name not in package_source}
    for prefix, package in TOOL_PREFIXES.items():
        wanted = {name for name in by_tool if name.startswith(prefix)}
        unread |= wanted - names_in_package(package, wanted)
    assert not unread, f"environment variables that neither tanq_ray nor the tool reading them names: {sorted(unread)}"


def test_secrets_config_maps_and_claims_are_created_where_the_docs_and_manifests_say() -> None:
    created: dict[str, set[str]] = {}
    for doc in DOCS:
        for line in joined_lines(doc.read_text()).splitlines():
            if "kubectl create secret generic" in line:
                tokens = shlex.split(line[line.index("kubectl") :])
                created.setdefault(tokens[4], set()).update(
                    t.split("=", 2)[1] for t in tokens if t.startswith("--from-literal=")
                )  # fmt: skip
    token_secret = the_object("RayCluster")["spec"]["authOptions"]["secretName"]
    used: set[tuple[str, str]] = {(token_secret, "auth_token")}  # KubeRay reads the token from this key
    config_maps = {o["metadata"]["name"]: o["data"] for o in kubernetes_objects() if o["kind"] == "ConfigMap"}
    claims = {o["metadata"]["name"]: o for o in kubernetes_objects() if o["kind"] == "PersistentVolumeClaim"}
    for container in containers():
        for variable in container.get("env", []):
            source = variable.get("valueFrom", {})
            if "secretKeyRef" in source:
                used.add((source["secretKeyRef"]["name"], source["secretKeyRef"]["key"]))
            if "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                assert ref["key"] in config_maps.get(ref["name"], {}), f"ConfigMap {ref['name']} has no key {ref['key']}"
    missing = sorted(f"{name}/{key}" for name, key in used if key not in created.get(name, set()))
    assert not missing, f"Secrets the manifests read but docs/scaling-out.md never creates: {missing}"
    for obj in kubernetes_objects():
        for pod in pod_specs(obj):
            for volume in pod.get("volumes", []):
                if "persistentVolumeClaim" in volume:
                    assert volume["persistentVolumeClaim"]["claimName"] in claims


def test_every_ray_pod_mounts_the_same_shared_volume_at_the_same_path() -> None:
    claim = the_object("PersistentVolumeClaim", SHARED_CLAIM)
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    pods = ray_pod_specs(the_object("RayCluster"))
    assert {"head", "cpu", "gpu"} <= set(pods)
    for group, pod in pods.items():
        shared = {v["name"] for v in pod["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == SHARED_CLAIM}
        mounts = [m["mountPath"] for c in pod["containers"] for m in c.get("volumeMounts", []) if m["name"] in shared]
        assert mounts == [SHARED_MOUNT], f"{group}: the shared volume is mounted at {mounts}, not {SHARED_MOUNT}"
    setup = ray_up_config()["setup_commands"]
    mounts = [command for command in setup if re.search(rf"mount -t nfs4 .* {SHARED_MOUNT}\)?", command)]
    assert mounts, f"the `ray up` nodes mount no shared file system at {SHARED_MOUNT}"


def test_token_authentication_stays_on() -> None:
    assert the_object("RayCluster")["spec"]["authOptions"]["mode"] == "token"
    config = ray_up_config()
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config[key] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE" in exported_names(c) and "RAY_AUTH_MODE=token" in c for c in starts), key
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def test_the_tracking_stack_is_reachable_inside_the_cluster_only() -> None:
    objects = kubernetes_objects()
    assert not [o for o in objects if o["kind"] == "Ingress"]
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    assert all(s["spec"].get("type", "ClusterIP") == "ClusterIP" for s in services.values())

    uri = urlparse(the_object("ConfigMap", "tanq-tracking")["data"]["MLFLOW_TRACKING_URI"])
    assert uri.hostname in services and uri.port in [p["port"] for p in services[uri.hostname]["spec"]["ports"]]
    for group, pod in ray_pod_specs(the_object("RayCluster")).items():
        env = {v["name"]: v for c in pod["containers"] for v in c.get("env", [])}
        assert env["MLFLOW_TRACKING_URI"]["valueFrom"]["configMapKeyRef"]["name"] == "tanq-tracking", group

    server = the_object("Deployment", uri.hostname)["spec"]["template"]["spec"]["containers"][0]
    options = dict(arg.lstrip("-").split("=", 1) for arg in server["args"] if arg.startswith("--") and "=" in arg)
    env = {v["name"]: v.get("value") for v in server["env"]}
    backend = urlparse(env["MLFLOW_BACKEND_STORE_URI"])
    assert backend.scheme == "postgresql+psycopg" and backend.hostname in services
    assert "$(DB_PASSWORD)" in env["MLFLOW_BACKEND_STORE_URI"]  # the password comes from a Secret, not the manifest
    assert urlparse(env["MLFLOW_S3_ENDPOINT_URL"]).hostname in services
    bucket = urlparse(options["artifacts-destination"])
    assert bucket.scheme == "s3"
    make_bucket = the_object("Job", "mlflow-bucket")["spec"]["template"]["spec"]["containers"][0]
    assert f"store/{bucket.netloc}" in make_bucket["args"][0]
    allowed = options["allowed-hosts"].split(",")
    assert any(fnmatch.fnmatch(f"{uri.hostname}:{uri.port}", pattern) for pattern in allowed)  # MLflow checks Host headers


def test_versions_match_the_package_pins() -> None:
    assert the_object("RayCluster")["spec"]["rayVersion"] == pyproject_value(r'"ray\[[\w,]+\]==([\d.]+)"')
    assert dockerfile_args(DOCKERFILE)["TORCH_VERSION"] == pyproject_value(r'"torch==([\d.]+)"')


# ---------------------------------------------------------------- the image


def test_the_image_copies_existing_files_that_the_dockerignore_lets_through() -> None:
    sources = []
    for op, arguments in dockerfile_instructions(DOCKERFILE):
        if op == "COPY":
            tokens = [t for t in shlex.split(arguments) if not t.startswith("--")]
            sources += [source.rstrip("/") for source in tokens[:-1]]
    assert {"pyproject.toml", "tanq_ray", "jobs", "configs"} <= set(sources)
    readme = pyproject_value(r'^readme\s*=\s*"([^"]+)"')
    assert readme in sources, "pip install needs the readme pyproject.toml names"
    for source in sources:
        assert (REPO / source).exists(), f"deploy/Dockerfile copies {source}, which does not exist"
        assert not dockerignore_excludes(source), f".dockerignore leaves out {source}, which deploy/Dockerfile copies"
    assert not dockerignore_excludes("tanq_ray/train/launcher.py")
    for left_out in (".venv/bin/python", ".git/HEAD", "runs/tiny/ingest/manifest.json", "mlflow.db",
                     "tanq_ray/__pycache__/config.cpython-311.pyc", "tanq_ray.egg-info/PKG-INFO"):  # fmt: skip
        assert dockerignore_excludes(left_out), f".dockerignore lets {left_out} into the build context"


def test_the_image_and_the_cluster_nodes_install_the_way_the_makefile_and_readme_do() -> None:
    make = pip_install_steps((REPO / "Makefile").read_text(), makefile_variables())
    assert package_steps(make) == ["torch==2.13.0", "-e .[test]"]
    image = pip_install_steps(DOCKERFILE.read_text(), dockerfile_args(DOCKERFILE))
    nodes = pip_install_steps("\n".join(ray_up_config()["setup_commands"]))
    assert image == make, f"deploy/Dockerfile installs {image}, the Makefile {make}"
    assert nodes == make, f"{RAY_UP.relative_to(REPO)} installs {nodes}, the Makefile {make}"
    readme = package_steps(pip_install_steps((REPO / "README.md").read_text()))
    assert readme in ([], package_steps(make)), f"README installs {readme}"


def test_the_image_starts_ray_in_the_repository_as_a_non_root_user() -> None:
    instructions = dockerfile_instructions(DOCKERFILE)
    users = [arg for op, arg in instructions if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    workdir = [arg for op, arg in instructions if op == "WORKDIR"][-1]
    copies = [shlex.split(arg)[-1] for op, arg in instructions if op == "COPY"]
    assert all(dest.startswith("./") for dest in copies), "the repository files land in the working directory"
    assert workdir.startswith("/")
    assert dockerfile_args(DOCKERFILE)["BASE_IMAGE"].startswith("nvidia/cuda:")


# ---------------------------------------------------------------- resources


@dataclass(frozen=True)
class PodShape:
    """What Ray sees of one pod (or VM) of a group, and how many of them there may be."""

    group: str
    cpu: float
    gpu: float
    min_pods: int
    max_pods: int


@dataclass(frozen=True)
class TaskDemand:
    """``count`` Ray tasks or actors asking for ``bundle`` each, all at once."""

    name: str
    bundle: dict[str, float]
    count: int
    before_scaling: bool  # checked against the cluster as it is before the autoscaler adds pods


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity as a number: ``"500m"`` -> 0.5, ``"8"`` -> 8."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def raycluster_shapes(cluster: dict[str, Any]) -> list[PodShape]:
    """Per-pod CPUs and GPUs as KubeRay passes them to ``ray start``: rayStartParams, else the container limits."""

    def shape(group: str, spec: dict[str, Any], min_pods: int, max_pods: int) -> PodShape:
        limits = spec["template"]["spec"]["containers"][0]["resources"]["limits"]
        params = spec.get("rayStartParams", {})
        cpu = quantity(params.get("num-cpus", limits.get("cpu", 0)))
        gpu = quantity(params.get("num-gpus", limits.get("nvidia.com/gpu", 0)))
        return PodShape(group, cpu, gpu, min_pods, max_pods)

    spec = cluster["spec"]
    shapes = [shape("head", spec["headGroupSpec"], 1, 1)]
    for group in spec["workerGroupSpecs"]:
        shapes.append(shape(group["groupName"], group, group["minReplicas"], group["maxReplicas"]))
    return shapes


def ray_up_shapes(config: dict[str, Any]) -> list[PodShape]:
    shapes = []
    for name, node_type in config["available_node_types"].items():
        head = name == config["head_node_type"]
        resources = node_type["resources"]
        low, high = (1, 1) if head else (node_type["min_workers"], node_type["max_workers"])
        shapes.append(PodShape(name, resources.get("CPU", 0), resources.get("GPU", 0), low, high))
    return shapes


def pipeline_demands(config: Config) -> list[TaskDemand]:
    """The Ray resource requests a pipeline run under ``config`` makes on a cluster with GPUs.

    Stages that size themselves from the GPUs present when they start (the
    train stage's resource check, the translate actor count, the segment
    stage's choice of GPU or CPU) must find them before any scaling.
    """
    train, segment = config.train, config.segment
    worker = {"CPU": train.cpus_per_worker, "GPU": 1.0 if train.use_gpu else 0.0}
    # tanq_ray/segment/folds.py: 1 CPU + the nnUNet augmentation processes, 1 GPU
    fold = {"CPU": 1.0 + segment.augmentation_processes, "GPU": 1.0}
    return [
        TaskDemand("Ray Train workers", worker, train.num_workers, before_scaling=True),
        TaskDemand("ingest task", INGEST_TASK, 1, before_scaling=False),
        TaskDemand("translate actor", TRANSLATE_ACTOR, 1, before_scaling=True),
        TaskDemand("nnUNet trainings of one round", fold, len(segment.configurations) * segment.folds, before_scaling=False),
        TaskDemand("nnUNet prediction", NNUNET_PREDICT_TASK, 1, before_scaling=True),
    ]


def slots(shape: PodShape, bundle: dict[str, float]) -> int:
    """How many ``bundle`` one pod holds."""
    available = {"CPU": shape.cpu, "GPU": shape.gpu}
    return min(math.floor(available.get(resource, 0.0) / amount) for resource, amount in bundle.items() if amount > 0)


def unplaced(shapes: list[PodShape], demands: list[TaskDemand]) -> list[str]:
    """The demands the pods cannot hold all at once, each with the reason."""
    problems = []
    for demand in demands:
        pods = "min_pods" if demand.before_scaling else "max_pods"
        held = sum(slots(shape, demand.bundle) * getattr(shape, pods) for shape in shapes)
        if held < demand.count:
            problems.append(f"{demand.name}: {demand.count} x {demand.bundle}, but the pods ({pods}) hold {held}")
    return problems


CLUSTER_DEFINITIONS = {
    "kuberay": lambda: raycluster_shapes(the_object("RayCluster")),
    "ray up": lambda: ray_up_shapes(ray_up_config()),
}


@pytest.mark.parametrize("definition", sorted(CLUSTER_DEFINITIONS))
def test_the_paper_configurations_ray_tasks_fit_the_declared_worker_groups(definition: str) -> None:
    shapes = CLUSTER_DEFINITIONS[definition]()
    assert {s.group for s in shapes} >= {"head", "cpu", "gpu"}
    head = next(s for s in shapes if s.group == "head")
    assert head.cpu == 0 and head.gpu == 0, "the head runs the driver, no tasks"
    config = load_config(PAPER)
    assert not unplaced(shapes, pipeline_demands(config))
    folds = len(config.segment.configurations) * config.segment.folds
    gpus = sum(s.gpu * s.max_pods for s in shapes)
    assert gpus == folds, f"{gpus} GPUs at most: one round's {folds} nnUNet trainings should run at once and no more GPUs idle"


@pytest.mark.parametrize("definition", sorted(CLUSTER_DEFINITIONS))
def test_the_fit_check_refuses_what_the_groups_cannot_hold(definition: str) -> None:
    shapes = CLUSTER_DEFINITIONS[definition]()
    more_workers = pipeline_demands(load_config(PAPER, ["train.num_workers=4"]))
    assert any("Ray Train workers" in problem for problem in unplaced(shapes, more_workers))
    fat_workers = pipeline_demands(load_config(PAPER, ["train.cpus_per_worker=64"]))
    assert any("Ray Train workers" in problem for problem in unplaced(shapes, fat_workers))
    more_folds = pipeline_demands(load_config(PAPER, ["segment.folds=10"]))
    assert any("nnUNet" in problem for problem in unplaced(shapes, more_folds))


def test_the_ray_up_cluster_has_the_kuberay_layout() -> None:
    def layout(shapes: list[PodShape]) -> dict[str, tuple[float, float, int, int]]:
        return {s.group: (s.cpu, s.gpu, s.min_pods, s.max_pods) for s in shapes}

    assert layout(ray_up_shapes(ray_up_config())) == layout(raycluster_shapes(the_object("RayCluster")))
    config = ray_up_config()
    assert config["max_workers"] == sum(t.get("max_workers", 0) for t in config["available_node_types"].values())


# ---------------------------------------------------------------- docs


def test_the_capacity_table_in_the_docs_is_the_one_the_script_prints() -> None:
    capacity = load_capacity_module()
    table = capacity.capacity_table(capacity.plan(load_config(PAPER)), [1, 2, 5, 10]).markdown(capacity.DIGITS)
    assert table in DOCS[0].read_text(), "docs/scaling-out.md: paste the output of `python deploy/capacity.py`"
    stages = capacity.plan(load_config(PAPER))
    assert sum(s.gpu_hours for s in stages) > 1000  # 50 nnUNet trainings of about a GPU-day each dominate
    assert stages[1].wall_hours(1) == pytest.approx(72.0)  # the paper's translator hours on one GPU
