"""Checks of infra/terraform, all offline.

* `terraform fmt -check` over the whole tree.
* `terraform init` + `validate` for every configuration whose providers are all in the offline provider
  mirror (hashicorp/aws only); the others (helm/kubernetes) are parsed with python-hcl2 and checked for
  dangling references, module arguments and provider requirements.
* The ray-manifests module is applied (it has no providers) and the RayCluster/RayJob/PodMonitor it
  renders are inspected, for default settings and for the stacks/ray example tfvars.
* checkov (own virtual environment, created on first use) reports no failed checks, and every inline
  skip carries a reason.
* The storage module is applied for real against a moto_server on 127.0.0.1; the buckets, KMS key,
  roles and policies it creates are inspected, and the roles' S3 permissions are exercised with moto
  enforcing IAM.
* stacks/aws is planned against moto with each example tfvars.

Checks that need terraform are skipped, with the reason printed (-ra), where terraform is not on PATH;
the HCL checks and checkov do not need it and run anyway.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import terraform_helpers as tfh  # noqa: E402

TF = tfh.terraform_bin()
requires_terraform = pytest.mark.skipif(TF is None, reason="terraform not found on PATH: infra/terraform checks need terraform >= 1.9")

CONFIG_DIRS = tfh.config_dirs()
CONFIG_IDS = [str(d.relative_to(tfh.TF_ROOT)) for d in CONFIG_DIRS]
STACK_DIRS = [d for d in CONFIG_DIRS if d.parent.name == "stacks"]

# Configurations whose providers are all in the offline mirror (hashicorp/aws) get init + validate;
# the others (helm/kubernetes) can only be parsed here.
VALIDATE_DIRS = [d for d in CONFIG_DIRS if tfh.required_provider_sources(d) <= {"hashicorp/aws"}]
VALIDATE_IDS = [str(d.relative_to(tfh.TF_ROOT)) for d in VALIDATE_DIRS]
EXPECTED_VALIDATED = {"modules/network", "modules/eks", "modules/storage", "modules/ray-manifests", "stacks/aws"}
EXPECTED_PARSE_ONLY = {"modules/addons", "modules/ray", "stacks/addons", "stacks/ray"}


################################################################################
# Fixtures
################################################################################


@pytest.fixture(scope="module")
def terraform() -> str:
    if TF is None:
        pytest.skip("terraform not found on PATH: infra/terraform checks need terraform >= 1.9")
    return TF


@pytest.fixture(scope="module")
def mirror() -> Path:
    path = tfh.plugin_mirror()
    if "hashicorp/aws" not in tfh.mirrored_providers(path):
        pytest.skip(f"no offline provider mirror with hashicorp/aws at {path} (set REDRAFT_TF_PLUGIN_MIRROR)")
    return path


@pytest.fixture(scope="module")
def workspace(terraform, mirror, tmp_path_factory):
    """A copy of infra/terraform plus a CLI config that installs providers only from the mirror."""
    base = tmp_path_factory.mktemp("tf")
    tree = tfh.copy_tree(base)
    cli = tfh.write_cli_config(base, mirror)
    return {"base": base, "tree": tree, "env": tfh.terraform_env(cli)}


@pytest.fixture()
def moto_server(tmp_path):
    try:
        proc, url = tfh.start_moto(tmp_path / "moto.log")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    try:
        yield url
    finally:
        tfh.stop(proc)


def tf(workspace, args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return tfh.run([TF, *args], cwd=cwd, env=workspace["env"], timeout=timeout)


################################################################################
# terraform fmt / init / validate
################################################################################


@requires_terraform
def test_fmt_check():
    proc = subprocess.run(
        [TF, "fmt", "-check", "-recursive", "-diff", str(tfh.TF_ROOT)],
        capture_output=True, text=True, env=tfh.terraform_env(Path(os.devnull)), timeout=120,
    )
    assert proc.returncode == 0, f"terraform fmt -check failed; run `terraform fmt -recursive infra/terraform`\n{proc.stdout}{proc.stderr}"


def test_configurations_split_between_validate_and_parse():
    """Every configuration that uses only hashicorp/aws (or no provider) is validated; the rest only parsed."""
    by_id = dict(zip(CONFIG_IDS, CONFIG_DIRS))
    assert set(by_id) == EXPECTED_VALIDATED | EXPECTED_PARSE_ONLY
    assert set(VALIDATE_IDS) == EXPECTED_VALIDATED
    for cid in EXPECTED_VALIDATED:
        assert tfh.required_provider_sources(by_id[cid]) <= {"hashicorp/aws"}, cid
    for cid in EXPECTED_PARSE_ONLY:
        assert tfh.required_provider_sources(by_id[cid]) - {"hashicorp/aws"}, cid


@pytest.mark.parametrize("config", VALIDATE_DIRS, ids=VALIDATE_IDS)
def test_init_and_validate(workspace, config):
    rel = config.relative_to(tfh.TF_ROOT)
    cwd = workspace["tree"] / rel
    tf(workspace, ["init", "-input=false", "-backend=false", "-no-color"], cwd)
    proc = tf(workspace, ["validate", "-no-color", "-json"], cwd)
    result = json.loads(proc.stdout)
    assert result["valid"], result
    assert result["warning_count"] == 0, result["diagnostics"]


################################################################################
# Static checks (all configurations, no terraform needed)
################################################################################

REF_VAR = re.compile(r"\bvar\.([A-Za-z_][A-Za-z0-9_-]*)")
REF_LOCAL = re.compile(r"\blocal\.([A-Za-z_][A-Za-z0-9_-]*)")
REF_MODULE = re.compile(r"\bmodule\.([A-Za-z_][A-Za-z0-9_-]*)\.([A-Za-z_][A-Za-z0-9_-]*)")
REF_DATA = re.compile(r"\bdata\.([a-z0-9_]+)\.([A-Za-z_][A-Za-z0-9_-]*)")
REF_RESOURCE = re.compile(r"(?<![.\w])((?:aws|kubernetes|helm)_[a-z0-9_]+)\.([A-Za-z_][A-Za-z0-9_-]*)\b")
META_ARGS = {"source", "version", "count", "for_each", "depends_on", "providers"}


def _code(directory: Path) -> str:
    return "\n".join(tfh.strip_comments(p.read_text()) for p in sorted(directory.glob("*.tf")))


def static_check(config: Path) -> None:
    """What `terraform validate` would catch for references, so configurations that cannot be
    initialised offline (helm/kubernetes providers) are still checked. Raises AssertionError."""
    parsed = tfh.parse_config(config)
    code = _code(config)

    for name in REF_VAR.findall(code):
        assert name in parsed["variable"], f"{config}: var.{name} is not declared"
    for name in REF_LOCAL.findall(code):
        assert name in parsed["locals"], f"{config}: local.{name} is not defined"
    for rtype, rname in REF_DATA.findall(code):
        assert f"{rtype}.{rname}" in parsed["data"], f"{config}: data.{rtype}.{rname} is not declared"
    for rtype, rname in REF_RESOURCE.findall(code):
        assert f"{rtype}.{rname}" in parsed["resource"], f"{config}: {rtype}.{rname} is not declared"

    # Module calls: arguments are declared variables, required variables are passed, outputs exist.
    for mname, body in parsed["module"].items():
        target = (config / body["source"]).resolve()
        assert target.is_dir(), f"{config}: module {mname} source {body['source']} does not exist"
        target_cfg = tfh.parse_config(target)
        args = set(body) - META_ARGS
        unknown = args - set(target_cfg["variable"])
        assert not unknown, f"{config}: module {mname} gets undeclared arguments {sorted(unknown)}"
        required = {v for v, spec in target_cfg["variable"].items() if "default" not in spec}
        assert required <= args, f"{config}: module {mname} misses required arguments {sorted(required - args)}"
    for mname, output in REF_MODULE.findall(code):
        assert mname in parsed["module"], f"{config}: module.{mname} is not declared"
        target_cfg = tfh.parse_config((config / parsed["module"][mname]["source"]).resolve())
        assert output in target_cfg["output"], f"{config}: module.{mname}.{output} is not an output of {parsed['module'][mname]['source']}"

    # Every provider whose resources are used is required with an explicit source and version constraint.
    providers = parsed["terraform"]
    used = {key.split(".")[0].split("_")[0] for key in list(parsed["resource"]) + list(parsed["data"])}
    for prefix in used:
        assert prefix in providers, f"{config}: uses {prefix}_* resources but does not require the {prefix} provider"
        assert providers[prefix]["source"] == f"hashicorp/{prefix}" and providers[prefix].get("version"), f"{config}: {prefix} needs source and version"


@pytest.mark.parametrize("config", CONFIG_DIRS, ids=CONFIG_IDS)
def test_static_checks(config):
    static_check(config)


@pytest.mark.parametrize(
    "edit, message",
    [
        (("name = var.namespace", "name = var.no_such_variable"), "var.no_such_variable is not declared"),
        (("module.manifests.serve_ray_cluster", "module.manifests.no_such_output"), "no_such_output is not an output"),
        (("  ray_version           = var.ray_version\n", "  ray_version           = var.ray_version\n  bogus_argument        = 1\n"), "undeclared arguments"),
        (("kubernetes_config_map_v1.serve]", "kubernetes_config_map_v1.missing]"), "kubernetes_config_map_v1.missing is not declared"),
    ],
)
def test_static_check_catches_mistakes(tmp_path, edit, message):
    """The static check really fails on the mistakes it is meant to catch in parse-only configurations."""
    modules = tmp_path / "modules"
    for name in ("ray", "ray-manifests"):
        shutil.copytree(tfh.TF_ROOT / "modules" / name, modules / name)
    static_check(modules / "ray")
    main = modules / "ray" / "main.tf"
    old, new = edit
    assert old in main.read_text(), old
    main.write_text(main.read_text().replace(old, new, 1))
    with pytest.raises(AssertionError, match=re.escape(message)):
        static_check(modules / "ray")


@pytest.mark.parametrize("config", CONFIG_DIRS, ids=CONFIG_IDS)
def test_variables_and_outputs_documented(config):
    parsed = tfh.parse_config(config)
    for name, spec in parsed["variable"].items():
        assert spec.get("description", "").strip(), f"{config}: variable {name} has no description"
        assert "type" in spec, f"{config}: variable {name} has no type"
    for name, spec in parsed["output"].items():
        assert spec.get("description", "").strip(), f"{config}: output {name} has no description"
    for expected in ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md"):
        assert (config / expected).is_file(), f"{config}: missing {expected}"


@pytest.mark.parametrize("config", CONFIG_DIRS, ids=CONFIG_IDS)
def test_readme_lists_inputs_and_outputs(config):
    readme = (config / "README.md").read_text()
    parsed = tfh.parse_config(config)
    for kind in ("variable", "output"):
        for name in parsed[kind]:
            assert f"`{name}`" in readme, f"{config}/README.md does not list {kind} `{name}`"


def test_constrained_values_are_validated():
    eks = tfh.parse_config(tfh.TF_ROOT / "modules/eks")["variable"]
    gpu_validations = json.dumps(eks["gpu_node_groups"]["validation"])
    assert "ON_DEMAND" in gpu_validations and "SPOT" in gpu_validations
    assert "min_size" in gpu_validations and "max_size" in gpu_validations
    for module, names in {
        "modules/eks": ["cluster_name", "kubernetes_version", "public_access_cidrs", "system_node_group"],
        "modules/network": ["vpc_cidr", "availability_zones", "flow_log_retention_days"],
        "modules/storage": ["name_prefix", "oidc_provider_arn", "outputs_prefix", "checkpoints_prefix", "models_prefix", "outputs_infrequent_access_days"],
        "modules/ray-manifests": ["redraft_image", "job", "serve"],
        "modules/ray": ["job_config_yaml", "serve_config_yaml", "nightly_schedule", "internal_load_balancer_source_ranges"],
    }.items():
        variables = tfh.parse_config(tfh.TF_ROOT / module)["variable"]
        for name in names:
            assert variables[name].get("validation"), f"{module}: variable {name} should have a validation block"


def test_top_level_readme_walkthrough():
    text = (tfh.TF_ROOT / "README.md").read_text()
    for needle in [
        "stacks/aws", "stacks/addons", "stacks/ray", "terraform destroy", "port-forward",
        "workers/grafana/redraft_dashboard.json", "p5.48xlarge", "g6e", "SPOT", "Cost", "Teardown",
        "aws.auto.tfvars.json", "redraft run /config/job.yaml", "redraft serve /config/serve.yaml",
    ]:
        assert needle in text, f"infra/terraform/README.md should mention {needle!r}"


################################################################################
# Example tfvars
################################################################################

AWS_STACK = tfh.TF_ROOT / "stacks/aws"
RAY_STACK = tfh.TF_ROOT / "stacks/ray"
AWS_EXAMPLES = sorted((AWS_STACK / "examples").glob("*.tfvars"))
RAY_EXAMPLES = sorted((RAY_STACK / "examples").glob("*.tfvars"))


def _object_output_keys(stack: str, output: str) -> set[str]:
    """Keys of an object output that the README pipes into the next stack as *.auto.tfvars.json."""
    return set(tfh.parse_config(tfh.TF_ROOT / "stacks" / stack)["output"][output]["value"])


@pytest.mark.parametrize("stack", STACK_DIRS, ids=[d.name for d in STACK_DIRS])
def test_example_tfvars_use_declared_variables(stack):
    examples = sorted((stack / "examples").glob("*.tfvars"))
    assert examples, f"{stack} has no examples/*.tfvars"
    variables = tfh.parse_config(stack)["variable"]
    required = {name for name, spec in variables.items() if "default" not in spec}
    piped = {
        "aws": set(),
        "addons": _object_output_keys("aws", "addons_stack_inputs"),
        "ray": _object_output_keys("aws", "ray_stack_inputs") | _object_output_keys("addons", "ray_stack_inputs"),
    }[stack.name]
    for example in examples:
        values = tfh.parse_hcl(example)
        unknown = set(values) - set(variables)
        assert not unknown, f"{example}: undeclared variables {sorted(unknown)}"
        if stack.name != "addons":  # the addons example only shows optional knobs
            missing = required - set(values) - piped
            assert not missing, f"{example}: required variables not set {sorted(missing)}"


def test_aws_examples_cover_h100_l40s_spot_and_on_demand():
    groups = {}
    for example in AWS_EXAMPLES:
        groups.update(tfh.parse_hcl(example).get("gpu_node_groups", {}))
    types = {t for g in groups.values() for t in g["instance_types"]}
    assert "p5.48xlarge" in types and any(t.startswith("g6e.") for t in types)
    assert {g.get("capacity_type", "ON_DEMAND") for g in groups.values()} == {"ON_DEMAND", "SPOT"}
    assert all(g.get("min_size", 0) == 0 for g in groups.values()), "example GPU groups should scale to zero"


################################################################################
# ray-manifests: render offline and inspect
################################################################################


def _render_manifests(workspace, tmp_path: Path, tfvars: dict) -> dict:
    harness = tmp_path / "render"
    harness.mkdir()
    module = workspace["tree"] / "modules" / "ray-manifests"
    (harness / "main.tf").write_text(
        'variable "redraft_image" { type = string }\n'
        'variable "aws_region" { type = string }\n'
        'variable "job" { type = any }\n'
        'variable "serve" { type = any }\n'
        'variable "extra" {\n  type    = any\n  default = {}\n}\n'
        f'module "m" {{\n  source         = "{module}"\n'
        "  redraft_image  = var.redraft_image\n  aws_region     = var.aws_region\n"
        "  job            = var.job\n  serve          = var.serve\n"
        '  prometheus_url = "http://kube-prometheus-stack-prometheus.monitoring.svc:9090"\n}\n'
        'output "m" { value = module.m }\n'
    )
    (harness / "terraform.tfvars.json").write_text(json.dumps(tfvars))
    tf(workspace, ["init", "-input=false", "-no-color"], harness)
    tf(workspace, ["apply", "-auto-approve", "-input=false", "-no-color", "-lock=false"], harness)
    return json.loads(tf(workspace, ["output", "-json", "m"], harness).stdout)


def _containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


@requires_terraform
def test_ray_manifests_render(workspace, tmp_path):
    import yaml

    out = _render_manifests(workspace, tmp_path, {
        "redraft_image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/redraft:0.1.0",
        "aws_region": "us-east-1",
        "job": {"gpu_node_group": "h100", "workers": 2, "gpus_per_worker": 8},
        "serve": {"gpu_node_group": "l40s", "min_workers": 0, "max_workers": 3},
    })

    job = out["nightly_ray_job"]
    assert yaml.safe_load(out["nightly_ray_job_yaml"]) == job
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert job["metadata"]["generateName"] == "redraft-nightly-" and "name" not in job["metadata"]
    spec = job["spec"]
    assert spec["entrypoint"] == "redraft run /config/job.yaml"
    assert spec["shutdownAfterJobFinishes"] is True and spec["activeDeadlineSeconds"] < 86400
    cluster = spec["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]
    assert head["spec"]["serviceAccountName"] == "redraft-job"
    assert head["spec"]["nodeSelector"] == {"redraft.dev/pool": "system"}
    head_c = _containers(head)[0]
    assert "nvidia.com/gpu" not in head_c["resources"]["limits"]
    assert {"name": "config", "mountPath": "/config", "readOnly": True} in head_c["volumeMounts"]
    assert {"name": "config", "configMap": {"name": "redraft-job-config"}} in head["spec"]["volumes"]
    assert {"name": "RAY_PROMETHEUS_HOST", "value": "http://kube-prometheus-stack-prometheus.monitoring.svc:9090"} in head_c["env"]
    (workers,) = cluster["workerGroupSpecs"]
    assert workers["replicas"] == workers["minReplicas"] == workers["maxReplicas"] == 2
    w = workers["template"]
    wc = _containers(w)[0]
    assert wc["resources"]["limits"]["nvidia.com/gpu"] == "8" and wc["resources"]["requests"]["nvidia.com/gpu"] == "8"
    assert w["spec"]["nodeSelector"] == {"redraft.dev/gpu-group": "h100"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in w["spec"]["tolerations"]
    assert {"name": "metrics", "containerPort": 8080} in wc["ports"]
    assert workers["rayStartParams"]["metrics-export-port"] == "8080"
    assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in w["spec"]["volumes"])
    assert w["spec"]["serviceAccountName"] == "redraft-job"

    serve = out["serve_ray_cluster"]
    assert serve["kind"] == "RayCluster" and serve["metadata"]["name"] == "redraft-serve"
    assert serve["metadata"]["annotations"]["ray.io/overwrite-container-cmd"] == "true"
    sspec = serve["spec"]
    assert sspec["enableInTreeAutoscaling"] is True
    assert sspec["headGroupSpec"]["serviceType"] == "ClusterIP", "the dashboard must not be exposed by the head Service"
    shead = _containers(sspec["headGroupSpec"]["template"])[0]
    script = shead["args"][0]
    assert "$KUBERAY_GEN_RAY_START_CMD" in script and "redraft serve /config/serve.yaml" in script and "ulimit -n" in script
    assert {"name": "serve", "containerPort": 8000} in shead["ports"] and {"name": "dashboard", "containerPort": 8265} in shead["ports"]
    (sw,) = sspec["workerGroupSpecs"]
    assert (sw["minReplicas"], sw["maxReplicas"]) == (0, 3)
    swc = _containers(sw["template"])[0]
    assert swc["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "$KUBERAY_GEN_RAY_START_CMD" in swc["args"][0], "with overwrite-container-cmd the workers must start Ray themselves"
    assert sw["template"]["spec"]["serviceAccountName"] == "redraft-serve"
    assert sw["template"]["spec"]["nodeSelector"] == {"redraft.dev/gpu-group": "l40s"}

    monitor = out["ray_pod_monitor"]
    assert monitor["kind"] == "PodMonitor"
    assert monitor["spec"]["selector"]["matchLabels"] == {"ray.io/is-ray-node": "yes"}
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert out["serve_head_selector"] == {"ray.io/cluster": "redraft-serve", "ray.io/node-type": "head"}


@requires_terraform
@pytest.mark.parametrize("example", RAY_EXAMPLES, ids=[e.name for e in RAY_EXAMPLES])
def test_ray_example_tfvars_render(workspace, tmp_path, example):
    """The stacks/ray examples' job/serve settings pass the ray-manifests validations and render."""
    values = tfh.parse_hcl(example)
    out = _render_manifests(workspace, tmp_path, {
        "redraft_image": values["redraft_image"], "aws_region": "us-east-1", "job": values["job"], "serve": values["serve"],
    })
    worker = out["nightly_ray_job"]["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert worker["replicas"] == values["job"].get("workers", 1)
    gpus = _containers(worker["template"])[0]["resources"]["limits"]["nvidia.com/gpu"]
    assert gpus == str(values["job"].get("gpus_per_worker", 1))


@requires_terraform
def test_ray_manifests_reject_bad_input(workspace, tmp_path):
    with pytest.raises(AssertionError, match="explicit tag or sha256 digest"):
        _render_manifests(workspace, tmp_path, {
            "redraft_image": "redraft:latest", "aws_region": "us-east-1",
            "job": {"gpu_node_group": "h100"}, "serve": {"gpu_node_group": "h100"},
        })


################################################################################
# Kubernetes-side wiring (parse-only configurations)
################################################################################


def test_ray_module_wiring():
    ray = tfh.parse_config(tfh.TF_ROOT / "modules/ray")
    res = ray["resource"]

    cron = res["kubernetes_cron_job_v1.nightly"]["spec"][0]
    assert cron["schedule"] == "${var.nightly_schedule}" and cron["concurrency_policy"] == "Forbid"
    pod = cron["job_template"][0]["spec"][0]["template"][0]["spec"][0]
    container = pod["container"][0]
    assert container["command"] == ["kubectl", "create", "--filename", "/templates/rayjob.yaml"]
    assert pod["service_account_name"] == "${kubernetes_service_account_v1.scheduler.metadata[0].name}"
    assert container["security_context"][0]["read_only_root_filesystem"] is True
    assert "nightly_template" in json.dumps(pod["volume"])
    assert res["kubernetes_config_map_v1.nightly_template"]["data"] == {"rayjob.yaml": "${module.manifests.nightly_ray_job_yaml}"}
    assert res["kubernetes_config_map_v1.job"]["data"] == {"job.yaml": "${var.job_config_yaml}"}
    assert res["kubernetes_config_map_v1.serve"]["data"] == {"serve.yaml": "${var.serve_config_yaml}"}

    # The scheduler can create RayJobs and nothing else.
    (rule,) = res["kubernetes_role_v1.scheduler"]["rule"]
    assert rule == {"api_groups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create", "get", "list"]}

    # IRSA: the service accounts carry the storage module's roles.
    for sa, role in (("job", "job_role_arn"), ("serve", "serve_role_arn")):
        annotations = res[f"kubernetes_service_account_v1.{sa}"]["metadata"][0]["annotations"]
        assert annotations == {"eks.amazonaws.com/role-arn": f"${{var.{role}}}"}

    # The dashboard is private: no public LoadBalancer, only an optional internal one.
    services = {k: v for k, v in res.items() if k.startswith("kubernetes_service_v1.")}
    assert set(services) == {"kubernetes_service_v1.serve_internal"}
    svc = services["kubernetes_service_v1.serve_internal"]
    assert svc["count"] == "${var.internal_load_balancer ? 1 : 0}"
    annotations = svc["metadata"][0]["annotations"]
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-internal"] == "true"
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-scheme"] == "internal"
    assert ray["variable"]["internal_load_balancer"]["default"] is False

    # Monitoring: PodMonitor from the rendered manifest, dashboard ConfigMap with the sidecar's label.
    assert res["kubernetes_manifest.pod_monitor"]["manifest"] == "${module.manifests.ray_pod_monitor}"
    assert res["kubernetes_manifest.serve_cluster"]["manifest"] == "${module.manifests.serve_ray_cluster}"
    dash = res["kubernetes_config_map_v1.grafana_dashboard"]
    assert "redraft_dashboard.json" in dash["data"]
    assert ray["variable"]["grafana_dashboard_label"]["default"] == {"name": "grafana_dashboard", "value": "1"}


