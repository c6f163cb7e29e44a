#!/usr/bin/env python3
"""Checks the Helm chart without a helm binary or a cluster (tests/helm.rs runs this).

1. Builds helm/render (Go text/template + sprig, the subset of Helm's engine the chart uses).
2. Renders the chart with its default values and with ci/*-values.yaml.
3. Validates every manifest against the Kubernetes OpenAPI schemas (kubernetes-validate, strict:
   unknown fields are errors); the ServiceMonitor (a CRD) is checked structurally.
4. Checks what the schemas cannot: the pod security settings, probes on the ops port,
   terminationGracePeriodSeconds above the config's drain_timeout, the config checksum
   annotation, one owner per source channel (replicas 1, Recreate), the sink's replicas, and that
   every ${VAR} a config references is a key of the Secret the pods load.
5. Runs `forcebridge check --offline` on every rendered config, with the Secret's values as the
   environment.
6. Self-tests: a channel in two shards, a broken template, an invalid manifest and an invalid
   config value must each be rejected by the step that should catch them.

Usage: check.py --forcebridge PATH_TO_BINARY [--k8s-version 1.31.0]
"""
import argparse
import copy
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile

import kubernetes_validate
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
CHART = os.path.join(HERE, "forcebridge")
FAILURES = []


def fail(case, msg):
    FAILURES.append(f"{case}: {msg}")
    print(f"FAILED {case}: {msg}")


def build_renderer(out_dir):
    gopath = os.pathsep.join(p for p in [os.environ.get("GOPATH"), "/usr/share/gocode"] if p)
    env = dict(os.environ, GO111MODULE="off", GOPATH=gopath)
    binary = os.path.join(out_dir, "render")
    subprocess.run(["go", "build", "-o", binary, "."], cwd=os.path.join(HERE, "render"),
                   env=env, check=True)
    return binary


def render(renderer, chart, values_files):
    cmd = [renderer]
    for f in values_files:
        cmd += ["-f", f]
    cmd.append(chart)
    return subprocess.run(cmd, capture_output=True, text=True)


def validate_schema(doc, version):
    """Returns an error string, or None."""
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        return f"{e.message} at {'/'.join(str(p) for p in e.path)}"
    except Exception as e:  # SchemaNotFoundError, InvalidSchemaError, ...
        return f"{type(e).__name__}: {e}"
    return None


def check_service_monitor(case, sm, services):
    if sm.get("apiVersion") != "monitoring.coreos.com/v1":
        fail(case, f"ServiceMonitor apiVersion {sm.get('apiVersion')}")
    spec = sm.get("spec") or {}
    labels = (spec.get("selector") or {}).get("matchLabels") or {}
    ports = [e.get("port") for e in spec.get("endpoints") or []]
    for svc in services:
        svc_labels = svc["metadata"].get("labels") or {}
        if all(svc_labels.get(k) == v for k, v in labels.items()) and labels:
            svc_ports = {p.get("name") for p in svc["spec"]["ports"]}
            if not ports or not set(ports) <= svc_ports:
                fail(case, f"ServiceMonitor endpoints {ports} are not ports of {svc_ports}")
            if any(e.get("path") != "/metrics" for e in spec["endpoints"]):
                fail(case, "ServiceMonitor path is not /metrics")
            return
    fail(case, f"ServiceMonitor selector {labels} matches no Service")


def parse_duration_s(text):
    m = re.fullmatch(r"(\d+)s", str(text))
    return int(m.group(1)) if m else None


def forcebridge_check(binary, config_text, env, workdir, name):
    path = os.path.join(workdir, f"{name}.yaml")
    with open(path, "w") as f:
        f.write(config_text)
    run_env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME")}
    run_env.update(env)
    return subprocess.run([binary, "check", "--offline", "--config", path],
                          capture_output=True, text=True, env=run_env)


