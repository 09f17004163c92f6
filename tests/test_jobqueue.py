"""Batch job scripts for SLURM, PBS, SGE and LSF: their directives (as each system's
manual documents them), the worker line, and ``corral slurm|pbs|sge|lsf submit``.
Pure: no batch system is needed (tests/test_slurm.py runs a real SLURM)."""

from __future__ import annotations

import shlex
import subprocess
import tempfile

import pytest
from click.testing import CliRunner

from corral.cli import main
from corral.credentials import write_scheduler_file
from corral.deploy.jobqueue import LSF, PBS, SGE, SLURM, JobSpec, parse_walltime
from corral.deploy.jobqueue.script import hms, lifetime_for
from corral.security import Security
from tests._helpers import parse_cli

GiB = 2**30


def spec(**options) -> JobSpec:
    given = {"cores": 4, "memory": "16GiB", "processes": 2, "walltime": "01:00:00",
             "queue": "short", "account": "proj42", "job_extra": ["--exclusive"],
             "python": "/opt/py/bin/python", **options}
    return JobSpec.make(**given)


def directives(system, **options) -> list[str]:
    return system.directives(spec(**options))


def test_slurm_directives_are_sbatchs():
    assert directives(SLURM, log_directory="/logs") == [
        "#SBATCH -J corral-worker", "#SBATCH -p short", "#SBATCH -A proj42",
        "#SBATCH -N 1", "#SBATCH -n 1", "#SBATCH --cpus-per-task=4", "#SBATCH --mem=16384M",
        "#SBATCH -t 01:00:00", "#SBATCH -o /logs/corral-worker-%j.out",
        "#SBATCH -e /logs/corral-worker-%j.err", "#SBATCH --exclusive",
    ]


def test_pbs_directives_use_a_select_statement():
    assert directives(PBS, job_extra=["-j oe"]) == [
        "#PBS -N corral-worker", "#PBS -q short", "#PBS -A proj42",
        "#PBS -l select=1:ncpus=4:mem=16384mb", "#PBS -l walltime=01:00:00", "#PBS -j oe",
    ]


def test_sge_directives_count_memory_per_slot():
    assert directives(SGE, job_extra=[]) == [
        "#$ -N corral-worker", "#$ -q short", "#$ -A proj42", "#$ -pe smp 4",
        "#$ -l h_vmem=4096M", "#$ -l h_rt=01:00:00", "#$ -cwd", "#$ -j y",
    ]
    one_core = directives(SGE, cores=1, processes=1, job_extra=[], queue=None, account=None)
    assert not any("-pe" in line for line in one_core)  # a single slot needs no environment
    assert "#$ -l h_vmem=16384M" in one_core


def test_lsf_directives_ask_for_one_host_and_minutes():
    assert directives(LSF, walltime="90m", job_extra=[]) == [
        "#BSUB -J corral-worker", "#BSUB -q short", '#BSUB -P "proj42"', "#BSUB -n 4",
        '#BSUB -R "span[hosts=1]"', "#BSUB -M 16384MB", "#BSUB -W 01:30",
    ]


def test_optional_directives_are_left_out():
    lines = SLURM.directives(JobSpec.make(cores=1, memory="1GiB"))
    assert lines == ["#SBATCH -J corral-worker", "#SBATCH -N 1", "#SBATCH -n 1",
                     "#SBATCH --cpus-per-task=1", "#SBATCH --mem=1024M"]


@pytest.mark.parametrize("system", [SLURM, PBS, SGE, LSF], ids=lambda s: s.name)
def test_every_script_is_valid_bash_with_directives_before_any_command(system):
    text = system.job_script(spec(prologue=["module load python", "source ~/venv/bin/activate"]),
                             "/shared/corral.json")
    lines = text.splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    header = lines[1:lines.index("")]
    assert header
    assert all(line.startswith(f"{system.prefix} ") for line in header)
    assert lines[-3:-1] == ["module load python", "source ~/venv/bin/activate"]
    assert lines[-1].startswith("exec /opt/py/bin/python -P -m corral.cli worker ")
    assert f'--name "corral-worker-${{{system.job_id_variable}}}"' in lines[-1]
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)


