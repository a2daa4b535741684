"""Checks on `kubectl kustomize k8s/` output, and that checkov skips are
documented. Run by .ci/k8s-check.sh with the tools' virtualenv python.

  k8s_render_check.py RENDERED.yaml ORDINAL
      the ConfigMap says MASTER_ORDINAL=ORDINAL, and the master Service and
      the client NetworkPolicy select exactly pod kvstore-ORDINAL; every
      object is in namespace kvstore (the Namespace aside).
  k8s_render_check.py --skips-documented .checkov.yaml k8s/README.md
      every skipped check id appears in the README with a reason.
  k8s_render_check.py --secret GENERATED.yaml k8s/secret.example.yaml RENDERED.yaml
      k8s/gen-secrets.sh's Secret and the example have the same keys, every
      /etc/kvstore/secrets/<file> the rendered objects name is one of them,
      and `kubectl apply -k` does not apply a Secret (it is made apart).
"""
import re
import sys

import yaml

POD_LABEL = "statefulset.kubernetes.io/pod-name"


def fail(msg):
    print(f"k8s_render_check: {msg}", file=sys.stderr)
    sys.exit(1)


def rendered(path, ordinal):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    kinds = sorted({d["kind"] for d in docs})
    for need in ["Namespace", "ConfigMap", "Service", "StatefulSet", "PodDisruptionBudget",
                 "NetworkPolicy", "CronJob", "PersistentVolumeClaim"]:
        if need not in kinds:
            fail(f"rendered output lacks a {need} (has {kinds})")
    for d in docs:
        if d["kind"] != "Namespace" and d["metadata"].get("namespace") != "kvstore":
            fail(f"{d['kind']}/{d['metadata']['name']} is not in namespace kvstore")
    cm = by[("ConfigMap", "kvstore-config")]["data"]
    if cm["MASTER_ORDINAL"] != ordinal:
        fail(f"MASTER_ORDINAL is {cm['MASTER_ORDINAL']!r}, expected {ordinal!r}")
    want = f"kvstore-{ordinal}"
    svc = by[("Service", "kvstore-master")]["spec"]["selector"].get(POD_LABEL)
    if svc != want:
        fail(f"kvstore-master selects {svc!r}, expected {want!r}")
    np = by[("NetworkPolicy", "kvstore-clients-to-master")]["spec"]["podSelector"]["matchLabels"].get(POD_LABEL)
    if np != want:
        fail(f"kvstore-clients-to-master selects {np!r}, expected {want!r}")
    headless = by[("Service", "kvstore-headless")]["spec"]
    if headless.get("clusterIP") != "None" or headless.get("publishNotReadyAddresses") is not True:
        fail("kvstore-headless must be headless with publishNotReadyAddresses: true")
    print(f"k8s_render_check: {len(docs)} objects; master Service and policy follow MASTER_ORDINAL={ordinal}")


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


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--skips-documented":
        skips_documented(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 5 and sys.argv[1] == "--secret":
        secret(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) == 3:
        rendered(sys.argv[1], sys.argv[2])
    else:
        fail(__doc__)
