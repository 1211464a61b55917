#!/usr/bin/env bash
# The one-command demo (`make demo`, docs/demo.md). On a fresh clone:
#   1. brings up the local control plane (scripts/dev-cluster.sh up: builds it once),
#   2. installs the chart's CRD,
#   3. applies the chart's own ServiceAccount and RBAC (helm template) and writes a
#      kubeconfig holding a token of that ServiceAccount,
#   4. builds the operator and starts `antenna-operator run` as a host process with that
#      kubeconfig, so the chart's RBAC is exactly what it runs with,
#   5. applies the four examples into the demo namespace,
#   6. shows a live progress bar per job, then a final table (scripts/demo_jobs.py),
#   7. prints the REST facade's JSON for the seed record's job.
# Exits non-zero if any job ends other than expected (seed, ML and delay jobs SUCCESS;
# the unschedulable job FAILURE with reason PendingTimeout), if the operator was refused
# anything by RBAC, or if the facade's record is wrong. Always stops the operator it
# started. Leaves the cluster up (DEMO_KEEP=0: brings it down, if this run started it).
#
# Knobs: DEMO_KEEP (1), DEMO_TIMEOUT (seconds for the jobs, 300), DEMO_DIR (files of the
# run: operator log and kubeconfig; /tmp/antenna-demo), DEVCLUSTER_DIR (the cluster's
# state, default /tmp/devcluster as for scripts/dev-cluster.sh).
set -Eeuo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

DEMO_KEEP=${DEMO_KEEP:-1}
DEMO_TIMEOUT=${DEMO_TIMEOUT:-300}
DEMO_DIR=${DEMO_DIR:-/tmp/antenna-demo}
DEMO_NS=antenna-demo          # where the jobs and their Pods run (the watched namespace)
OPERATOR_NS=antenna-system    # the chart's release namespace: ServiceAccount, id counter
RELEASE=antenna-operator      # release name: objects are named "antenna-operator"
SA=antenna-operator           # the chart's ServiceAccount for that release name
CHART=charts/antenna-operator
SEED_JOB=sync-deployment-118  # examples/seed-sync-job.yaml: the old record 630
SEED_RECORD=src/api/testdata/job-630.json
EXAMPLES=(seed-sync-job ml-job delay-job unschedulable-job)
EXPECT=(
  sync-deployment-118=SUCCESS
  ml-moths-2024=SUCCESS
  delay-test=SUCCESS
  unschedulable-export=FAILURE/PendingTimeout
)

T0=$SECONDS
STEP_NO=0
STEP_NAME="start"
BOLD="" RESET=""
if [[ -t 1 && -z ${NO_COLOR:-} ]]; then BOLD=$'\033[1m' RESET=$'\033[0m'; fi
step() {
  STEP_NO=$((STEP_NO + 1))
  STEP_NAME=$*
  printf '\n%s==> [%d/7] %s%s  (at %ss)\n' "$BOLD" "$STEP_NO" "$*" "$RESET" $((SECONDS - T0))
}
say() { printf '    %s\n' "$*"; }
die() { printf '\ndemo: ERROR: %s\n' "$*" >&2; exit 1; }

