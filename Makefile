.PHONY: setup demo test bench lint
setup:
	bash ci/setup.sh
demo: setup
	python3 -m testkit.demo
test:
	bash ci/test.sh
bench: setup
	python3 bench/run.py
lint:
	python3 -m ruff check .
