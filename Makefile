# Task index. `make test` is what CI runs (.ci/run).
.PHONY: test cluster-up cluster-down cluster-status

## test: fmt check, clippy, then every test (unit and cluster) against a private local control plane
test:
	bash scripts/test.sh

## cluster-up: start the local control plane (scripts/dev-cluster.sh up); then eval "$$(scripts/dev-cluster.sh env)"
cluster-up:
	bash scripts/dev-cluster.sh up

## cluster-down: stop it and remove its state
cluster-down:
	bash scripts/dev-cluster.sh down

## cluster-status: what runs
cluster-status:
	bash scripts/dev-cluster.sh status