def check_case(case, docs, args, workdir, values):
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "ServiceMonitor":
            continue
        err = validate_schema(doc, args.k8s_version)
        if err:
            fail(case, f"{name}: schema: {err}")
    for sm in by_kind.get("ServiceMonitor", []):
        check_service_monitor(case, sm, by_kind.get("Service", []))

    configmaps = {c["metadata"]["name"]: c for c in by_kind.get("ConfigMap", [])}
    secrets = {s["metadata"]["name"]: s for s in by_kind.get("Secret", [])}
    owners = {}
    deployments = by_kind.get("Deployment", [])
    if not deployments:
        fail(case, "no Deployment rendered")
    for dep in deployments:
        name = dep["metadata"]["name"]
        pod = dep["spec"]["template"]
        spec = pod["spec"]
        (c,) = spec["containers"]
        psc, csc = spec.get("securityContext") or {}, c.get("securityContext") or {}
        if not (psc.get("runAsNonRoot") and csc.get("runAsNonRoot")):
            fail(case, f"{name}: runAsNonRoot not set")
        if csc.get("readOnlyRootFilesystem") is not True or csc.get("allowPrivilegeEscalation") is not False:
            fail(case, f"{name}: readOnlyRootFilesystem/allowPrivilegeEscalation")
        if (csc.get("capabilities") or {}).get("drop") != ["ALL"]:
            fail(case, f"{name}: capabilities not dropped")
        if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            fail(case, f"{name}: seccompProfile")
        # The config file.
        vols = {v["name"]: v for v in spec["volumes"]}
        mount = next(m for m in c["volumeMounts"] if m["name"] == "config")
        if c["args"][-1] != mount["mountPath"]:
            fail(case, f"{name}: --config {c['args'][-1]} is not the mounted {mount['mountPath']}")
        cm = configmaps.get(vols["config"]["configMap"]["name"])
        if cm is None:
            fail(case, f"{name}: its ConfigMap is not rendered")
            continue
        text = cm["data"][mount["subPath"]]
        config = yaml.safe_load(text)
        digest = hashlib.sha256(text.rstrip("\n").encode()).hexdigest()
        if pod["metadata"]["annotations"].get("checksum/config") != digest:
            fail(case, f"{name}: checksum/config is not the sha256 of its config")
        drain = parse_duration_s(config.get("drain_timeout"))
        grace = spec.get("terminationGracePeriodSeconds")
        if drain is None or grace is None or grace < drain + 6:
            fail(case, f"{name}: terminationGracePeriodSeconds {grace} not above drain_timeout "
                       f"{config.get('drain_timeout')} + 5 s exit grace")
        port = next(p["containerPort"] for p in c["ports"] if p["name"] == "metrics")
        if (config.get("ops") or {}).get("listen") != f"0.0.0.0:{port}":
            fail(case, f"{name}: ops.listen {config.get('ops')} is not the metrics port {port}")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = (c.get(probe) or {}).get("httpGet") or {}
            if get.get("path") != path or get.get("port") not in ("metrics", port):
                fail(case, f"{name}: {probe} is not GET {path} on the metrics port")
        # The downward API's variables (the pod's name), with a stand-in value for the check.
        downward = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c.get("env", [])
                    if "fieldRef" in (e.get("valueFrom") or {})}
        # The Secret behind envFrom holds every other variable the config references.
        (ref,) = [e["secretRef"]["name"] for e in c.get("envFrom", [])]
        env = {}
        if ref in secrets:
            env = {k: v for k, v in (secrets[ref].get("stringData") or {}).items()}
            missing = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text)) - set(env) \
                - set(downward)
            if missing:
                fail(case, f"{name}: the config references {sorted(missing)}, not in Secret {ref}")
        elif ref != values.get("secret", {}).get("existingSecret"):
            fail(case, f"{name}: envFrom Secret {ref} is neither rendered nor existingSecret")
        # Dummy values for the rest (existingSecret), never empty.
        for var in re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text):
            env[var] = env.get(var) or f"dummy-{var.lower()}"
        # Workload shape.
        if "source" in config:
            if dep["spec"]["replicas"] != 1 or dep["spec"]["strategy"]["type"] != "Recreate":
                fail(case, f"{name}: a source shard must be 1 replica with the Recreate strategy")
            for ch in config["source"]["channels"]:
                if ch["name"] in owners:
                    fail(case, f"channel {ch['name']} owned by {owners[ch['name']]} and {name}")
                owners[ch["name"]] = name
        if "sink" in config:
            want = (values.get("sink") or {}).get("replicas", 1)
            if dep["spec"]["replicas"] != want:
                fail(case, f"{name}: sink replicas {dep['spec']['replicas']}, values say {want}")
            # Static membership (issue 19, item 7): the group instance id is the pod's name.
            settings = (values.get("sink") or {}).get("settings") or {}
            if (values.get("sink") or {}).get("staticMembership", True) \
                    and "group_instance_id" not in settings:
                gid = config["sink"].get("group_instance_id")
                if gid != "${POD_NAME}" or downward.get("POD_NAME") != "metadata.name":
                    fail(case, f"{name}: sink.group_instance_id {gid!r} is not ${{POD_NAME}} "
                               f"from the pod's metadata.name (env: {downward})")
        r = forcebridge_check(args.forcebridge, text, env, workdir, f"{case}-{name}")
        if r.returncode != 0:
            fail(case, f"{name}: forcebridge check --offline rejected the config: {r.stderr.strip()}")
    want_channels = {ch["name"] for s in values["source"]["shards"] for ch in s["channels"]} \
        if values["source"].get("enabled", True) else set()
    if set(owners) != want_channels:
        fail(case, f"channels with an owner {sorted(owners)} != channels in values {sorted(want_channels)}")
    return by_kind


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--forcebridge", required=True)
    ap.add_argument("--k8s-version", default="1.31.0")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="forcebridge-helm-")
    try:
        renderer = build_renderer(work)
        with open(os.path.join(CHART, "values.yaml")) as f:
            defaults = yaml.safe_load(f)
        cases = [("default", [])]
        ci = os.path.join(CHART, "ci")
        cases += [(f[:-len(".yaml")], [os.path.join(ci, f)]) for f in sorted(os.listdir(ci))
                  if f.endswith("-values.yaml")]
        rendered = {}
        for case, files in cases:
            r = render(renderer, CHART, files)
            if r.returncode != 0:
                fail(case, f"render failed: {r.stderr.strip()}")
                continue
            docs = [d for d in yaml.safe_load_all(r.stdout) if d]
            values = copy.deepcopy(defaults)
            for f in files:
                with open(f) as fh:
                    over = yaml.safe_load(fh) or {}
                for k, v in over.items():
                    if isinstance(v, dict) and isinstance(values.get(k), dict):
                        values[k].update(v)
                    else:
                        values[k] = v
            before = len(FAILURES)
            kinds = check_case(case, docs, args, work, values)
            rendered[case] = docs
            summary = ", ".join(f"{len(v)} {k}" for k, v in sorted(kinds.items()))
            print(f"{'ok' if len(FAILURES) == before else 'FAILED'} {case}: {summary}")

        # Self-tests: each check must be able to fail.
        dup = os.path.join(work, "dup-values.yaml")
        with open(dup, "w") as f:
            yaml.safe_dump({"source": {"shards": [
                {"name": "a", "channels": [{"name": "/data/AccountChangeEvent"}]},
                {"name": "b", "channels": [{"name": "/data/AccountChangeEvent"}]}]}}, f)
        r = render(renderer, CHART, [dup])
        if r.returncode == 0 or "exactly one owner" not in r.stderr:
            fail("self-test", f"a channel in two shards was not refused: {r.stderr.strip()}")
        broken = os.path.join(work, "broken-chart")
        shutil.copytree(CHART, broken)
        with open(os.path.join(broken, "templates", "service.yaml"), "a") as f:
            f.write("\n{{ if .Values.service.type }}\n")
        if render(renderer, broken, []).returncode == 0:
            fail("self-test", "a template with an unclosed {{ if }} rendered")
        dep = copy.deepcopy(next(d for d in rendered["default"] if d["kind"] == "Deployment"))
        dep["spec"]["replicas"] = "two"
        if validate_schema(dep, args.k8s_version) is None:
            fail("self-test", "a Deployment with replicas: \"two\" passed the schema")
        dep = copy.deepcopy(next(d for d in rendered["default"] if d["kind"] == "Deployment"))
        dep["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}
        if validate_schema(dep, args.k8s_version) is None:
            fail("self-test", "a misspelt container field passed the strict schema")
        bad = os.path.join(work, "bad-values.yaml")
        with open(bad, "w") as f:
            yaml.safe_dump({"source": {"settings": {"batch_size": 500}}}, f)
        r = render(renderer, CHART, [bad])
        cm = next(d for d in yaml.safe_load_all(r.stdout) if d and d["kind"] == "ConfigMap")
        r = forcebridge_check(args.forcebridge, cm["data"]["forcebridge.yaml"],
                              {"SF_CLIENT_ID": "x", "SF_CLIENT_SECRET": "y"}, work, "bad")
        if r.returncode == 0 or "batch_size" not in r.stderr:
            fail("self-test", f"source.batch_size 500 was accepted: {r.stdout} {r.stderr}")
        print(f"{'ok' if not any(f.startswith('self-test') for f in FAILURES) else 'FAILED'} "
              "self-tests: duplicate channel owner, broken template, invalid manifest, invalid config")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if FAILURES:
        print(f"{len(FAILURES)} chart check(s) failed", file=sys.stderr)
        sys.exit(1)
    print("chart checks passed")


if __name__ == "__main__":
    main()
