# Task index. `make test` is what CI runs (.ci/run).
.PHONY: test demo demo-test cluster-up cluster-down cluster-status

## test: fmt check, clippy, then every test (unit and cluster) against a private local control plane
test:
	bash scripts/test.sh

## demo: local control plane, the chart's CRD and RBAC, the operator as a host process with
## the chart's ServiceAccount token, the examples with live progress bars, a final table
## and the facade's JSON (docs/demo.md). DEMO_KEEP=0 brings the control plane down after.
demo:
	bash scripts/demo.sh

## demo-test: unit tests of the demo's renderer (scripts/demo_jobs.py)
demo-test:
	PYTHONDONTWRITEBYTECODE=1 python3 -m unittest discover -s scripts -p 'test_demo_*.py'

## cluster-up: start the local control plane (scripts/dev-cluster.sh up); then eval "$$(scripts/dev-cluster.sh env)"
cluster-up:
	bash scripts/dev-cluster.sh up

## cluster-down: stop it and remove its state
cluster-down:
	bash scripts/dev-cluster.sh down

## cluster-status: what runs
cluster-status:
	bash scripts/dev-cluster.sh status

## bench: throughput and API cost vs the Job controller, the limit, facade load, memory (docs/bench.md);
##        make bench [N=1000] [REPEAT=2] [PARTS=single,multi,limit,memory,facade[,exec]] [PROFILE=1] ...
.PHONY: bench
bench:
	cargo build --release
	cd bench/loadgen && cargo build --release   # its .cargo/config.toml shares target/
	python3 bench/bench.py