def test_the_worker_line_shares_the_job_among_its_processes_and_retires_before_walltime():
    line = SLURM.job_script(spec(), "/shared/corral.json").splitlines()[-1]
    args = shlex.split(line)
    args = args[args.index("worker") + 1:]
    flags = dict(zip(args[::2], args[1::2], strict=True))
    assert flags["--scheduler-file"] == "/shared/corral.json"
    assert (flags["--nworkers"], flags["--nthreads"]) == ("2", "2")
    assert flags["--memory-limit"] == str(8 * GiB)
    assert flags["--host"] == "0.0.0.0"  # reachable by the scheduler on another node
    assert (flags["--lifetime"], flags["--lifetime-stagger"]) == ("3300s", "75s")
    assert flags["--death-timeout"] == "60"


def test_the_worker_line_is_one_corral_worker_accepts(tmp_path):
    """Parsed by the real ``corral worker`` command (no worker started)."""
    scheduler_file = tmp_path / "scheduler.json"
    scheduler_file.write_text("{}")
    line = SLURM.job_script(spec(interface="lo"), str(scheduler_file)).splitlines()[-1]
    args = shlex.split(line.replace("${SLURM_JOB_ID}", "17"))
    assert args[:5] == ["exec", "/opt/py/bin/python", "-P", "-m", "corral.cli"]
    name, *rest = args[5:]
    worker = parse_cli([name, *rest])
    assert worker.params["name"] == "corral-worker-17"
    assert worker.params["lifetime"] == 3300.0
    assert worker.params["interface"] == "lo"


def test_no_credentials_in_the_script(tmp_path):
    security = Security.generate()
    path = write_scheduler_file(tmp_path / "corral.json", "tcp://10.0.0.1:8786", security)
    text = SLURM.job_script(spec(), str(path))
    assert security.token not in text
    assert str(path) in text
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(("system", "output", "job_id"), [
    (SLURM, "4242\n", "4242"),
    (SLURM, "4242;cluster-a\n", "4242"),
    (PBS, "4242.pbs-server\n", "4242.pbs-server"),
    (SGE, "4242\n", "4242"),
    (LSF, "Job <4242> is submitted to queue <normal>.\n", "4242"),
], ids=["slurm", "slurm-federated", "pbs", "sge", "lsf"])
def test_job_ids_are_read_from_what_submission_prints(system, output, job_id):
    assert system.job_id(output) == job_id


def test_no_job_id_is_an_error_naming_what_was_printed():
    with pytest.raises(ValueError, match="sbatch printed: 'Submitted nothing'"):
        SLURM.job_id("Submitted nothing")


@pytest.mark.parametrize(("text", "seconds"), [
    ("01:30:00", 5400), ("1:30", 5400), ("2-00:00:00", 172800), ("90m", 5400),
    ("2h", 7200), (600, 600), ("45s", 45),
])
def test_walltimes_as_people_write_them(text, seconds):
    assert parse_walltime(text) == seconds


@pytest.mark.parametrize("text", ["1:75:00", "soon", "0", "-5", ""])
def test_bad_walltimes_are_refused(text):
    with pytest.raises(ValueError, match="walltime"):
        parse_walltime(text)


def test_formatting_walltimes_and_lifetimes():
    assert hms(5400) == "01:30:00"
    assert hms(100000) == "27:46:40"
    assert hms(61, with_seconds=False) == "00:02"  # LSF counts minutes: rounded up
    assert lifetime_for(3600) == (3300.0, 75.0)  # a tenth before, at most 5 minutes
    assert lifetime_for(86400) == (86100.0, 75.0)
    assert lifetime_for(60) == (54.0, 1.5)
    assert JobSpec.make(cores=1, memory="1GiB").worker_lifetime() is None
    assert JobSpec.make(cores=1, memory="1GiB", lifetime="10m").worker_lifetime() == (600, 30)


