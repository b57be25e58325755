"""The report as Markdown (GitHub-flavoured; pastes into a pull request)."""

from __future__ import annotations

from typing import Any

from . import report_tables as T


def _cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(_cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def render_markdown(report: dict[str, Any]) -> str:
    """Render a report dict (as loaded from its JSON) to Markdown."""
    t = report["target"]
    out = [f"# tokcomp validation — {report['bundle']['name']} · {t['label']}: **{T.verdict(report)}**", ""]
    if report.get("links"):
        out += ["See also: " + " · ".join(f"[{x['label']}](<{x['href']}>)" for x in report["links"]), ""]
    if report.get("failures"):
        out += ["## Failures", ""] + [f"- {f}" for f in report["failures"]] + [""]
    for w in report.get("warnings", []):
        out += [f"> **Warning:** {w}", ""]
    if report.get("notes"):
        out += ["## Notes", ""] + [f"- {n}" for n in report["notes"]] + [""]
    out += [md_table(["", ""], T.summary_rows(report)), ""]
    out += ["## Accuracy (worst case over all comparisons)", "", md_table(*T.accuracy_table(report)), ""]
    out += ["<details><summary>Every comparison</summary>", "", md_table(*T.checks_table(report)), "", "</details>", ""]
    if report["latency"]["runs"]:
        lat = report["latency"]
        out += ["## Latency", "",
                f"{lat['warmup']} warm-up + {lat['iterations']} timed calls per batch size; {lat['timing']}.", "",
                md_table(*T.latency_table(report)), ""]
    out += ["## Memory", "", md_table(["", ""], T.memory_rows(report)), ""]
    e = report["economics"]
    out += ["## Token economics", "",
            f"{e['tokens_in']} → {e['tokens_out']} visual tokens per {T.token_unit(report)} "
            f"({e['ratio']:.3f}× of the input){', with ' + str(e['text_tokens']) + ' text tokens' if e['text_tokens'] else ''}.", ""]
    if e["llms"]:
        out += [md_table(*T.economics_table(report)), "", f"Formula: `{e['formula']}`", ""]
    out += ["## Environment", "", md_table(["", ""], T.environment_rows(report)), ""]
    out += [f"_Report schema {report['schema']} v{report['schema_version']}, tokcomp {report['tokcomp_version']}. "
            "Plots are in the HTML report beside this file._", ""]
    return "\n".join(out)