def test_addons_wiring():
    addons = tfh.parse_config(tfh.TF_ROOT / "modules/addons")
    res = addons["resource"]
    assert {k for k in res if k.startswith("helm_release.")} == {
        "helm_release.kuberay_operator", "helm_release.nvidia_device_plugin",
        "helm_release.cluster_autoscaler", "helm_release.kube_prometheus_stack",
    }
    kps = re.sub(r"\s+", " ", res["helm_release.kube_prometheus_stack"]["values"][0])
    for needle in ("podMonitorSelectorNilUsesHelmValues = false", 'searchNamespace = "ALL"', "label = var.grafana_dashboard_label.name"):
        assert needle in kps, needle
    # Same sidecar label on both sides.
    ray_label = tfh.parse_config(tfh.TF_ROOT / "modules/ray")["variable"]["grafana_dashboard_label"]["default"]
    assert addons["variable"]["grafana_dashboard_label"]["default"] == ray_label
    ca = res["helm_release.cluster_autoscaler"]["values"][0]
    assert "eks.amazonaws.com/role-arn" in ca and "autoDiscovery" in ca

    stack = tfh.parse_config(tfh.TF_ROOT / "stacks/ray")
    text = (tfh.TF_ROOT / "stacks/ray/main.tf").read_text()
    assert "workers/grafana/redraft_dashboard.json" in text
    assert stack["module"]["ray"]["source"] == "../../modules/ray"


