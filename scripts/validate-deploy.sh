#!/usr/bin/env bash
# Validates the deployment files without a Docker engine or a cluster:
#
#   compose     docker-compose.yml parses (no duplicate keys), matches the Compose
#               specification's JSON schema before and after interpolation with
#               .env.example, publishes host ports on 127.0.0.1 by default, keeps
#               the worker scalable, and every file it mounts or builds exists
#   env         every variable docker-compose.yml uses is in .env.example, each
#               .env.example variable is documented by a comment, none is unused
#   dockerfiles each deploy/docker/*.Dockerfile builds a package and binary the
#               Cargo workspace has (cargo metadata --no-deps), runs it as a
#               non-root user and has a HEALTHCHECK
#   k8s         deploy/k8s manifests validate against the Kubernetes schemas
#               (strict), and the observer's RBAC and settings name the worker
#               Deployment
#   kumori      every kumori/*.cue file passes `cue fmt --check`, kmodule.cue
#               evaluates and its artifacts exist, and every JOBQ_* key used by
#               compose, Kubernetes and Kumori is documented in docs/deploy.md
#   sandbox     every deployment grants the job sandbox exactly what it needs: the
#               worker image installs bubblewrap; compose and Kubernetes keep
#               no-new-privileges / no privilege escalation and drop every capability,
#               relax only seccomp, AppArmor and /proc masking (each with a comment
#               saying why), run the worker unprivileged and never privileged; Kumori
#               passes JOBQ_WORKER__SANDBOX
#   monitoring  the Prometheus config and the Grafana dashboard parse and the
#               dashboard uses only jobq metric names
#
# Tools are installed on first use and cached under ${JOBQ_CACHE:-~/.cache/jobq}:
# a Python venv (jsonschema, PyYAML, check-jsonschema for the Compose schema it
# ships, kubernetes-validate for the Kubernetes schemas) and the cue binary (Go
# module proxy). Exits non-zero when any check fails.
#
#   scripts/validate-deploy.sh              validate the repository
#   scripts/validate-deploy.sh --self-test  break each file in a scratch copy and
#                                           show that its check fails
# JOBQ_VALIDATE_ROOT=<dir> validates another tree (used by --self-test).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT="${JOBQ_VALIDATE_ROOT:-$REPO}"
CACHE="${JOBQ_CACHE:-$HOME/.cache/jobq}"
VENV="$CACHE/venv-validate"
CUE_VERSION="v0.17.1"
CUE="$CACHE/bin/cue-$CUE_VERSION"
K8S_VERSION="${JOBQ_K8S_VERSION:-1.34.0}"
PY_REQUIREMENTS=(jsonschema==4.26.0 PyYAML==6.0.3 check-jsonschema==0.39.0 kubernetes-validate==1.37.0)

log() { printf '%s\n' "$*" >&2; }

