"""Every command RESULTS.md records for a benchmark script or ``et`` is accepted by the current
scripts: the record is how a table is made again, so an option renamed since is a defect of the
record or of the script. Each command runs in bash, as written (its variables, loops and
continuations), with stand-ins that record the arguments; each argument list then goes through
the script's own parser, and nothing is trained. gpu_suite.sh's lines are left to
test_gpu_suite.py (and those RESULTS.md pins to an older version, ``git show REV:...``, are not
for the current script)."""

import re
import subprocess
from pathlib import Path

from bench_scripts import BENCHMARKS, parse_error, recorded_calls, stub_commands

RESULTS = BENCHMARKS / "RESULTS.md"
TEXT = RESULTS.read_text()
# Code spans that name a command or an option in prose, not a command to run.
MENTIONS = {
    "et train graph",
    "et train graph --protocol train-on-all",  # the protocol's name (bench_graph prints it)
    "et select",
    "bench_graph.py --select",
    "bench_graph.py --models et --max-folds 2 --et-set ...",
    "bench_anomaly.py --select NAME=LOG ...",
}
# One command for several runs: {--hidden 64 | --hidden 128} and --dtype {float32,bfloat16}.
ALTERNATIVES = re.compile(r"\{(--[^{}|]+(?:\|[^{}|]+)+)\}")
BRACES = re.compile(r"(--[\w-]+) \{(\w+(?:,\w+)+)\}")


def expand(line: str) -> list[str]:
    if m := ALTERNATIVES.search(line):
        alternatives = [a.strip() for a in m.group(1).split("|")]
    elif m := BRACES.search(line):
        alternatives = [f"{m.group(1)} {value}" for value in m.group(2).split(",")]
    else:
        return [line]
    return [x for a in alternatives for x in expand(line[: m.start()] + a + line[m.end() :])]


def shell_texts() -> list[tuple[int, str]]:
    """(line, shell text) of every bash block and every code span that runs a command."""
    texts = []
    for m in re.finditer(r"```bash\n(.*?)```", TEXT, re.S):
        texts.append((TEXT.count("\n", 0, m.start()) + 1, m.group(1)))
    prose = re.sub(r"```.*?```", lambda m: re.sub(r"[^\n]", " ", m.group(0)), TEXT, flags=re.S)
    for m in re.finditer(r"`([^`]+)`", prose):
        span = " ".join(m.group(1).split())
        runs = re.match(r"(nice |\S*python |bench_\w+\.py |et \w)", span)
        if not runs or span in MENTIONS or "git show" in span:
            continue
        if span.startswith("bench_"):
            span = "python benchmarks/" + span
        texts.append((TEXT.count("\n", 0, m.start()) + 1, span))
    return [
        (line, "\n".join(x for row in text.splitlines() for x in expand(row)))
        for line, text in texts
    ]


def test_every_recorded_command_parses(tmp_path):
    stubs = stub_commands(tmp_path / "bin")
    sandbox = tmp_path / "sandbox"
    (sandbox / ".venv" / "bin").mkdir(parents=True)
    (sandbox / ".venv" / "bin" / "python").symlink_to(tmp_path / "bin" / "python")
    failures, checked = {}, 0
    for line, text in shell_texts():
        kept = "\n".join(row for row in text.splitlines() if "gpu_suite.sh" not in row)
        Path(stubs["BENCH_CALLS"]).write_text("")
        env = {**stubs, "HOME": str(tmp_path), "ET_DATA": str(tmp_path / "data")}
        subprocess.run(["bash", "-c", kept], cwd=sandbox, env=env, capture_output=True, check=False)
        for call in recorded_calls(stubs):
            if call[0] == "et" or call[0].startswith("benchmarks/bench_"):
                checked += 1
                if error := parse_error(call):
                    failures[f"RESULTS.md:{line}: {' '.join(call)}"] = error
    assert not failures
    assert checked >= 100  # the extraction still finds the record's commands