################################################################################
# checkov
################################################################################

SKIP_COMMENT = re.compile(r"#\s*checkov:skip=([A-Z0-9_]+)(?::(.*))?")


def test_every_checkov_skip_is_justified():
    skips = []
    for path in tfh.TF_ROOT.rglob("*.tf"):
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            match = SKIP_COMMENT.search(line)
            if match:
                skips.append((path, lineno, match.group(1), (match.group(2) or "").strip()))
    for path, lineno, check_id, reason in skips:
        assert len(reason) >= 30, f"{path}:{lineno}: checkov skip {check_id} needs a justification after the colon"


def _checkov() -> Path:
    """checkov in its own virtual environment (it pins old boto3 and ships its own hcl2)."""
    venv = Path(os.environ.get("REDRAFT_CHECKOV_VENV", Path.home() / ".cache" / "redraft-checkov-venv"))
    exe = venv / "bin" / "checkov"
    if exe.exists():
        proc = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=120)
        if proc.returncode == 0 and proc.stdout.strip() == tfh.CHECKOV_VERSION:
            return exe
        shutil.rmtree(venv, ignore_errors=True)
    started = time.monotonic()
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
        subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--retries", "2", "--timeout", "60",
             f"checkov=={tfh.CHECKOV_VERSION}"],
            check=True, capture_output=True, text=True, timeout=1200,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        shutil.rmtree(venv, ignore_errors=True)
        detail = getattr(exc, "stderr", "") or ""
        pytest.skip(f"cannot install checkov=={tfh.CHECKOV_VERSION} into {venv}: {exc} {str(detail)[-500:]}")
    print(f"installed checkov {tfh.CHECKOV_VERSION} into {venv} in {time.monotonic() - started:.0f} s")
    return exe


