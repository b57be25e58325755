"""The docs' code runs: every fenced ```python block of README.md and docs/*.md is executed (in a temporary
folder holding the tiny bundles and files the blocks name), every `tokcomp …` line of a bash / sh / console
block is parsed by the CLI itself (unknown commands and options fail, nothing executes), and every relative
link resolves, #anchors included.

A block that cannot run on CPU is marked by `<!-- docs-test: imports-only: <why> -->` on the line before its
fence; its imports are still executed.
"""

from __future__ import annotations

import ast
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
PHOTOS = ROOT / "tests" / "calibration" / "photos"
IMPORTS_ONLY = re.compile(r"<!--\s*docs-test:\s*imports-only\b")
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int          # 1-based line of the opening fence
    lang: str
    code: str
    imports_only: bool

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").split("\n")
    out, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang, start = m.group(1), m.group(2), i
        body = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        prev = next((ln for ln in reversed(lines[:start]) if ln.strip()), "")
        out.append(Block(page, start + 1, lang, "\n".join(body) + "\n", bool(IMPORTS_ONLY.search(prev))))
        i += 1
    return out


ALL = [b for p in PAGES for b in blocks(p)]
PYTHON = [b for b in ALL if b.lang == "python"]


def command_lines() -> list[tuple[str, list[str]]]:
    """(where, argv) of every `tokcomp …` / `python cli.py …` line in bash, sh and console blocks."""
    found = []
    for b in ALL:
        if b.lang not in ("bash", "sh", "console"):
            continue
        for k, raw in enumerate(b.code.splitlines()):
            s = raw.strip()
            if b.lang == "console":
                if not s.startswith("$ "):
                    continue
                s = s[2:]
            words = shlex.split(s, comments=True)
            if words[:2] == ["python", "cli.py"]:
                words = ["tokcomp"] + words[2:]
            if words[:1] == ["tokcomp"]:
                found.append((f"{b.id}+{k + 1}", words[1:]))
    return found


COMMANDS = command_lines()


