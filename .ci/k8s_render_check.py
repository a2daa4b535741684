"""Checks on `kubectl kustomize k8s/` output, and that checkov skips are
documented. Run by .ci/k8s-check.sh with the tools' virtualenv python.

  k8s_render_check.py RENDERED.yaml
      routing follows the elected master: the ConfigMap runs the kubernetes
      coordinator with a pod selector equal to the StatefulSet's, and sets
      no MASTER_ORDINAL; the master Service selects the StatefulSet's pods
      labelled kvstore.io/role=master, kvstore-read every pod of it; clients
      may reach every pod's client port; the StatefulSet's pods (and only
      they) mount the token of the ServiceAccount kvstore, whose Role grants
      exactly the verbs the nodes use; an egress policy lets the pods reach
      the API server. Every object is in namespace kvstore (the Namespace
      aside).
  k8s_render_check.py --skips-documented .checkov.yaml k8s/README.md
      every skipped check id appears in the README with a reason.
  k8s_render_check.py --secret GENERATED.yaml k8s/secret.example.yaml RENDERED.yaml
      k8s/gen-secrets.sh's Secret and the example have the same keys, every
      /etc/kvstore/secrets/<file> the rendered objects name is one of them,
      and `kubectl apply -k` does not apply a Secret (it is made apart).
  k8s_render_check.py --monitoring MONITORING.yaml RENDERED.yaml CORE_OUT RULES_OUT
      `kubectl kustomize k8s/monitoring/` output: a ServiceMonitor, a
      PrometheusRule and the dashboard ConfigMap, in namespace kvstore. No
      schema of these CRDs is installed here, so the ServiceMonitor is
      checked against the fields it may use and against the Services of
      RENDERED.yaml (it must select exactly the headless Service, on a port
      that Service has, with a job label equal to the rules' job="..."); the
      dashboard must be JSON. Writes the core objects to CORE_OUT (for
      kubernetes-validate) and the PrometheusRule's spec, a plain Prometheus
      rule file, to RULES_OUT (for promtool check rules).
"""
import json
import re
import sys

import yaml

ROLE_LABEL = "kvstore.io/role"
# What the nodes call (src/coordinator/kubernetes): no watch, no delete.
ROLE_RULES = {
    ("coordination.k8s.io", "leases"): {"get", "list", "create", "update"},
    ("", "pods"): {"get", "list", "patch"},
}


def fail(msg):
    print(f"k8s_render_check: {msg}", file=sys.stderr)
    sys.exit(1)