install_tools() {
  local stamp="$VENV/.jobq-requirements" want="${PY_REQUIREMENTS[*]}"
  if [[ ! -x "$VENV/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    log "installing Python validators into $VENV: $want"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_REQUIREMENTS[@]}"
    printf '%s' "$want" > "$stamp"
  fi
  if [[ ! -x "$CUE" ]]; then
    command -v go > /dev/null || { log "go is needed to install cue $CUE_VERSION"; exit 1; }
    log "installing cue $CUE_VERSION into $CACHE/bin"
    mkdir -p "$CACHE/bin"
    local gobin
    gobin="$(mktemp -d)"
    GOBIN="$gobin" GOFLAGS=-mod=mod go install "cuelang.org/go/cmd/cue@$CUE_VERSION"
    mv "$gobin/cue" "$CUE"
    rm -rf "$gobin"
  fi
}

self_test() {
  local scratch failures=0
  scratch="$(mktemp -d)"
  trap 'rm -rf "$scratch"' RETURN
  # check name | file to break | python that breaks it (gets the path as argv[1])
  local cases=(
    "compose|docker-compose.yml|p=sys.argv[1]; s=open(p).read(); open(p,'w').write(s.replace('condition: service_healthy','condition: service_happy',1))"
    "compose|docker-compose.yml|p=sys.argv[1]; s=open(p).read(); open(p,'w').write(s.replace('\${JOBQ_BIND_ADDR:-127.0.0.1}:\${FRONTEND_HOST_PORT:-8080}:8080','\${FRONTEND_HOST_PORT:-8080}:8080'))"
    "env|.env.example|p=sys.argv[1]; s=open(p).read(); open(p,'w').write(s.replace('JOBQ_S3__BUCKET=jobq\n',''))"
    "env|.env.example|p=sys.argv[1]; s=open(p).read(); open(p,'w').write(s.replace('# Host port of MongoDB.\n',''))"
    "dockerfiles|deploy/docker/worker.Dockerfile|p=sys.argv[1]; s=open(p).read(); open(p,'w').write(s.replace('--bin jobq-worker','--bin jobq-wroker'))"
    "dockerfiles|deploy/docker/frontend.Dockerfile|p=sys.argv[1]; s=open(p).read(); open(p,'w').write(s.replace('USER 10001:10001','USER root'))"
    "k8s|deploy/k8s/worker.yaml|p=sys.argv[1]; s=open(p).read(); open(p,'w').write(s.replace('containerPort: 9464','containerPort: \"nine\"',1))"
    "k8s|deploy/k8s/observer.yaml|p=sys.argv[1]; s=open(p).read(); open(p,'w').write(s.replace('resources: [\"deployments/scale\"]','resources: [\"deployments\"]'))"
    "kumori|kumori/service/service_artifact.cue|p=sys.argv[1]; s=open(p).read(); open(p,'w').write(s.replace('connect: {','connect: {{',1))"
    "kumori|kumori/worker/component_artifact.cue|p=sys.argv[1]; s=open(p).read(); open(p,'w').write(s.replace('JOBQ_WORKER__LEASE_SECS: value:','JOBQ_WORKER__LEASE_SECZ: value:'))"
    "sandbox|docker-compose.yml|p=sys.argv[1]; s=open(p).read(); open(p,'w').write(s.replace('      - systempaths=unconfined\n','',1))"
    "sandbox|deploy/k8s/worker.yaml|p=sys.argv[1]; s=open(p).read(); open(p,'w').write(s.replace('procMount: Unmasked','procMount: Default',1))"
    "sandbox|deploy/docker/worker.Dockerfile|p=sys.argv[1]; s=open(p).read(); open(p,'w').write(s.replace(' bubblewrap \\\\',' \\\\',1))"
    "monitoring|deploy/grafana/dashboards/jobq.json|p=sys.argv[1]; s=open(p).read(); open(p,'w').write(s.replace('jobq_queue_depth','jobq_queue_dept',1))"
  )
  local entry check file code baseline
  # A breakage proves something only if the unbroken tree passes that check.
  mkdir -p "$scratch/tree"
  (cd "$REPO" && tar -cf - --exclude=./target --exclude=./.git .) | tar -xf - -C "$scratch/tree"
  JOBQ_VALIDATE_ROOT="$scratch/tree" "$0" > "$scratch/baseline" 2>&1 || true
  for entry in "${cases[@]}"; do
    IFS='|' read -r check file code <<< "$entry"
    if ! grep -q "^ok   $check:" "$scratch/baseline"; then
      log "self-test FAIL: check '$check' already fails on the unbroken tree, so breaking $file proves nothing"
      failures=$((failures + 1))
      continue
    fi
    rm -rf "$scratch/tree"
    mkdir -p "$scratch/tree"
    (cd "$REPO" && tar -cf - --exclude=./target --exclude=./.git .) | tar -xf - -C "$scratch/tree"
    before="$(sha256sum "$scratch/tree/$file")"
    "$VENV/bin/python" -c "import sys; $code" "$scratch/tree/$file"
    if [[ "$(sha256sum "$scratch/tree/$file")" == "$before" ]]; then
      log "self-test: the breakage for $file changed nothing (update the self-test)"
      failures=$((failures + 1))
      continue
    fi
    if JOBQ_VALIDATE_ROOT="$scratch/tree" JOBQ_VALIDATE_ONLY="$check" "$0" > "$scratch/out" 2>&1; then
      log "self-test FAIL: check '$check' passed with a broken $file"
      failures=$((failures + 1))
    else
      log "self-test ok:   check '$check' caught a broken $file: $(grep -m1 '^     - ' "$scratch/out" | sed 's/^ *- //' | cut -c1-170)"
    fi
  done
  if (( failures > 0 )); then
    log "self-test: $failures breakage(s) not caught"
    return 1
  fi
  log "self-test: every breakage was caught"
}

install_tools
if [[ "${1:-}" == "--self-test" ]]; then
  self_test
  exit $?
fi

# Package metadata of the workspace, for the Dockerfile check (no build, no network).
METADATA="$(mktemp)"
trap 'rm -f "$METADATA"' EXIT
if ! (cd "$ROOT" && cargo metadata --no-deps --format-version 1 --offline > "$METADATA" 2> "$METADATA.err"); then
  log "cargo metadata failed: $(cat "$METADATA.err")"
  echo '{}' > "$METADATA"
fi
rm -f "$METADATA.err"

export ROOT METADATA CUE K8S_VERSION VENV
exec "$VENV/bin/python" - "${JOBQ_VALIDATE_ONLY:-}" <<'PY'
import glob
import json
import os
import re
import subprocess
import sys

import jsonschema
import yaml

ROOT = os.environ["ROOT"]
ONLY = sys.argv[1] if len(sys.argv) > 1 else ""
results = []


def path(*parts):
    return os.path.join(ROOT, *parts)


def rel(p):
    return os.path.relpath(p, ROOT)


class UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that rejects duplicate mapping keys (PyYAML keeps the last one)."""


def _mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_yaml(p):
    with open(p) as f:
        return yaml.load(f, Loader=UniqueKeyLoader)


# ------------------------------------------------------------ interpolation
VAR_RE = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])((?:[^{}]|\{[^{}]*\})*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def variables_in(text):
    """Names a compose string interpolates ($$ is an escaped dollar)."""
    names = set()
    for m in VAR_RE.finditer(text):
        if m.group(0) == "$$":
            continue
        names.add(m.group(1) or m.group(4))
        if m.group(3):
            names |= variables_in(m.group(3))
    return names


def interpolate(text, env, where):
    def sub(m):
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3) or ""
        value = env.get(name)
        if op in (":-", "-"):
            if value is None or (op == ":-" and value == ""):
                return interpolate(arg, env, where)
            return value
        if op in (":?", "?"):
            if value is None or (op == ":?" and value == ""):
                raise ValueError(f"{where}: required variable {name} is unset ({arg})")
            return value
        if op in (":+", "+"):
            return interpolate(arg, env, where) if value else ""
        if value is None:
            raise ValueError(f"{where}: variable {name} is unset and has no default")
        return value

    return VAR_RE.sub(sub, text)


def interpolate_tree(node, env, where="docker-compose.yml"):
    if isinstance(node, dict):
        return {k: interpolate_tree(v, env, f"{where}.{k}") for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(v, env, f"{where}[{i}]") for i, v in enumerate(node)]
    if isinstance(node, str):
        return interpolate(node, env, where)
    return node


def strings_in(node):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from strings_in(k)
            yield from strings_in(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings_in(v)
    elif isinstance(node, str):
        yield node


def parse_env_example():
    """Entries of .env.example as (name, value, comment lines above it, line number)."""
    entries, comments = [], []
    with open(path(".env.example")) as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if line.startswith("#"):
                comments.append(line)
                continue
            if not line.strip():
                comments = []
                continue
            m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
            if not m:
                raise ValueError(f".env.example:{number}: not NAME=value: {line!r}")
            entries.append((m.group(1), m.group(2), comments, number))
            comments = []
    return entries


def env_example_values():
    values = {}
    for name, raw, _, number in parse_env_example():
        values[name] = interpolate(raw, values, f".env.example:{number}")
    return values


# ------------------------------------------------------------------- checks
def check_compose():
    problems = []
    compose_file = path("docker-compose.yml")
    try:
        raw = load_yaml(compose_file)
    except yaml.YAMLError as e:
        return [f"docker-compose.yml does not parse: {e}"]
    schema_file = os.path.join(
        os.path.dirname(__import__("check_jsonschema").__file__),
        "builtin_schemas", "vendor", "compose-spec.json")
    with open(schema_file) as f:
        schema = json.load(f)
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)

    def schema_errors(doc, label):
        out = []
        for err in sorted(validator_cls(schema).iter_errors(doc), key=lambda e: list(e.absolute_path)):
            loc = "/".join(str(p) for p in err.absolute_path) or "(root)"
            out.append(f"{label} at {loc}: {err.message[:200]}")
        return out

    problems += schema_errors(raw, "compose schema (as written)")
    try:
        doc = interpolate_tree(raw, env_example_values())
    except ValueError as e:
        return problems + [f"interpolation with .env.example: {e}"]
    problems += schema_errors(doc, "compose schema (interpolated with .env.example)")
    if problems:
        return problems

    # The Compose CLI's own loader, where the plugin is installed (no engine needed).
    try:
        has_compose = subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    except FileNotFoundError:
        has_compose = False
    if has_compose:
        run = subprocess.run(["docker", "compose", "--env-file", path(".env.example"), "-f", compose_file,
                              "config", "--quiet"], capture_output=True, text=True, cwd=ROOT)
        if run.returncode != 0:
            problems.append(f"docker compose config: {run.stderr.strip()}")
    else:
        print("     (docker compose config skipped: no Compose CLI plugin here)")

    services = doc.get("services", {})
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        for dep in (deps if isinstance(deps, (list, dict)) else []):
            if dep not in services:
                problems.append(f"service {name} depends on unknown service {dep}")
        for port in svc.get("ports", []):
            text = port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port.get('published', '')}:{port.get('target')}"
            if not str(text).startswith("127.0.0.1:"):
                problems.append(f"service {name} publishes {text!r}, not on 127.0.0.1 by default")
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith("./") and not os.path.exists(path(source)):
                problems.append(f"service {name} mounts {source}, which does not exist")
        build = svc.get("build")
        if isinstance(build, dict):
            dockerfile = os.path.join(build.get("context", "."), build.get("dockerfile", "Dockerfile"))
            if not os.path.isfile(path(dockerfile)):
                problems.append(f"service {name} builds from {dockerfile}, which does not exist")
    for name in ("frontend", "worker", "observer", "kafka", "kafka-init", "mongo", "minio",
                 "minio-init", "keycloak", "keycloak-db", "prometheus", "grafana"):
        if name not in services:
            problems.append(f"service {name} is missing")
    worker = services.get("worker", {})
    for key in ("container_name", "ports"):
        if key in worker:
            problems.append(f"worker has {key}, so `--scale worker=N` would collide")
    for name in ("prometheus", "grafana"):
        if "monitoring" not in services.get(name, {}).get("profiles", []):
            problems.append(f"{name} is not in the monitoring profile")
    for name in ("frontend", "worker", "observer"):
        conditions = services.get(name, {}).get("depends_on", {})
        if not isinstance(conditions, dict) or not any(
                c.get("condition") == "service_healthy" for c in conditions.values()):
            problems.append(f"{name} waits for no dependency to be healthy")
    return problems


def check_env():
    problems = []
    entries = parse_env_example()
    names = [e[0] for e in entries]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f".env.example defines {name} more than once")
    for name, _, comments, number in entries:
        if not any(c.strip("# ").strip() for c in comments):
            problems.append(f".env.example:{number}: {name} has no comment above it")
    with open(path("docker-compose.yml")) as f:
        raw = yaml.safe_load(f)
    used = set()
    for s in strings_in(raw):
        used |= variables_in(s)
    for name in sorted(used - set(names)):
        problems.append(f"docker-compose.yml uses ${{{name}}}, which .env.example does not define")
    referenced = set(used)
    for _, value, _, _ in entries:
        referenced |= variables_in(value)
    for name in sorted(set(names) - referenced):
        problems.append(f".env.example defines {name}, which docker-compose.yml never uses")
    return problems


def check_dockerfiles():
    problems = []
    with open(os.environ["METADATA"]) as f:
        metadata = json.load(f)
    packages = {p["name"]: p for p in metadata.get("packages", [])}
    if not packages:
        return ["cargo metadata listed no workspace packages"]
    bins = {name: {t["name"] for t in p["targets"] if "bin" in t["kind"]} for name, p in packages.items()}
    dockerfiles = sorted(glob.glob(path("deploy", "docker", "*.Dockerfile")))
    if not dockerfiles:
        return ["no deploy/docker/*.Dockerfile"]
    for df in dockerfiles:
        text = open(df).read()
        # Join continued lines so a RUN spanning lines is one instruction.
        joined = re.sub(r"\\\n", " ", text)
        builds = [l for l in joined.splitlines() if "cargo build" in l and not l.lstrip().startswith("#")]
        if not builds:
            problems.append(f"{rel(df)}: no cargo build")
        built = []
        for line in builds:
            pkgs = re.findall(r"(?:-p|--package)[ =]([A-Za-z0-9_-]+)", line)
            wanted = re.findall(r"--bin[ =]([A-Za-z0-9_-]+)", line)
            if not pkgs or not wanted:
                problems.append(f"{rel(df)}: cargo build names no -p PACKAGE and --bin BINARY")
            if "--locked" not in line:
                problems.append(f"{rel(df)}: cargo build without --locked")
            for pkg in pkgs:
                if pkg not in packages:
                    problems.append(f"{rel(df)}: package {pkg} is not in the workspace ({', '.join(sorted(packages))})")
                    continue
                for b in wanted:
                    if b not in bins[pkg]:
                        have = ", ".join(sorted(bins[pkg])) or "none"
                        problems.append(f"{rel(df)}: package {pkg} has no binary {b} (binaries: {have})")
            built.extend(wanted)
        # The ENTRYPOINT runs one of the binaries built; any other (the worker's job shim)
        # is copied into the final image.
        started = [b for b in built if re.search(rf"ENTRYPOINT .*{re.escape(b)}\"", text)]
        if built and not started:
            problems.append(f"{rel(df)}: ENTRYPOINT runs none of {', '.join(built)}")
        copies = " ".join(re.findall(r"^COPY --from=\S+ (.*)$", text, re.M))
        for b in built:
            if b not in started and not re.search(rf"/{re.escape(b)}\b", copies):
                problems.append(f"{rel(df)}: {b} is built but not copied into the image")
        users = re.findall(r"^USER\s+(\S+)", text, re.M)
        if not users or users[-1].split(":")[0] in ("root", "0"):
            problems.append(f"{rel(df)}: the final image runs as root (USER {users[-1] if users else 'missing'})")
        if not re.search(r"^HEALTHCHECK\s", text, re.M):
            problems.append(f"{rel(df)}: no HEALTHCHECK")
        if len(re.findall(r"^FROM\s", text, re.M)) < 2:
            problems.append(f"{rel(df)}: not a multi-stage build")
    return problems


def check_k8s():
    problems = []
    k8s_dir = path("deploy", "k8s")
    files = sorted(f for f in glob.glob(os.path.join(k8s_dir, "*.yaml")) if not f.endswith("kustomization.yaml"))
    if not files:
        return ["no manifests in deploy/k8s"]
    venv_bin = os.path.join(os.environ["VENV"], "bin")
    run = subprocess.run(
        [os.path.join(venv_bin, "kubernetes-validate"), "--strict", "--quiet", "-k", os.environ["K8S_VERSION"], *files],
        capture_output=True, text=True)
    if run.returncode != 0:
        problems += [f"kubernetes-validate: {l}" for l in (run.stdout + run.stderr).splitlines() if l.strip()]
    docs = []
    for f in files:
        with open(f) as fh:
            docs += [d for d in yaml.load_all(fh, Loader=UniqueKeyLoader) if d]
    kust = load_yaml(os.path.join(k8s_dir, "kustomization.yaml"))
    listed = set(kust.get("resources", []))
    for f in files:
        if os.path.basename(f) not in listed:
            problems.append(f"kustomization.yaml does not list {os.path.basename(f)}")
    for r in sorted(listed):
        if not os.path.isfile(os.path.join(k8s_dir, r)):
            problems.append(f"kustomization.yaml lists missing {r}")
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    config = {}
    for cm in by_kind.get("ConfigMap", []):
        config.update(cm.get("data", {}))
    worker_name = config.get("JOBQ_OBSERVER__K8S_DEPLOYMENT", "jobq-worker")
    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    for name in ("jobq-frontend", "jobq-worker", "jobq-observer"):
        if name not in deployments:
            problems.append(f"no Deployment {name}")
    if worker_name not in deployments:
        problems.append(f"JOBQ_OBSERVER__K8S_DEPLOYMENT={worker_name} names no Deployment")
    can_scale = any(
        "deployments/scale" in rule.get("resources", []) and "patch" in rule.get("verbs", [])
        and worker_name in rule.get("resourceNames", [worker_name])
        for role in by_kind.get("Role", []) for rule in role.get("rules", []))
    if not can_scale:
        problems.append(f"no Role lets the observer patch deployments/scale of {worker_name}")
    observer = deployments.get("jobq-observer", {})
    sa = observer.get("spec", {}).get("template", {}).get("spec", {}).get("serviceAccountName")
    bound = any(s.get("name") == sa for rb in by_kind.get("RoleBinding", []) for s in rb.get("subjects", []))
    if not sa or not bound:
        problems.append("the observer Deployment's service account is not bound to a Role")
    return problems


def documented_keys():
    """JOBQ_* keys in the configuration table of docs/deploy.md."""
    p = path("docs", "deploy.md")
    if not os.path.isfile(p):
        return None
    return set(re.findall(r"^\|\s*`(JOBQ_[A-Z0-9_]+)`", open(p).read(), re.M))


def check_kumori():
    problems = []
    cue = os.environ["CUE"]
    files = sorted(glob.glob(path("kumori", "**", "*.cue"), recursive=True))
    if not files:
        return ["no .cue files in kumori/"]
    run = subprocess.run([cue, "fmt", "--check", *files], capture_output=True, text=True, cwd=ROOT)
    if run.returncode != 0:
        out = (run.stdout + run.stderr).strip()
        problems.append(f"cue fmt --check: {out or 'failed'}")
    run = subprocess.run([cue, "export", "--out", "json", path("kumori", "kmodule.cue")],
                         capture_output=True, text=True)
    if run.returncode != 0:
        problems.append(f"cue export kmodule.cue: {run.stderr.strip()}")
    else:
        module = json.loads(run.stdout)
        for name, kind in module.get("artifacts", {}).items():
            artifact = path("kumori", name, f"{kind}_artifact.cue")
            if not os.path.isfile(artifact):
                problems.append(f"kmodule.cue lists {kind} {name}, but {rel(artifact)} does not exist")
        for d in sorted(os.listdir(path("kumori"))):
            if os.path.isfile(path("kumori", d, "component_artifact.cue")) and d not in module.get("artifacts", {}):
                problems.append(f"kumori/{d} is not listed in kmodule.cue's artifacts")
    keys = documented_keys()
    if keys is None:
        return problems + ["docs/deploy.md is missing"]
    sources = {f: open(f).read() for f in files}
    sources[path("docker-compose.yml")] = open(path("docker-compose.yml")).read()
    for f in glob.glob(path("deploy", "k8s", "*.yaml")):
        sources[f] = open(f).read()
    for f, text in sources.items():
        for key in sorted(set(re.findall(r"\b(JOBQ_[A-Z0-9]+__[A-Z0-9_]+|JOBQ_LOG_FORMAT)\b", text))):
            if key not in keys:
                problems.append(f"{rel(f)} uses {key}, which the configuration table in docs/deploy.md does not list")
    return problems


def check_sandbox():
    problems = []
    df = open(path("deploy", "docker", "worker.Dockerfile")).read()
    if not re.search(r"apt-get install[^\n]*\bbubblewrap\b", re.sub(r"\\\n", " ", df)):
        problems.append("deploy/docker/worker.Dockerfile does not install bubblewrap")
    raw = open(path("docker-compose.yml")).read()
    worker = load_yaml(path("docker-compose.yml")).get("services", {}).get("worker", {})
    opts = worker.get("security_opt", [])
    for needed in ("no-new-privileges:true", "seccomp=unconfined", "apparmor=unconfined",
                   "systempaths=unconfined"):
        if needed not in opts:
            problems.append(f"compose worker lacks security_opt {needed}")
            continue
        lines = raw.splitlines()
        at = next(i for i, l in enumerate(lines) if l.strip() == f"- {needed}" and i > raw[:raw.find("  worker:")].count("\n"))
        if not lines[at - 1].strip().startswith("#"):
            problems.append(f"compose worker: security_opt {needed} has no comment saying why")
    if worker.get("privileged") or worker.get("cap_add"):
        problems.append("compose worker is privileged or adds capabilities; the sandbox needs neither")
    for f in glob.glob(path("deploy", "k8s", "worker.yaml")):
        docs = [d for d in yaml.safe_load_all(open(f)) if d and d.get("kind") == "Deployment"]
        for d in docs:
            pod = d["spec"]["template"]["spec"]
            if pod.get("hostUsers") is not False:
                problems.append("k8s worker: hostUsers is not false (needed for procMount: Unmasked)")
            for c in pod.get("containers", []):
                sc = c.get("securityContext", {})
                if sc.get("privileged"):
                    problems.append("k8s worker container is privileged")
                if sc.get("allowPrivilegeEscalation") is not False:
                    problems.append("k8s worker container allows privilege escalation")
                if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                    problems.append("k8s worker container keeps capabilities")
                if sc.get("procMount") != "Unmasked":
                    problems.append("k8s worker container: procMount is not Unmasked")
                if sc.get("seccompProfile", {}).get("type") not in ("Unconfined", "Localhost"):
                    problems.append("k8s worker container: seccomp profile refuses user namespaces")
    cue = open(path("kumori", "worker", "component_artifact.cue")).read()
    if "JOBQ_WORKER__SANDBOX: value:" not in cue:
        problems.append("kumori worker does not pass JOBQ_WORKER__SANDBOX")
    return problems


def check_monitoring():
    problems = []
    prom = load_yaml(path("deploy", "prometheus", "prometheus.yml"))
    jobs = {c.get("job_name") for c in prom.get("scrape_configs", [])}
    for job in ("jobq-frontend", "jobq-observer", "jobq-worker"):
        if job not in jobs:
            problems.append(f"prometheus.yml has no scrape job {job}")
    for f in glob.glob(path("deploy", "grafana", "provisioning", "**", "*.yml"), recursive=True):
        load_yaml(f)
    known = {"jobq_observation_arrival_rate", "jobq_observation_service_rate", "jobq_observation_finish_rate",
             "jobq_observation_response_time_seconds", "jobq_queue_depth", "jobq_workers", "jobq_busy_slots",
             "jobq_queue_wait_p50_seconds", "jobq_queue_wait_p95_seconds", "jobq_desired_workers"}
    dashboards = glob.glob(path("deploy", "grafana", "dashboards", "*.json"))
    if not dashboards:
        problems.append("no Grafana dashboard in deploy/grafana/dashboards")
    for f in dashboards:
        dash = json.load(open(f))
        exprs = [t.get("expr", "") for p in dash.get("panels", []) for t in p.get("targets", [])]
        used = set()
        for e in exprs:
            used |= set(re.findall(r"\bjobq_[a-z0-9_]+", e))
        for name in sorted(used - known):
            problems.append(f"{rel(f)} queries unknown metric {name}")
        for name in sorted(known - used):
            problems.append(f"{rel(f)} has no panel for {name}")
    return problems


CHECKS = [
    ("compose", "docker-compose.yml against the Compose spec schema (check-jsonschema's vendored compose-spec.json)", check_compose),
    ("env", "variables of docker-compose.yml vs .env.example", check_env),
    ("dockerfiles", "Dockerfiles build workspace binaries (cargo metadata)", check_dockerfiles),
    ("k8s", f"deploy/k8s against Kubernetes {os.environ['K8S_VERSION']} schemas (kubernetes-validate, strict)", check_k8s),
    ("kumori", "kumori/*.cue with cue fmt --check / cue export, configuration keys", check_kumori),
    ("sandbox", "the worker's sandbox privileges in every deployment", check_sandbox),
    ("monitoring", "Prometheus config and Grafana dashboard", check_monitoring),
]

passed = failed = 0
for name, what, fn in CHECKS:
    if ONLY and name != ONLY:
        continue
    try:
        problems = fn()
    except Exception as e:  # a file that cannot even be read is a failure of its check
        problems = [f"{type(e).__name__}: {e}"]
    if problems:
        failed += 1
        print(f"FAIL {name}: {what}")
        for p in problems:
            print(f"     - {p}")
    else:
        passed += 1
        print(f"ok   {name}: {what}")
print(f"validate-deploy: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