# --- links --------------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces → hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found: set[str] = set()
    fence = False
    for ln in page.read_text(encoding="utf-8").split("\n"):
        if FENCE.match(ln):
            fence = not fence
            continue
        m = re.match(r"(#{1,6}) (.*)", ln)
        if m and not fence:
            a = slug(m.group(2))
            k = seen.get(a, 0)
            found.add(a if k == 0 else f"{a}-{k}")    # repeated headings get -1, -2, …
            seen[a] = k + 1
    return found


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    checked, bad = 0, []
    for target in links(page):
        if re.match(r"[a-z]+:", target):          # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        checked += 1
        if not dest.exists():
            bad.append(f"{target}: {dest} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    assert not bad, "\n".join(bad)
    if page.name == "README.md" and page.parent == ROOT:
        assert checked > 10, "the README links into docs/"


def test_readme_is_a_front_door():
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= 250, f"README.md has {n} lines; move topics into docs/"


def test_collectors_find_what_they_check():
    # The tests below are parametrized over these lists: empty lists would pass vacuously.
    assert len(PYTHON) >= 7
    assert len(COMMANDS) >= 60
    assert all(not b.imports_only or b.lang == "python" for b in ALL)


# --- the tolerance table ------------------------------------------------------------------------


def _num(cell: str) -> float | None:
    cell = cell.strip()
    return None if cell in ("—", "not judged") else float(cell)


def test_tolerance_table_is_core_tolerance_defaults():
    from tokcomp_edge.core.tolerance import DEFAULTS

    text = (ROOT / "docs" / "validate-and-report.md").read_text(encoding="utf-8")
    section = text.split("## Default tolerances, and why\n", 1)[1]
    table = section.lstrip("\n").split("\n\n", 1)[0].splitlines()    # the first table under the heading
    rows = table[2:]
    assert [r.split("|")[1].strip() for r in rows] == list(DEFAULTS)
    for r in rows:
        prec, bound, rel_l2, cos, jac, img_jac = (c.strip() for c in r.strip("|").split("|"))
        tol = DEFAULTS[prec]
        if bound == "not judged":
            assert tol.atol is None
        else:
            m = re.fullmatch(r"(\S+) \+ (\S+)·scale", bound)
            assert m and float(m.group(1)) == tol.atol and float(m.group(2)) == tol.rtol, (prec, bound)
        assert _num(rel_l2) == tol.max_rel_l2 and _num(cos) == tol.min_cosine, prec
        assert _num(jac) == tol.min_jaccard and _num(img_jac) == tol.min_image_jaccard, prec


# --- command lines ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli():
    import typer

    from tokcomp_edge.cli.app import app

    return typer.main.get_command(app)


def strict(cmd, ctx, args: list[str]) -> list[str]:
    """Run the command's own option parser without resilience: an unknown option, a missing option value
    or a flag given a value raises click's UsageError. No callback, conversion or command runs.
    Returns the positional words left over."""
    parser = cmd.make_parser(ctx)
    ctx.resilient_parsing = False
    try:
        _, left, _ = parser.parse_args(list(args))
    finally:
        ctx.resilient_parsing = True
    return left


def parse(cli, argv: list[str]) -> list[str]:
    """Resolve the (sub)command and parse its options as click does, without running anything.
    Returns the words no parameter took (extra arguments)."""
    ctx = cli.make_context("tokcomp", list(argv), resilient_parsing=True)
    strict(cli, ctx, argv)
    cmd = cli
    while hasattr(cmd, "resolve_command"):      # a group (typer ships its own copy of click)
        rest = list(getattr(ctx, "_protected_args", []) or getattr(ctx, "protected_args", [])) + list(ctx.args)
        if not rest:
            return []
        name, sub, args = cmd.resolve_command(ctx, rest)
        if sub is None:
            raise LookupError(f"no such command {rest[0]!r}")
        ctx = sub.make_context(name, list(args), parent=ctx, resilient_parsing=True)
        left = strict(sub, ctx, args)
        cmd = sub
    return left


@pytest.mark.parametrize("where,argv", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_tokcomp_line_parses(cli, where, argv):
    try:
        left = parse(cli, argv)
    except Exception as exc:   # click's UsageError / NoSuchOption (typer's bundled click) or LookupError
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        pytest.fail(f"{where}: `tokcomp {' '.join(argv)}`: {message}")
    assert not left, f"{where}: `tokcomp {' '.join(argv)}`: unexpected extra arguments {left}"


# --- python blocks ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def workspace(tmp_path_factory):
    """A folder holding what the blocks name: tiny bundles at the docs' paths, photos, pixels.npy."""
    from tokcomp_edge.calibration.preprocess import PreprocessConfig, preprocess
    from tokcomp_edge.export import ExportConfig, export_bundle

    ws = tmp_path_factory.mktemp("docs")
    # The docs' running example is export/siglip_pool2 (siglip-b16-224 pool:2); the same spec on the
    # test-sized preset keeps every block seconds long.
    export_bundle(ExportConfig(model="tiny-siglip", compress="pool:2", out=ws / "export" / "siglip_pool2",
                               variants=("fp16", "fp16-nhwc"), quiet=True))
    export_bundle(ExportConfig(model="tiny-clip", compress="pool:2", out=ws / "export" / "tiny-clip_pool2",
                               quiet=True))
    shutil.copytree(PHOTOS, ws / "calib_photos")
    shutil.copy(PHOTOS / "chelsea-cat-300x200.jpg", ws / "cat.jpg")
    preprocess(PreprocessConfig(bundle=ws / "export" / "siglip_pool2", images=(ws / "cat.jpg",),
                                out=ws / "pixels.npy"))
    return ws


def import_lines(code: str) -> str:
    tree = ast.parse(code)
    return "\n".join(ast.get_source_segment(code, n) for n in ast.walk(tree)
                     if isinstance(n, (ast.Import, ast.ImportFrom)))


@pytest.mark.parametrize("block", PYTHON, ids=[b.id for b in PYTHON])
def test_python_block_runs(block, workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    code = import_lines(block.code) if block.imports_only else block.code
    assert code.strip(), f"{block.id}: nothing to run"
    exec(compile(code, block.id, "exec"), {"__name__": "__docs__"})
