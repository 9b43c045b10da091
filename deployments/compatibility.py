"""Whether a version can take over an endpoint's traffic without breaking its clients.

Pure functions on signatures as validation stores them (`{"inputs": [{name, datatype, shape}],
"outputs": [...]}`, -1 = any size). Clients of an endpoint send the inputs the served version
declares and read its outputs, so a new version must accept exactly those inputs (no input gone,
none added: ONNX inputs are all required), with the same datatypes and shapes at least as wide,
and must still return every output the clients may read. Extra outputs widen the answer and
pass with a note.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Comparison:
    """What changes for clients: `problems` break them, `notes` do not."""

    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def is_compatible(self) -> bool:
        """No change that breaks a client."""
        return not self.problems


def _describe(tensor: dict) -> str:
    shape = ", ".join("?" if dim < 0 else str(dim) for dim in tensor.get("shape", []))
    return f"{tensor.get('datatype', '?')} [{shape}]"


def _shape_change(served: list[int], new: list[int], *, accepting: bool) -> str | None:
    """Why a shape change breaks clients, or None. `accepting`: the new shape must accept
    everything the served one did (inputs); otherwise it must not return what clients could
    not expect (outputs: a fixed size that differs)."""
    if len(served) != len(new):
        return f"rank {len(served)} → {len(new)}"
    for axis, (before, after) in enumerate(zip(served, new, strict=True)):
        if accepting:
            if after >= 0 and before != after:
                was = "any size" if before < 0 else str(before)
                return f"axis {axis} accepted {was}, now only {after}"
        elif before >= 0 and after >= 0 and before != after:
            return f"axis {axis} was {before}, now {after}"
    return None


def compare_signatures(served: dict, new: dict) -> Comparison:
    """The differences that matter to clients of `served` when `new` answers them instead."""
    problems: list[str] = []
    notes: list[str] = []
    served_inputs = {t["name"]: t for t in served.get("inputs", [])}
    new_inputs = {t["name"]: t for t in new.get("inputs", [])}
    for name, before in served_inputs.items():
        after = new_inputs.get(name)
        if after is None:
            problems.append(
                f"input '{name}' ({_describe(before)}) is gone: requests that send it are refused"
            )
            continue
        if before.get("datatype") != after.get("datatype"):
            problems.append(
                f"input '{name}' datatype {before.get('datatype')} → {after.get('datatype')}"
            )
        change = _shape_change(before.get("shape", []), after.get("shape", []), accepting=True)
        if change:
            problems.append(
                f"input '{name}' shape {_describe(before)} → {_describe(after)} ({change})"
            )
    for name, after in new_inputs.items():
        if name not in served_inputs:
            problems.append(
                f"input '{name}' ({_describe(after)}) is new and required: clients do not send it"
            )
    served_outputs = {t["name"]: t for t in served.get("outputs", [])}
    new_outputs = {t["name"]: t for t in new.get("outputs", [])}
    for name, before in served_outputs.items():
        after = new_outputs.get(name)
        if after is None:
            problems.append(
                f"output '{name}' ({_describe(before)}) is gone: clients that read it break"
            )
            continue
        if before.get("datatype") != after.get("datatype"):
            problems.append(
                f"output '{name}' datatype {before.get('datatype')} → {after.get('datatype')}"
            )
        elif before.get("type") != after.get("type"):
            # Non-tensor outputs (sklearn's ZipMap) travel as JSON text; its structure matters.
            problems.append(
                f"output '{name}' type {before.get('type') or 'tensor'} → "
                f"{after.get('type') or 'tensor'}"
            )
        change = _shape_change(before.get("shape", []), after.get("shape", []), accepting=False)
        if change:
            problems.append(
                f"output '{name}' shape {_describe(before)} → {_describe(after)} ({change})"
            )
    for name, after in new_outputs.items():
        if name not in served_outputs:
            notes.append(f"adds output '{name}' ({_describe(after)}); existing clients ignore it")
    return Comparison(tuple(problems), tuple(notes))


def readable_diff(*, served_reference: str, new_reference: str, comparison: Comparison) -> str:
    """The refusal message: what breaks, one line each."""
    lines = [
        f"{new_reference} does not fit what this endpoint serves ({served_reference}); "
        "its clients would break:"
    ]
    lines += [f"- {problem}" for problem in comparison.problems]
    lines.append("A deployer can pass force: true to change it anyway.")
    return "\n".join(lines)
