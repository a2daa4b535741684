"""Turns one container of k8s/statefulset.yaml into `podman run` arguments,
so scripts/image-test.sh runs the image as the StatefulSet would: the
container's command, its environment (the ConfigMap's, through envFrom,
then its own env with $(VAR) references and the pod-name field filled in),
its security context and the pod's (user, group, fsGroup, read-only root
file system, no privilege escalation, dropped capabilities), its resource
limits and its volume mounts. Run with the virtualenv's python (PyYAML).

  image-pod.py opts CONTAINER POD_NAME VOLUME=SOURCE...
      `podman run` options, one per line. Each VOLUME=SOURCE gives the
      podman volume or host directory for a volume of the pod spec
      (data=NAME, secrets=DIR); a mount of a volume not given is an error.
  image-pod.py cmd CONTAINER
      the container's command after its first word (the first word is the
      --entrypoint in opts), one per line.
  image-pod.py grace
      the pod's terminationGracePeriodSeconds.

Secret volumes become read-only bind mounts: image-test.sh gives their
files the Secret's mode and the pod's fsGroup, as the kubelet does.
"""
import re
import sys

import yaml

STATEFULSET = "k8s/statefulset.yaml"
CONFIGMAP = "k8s/configmap.yaml"


def fail(msg):
    print(f"image-pod: {msg}", file=sys.stderr)
    sys.exit(1)


def load(path, kind):
    docs = [d for d in yaml.safe_load_all(open(path)) if d and d.get("kind") == kind]
    if len(docs) != 1:
        fail(f"{path}: expected one {kind}, found {len(docs)}")
    return docs[0]


def pod_spec():
    return load(STATEFULSET, "StatefulSet")["spec"]["template"]["spec"]


def container(spec, name):
    for c in spec.get("initContainers", []) + spec["containers"]:
        if c["name"] == name:
            return c
    fail(f"{STATEFULSET}: no container {name}")


def environment(c, pod_name):
    """The container's environment in Kubernetes' order: envFrom, then env,
    where $(VAR) names a variable defined before it."""
    env = {}
    for src in c.get("envFrom", []):
        ref = src.get("configMapRef")
        if not ref:
            fail(f"envFrom {src}: only configMapRef is supported")
        cm = load(CONFIGMAP, "ConfigMap")
        if cm["metadata"]["name"] != ref["name"]:
            fail(f"{CONFIGMAP} holds {cm['metadata']['name']}, not {ref['name']}")
        env.update({k: str(v) for k, v in cm["data"].items()})
    for var in c.get("env", []):
        if "value" in var:
            value = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), var["value"])
        else:
            field = var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            if field != "metadata.name":
                fail(f"env {var['name']}: only fieldRef metadata.name is supported")
            value = pod_name
        env[var["name"]] = value
    return env


def memory(quantity):
    units = {"Ki": "k", "Mi": "m", "Gi": "g"}
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi)", quantity)
    if not m:
        fail(f"memory limit {quantity}: expected a number with Ki, Mi or Gi")
    return m[1] + units[m[2]]


def cpus(quantity):
    q = str(quantity)
    return str(int(q[:-1]) / 1000) if q.endswith("m") else q


def opts(spec, c, pod_name, sources):
    pod_sc = spec.get("securityContext", {})
    sc = {**pod_sc, **c.get("securityContext", {})}
    out = [f"--user={sc['runAsUser']}:{sc['runAsGroup']}"]
    if "fsGroup" in pod_sc:
        out.append(f"--group-add={pod_sc['fsGroup']}")
    if sc.get("readOnlyRootFilesystem"):
        # Kubernetes adds no tmpfs at /tmp or /run; podman would.
        out += ["--read-only", "--read-only-tmpfs=false"]
    if sc.get("allowPrivilegeEscalation") is False:
        out.append("--security-opt=no-new-privileges")
    for cap in sc.get("capabilities", {}).get("drop", []):
        out.append(f"--cap-drop={cap}")
    limits = c.get("resources", {}).get("limits", {})
    if "memory" in limits:
        out.append(f"--memory={memory(limits['memory'])}")
    if "cpu" in limits:
        out.append(f"--cpus={cpus(limits['cpu'])}")
    for k, v in environment(c, pod_name).items():
        out.append(f"--env={k}={v}")
    for m in c.get("volumeMounts", []):
        if m["name"] not in sources:
            fail(f"container {c['name']} mounts volume {m['name']}: pass {m['name']}=SOURCE")
        ro = ":ro" if m.get("readOnly") else ""
        out.append(f"--volume={sources[m['name']]}:{m['mountPath']}{ro}")
    out.append(f"--entrypoint={c['command'][0]}")
    return out


def main(argv):
    if len(argv) >= 4 and argv[0] == "opts":
        spec = pod_spec()
        sources = dict(a.split("=", 1) for a in argv[3:])
        print("\n".join(opts(spec, container(spec, argv[1]), argv[2], sources)))
    elif len(argv) == 2 and argv[0] == "cmd":
        print("\n".join(container(pod_spec(), argv[1])["command"][1:]))
    elif argv == ["grace"]:
        print(pod_spec()["terminationGracePeriodSeconds"])
    else:
        fail("usage: image-pod.py opts CONTAINER POD_NAME VOLUME=SOURCE... | cmd CONTAINER | grace")


if __name__ == "__main__":
    main(sys.argv[1:])
