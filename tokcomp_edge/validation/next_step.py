"""The one next step a failed validation suggests, chosen by the cause of its first failure.

A failure's hint must match its cause: "loosen a tolerance" is right for a figure over its bound and wrong
for NaN in the target's output, a device that was not used, or a reference that compared nothing.
"""

from __future__ import annotations

# cause → hint; `{bundle}` and `{variant}` are filled from the target.
HINTS = {
    "tolerance": "read {md}; if the differences are expected, loosen a tolerance with e.g. --max-rel-l2 tokens=…",
    "target": "the target's own outputs are broken (not finite, out of range or inconsistent): find the block "
              "with `tokcomp debug {bundle} --variant {variant}`, or rebuild the engine",
    "missing": "the target does not match the bundle's outputs: pass the --bundle it was built from, or re-export",
    "uncompared": "re-export the bundle (its reference.npz holds no batch the target can take), or add --torch require",
    "fallback": "install the runtime for that device (e.g. onnxruntime-gpu), validate with --device cpu, "
                "or pass --allow-fallback to accept the CPU run",
}


def check_cause(failure: str) -> str:
    """The cause of one failed threshold of a Check (its sentence as core.comparison writes it)."""
    if failure.startswith("target alone:"):
        return "target"
    if "is missing from the target" in failure:
        return "missing"
    return "tolerance"


def next_step(causes: list[str], *, md: str, bundle: str, variant: str) -> str:
    """The hint for the first failure's cause (causes in the order the failures are listed)."""
    cause = causes[0] if causes else "tolerance"
    return HINTS[cause].format(md=md, bundle=bundle, variant=variant)
