#!/usr/bin/env bash
# The project's test command (`make test`, `.ci/run`): brings up a private local control
# plane (building it first on a cold machine), runs every check and test against it, and
# always brings it down. Exits non-zero if any step failed; every step runs regardless,
# and a summary lists them.
#
# To add a check, add one `step "<name>" <command...>` line in run_steps below. Steps run
# in this shell, in order, from the repository root; steps after "cluster up" have
# KUBECONFIG and a PATH with the cluster's kubectl and helm (scripts/dev-cluster.sh env).
#
# Knobs: TEST_THREADS (default 4: cluster tests mostly wait on the cluster),
#        TEST_CLUSTER_DIR (default /tmp/devcluster-test.<pid>: never a developer's
#        /tmp/devcluster, so `make test` neither disturbs nor reuses one).
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 1

TEST_THREADS=${TEST_THREADS:-4}
export DEVCLUSTER_DIR=${TEST_CLUSTER_DIR:-/tmp/devcluster-test.$$}

run_steps() {
  step "prerequisites" prerequisites
  step "cargo fmt" cargo fmt --all -- --check
  step "cargo clippy" cargo clippy --all-targets -- -D warnings
  step "cluster up" cluster_up
  step "cargo test" cargo test --all-targets --no-fail-fast -- --include-ignored --test-threads="$TEST_THREADS"
  step "demo unit tests" make demo-test
  # Add steps here (they run with the cluster up), e.g.:
  # step "helm lint" helm lint charts/antenna-operator
}

prerequisites() {
  local missing=() c
  for c in cargo go python3 openssl curl flock base64 make; do
    command -v "$c" >/dev/null || missing+=("$c")
  done
  if ((${#missing[@]})); then
    echo "missing tools: ${missing[*]} (Go and the Go module proxy build the control plane; PyPI serves helm/kubectl)" >&2
    return 1
  fi
  for c in rustfmt clippy; do
    if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1; then
      command -v rustup >/dev/null && rustup component add "$c" || return 1
    fi
  done
}

CLUSTER_STARTED=0
cluster_up() {
  CLUSTER_STARTED=1
  scripts/dev-cluster.sh up || return 1
  eval "$(scripts/dev-cluster.sh env)"
}

cleanup() {
  if ((CLUSTER_STARTED)); then
    scripts/dev-cluster.sh down || echo "warning: dev-cluster.sh down failed" >&2
    rm -f "$DEVCLUSTER_DIR.lock" # private to this run
    CLUSTER_STARTED=0
  fi
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

RESULTS=()
FAILED=0
step() {
  local name=$1 t0=$SECONDS rc
  shift
  printf '\n==> %s\n' "$name" >&2
  "$@"
  rc=$?
  if ((rc)); then
    FAILED=1
    RESULTS+=("$(printf 'FAIL  %-16s %4ss  (exit %s)' "$name" $((SECONDS - t0)) "$rc")")
  else
    RESULTS+=("$(printf 'ok    %-16s %4ss' "$name" $((SECONDS - t0)))")
  fi
  return 0
}

T0=$SECONDS
run_steps
cleanup
printf '\n==> summary (%ss)\n' $((SECONDS - T0)) >&2
printf '%s\n' "${RESULTS[@]}" >&2
exit "$FAILED"
