"""Structural checks of the rendered Helm chart and the compose file.

The Kubernetes schemas say a manifest is well-formed; these say it is what
operators need: every service probed, resourced, labelled and disrupted
gracefully, wired to its peers, and the same for docker compose.
"""

import pathlib
import re
import sys

import yaml

SERVICES = ["profile", "scoring", "feedback", "campaign"]
LABELS = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
]
errors = []


def check(condition, message):
    if not condition:
        errors.append(message)


def objects(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def check_rendering(name, docs, expect_services, expect_hpa, expect_job, tls):
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
        labels = d["metadata"].get("labels", {})
        for label in LABELS:
            check(label in labels, f"{name}: {d['kind']}/{d['metadata']['name']} lacks label {label}")
    deployments = by_kind.get("Deployment", {})
    check(
        sorted(n.rsplit("-", 1)[1] for n in deployments) == sorted(expect_services),
        f"{name}: deployments {sorted(deployments)} != {expect_services}",
    )
    for svc in expect_services:
        full = f"patron-{svc}"
        d = deployments.get(full)
        if d is None:
            continue
        pod = d["spec"]["template"]["spec"]
        c = pod["containers"][0]
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"]:
            p = c.get(probe)
            check(p is not None, f"{name}: {full} has no {probe}")
            if p is not None and not tls:
                check("grpc" in p, f"{name}: {full} {probe} is not a native gRPC probe")
            if p is not None and tls:
                check("exec" in p, f"{name}: {full} {probe} must probe itself under mTLS")
        if not tls:
            ready = c["readinessProbe"]["grpc"].get("service", "")
            check(ready.startswith(f"patron.{svc}.v1."), f"{name}: {full} readiness asks for {ready!r}")
        res = c.get("resources", {})
        check("cpu" in res.get("requests", {}) and "memory" in res.get("requests", {}),
              f"{name}: {full} lacks cpu/memory requests")
        check("memory" in res.get("limits", {}), f"{name}: {full} lacks a memory limit")
        check(c["securityContext"].get("readOnlyRootFilesystem") is True, f"{name}: {full} root fs writable")
        check(pod["securityContext"].get("runAsNonRoot") is True, f"{name}: {full} may run as root")
        grace = pod.get("terminationGracePeriodSeconds", 30)
        check(grace > 20, f"{name}: {full} terminationGracePeriodSeconds {grace} <= the drain grace")
        check(c["image"].split(":")[0].endswith(f"patron-{svc}"), f"{name}: {full} image {c['image']}")
        check(full in by_kind.get("Service", {}), f"{name}: no Service for {full}")
        check(full in by_kind.get("PodDisruptionBudget", {}), f"{name}: no PodDisruptionBudget for {full}")
        if svc in expect_hpa:
            check(full in by_kind.get("HorizontalPodAutoscaler", {}), f"{name}: no HPA for {full}")
            check("replicas" not in d["spec"], f"{name}: {full} pins replicas under an HPA")
    config = next(iter(by_kind.get("ConfigMap", {}).values()), {}).get("data", {})
    for svc in expect_services:
        scheme = "https" if tls else "http"
        peer = config.get(f"PATRON_PEERS__{svc.upper()}", "")
        check(peer == f"{scheme}://patron-{svc}:50051", f"{name}: peer URL of {svc} is {peer!r}")
    jobs = by_kind.get("Job", {})
    check(bool(jobs) == expect_job, f"{name}: migration Job present={bool(jobs)}, expected {expect_job}")
    for job in jobs.values():
        hook = job["metadata"].get("annotations", {}).get("helm.sh/hook", "")
        check("pre-install" in hook and "pre-upgrade" in hook, f"{name}: the migration Job is not a pre-install/upgrade hook")
        args = job["spec"]["template"]["spec"]["containers"][0]["args"]
        check(args[:2] == ["migrate", "--services"] and args[2] == ",".join(expect_services),
              f"{name}: migration args {args}")
        check(config.get("PATRON_DATABASE__MIGRATE_ON_START") == "false",
              f"{name}: services would race the Job to migrate")


def check_compose(path):
    compose = yaml.safe_load(path.read_text())
    services = compose["services"]
    for infra in ["postgres", "redis"]:
        check("healthcheck" in services.get(infra, {}), f"compose: {infra} has no health check")
    bins = set(re.findall(r'name = "(patron[\w-]*)"', "".join(
        p.read_text() for p in pathlib.Path("crates").glob("*/Cargo.toml"))))
    for svc in SERVICES:
        s = services.get(svc)
        check(s is not None, f"compose: no {svc} service")
        if s is None:
            continue
        binary = s["build"]["args"]["BIN"]
        check(binary == f"patron-{svc}" and binary in bins, f"compose: {svc} builds {binary!r}")
        check(s["healthcheck"]["test"][-1] == "--probe", f"compose: {svc} health check")
        for dep in ["postgres", "redis"]:
            check(s["depends_on"][dep]["condition"] == "service_healthy", f"compose: {svc} does not wait for {dep}")
        env = s["environment"]
        for peer in SERVICES:
            check(env.get(f"PATRON_PEERS__{peer.upper()}") == f"http://{peer}:50051", f"compose: {svc} peer {peer}")
        check(env["DATABASE_URL"].startswith("postgres://"), f"compose: {svc} DATABASE_URL")
        check("PATRON_AUTH__TOKENS" in env, f"compose: {svc} runs without auth")


rendered = pathlib.Path(sys.argv[1])
check_rendering("default", objects(rendered / "default.yaml"), SERVICES, [], True, tls=False)
check_rendering("full", objects(rendered / "full.yaml"), SERVICES, ["scoring", "campaign"], True, tls=True)
scoring_only = objects(rendered / "scoring-only.yaml")
check_rendering("scoring-only", scoring_only, ["scoring"], [], False, tls=False)
# A service alone still reaches the peers it calls, in other releases.
config = next(d for d in scoring_only if d["kind"] == "ConfigMap")["data"]
for peer in ["profile", "feedback"]:
    check(config.get(f"PATRON_PEERS__{peer.upper()}") == f"http://crm-{peer}:50051",
          f"scoring-only: no external peer URL for {peer}")
check_compose(pathlib.Path(sys.argv[2]))

if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