missing=()
for c in cargo python3 curl flock; do command -v "$c" >/dev/null || missing+=("$c"); done
((${#missing[@]} == 0)) || die "missing tools: ${missing[*]} (scripts/dev-cluster.sh also needs go, openssl and pip)"

# One demo at a time per DEMO_DIR (they would share the cluster's demo namespace).
mkdir -p "$DEMO_DIR"
exec 7>"$DEMO_DIR.lock"
flock -n 7 || die "another demo is running ($DEMO_DIR.lock)"

OP_PID=""
CLUSTER_STARTED=0 # this run started the control plane (DEMO_KEEP=0 stops only that)
CLUSTER_UP=0
stop_operator() {
  [[ -n $OP_PID ]] || return 0
  local i t=$SECONDS
  if kill -0 "$OP_PID" 2>/dev/null; then
    kill -TERM "$OP_PID" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
      kill -0 "$OP_PID" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$OP_PID" 2>/dev/null; then
      say "the operator (pid $OP_PID) did not stop within 15 s of SIGTERM: killing it"
      kill -KILL "$OP_PID" 2>/dev/null || true
    fi
  fi
  wait "$OP_PID" 2>/dev/null || true
  say "operator (pid $OP_PID) stopped $((SECONDS - t)) s after SIGTERM; its log: $DEMO_DIR/operator.log"
  OP_PID=""
}

finish() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  printf '\n==> cleaning up\n'
  stop_operator
  if [[ $DEMO_KEEP == 0 ]]; then
    if ((CLUSTER_STARTED)); then
      scripts/dev-cluster.sh down 7>&-
    else
      say "DEMO_KEEP=0, but the control plane was already up before the demo: left running"
    fi
  elif ((CLUSTER_UP)); then
    local dir=""
    [[ ${DEVCLUSTER_DIR:-/tmp/devcluster} == /tmp/devcluster ]] || dir="DEVCLUSTER_DIR=$DEVCLUSTER_DIR "
    cat <<EOF
    The local control plane is still up. Look around with:
      eval "\$(${dir}scripts/dev-cluster.sh env)"
      kubectl get capjob -n $DEMO_NS -o wide
      kubectl describe capjob $SEED_JOB -n $DEMO_NS
      kubectl get pods,events -n $DEMO_NS
      ${dir}scripts/dev-cluster.sh down   # stop it (or run the demo with DEMO_KEEP=0)
EOF
  fi
  if [[ $rc == 0 ]]; then
    printf '\ndemo: OK after %ss\n' $((SECONDS - T0))
  else
    printf '\ndemo: FAILED (exit %s) after %ss, in step %s: %s\n' "$rc" $((SECONDS - T0)) "$STEP_NO" "$STEP_NAME"
  fi
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --------------------------------------------------------------------------------------
step "local control plane (scripts/dev-cluster.sh up; a cold machine builds it first)"
if ! scripts/dev-cluster.sh status >/dev/null 2>&1; then
  CLUSTER_STARTED=1
fi
# 7>&-: the control plane's processes outlive the demo; they must not hold its lock.
scripts/dev-cluster.sh up 7>&-
CLUSTER_UP=1
eval "$(scripts/dev-cluster.sh env)"
say "API server: $(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')"

# --------------------------------------------------------------------------------------
step "the chart's CRD ($CHART/crds/)"
kubectl apply --server-side --force-conflicts --field-manager=antenna-demo -f "$CHART/crds/"
kubectl wait --for=condition=Established --timeout=60s crd/capturejobs.antenna.insectai.org

# --------------------------------------------------------------------------------------
step "the chart's ServiceAccount and RBAC, a token for it"
for ns in "$OPERATOR_NS" "$DEMO_NS"; do
  kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply --server-side --field-manager=antenna-demo -f - >/dev/null
done
# A previous run's jobs (and, through their ownerReferences, their Pods) go first.
if [[ -n $(kubectl get capturejobs -n "$DEMO_NS" -o name) ]]; then
  say "deleting the CaptureJobs of a previous run in $DEMO_NS"
  kubectl delete capturejobs --all -n "$DEMO_NS" --wait=true --timeout=60s
fi
# The chart rendered as `helm install` would with watchNamespaces=[antenna-demo]: one
# namespaced Role for jobs and Pods there, a Role for the id counter in antenna-system, the
# facade's ClusterRole. Only the ServiceAccount and RBAC templates are applied: the
# Deployment, Services and NetworkPolicy are replaced by the host process below.
helm template "$RELEASE" "$CHART" --namespace "$OPERATOR_NS" \
  --set "watchNamespaces={$DEMO_NS}" --set "api.defaultNamespace=$DEMO_NS" \
  --show-only templates/serviceaccount.yaml --show-only templates/rbac.yaml \
  >"$DEMO_DIR/chart-rbac.yaml"
kubectl apply --server-side --force-conflicts --field-manager=antenna-demo -f "$DEMO_DIR/chart-rbac.yaml"

TOKEN=$(kubectl create token "$SA" -n "$OPERATOR_NS" --duration=1h)
SERVER=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
CA_DATA=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
OP_KUBECONFIG=$DEMO_DIR/operator.kubeconfig
(
  umask 077
  cat >"$OP_KUBECONFIG" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: devcluster
  cluster:
    server: $SERVER
    certificate-authority-data: $CA_DATA
users:
- name: $SA
  user:
    token: $TOKEN
contexts:
- name: $SA
  context:
    cluster: devcluster
    user: $SA
    namespace: $DEMO_NS
current-context: $SA
EOF
)
unset TOKEN
say "kubeconfig with a 1 h token: $OP_KUBECONFIG, user $(kubectl --kubeconfig "$OP_KUBECONFIG" auth whoami -o jsonpath='{.status.userInfo.username}')"

# --------------------------------------------------------------------------------------
step "the operator as a host process with that token (cargo build, antenna-operator run)"
cargo build --locked --bin antenna-operator 7>&-
BIN=${CARGO_TARGET_DIR:-target}/debug/antenna-operator
read -r API_PORT METRICS_PORT < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
# The flags the chart's Deployment passes for these values (templates/deployment.yaml),
# with loopback addresses instead of 0.0.0.0. The worker image is never pulled: KWOK
# plays the kubelet.
OP_ARGS=(
  run
  --namespace="$DEMO_NS"
  --operator-namespace="$OPERATOR_NS"
  --api-addr="127.0.0.1:$API_PORT"
  --metrics-addr="127.0.0.1:$METRICS_PORT"
  --default-namespace="$DEMO_NS"
  --worker-image=ghcr.io/antenna/antenna-operator:0.1.0
  --pending-timeout=600
  --ids-configmap=antenna-operator-ids
  --anonymous-reads=true
  --log-format=text
)
KUBECONFIG=$OP_KUBECONFIG RUST_LOG=${RUST_LOG:-info} NO_COLOR=1 \
  "$BIN" "${OP_ARGS[@]}" >"$DEMO_DIR/operator.log" 2>&1 </dev/null 7>&- &
OP_PID=$!
say "pid $OP_PID: $BIN ${OP_ARGS[*]}"
say "log: $DEMO_DIR/operator.log"
for ((i = 0; ; i++)); do
  curl -fsS --max-time 2 "http://127.0.0.1:$METRICS_PORT/readyz" >/dev/null 2>&1 && break
  if ! kill -0 "$OP_PID" 2>/dev/null || ((i > 240)); then
    tail -n 30 "$DEMO_DIR/operator.log" | sed 's/^/    | /' >&2
    die "the operator did not become ready (http://127.0.0.1:$METRICS_PORT/readyz)"
  fi
  sleep 0.25
done
say "ready: REST facade http://127.0.0.1:$API_PORT/api/v2/jobs/, metrics http://127.0.0.1:$METRICS_PORT/metrics"

# --------------------------------------------------------------------------------------
step "the examples, into namespace $DEMO_NS"
FILES=()
for e in "${EXAMPLES[@]}"; do FILES+=(-f "examples/$e.yaml"); done
kubectl apply -n "$DEMO_NS" "${FILES[@]}"

# --------------------------------------------------------------------------------------
step "live progress (polling every 0.5 s until every job has finished)"
RC=0
WATCH=(--namespace "$DEMO_NS" --timeout "$DEMO_TIMEOUT" --summary "$DEMO_DIR/summary.json")
for e in "${EXPECT[@]}"; do WATCH+=(--expect "$e"); done
python3 scripts/demo_jobs.py watch "${WATCH[@]}" || RC=1

# The chart's RBAC is what the operator ran with: any refusal is a chart bug.
if grep -qi 'forbidden' "$DEMO_DIR/operator.log"; then
  printf '\nThe operator was refused by RBAC (the chart lacks a rule):\n'
  grep -i 'forbidden' "$DEMO_DIR/operator.log" | head -n 10 | sed 's/^/    | /'
  RC=1
fi

# --------------------------------------------------------------------------------------
step "the REST facade's record of the seed job"
SEED_ID=$(python3 -c '
import json, sys
rows = json.load(open(sys.argv[1]))
print(next((r["id"] for r in rows if r["object"] == sys.argv[2] and r["id"] is not None), ""))' \
  "$DEMO_DIR/summary.json" "$SEED_JOB")
if [[ -z $SEED_ID ]]; then
  say "the seed job $SEED_JOB has no id: nothing to ask the facade for"
  RC=1
else
  URL="http://127.0.0.1:$API_PORT/api/v2/jobs/$SEED_ID/"
  say "GET $URL"
  FRC=0
  python3 scripts/demo_jobs.py facade --url "$URL" --seed "$SEED_RECORD" \
    --expect-status SUCCESS --expect-stages 2 \
    --list-url "http://127.0.0.1:$API_PORT/api/v2/jobs/?limit=100" --summary "$DEMO_DIR/summary.json" || FRC=$?
  case $FRC in
    0) ;;
    3) say "(pending: the facade's routes are not wired into 'antenna-operator run' yet)" ;;
    *) RC=1 ;;
  esac
fi

exit "$RC"
