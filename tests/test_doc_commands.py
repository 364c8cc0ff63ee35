"""Every `scripts/*.py` command of README.md and docs/*.md runs as written: each argument is one
Hydra can read, each command that is not a sweep composes against its script's config, and each
`scripts/verify.py` command runs as a dry run (exit status 0). A template with placeholders
(`<folder>`, `...`) is not a command and is left out."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCRIPT = re.compile(r"(?:\.venv/bin/)?(?:python\s+)?scripts/(\w+)\.py\b(.*)")
ASSIGN = re.compile(r"^([A-Z]\w*)=(\"[^\"]*\"|'[^']*'|\S*)\s*(?:#.*)?$")
PLACEHOLDER = re.compile(r"<[^>]*>|\.\.\.|…")


def _config_name(script: str) -> str | None:
    text = (ROOT / "scripts" / f"{script}.py").read_text()
    m = re.search(r'@hydra\.main\([^)]*config_name="(\w+)"', text)
    return m.group(1) if m else None


def _lines(doc: Path) -> list[str]:
    """The shell lines of the doc's fenced blocks (continuations joined) and its inline code spans."""
    text, out = doc.read_text(), []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        out += block.replace("\\\n", " ").splitlines()
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    out += [span for span in re.findall(r"`([^`\n]+)`", prose)
            if (m := SCRIPT.search(span)) and m.group(2).strip()]   # a command, not a script's name
    return out


def doc_commands() -> list[tuple[str, str, list[str]]]:
    """(where, script, arguments) of every command, shell variables defined in the docs expanded."""
    variables = {}
    for doc in DOCS:
        for line in _lines(doc):
            if m := ASSIGN.match(line.strip()):
                variables[m.group(1)] = shlex.split(m.group(2))[0] if m.group(2) else ""
    out = []
    for doc in DOCS:
        for line in _lines(doc):
            m = SCRIPT.search(line)
            if not m or not (ROOT / "scripts" / f"{m.group(1)}.py").is_file():
                continue
            rest = re.sub(r"\$(\w+)", lambda v: variables.get(v.group(1), v.group(0)), m.group(2))
            args = shlex.split(rest, comments=True)
            if PLACEHOLDER.search(" ".join(args)) or any("$" in a for a in args):
                continue
            out.append((f"{doc.name}: {line.strip()}", m.group(1), args))
    return out


COMMANDS = doc_commands()


def test_the_docs_have_the_commands_this_test_runs():
    scripts = {s for _, s, _ in COMMANDS}
    assert {"run", "tables", "verify", "merge"} <= scripts
    assert sum(s == "verify" for _, s, _ in COMMANDS) >= 4


@pytest.mark.parametrize("where,script,args", COMMANDS, ids=[w[:90] for w, _, _ in COMMANDS])
def test_a_documented_command_parses_and_composes(where, script, args):
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from test_verify import verify_script
    multirun = "-m" in args or "--multirun" in args
    args = [a for a in args if a not in ("-m", "--multirun")]
    if script == "verify":
        args = verify_script().normalise(args)
    overrides = OverridesParser.create().parse_overrides(args)   # raises on what Hydra cannot read
    name = _config_name(script)
    if name is None or multirun or any(o.is_sweep_override() for o in overrides):
        return
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        compose(config_name=name, overrides=[*_first_job(args), *args])


def _first_job(args: list[str]) -> list[str]:
    """A +sweep=<name> config is a multirun: Hydra's basic sweeper puts each job's values of its
    `hydra.sweeper.params` before the command line's overrides; the first job's values."""
    from omegaconf import OmegaConf
    out = []
    for a in args:
        if a.startswith("+sweep="):
            sweep = OmegaConf.load(ROOT / "conf" / "sweep" / f"{a.split('=', 1)[1]}.yaml")
            params = OmegaConf.select(sweep, "hydra.sweeper.params") or {}
            out += [f"{k}={str(v).split(',')[0]}" for k, v in params.items()]
    return out


@pytest.mark.parametrize("where,args", [(w, a) for w, s, a in COMMANDS if s == "verify"],
                         ids=[w[:90] for w, s, _ in COMMANDS if s == "verify"])
def test_a_documented_verify_command_runs_as_a_dry_run(where, args, tmp_path):
    from hydra import compose, initialize_config_dir
    from test_verify import verify_script
    verify = verify_script()
    args = verify.normalise([*args, "dry_run=true", f"paths.results={tmp_path}"])
    verify.check_parses(args)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        assert verify.verify(compose(config_name="verify", overrides=args)) == 0