@pytest.mark.slow
def test_checkov_reports_no_failed_checks(tmp_path):
    exe = _checkov()
    # Scan a copy so checkov never writes anything into the repository.
    tree = tfh.copy_tree(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BC_", "PRISMA_"))}
    env["LOG_LEVEL"] = "WARNING"
    proc = subprocess.run(
        [str(exe), "--directory", str(tree), "--framework", "terraform", "--skip-download",
         "--download-external-modules", "false", "--output", "json", "--quiet", "--compact"],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    reports = json.loads(proc.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}:{c['file_line_range']})"
        for report in reports for c in report.get("results", {}).get("failed_checks", [])
    ]
    assert not failed, "checkov failed checks:\n" + "\n".join(failed)
    passed = sum(report.get("summary", {}).get("passed", 0) for report in reports)
    assert passed > 100, "checkov scanned suspiciously little"


################################################################################
# storage module: real apply against moto
################################################################################

PREFIX = "redraft-ci"
ACCOUNT = "123456789012"
OIDC_HOST = "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"


def _boto(url: str, service: str, **creds):
    import boto3

    return boto3.client(
        service, endpoint_url=url, region_name="us-east-1",
        aws_access_key_id=creds.get("AccessKeyId", "testing"),
        aws_secret_access_key=creds.get("SecretAccessKey", "testing"),
        aws_session_token=creds.get("SessionToken"),
    )