def rendered(path):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    kinds = sorted({d["kind"] for d in docs})
    for need in ["Namespace", "ConfigMap", "Service", "StatefulSet", "PodDisruptionBudget",
                 "NetworkPolicy", "CronJob", "PersistentVolumeClaim", "ServiceAccount", "Role",
                 "RoleBinding"]:
        if need not in kinds:
            fail(f"rendered output lacks a {need} (has {kinds})")
    for d in docs:
        if d["kind"] != "Namespace" and d["metadata"].get("namespace") != "kvstore":
            fail(f"{d['kind']}/{d['metadata']['name']} is not in namespace kvstore")
    sts = by[("StatefulSet", "kvstore")]
    pod_labels = sts["spec"]["selector"]["matchLabels"]
    cm = by[("ConfigMap", "kvstore-config")]["data"]
    if "MASTER_ORDINAL" in cm:
        fail("the ConfigMap sets MASTER_ORDINAL: the coordinator elects the master")
    if cm.get("KVSTORE_COORDINATOR") != "kubernetes":
        fail(f"KVSTORE_COORDINATOR is {cm.get('KVSTORE_COORDINATOR')!r}, expected 'kubernetes'")
    selector = dict(p.split("=", 1) for p in cm.get("KVSTORE_KUBE_POD_SELECTOR", "").split(",") if p)
    if selector != pod_labels:
        fail(f"KVSTORE_KUBE_POD_SELECTOR selects {selector}, the StatefulSet {pod_labels}")

    master = by[("Service", "kvstore-master")]["spec"]["selector"]
    if master != {**pod_labels, ROLE_LABEL: "master"}:
        fail(f"kvstore-master selects {master}, expected the StatefulSet's pods labelled {ROLE_LABEL}=master")
    read = by[("Service", "kvstore-read")]["spec"]
    if read["selector"] != pod_labels or read.get("publishNotReadyAddresses"):
        fail(f"kvstore-read must select every ready pod of the StatefulSet ({pod_labels})")
    headless = by[("Service", "kvstore-headless")]["spec"]
    if headless.get("clusterIP") != "None" or headless.get("publishNotReadyAddresses") is not True:
        fail("kvstore-headless must be headless with publishNotReadyAddresses: true")
    clients = by[("NetworkPolicy", "kvstore-clients")]["spec"]
    if clients["podSelector"]["matchLabels"] != pod_labels:
        fail(f"kvstore-clients must admit clients to every kvstore pod, selects {clients['podSelector']}")

    spec = sts["spec"]["template"]["spec"]
    if spec.get("serviceAccountName") != "kvstore" or spec.get("automountServiceAccountToken") is not True:
        fail("the StatefulSet's pods must run as ServiceAccount kvstore with its token mounted")
    for d in docs:
        if d["kind"] in ("CronJob", "Job"):
            job = d["spec"]["jobTemplate"]["spec"] if d["kind"] == "CronJob" else d["spec"]
            if job["template"]["spec"].get("automountServiceAccountToken") is not False:
                fail(f"{d['kind']}/{d['metadata']['name']} must not mount a service account token")
    if by[("ServiceAccount", "kvstore")].get("automountServiceAccountToken") is not False:
        fail("ServiceAccount kvstore must not mount its token by default")
    rules = {}
    for r in by[("Role", "kvstore")]["rules"]:
        for group in r["apiGroups"]:
            for res in r["resources"]:
                rules.setdefault((group, res), set()).update(r["verbs"])
        if r.get("resourceNames"):
            fail("the Role names resources: RBAC cannot name a pod's own objects (docs/SECURITY.md)")
    if rules != ROLE_RULES:
        fail(f"Role kvstore grants {rules}, expected exactly {ROLE_RULES}")
    binding = by[("RoleBinding", "kvstore")]
    if binding["roleRef"]["name"] != "kvstore" or binding["subjects"] != [
            {"kind": "ServiceAccount", "name": "kvstore", "namespace": "kvstore"}]:
        fail("RoleBinding kvstore must bind Role kvstore to ServiceAccount kvstore")
    egress = by[("NetworkPolicy", "kvstore-egress")]["spec"]
    api_ports = {p["port"] for rule in egress["egress"] if any("ipBlock" in t for t in rule["to"])
                 for p in rule["ports"]}
    if egress["podSelector"]["matchLabels"] != pod_labels or not {443, 6443} <= api_ports:
        fail("kvstore-egress must let the kvstore pods reach the API server on 443 and 6443")
    print(f"k8s_render_check: {len(docs)} objects; the master Service follows the "
          f"{ROLE_LABEL} label the elected master sets")


def skips_documented(config, readme):
    skips = yaml.safe_load(open(config)).get("skip-check", [])
    text = open(readme).read()
    missing = [s for s in skips if s not in text]
    if missing:
        fail(f"checkov skips not explained in {readme}: {missing}")
    print(f"k8s_render_check: {len(skips)} checkov skips, each explained in {readme}")


SECRET_KEYS = {"client-token", "admin-token", "readonly-token", "ca.crt", "tls.crt", "tls.key"}


def secret(generated, example, rendered_path):
    gen = yaml.safe_load(open(generated))
    ex = yaml.safe_load(open(example))
    if gen["metadata"]["name"] != "kvstore-secrets" or ex["metadata"]["name"] != "kvstore-secrets":
        fail("the Secret must be named kvstore-secrets")
    if set(gen["data"]) != SECRET_KEYS or set(ex["stringData"]) != SECRET_KEYS:
        fail(f"Secret keys differ: generated {sorted(gen['data'])}, example {sorted(ex['stringData'])}")
    text = open(rendered_path).read()
    docs = [d for d in yaml.safe_load_all(text) if d]
    if any(d["kind"] == "Secret" for d in docs):
        fail("kubectl kustomize k8s/ renders a Secret; it must come from k8s/gen-secrets.sh")
    named = set(re.findall(r"/etc/kvstore/secrets/([A-Za-z0-9._-]+)", text))
    if not named or not named <= SECRET_KEYS:
        fail(f"the manifests name secret files {sorted(named)}, the Secret has {sorted(SECRET_KEYS)}")
    print(f"k8s_render_check: Secret keys match; the manifests use {sorted(named)}")


# The ServiceMonitor fields (monitoring.coreos.com/v1) this deployment may
# use; anything else is a typo the operator would silently drop.
SERVICE_MONITOR_SPEC = {"jobLabel", "namespaceSelector", "selector", "endpoints", "targetLabels",
                        "podTargetLabels", "sampleLimit", "scrapeProtocols"}
