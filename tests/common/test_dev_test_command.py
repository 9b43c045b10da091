"""`dev.py test` runs the suite on pytest-xdist workers unless its arguments need one process."""

import pytest

from tests.common.test_secret_key import load_dev_module

dev = load_dev_module()


@pytest.mark.parametrize(
    ("arguments", "cpus", "expected"),
    [
        ([], 2, ["-n", "2", "--dist", "loadfile"]),
        ([], 16, ["-n", str(dev.MAX_TEST_WORKERS), "--dist", "loadfile"]),
        (["tests/registry", "-x"], 3, ["-n", "3", "--dist", "loadfile", "tests/registry", "-x"]),
        (
            ["--junitxml=var/junit.xml"],
            2,
            ["-n", "2", "--dist", "loadfile", "--junitxml=var/junit.xml"],
        ),
        (["-k", "simulated"], 2, ["-n", "2", "--dist", "loadfile", "-k", "simulated"]),
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
        "loadfile",
    ]


def test_other_plugins_and_capture_modes_keep_the_workers():
    assert dev.pytest_arguments(["-p", "no:randomly"], 2) == [
        "-n",
        "2",
        "--dist",
        "loadfile",
        "-p",
        "no:randomly",
    ]
    assert dev.pytest_arguments(["--capture=sys", "-xv"], 2)[:2] == ["-n", "2"]
    assert dev.pytest_arguments(["-k", "slow"], 2)[:2] == ["-n", "2"]
    deselect = ["--deselect", "tests/registry/test_models.py::test_one"]
    assert dev.pytest_arguments(deselect, 2) == ["-n", "2", "--dist", "loadfile", *deselect]


def test_the_tests_of_one_file_run_on_one_worker_in_order(tmp_path):
    """The model-to-endpoint journeys share state in file order, so the workers dev.py starts
    must not split a file: run a small suite with dev.py's arguments and see where each test
    ran. (This is how `--dist loadgroup` with `xdist_group` marks was found to split groups.)"""
    import json
    import subprocess
    import sys

    (tmp_path / "test_journey.py").write_text(
        "import json, os, time, pytest\n"
        "@pytest.mark.parametrize('step', range(6))\n"
        "def test_step(step):\n"
        "    time.sleep(0.1)\n"
        "    with open('ran.jsonl', 'a') as log:\n"
        "        log.write(json.dumps([step, os.environ['PYTEST_XDIST_WORKER']]) + '\\n')\n"
    )
    (tmp_path / "test_other.py").write_text(
        "import time, pytest\n"
        "@pytest.mark.parametrize('n', range(12))\n"
        "def test_other(n):\n"
        "    time.sleep(0.05)\n"
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:django", "-p", "no:cacheprovider", "-q",
         *dev.pytest_arguments([], 2)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    ran = [json.loads(line) for line in (tmp_path / "ran.jsonl").read_text().splitlines()]
    assert [step for step, _ in ran] == list(range(6))
    assert len({worker for _, worker in ran}) == 1