@pytest.mark.slow
def test_storage_module_applies_against_moto(workspace, moto_server, tmp_path):
    from botocore.exceptions import ClientError

    url = moto_server
    harness = tmp_path / "storage"
    harness.mkdir()
    module = workspace["tree"] / "modules" / "storage"
    (harness / "main.tf").write_text(
        'terraform {\n  required_providers {\n    aws = { source = "hashicorp/aws" }\n  }\n}\n'
        + tfh.moto_provider_block(url, ["s3", "iam", "sts", "kms"])
        + 'resource "aws_iam_openid_connect_provider" "eks" {\n'
        f'  url             = "https://{OIDC_HOST}"\n'
        '  client_id_list  = ["sts.amazonaws.com"]\n'
        '  thumbprint_list = ["9e99a48a9960b14926bb7f3b02e22da2b0ab7280"]\n}\n'
        f'module "storage" {{\n  source            = "{module}"\n  name_prefix       = "{PREFIX}"\n'
        "  oidc_provider_arn = aws_iam_openid_connect_provider.eks.arn\n"
        f'  oidc_issuer_url   = "https://{OIDC_HOST}"\n  force_destroy     = true\n}}\n'
        'output "storage" { value = module.storage }\n'
    )
    tf(workspace, ["init", "-input=false", "-no-color"], harness)
    tf(workspace, ["apply", "-auto-approve", "-input=false", "-no-color"], harness, timeout=900)
    out = json.loads(tf(workspace, ["output", "-json", "storage"], harness).stdout)

    # A second plan is empty: what was applied is what the configuration says.
    plan = subprocess.run([TF, "plan", "-detailed-exitcode", "-input=false", "-no-color"], cwd=harness,
                          env=workspace["env"], capture_output=True, text=True, timeout=600)
    assert plan.returncode == 0, f"plan after apply is not empty:\n{plan.stdout}\n{plan.stderr}"

    s3, iam, kms = _boto(url, "s3"), _boto(url, "iam"), _boto(url, "kms")
    names = {k: f"{PREFIX}-{k}" for k in ("corpus", "outputs", "checkpoints")}
    logs = f"{PREFIX}-access-logs"
    assert out["bucket_names"] == names and out["access_log_bucket_name"] == logs
    assert {b["Name"] for b in s3.list_buckets()["Buckets"]} == set(names.values()) | {logs}
    key_arn = out["kms_key_arn"]
    assert kms.get_key_rotation_status(KeyId=key_arn)["KeyRotationEnabled"] is True

    for role, bucket in [*names.items(), ("logs", logs)]:
        pab = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert all(pab[k] for k in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")), bucket
        assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled", bucket
        ownership = s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"]
        assert ownership == [{"ObjectOwnership": "BucketOwnerEnforced"}], bucket
        (sse,) = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
        if role == "logs":
            assert sse["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        else:
            assert sse["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn}
            assert sse["BucketKeyEnabled"] is True
            logging = s3.get_bucket_logging(Bucket=bucket)["LoggingEnabled"]
            assert logging == {"TargetBucket": logs, "TargetPrefix": f"{role}/"}
        policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
        deny = [s for s in tfh.iter_statements(policy) if s["Effect"] == "Deny"]
        assert deny and deny[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}, bucket
        assert set(tfh.as_list(deny[0]["Resource"])) == {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"}

        rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
        assert all(r["Status"] == "Enabled" for r in rules.values())
        assert any(r.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation") == 7 for r in rules.values()), bucket
        if role != "logs":
            assert any(r.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays") == 30 for r in rules.values()), bucket
    # Bucket-specific lifecycle rules.
    lifecycle = {k: {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=b)["Rules"]} for k, b in names.items()}
    ia = lifecycle["outputs"]["outputs-to-infrequent-access"]
    assert ia["Filter"]["Prefix"] == "outputs/" and ia["Transitions"][0]["StorageClass"] == "STANDARD_IA" and ia["Transitions"][0]["Days"] == 30
    resume = lifecycle["checkpoints"]["expire-job-resume-state"]
    assert resume["Filter"]["Prefix"] == "checkpoints/" and resume["Expiration"]["Days"] == 30
    expiring = [r for r in lifecycle["checkpoints"].values() if "Expiration" in r]
    assert all(r["Filter"].get("Prefix") == "checkpoints/" for r in expiring), "model weights under models/ must never expire"
    assert not any("Expiration" in r for r in lifecycle["corpus"].values()), "the corpus must never expire"
    log_rules = s3.get_bucket_lifecycle_configuration(Bucket=logs)["Rules"]
    assert any(r.get("Expiration", {}).get("Days") == 365 for r in log_rules)
    log_policy = json.loads(s3.get_bucket_policy(Bucket=logs)["Policy"])
    (delivery,) = [s for s in tfh.iter_statements(log_policy) if s["Effect"] == "Allow"]
    assert delivery["Principal"] == {"Service": "logging.s3.amazonaws.com"}
    assert set(tfh.as_list(delivery["Condition"]["ArnLike"]["aws:SourceArn"])) == {f"arn:aws:s3:::{b}" for b in names.values()}

    # IAM roles: trusted only by the cluster's OIDC provider, for one service account each.
    provider_arn = f"arn:aws:iam::{ACCOUNT}:oidc-provider/{OIDC_HOST}"
    bucket_arns = {f"arn:aws:s3:::{b}" for b in names.values()}
    for who in ("job", "serve"):
        role = iam.get_role(RoleName=f"{PREFIX}-ray-{who}")["Role"]
        assert role["Arn"] == out[f"{who}_role_arn"]
        (trust,) = tfh.iter_statements(role["AssumeRolePolicyDocument"])
        assert trust["Principal"] == {"Federated": provider_arn}
        assert trust["Action"] == "sts:AssumeRoleWithWebIdentity"
        assert trust["Condition"]["StringEquals"] == {
            f"{OIDC_HOST}:sub": f"system:serviceaccount:redraft:redraft-{who}",
            f"{OIDC_HOST}:aud": "sts.amazonaws.com",
        }
        (policy_name,) = iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]
        doc = iam.get_role_policy(RoleName=role["RoleName"], PolicyName=policy_name)["PolicyDocument"]
        doc = json.loads(doc) if isinstance(doc, str) else doc
        for st in tfh.iter_statements(doc):
            assert st["Effect"] == "Allow"
            for action in tfh.as_list(st["Action"]):
                assert "*" not in action, f"{who}: wildcard action {action}"
            for resource in tfh.as_list(st["Resource"]):
                assert resource == key_arn or resource in bucket_arns or any(resource.startswith(b + "/") for b in bucket_arns), f"{who}: resource {resource}"
                assert resource == key_arn or not resource.startswith("arn:aws:s3:::") or resource.endswith(("/*", "-corpus", "-outputs", "-checkpoints")), resource
            if any(a.startswith("kms:") for a in tfh.as_list(st["Action"])):
                assert st["Condition"] == {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}
        writes = {r for st in tfh.iter_statements(doc) if "s3:PutObject" in tfh.as_list(st["Action"]) for r in tfh.as_list(st["Resource"])}
        if who == "job":
            assert writes == {f"arn:aws:s3:::{names['outputs']}/outputs/*", f"arn:aws:s3:::{names['checkpoints']}/checkpoints/*"}
        else:
            assert writes == set()

    # Exercise the roles with moto enforcing IAM. moto does not evaluate aws:SecureTransport (it
    # ignores conditions it does not know, which turns the TLS-only Deny into "deny everything"), so
    # the bucket policies, already checked above, are removed first.
    for bucket in names.values():
        s3.delete_bucket_policy(Bucket=bucket)
    s3.put_object(Bucket=names["corpus"], Key="docs/a.jsonl", Body=b"{}\n")
    s3.put_object(Bucket=names["checkpoints"], Key="models/dg/config.json", Body=b"{}")
    s3.put_object(Bucket=names["checkpoints"], Key="checkpoints/run-1/state.json", Body=b"{}")
    sts = _boto(url, "sts")
    creds = {
        who: sts.assume_role_with_web_identity(
            RoleArn=out[f"{who}_role_arn"], RoleSessionName=f"test-{who}", WebIdentityToken="header.payload.signature",
        )["Credentials"]
        for who in ("job", "serve")
    }
    tfh.moto_enforce_iam(url)
    job, serve = _boto(url, "s3", **creds["job"]), _boto(url, "s3", **creds["serve"])

    def allowed(call, **kwargs) -> bool:
        try:
            call(**kwargs)
            return True
        except ClientError as exc:
            assert exc.response["Error"]["Code"] in ("AccessDenied", "403"), exc
            return False

    body = {"Body": b"x"}
    expectations = [
        ("job reads the corpus", True, job.get_object, dict(Bucket=names["corpus"], Key="docs/a.jsonl")),
        ("job lists the corpus", True, job.list_objects_v2, dict(Bucket=names["corpus"])),
        ("job cannot write the corpus", False, job.put_object, dict(Bucket=names["corpus"], Key="docs/b.jsonl", **body)),
        ("job cannot delete from the corpus", False, job.delete_object, dict(Bucket=names["corpus"], Key="docs/a.jsonl")),
        ("job writes outputs/", True, job.put_object, dict(Bucket=names["outputs"], Key="outputs/night-1/part-0.jsonl", **body)),
        ("job cannot write outside outputs/", False, job.put_object, dict(Bucket=names["outputs"], Key="elsewhere/x", **body)),
        ("job writes checkpoints/", True, job.put_object, dict(Bucket=names["checkpoints"], Key="checkpoints/run-2/state.json", **body)),
        ("job reads checkpoints/", True, job.get_object, dict(Bucket=names["checkpoints"], Key="checkpoints/run-1/state.json")),
        ("job reads models/", True, job.get_object, dict(Bucket=names["checkpoints"], Key="models/dg/config.json")),
        ("job cannot write models/", False, job.put_object, dict(Bucket=names["checkpoints"], Key="models/dg/config.json", **body)),
        ("serve reads models/", True, serve.get_object, dict(Bucket=names["checkpoints"], Key="models/dg/config.json")),
        ("serve cannot read checkpoints/", False, serve.get_object, dict(Bucket=names["checkpoints"], Key="checkpoints/run-1/state.json")),
        ("serve cannot read the corpus", False, serve.get_object, dict(Bucket=names["corpus"], Key="docs/a.jsonl")),
        ("serve cannot list the corpus", False, serve.list_objects_v2, dict(Bucket=names["corpus"])),
        ("serve cannot write models/", False, serve.put_object, dict(Bucket=names["checkpoints"], Key="models/x", **body)),
        ("serve cannot write outputs", False, serve.put_object, dict(Bucket=names["outputs"], Key="outputs/x", **body)),
    ]
    wrong = [desc for desc, expected, call, kwargs in expectations if allowed(call, **kwargs) != expected]
    assert not wrong, "IAM behaviour differs from the intended least privilege: " + "; ".join(wrong)


################################################################################
# stacks/aws: plan every example against moto
################################################################################


@pytest.mark.slow
@pytest.mark.parametrize("example", AWS_EXAMPLES, ids=[e.name for e in AWS_EXAMPLES])
def test_aws_stack_plans_with_examples(workspace, moto_server, example, tmp_path):
    stack = tmp_path / "stack"
    shutil.copytree(workspace["tree"], stack / "terraform")
    cwd = stack / "terraform" / "stacks" / "aws"
    (cwd / "moto_override.tf").write_text(
        tfh.moto_provider_block(moto_server, ["ec2", "sts", "iam", "s3", "kms", "eks", "logs", "autoscaling"], region=None)
    )
    tf(workspace, ["init", "-input=false", "-backend=false", "-no-color"], cwd)
    tf(workspace, ["plan", "-input=false", "-lock=false", "-no-color", f"-var-file=examples/{example.name}", "-out=plan.bin"], cwd)
    plan = json.loads(tf(workspace, ["show", "-json", "plan.bin"], cwd).stdout)
    changes = {rc["address"]: rc["change"]["after"] for rc in plan["resource_changes"] if rc["change"]["actions"] == ["create"]}
    values = tfh.parse_hcl(example)

    for name, group in values["gpu_node_groups"].items():
        ng = changes[f'module.eks.aws_eks_node_group.gpu["{name}"]']
        assert ng["capacity_type"] == group.get("capacity_type", "ON_DEMAND")
        assert ng["instance_types"] == group["instance_types"]
        assert ng["scaling_config"][0]["min_size"] == group.get("min_size", 0)
        assert ng["taint"] == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}]
        assert ng["labels"]["redraft.dev/gpu-group"] == name
    assert changes['module.eks.aws_eks_node_group.system']["capacity_type"] == "ON_DEMAND"
    cluster = changes["module.eks.aws_eks_cluster.this"]
    assert cluster["vpc_config"][0]["endpoint_private_access"] is True
    if cluster["vpc_config"][0]["endpoint_public_access"]:
        assert "0.0.0.0/0" not in cluster["vpc_config"][0]["public_access_cidrs"]
    assert sorted(cluster["enabled_cluster_log_types"]) == ["api", "audit", "authenticator", "controllerManager", "scheduler"]
    for who in ("job", "serve"):
        assert f'module.storage.aws_iam_role.ray["{who}"]' in changes
    for bucket in ("corpus", "outputs", "checkpoints"):
        assert changes[f'module.storage.aws_s3_bucket.data["{bucket}"]']["bucket"] == f"{values['bucket_prefix']}-{bucket}"
    creates_vpc = any(a.startswith("module.network[0].") for a in changes)
    assert creates_vpc == ("existing_vpc" not in values)