SERVICE_MONITOR_ENDPOINT = {"port", "path", "scheme", "interval", "scrapeTimeout", "honorLabels",
                            "relabelings", "metricRelabelings", "params", "tlsConfig"}
RULE_FIELDS = {"alert", "record", "expr", "for", "labels", "annotations", "keep_firing_for"}


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def monitoring(path, rendered_path, core_out, rules_out):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    main = [d for d in yaml.safe_load_all(open(rendered_path)) if d]
    kinds = sorted(d["kind"] for d in docs)
    if kinds != ["ConfigMap", "PrometheusRule", "ServiceMonitor"]:
        fail(f"k8s/monitoring renders {kinds}, expected a ConfigMap, a PrometheusRule and a ServiceMonitor")
    for d in docs:
        if d["metadata"].get("namespace") != "kvstore":
            fail(f"{d['kind']}/{d['metadata']['name']} is not in namespace kvstore")
    by = {d["kind"]: d for d in docs}
    for kind in ["ServiceMonitor", "PrometheusRule"]:
        if by[kind]["apiVersion"] != "monitoring.coreos.com/v1":
            fail(f"{kind} has apiVersion {by[kind]['apiVersion']}")

    sm = by["ServiceMonitor"]["spec"]
    if set(sm) - SERVICE_MONITOR_SPEC:
        fail(f"ServiceMonitor spec has unknown fields {sorted(set(sm) - SERVICE_MONITOR_SPEC)}")
    if "kvstore" not in sm.get("namespaceSelector", {}).get("matchNames", []):
        fail("the ServiceMonitor does not look in namespace kvstore")
    services = [d for d in main if d["kind"] == "Service"]
    chosen = [d for d in services if selects(sm["selector"], d["metadata"].get("labels", {}))]
    if [d["metadata"]["name"] for d in chosen] != ["kvstore-headless"]:
        fail(f"the ServiceMonitor selects {[d['metadata']['name'] for d in chosen]}, expected only "
             "kvstore-headless (every pod, once)")
    headless = chosen[0]
    ports = {p["name"] for p in headless["spec"]["ports"]}
    for ep in sm["endpoints"]:
        if set(ep) - SERVICE_MONITOR_ENDPOINT:
            fail(f"ServiceMonitor endpoint has unknown fields {sorted(set(ep) - SERVICE_MONITOR_ENDPOINT)}")
        if ep.get("port") not in ports:
            fail(f"ServiceMonitor port {ep.get('port')!r} is not a port of kvstore-headless ({sorted(ports)})")
        if ep.get("path", "/metrics") != "/metrics":
            fail(f"ServiceMonitor path {ep['path']!r}: kvstore serves /metrics")
    job = headless["metadata"]["labels"].get(sm.get("jobLabel", ""))
    if not job:
        fail(f"jobLabel {sm.get('jobLabel')!r} is not a label of kvstore-headless")

    spec = by["PrometheusRule"]["spec"]
    if set(spec) != {"groups"}:
        fail(f"PrometheusRule spec has fields {sorted(spec)}, expected only groups")
    for group in spec["groups"]:
        for rule in group["rules"]:
            if set(rule) - RULE_FIELDS:
                fail(f"rule {rule.get('alert')} has unknown fields {sorted(set(rule) - RULE_FIELDS)}")
            for sel_job in re.findall(r'job="([^"]*)"', rule["expr"]):
                if sel_job != job:
                    fail(f"rule {rule.get('alert')} selects job={sel_job!r}, the ServiceMonitor makes job={job!r}")

    cm = by["ConfigMap"]
    if cm["metadata"].get("labels", {}).get("grafana_dashboard") != "1":
        fail("the dashboard ConfigMap lacks the label grafana_dashboard: \"1\"")
    for name, text in cm["data"].items():
        try:
            json.loads(text)
        except ValueError as e:
            fail(f"dashboard {name} is not JSON: {e}")

    yaml.safe_dump_all([cm], open(core_out, "w"))
    yaml.safe_dump(spec, open(rules_out, "w"))
    print(f"k8s_render_check: monitoring: the ServiceMonitor scrapes kvstore-headless as job={job!r}; "
          f"{sum(len(g['rules']) for g in spec['groups'])} rules; dashboard JSON ok")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--skips-documented":
        skips_documented(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 6 and sys.argv[1] == "--monitoring":
        monitoring(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
    elif len(sys.argv) == 5 and sys.argv[1] == "--secret":
        secret(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) == 2:
        rendered(sys.argv[1])
    else:
        fail(__doc__)
