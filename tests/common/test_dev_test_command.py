"""`dev.py test` runs the suite on pytest-xdist workers unless its arguments need one process."""

import pytest

from tests.common.test_secret_key import load_dev_module

dev = load_dev_module()


@pytest.mark.parametrize(
    ("arguments", "cpus", "expected"),
    [
        ([], 2, ["-n", "2", "--dist", "loadgroup"]),
        ([], 16, ["-n", str(dev.MAX_TEST_WORKERS), "--dist", "loadgroup"]),
        (["tests/registry", "-x"], 3, ["-n", "3", "--dist", "loadgroup", "tests/registry", "-x"]),
        (
            ["--junitxml=var/junit.xml"],
            2,
            ["-n", "2", "--dist", "loadgroup", "--junitxml=var/junit.xml"],
        ),
        (["-k", "simulated"], 2, ["-n", "2", "--dist", "loadgroup", "-k", "simulated"]),
        ([], 1, []),
        ([], None, []),
    ],
)
def test_the_suite_runs_on_one_worker_per_core_at_most_four(arguments, cpus, expected):
    assert dev.pytest_arguments(arguments, cpus) == expected


@pytest.mark.parametrize(
    "arguments",
    [
        ["-n", "0"],
        ["-n0"],
        ["-nauto"],
        ["--numprocesses", "3"],
        ["--numprocesses=3"],
        ["-p", "no:xdist"],
        ["-pno:xdist"],
        ["tests/registry", "--pdb"],
        ["--trace"],
        ["-s"],
        ["-xs"],
        ["-vsx"],
        ["--capture=no"],
        ["--capture", "no"],
        ["tests/registry/test_models.py::test_one"],
        ["tests/registry/test_models.py::TestSome::test_one", "-x"],
    ],
)
def test_arguments_that_need_one_process_or_choose_the_workers_are_left_alone(arguments):
    assert dev.pytest_arguments(arguments, 4) == arguments


def test_pytest_addopts_count_like_arguments():
    assert dev.pytest_arguments([], 4, addopts="-p no:xdist") == []
    assert dev.pytest_arguments(["tests/api"], 4, addopts="--pdb -x") == ["tests/api"]
    # The README check runs `dev.py test` with --collect-only: workers collect nothing extra.
    assert dev.pytest_arguments([], 2, addopts="--collect-only") == [
        "-n",
        "2",
        "--dist",
        "loadgroup",
    ]


def test_other_plugins_and_capture_modes_keep_the_workers():
    assert dev.pytest_arguments(["-p", "no:randomly"], 2) == [
        "-n",
        "2",
        "--dist",
        "loadgroup",
        "-p",
        "no:randomly",
    ]
    assert dev.pytest_arguments(["--capture=sys", "-xv"], 2)[:2] == ["-n", "2"]
    assert dev.pytest_arguments(["-k", "slow"], 2)[:2] == ["-n", "2"]
    deselect = ["--deselect", "tests/registry/test_models.py::test_one"]
    assert dev.pytest_arguments(deselect, 2) == ["-n", "2", "--dist", "loadgroup", *deselect]


def test_journeys_that_build_on_each_other_stay_on_one_worker():
    """The model-to-endpoint journeys share state in file order: one xdist group (dev.py runs
    with --dist loadgroup), or the workers would split them and a later journey would not find
    what an earlier one made."""
    from tests.e2e import test_journey_model_to_endpoint as journeys

    groups = [mark for mark in journeys.pytestmark if mark.name == "xdist_group"]
    assert len(groups) == 1 and groups[0].args
    assert dev.pytest_arguments([], 2)[2:4] == ["--dist", "loadgroup"]