@pytest.mark.parametrize(("options", "message"), [
    ({"queue": "short\n#SBATCH --uid=0"}, "queue may not contain a line break"),
    ({"job_extra": ["--mem=1G\nrm -rf ~"]}, "job_extra may not contain a line break"),
    ({"processes": 5}, "processes must be between 1 and cores"),
    ({"cores": 0}, "cores must be a whole number"),
    ({"memory": "300MiB", "processes": 4}, "75 MiB to each of 4 worker process"),
    ({"memory": "lots"}, "not a size"),
    ({"job_name": "x; rm"}, "a job name starts with a letter"),
])
def test_bad_specs_are_refused_with_the_reason(options, message):
    with pytest.raises(ValueError, match=message):
        spec(**options)


def test_processes_default_like_nworkers_auto():
    assert JobSpec.make(cores=2, memory="4GiB").processes == 2
    assert JobSpec.make(cores=16, memory="64GiB").processes == 4


# -- the command line -------------------------------------------------------------------


@pytest.mark.parametrize("system", ["slurm", "pbs", "sge", "lsf"])
def test_submit_has_help_and_version(system):
    runner = CliRunner()
    result = runner.invoke(main, [system, "submit", "-h"])
    assert result.exit_code == 0, result.output
    assert "--cores" in result.output
    assert "--scheduler-file" in result.output
    assert runner.invoke(main, [system, "submit", "--version"]).output.startswith("corral, ")
    assert runner.invoke(main, [system, "--version"]).exit_code == 0


def test_dry_run_prints_the_script_for_the_scheduler_file(tmp_path):
    security = Security.generate()
    path = write_scheduler_file(tmp_path / "corral.json", "tcp://10.0.0.1:8786", security)
    result = CliRunner().invoke(main, [
        "slurm", "submit", "-n", "4", "--cores", "2", "--memory", "4GiB", "--walltime", "2h",
        "--queue", "short", "--prologue", "module load python", "--scheduler-file", str(path),
        "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.output == SLURM.job_script(
        JobSpec.make(cores=2, memory="4GiB", walltime="2h", queue="short",
                     prologue=["module load python"]), str(path.resolve()))
    assert security.token not in result.output


def test_submit_without_a_scheduler_file_says_how_to_start_one(tmp_path):
    result = CliRunner().invoke(main, ["sge", "submit", "--cores", "1", "--memory", "1GiB",
                                       "--scheduler-file", str(tmp_path / "none.json")])
    assert result.exit_code == 1
    assert "no scheduler file at" in result.output
    assert "corral scheduler --host 0.0.0.0 --scheduler-file" in result.output


def test_submit_with_a_bad_spec_is_a_usage_error():
    result = CliRunner().invoke(main, ["slurm", "submit", "--cores", "2", "--memory", "4GiB",
                                       "--processes", "3", "--dry-run"])
    assert result.exit_code == 2
    assert "processes must be between 1 and cores (2)" in result.output


def test_a_batch_system_that_is_not_there_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no qsub on it
    path = write_scheduler_file(tmp_path / "corral.json", "tcp://10.0.0.1:8786", None)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    result = CliRunner().invoke(main, ["pbs", "submit", "--cores", "1", "--memory", "1GiB",
                                       "--scheduler-file", str(path)])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: cannot run qsub: No such file or directory"
    assert not list((tmp_path / "tmp").iterdir())  # the script is not left behind


def test_scripts_are_written_for_their_owner_alone(tmp_path):
    from corral.deploy.jobqueue.commands import write_script

    path = write_script(tmp_path / "jobs", "job.sh", "#!/usr/bin/env bash\n")
    assert path.read_text() == "#!/usr/bin/env bash\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
