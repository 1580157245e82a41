"""pytest-benchmark times one test at a time: the benchmarks run on one worker, not spread over
pytest-xdist's (the project's addopts ask for ``-n auto``)."""


def pytest_xdist_auto_num_workers(config):
    return 0
