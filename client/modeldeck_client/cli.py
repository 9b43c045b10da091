"""`modeldeck`: what a CI job or a data scientist does with Modeldeck, from a shell.

Exit status: 0 done; 1 the thing itself ended badly (version invalid, deployment failed or
replaced, batch job failed, parity check failed); 2 usage or configuration; 3 the server refused
the request (4xx/5xx, its message on stderr); 4 a --wait ran out of time.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import httpx

from modeldeck_client.client import ApiError, Client, WaitTimeout
from modeldeck_client.config import ConfigError, load_settings
from modeldeck_client.types import DeployOutcome, Version

EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_TIMEOUT = 1, 2, 3, 4
MAX_EVENTS_SHOWN = 20


class Failed(Exception):
    """The command ran but what it waited for ended badly (exit status 1)."""


class Output:
    """Human lines on stdout, or one JSON document with --json; progress always on stderr."""

    def __init__(self, as_json: bool):
        self.as_json = as_json

    def result(self, document: Any, text: str) -> None:
        if self.as_json:
            print(json.dumps(_plain(document), indent=2, sort_keys=True, default=str))
        else:
            print(text)

    def note(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)


def _plain(document: Any) -> Any:
    if hasattr(document, "raw"):
        return document.raw
    if dataclasses.is_dataclass(document) and not isinstance(document, type):
        return {f.name: _plain(getattr(document, f.name)) for f in dataclasses.fields(document)}
    if isinstance(document, list):
        return [_plain(item) for item in document]
    if isinstance(document, dict):
        return {key: _plain(value) for key, value in document.items()}
    if isinstance(document, Path):
        return str(document)
    return document


class ProgressBar:
    """An upload bar on stderr: redrawn in place on a terminal, a line per quarter in CI logs."""

    def __init__(self, label: str):
        self.label = label
        self.terminal = sys.stderr.isatty()
        self.shown = -1

    def __call__(self, sent: int, total: int) -> None:
        percent = 100 if total == 0 else sent * 100 // total
        if self.terminal:
            if percent != self.shown:
                bar = "#" * (percent // 4)
                sys.stderr.write(f"\r{self.label} [{bar:<25}] {percent:3d}% {_size(sent)}")
                if percent == 100:
                    sys.stderr.write("\n")
                sys.stderr.flush()
        elif percent // 25 != self.shown // 25 or (percent == 100 and self.shown != 100):
            print(f"{self.label}: {percent}% of {_size(total)}", file=sys.stderr, flush=True)
        self.shown = percent


def _size(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return str(count)


def _json_object(text: str | None, what: str) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be a JSON object.") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{what} must be a JSON object.")
    return value


# -- registry ------------------------------------------------------------------------------------


def cmd_models_create(client: Client, args, out: Output) -> None:
    tags = dict(tag.partition("=")[::2] for tag in args.tag)
    model = client.model_create(args.name, description=args.description, tags=tags, team=args.team)
    out.result(model, f"created model {model.name} (team {model.team})")


def cmd_models_show(client: Client, args, out: Output) -> None:
    model = client.model_get(args.name)
    out.result(model, f"{model.name}: latest version {model.latest_version or '—'}")


def _version_text(version: Version) -> str:
    lines = [f"{version.reference}: {version.status}"]
    if version.status_reason:
        lines.append(f"  reason: {version.status_reason}")
    lines.append(f"  approval: {version.approval}")
    if version.aliases:
        lines.append(f"  aliases: {', '.join(version.aliases)}")
    for direction in ("inputs", "outputs"):
        for spec in (version.signature or {}).get(direction, []):
            lines.append(f"  {direction[:-1]} {spec['name']}: {spec['datatype']} {spec['shape']}")
    if version.sha256:
        lines.append(f"  sha256: {version.sha256} ({version.size} bytes)")
    return "\n".join(lines)


def _finish_version(client: Client, version: Version, args, out: Output) -> None:
    if args.wait:
        out.note(f"waiting for validation of {version.reference}")
        version = client.version_wait(version.model, version.number, timeout=args.timeout)
    out.result(version, _version_text(version))
    if version.status == "invalid":
        raise Failed(f"{version.reference} is invalid: {version.status_reason}")


def cmd_versions_push(client: Client, args, out: Output) -> None:
    params = _json_object(args.params, "--params") or {}
    file = Path(args.file)
    if args.framework != "onnx" or args.expected:
        conversion = _convert(args, out)
        file = conversion.onnx_path
        params = {**params, **conversion.params}
    version = client.version_push(
        args.model,
        file,
        reference=Path(args.reference) if args.reference else None,
        source=args.source,
        metrics=_json_object(args.metrics, "--metrics"),
        params=params,
        git_commit=args.git_commit,
        data_reference=args.data_reference,
        progress=ProgressBar(f"uploading {file.name}"),
    )
    out.note(f"registered {version.reference} ({version.status})")
    _finish_version(client, version, args, out)


def _convert(args, out: Output):
    from modeldeck_client import convert

    if not args.sample:
        raise ConfigError("--sample CSV is required to check the conversion.")
    tolerances = {
        "absolute_tolerance": args.atol,
        "relative_tolerance": args.rtol,
    }
    try:
        if args.framework == "onnx":
            conversion = convert.check_onnx(
                Path(args.file),
                sample_path=Path(args.sample),
                expected_path=Path(args.expected),
                **tolerances,
            )
        else:
            conversion = convert.convert(
                Path(args.file),
                framework=args.framework,
                sample_path=Path(args.sample),
                **tolerances,
            )
    except convert.ConversionError as error:
        raise Failed(f"not uploaded: {error}") from None
    out.note(f"parity check passed: {conversion.report.summary()}")
    return conversion


def cmd_versions_show(client: Client, args, out: Output) -> None:
    version = client.version_get(args.model, args.version)
    out.result(version, _version_text(version))


def cmd_versions_list(client: Client, args, out: Output) -> None:
    versions = client.version_list(args.model)
    lines = [
        f"{v.number:>4}  {v.status:<10}  {v.approval or '':<9}  {','.join(v.aliases or [])}"
        for v in versions
    ]
    out.result(versions, "\n".join(lines) or "no versions")


def cmd_alias_set(client: Client, args, out: Output) -> None:
    alias = client.alias_set(args.model, args.alias, args.version, reason=args.reason)
    out.result(alias, f"{args.model}@{alias.name} -> version {alias.version}")


def cmd_approve(client: Client, args, out: Output) -> None:
    decision = "rejected" if args.reject else "approved"
    version = client.version_approve(
        args.model, args.version, decision=decision, comment=args.comment
    )
    out.result(version, f"{version.reference}: {version.approval}")


def cmd_export_triton(client: Client, args, out: Output) -> None:
    destination = Path(args.out or f"{args.model}-{args.version}-triton.zip")
    if args.extract:
        with tempfile.TemporaryDirectory() as folder:
            archive = client.triton_export(args.model, args.version, Path(folder) / "repo.zip")
            target = Path(args.extract)
            target.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(archive) as bundle:
                names = bundle.namelist()
                for name in names:
                    # The server writes NAME/config.pbtxt and NAME/1/model.onnx; refuse anything
                    # that would land outside the target folder.
                    resolved = (target / name).resolve()
                    if not resolved.is_relative_to(target.resolve()):
                        raise Failed(f"refusing archive member {name!r}")
                bundle.extractall(target)
        out.result({"extracted": str(target), "files": names}, f"extracted to {target}")
        return
    client.triton_export(args.model, args.version, destination)
    out.result({"file": str(destination)}, f"wrote {destination}")


# -- deployments ---------------------------------------------------------------------------------


def _wait_release(client: Client, endpoint: str, release: int, since: int, args, out) -> None:
    if not args.wait:
        out.result({"endpoint": endpoint, "release": release}, f"{endpoint}: release {release}")
        return
    out.note(f"waiting for {endpoint} to serve release {release}")
    outcome: DeployOutcome = client.release_wait(
        endpoint, release, timeout=args.timeout, since_event=since
    )
    text = f"{endpoint}: release {release} {'live' if outcome.live else 'not live'}"
    if not outcome.live:
        text += f" ({outcome.reason})"
        shown = outcome.events[-MAX_EVENTS_SHOWN:]
        if len(outcome.events) > len(shown):
            text += f"\n  ({len(outcome.events) - len(shown)} earlier events not shown)"
        for event in shown:
            text += f"\n  {event.created_at} {event.level:<7} {event.message}"
    out.result(outcome, text)
    if not outcome.live:
        if outcome.reason.startswith("still "):
            raise WaitTimeout(f"{endpoint}: release {release} {outcome.reason}")
        raise Failed(f"{endpoint}: release {release} did not go live: {outcome.reason}")


def cmd_endpoints_create(client: Client, args, out: Output) -> None:
    endpoint = client.endpoint_create(args.name, target=args.target, version=args.version)
    if args.wait:
        _wait_release(client, endpoint.name, endpoint.release, 0, args, out)
    else:
        out.result(endpoint, f"created endpoint {endpoint.name} ({endpoint.status})")


def cmd_endpoints_show(client: Client, args, out: Output) -> None:
    endpoint = client.endpoint_get(args.name)
    lines = [f"{endpoint.name}: {endpoint.status} (release {endpoint.release}, url {endpoint.url})"]
    for variant in endpoint.traffic or []:
        lines.append(f"  {variant['version']}: {variant['weight']}% {variant['role']}")
    out.result(endpoint, "\n".join(lines))


def cmd_deploy(client: Client, args, out: Output) -> None:
    since = client.last_event_id(args.endpoint) if args.wait else 0
    release = client.deploy(args.endpoint, args.version, weight=args.weight, note=args.note)
    _wait_release(client, args.endpoint, release, since, args, out)


def _variants(pairs: list[str], role: str) -> list[dict[str, Any]]:
    """VERSION=PERCENT pairs; in a live split the first is the primary, the rest candidates."""
    variants = []
    for index, pair in enumerate(pairs):
        version, separator, number = pair.rpartition("=")
        if not separator or not number.isdigit():
            raise ConfigError(f"{pair!r}: write VERSION=PERCENT, e.g. churn:3=10.")
        if role == "shadow":
            variants.append({"version": version, "role": role, "mirror_percent": int(number)})
        else:
            live_role = "primary" if index == 0 else "candidate"
            variants.append({"version": version, "role": live_role, "weight": int(number)})
    return variants


def cmd_traffic(client: Client, args, out: Output) -> None:
    variants = _variants(args.split, "live") + _variants(args.shadow, "shadow")
    since = client.last_event_id(args.endpoint) if args.wait else 0
    release = client.traffic_set(args.endpoint, variants, note=args.note)
    _wait_release(client, args.endpoint, release, since, args, out)


def cmd_promote(client: Client, args, out: Output) -> None:
    since = client.last_event_id(args.endpoint) if args.wait else 0
    release = client.promote(args.endpoint, note=args.note)
    _wait_release(client, args.endpoint, release, since, args, out)


def cmd_rollback(client: Client, args, out: Output) -> None:
    since = client.last_event_id(args.endpoint) if args.wait else 0
    release = client.rollback(args.endpoint, to=args.to, note=args.note)
    _wait_release(client, args.endpoint, release, since, args, out)


# -- experiments, batch, feedback ----------------------------------------------------------------


def _experiment_text(experiment) -> str:
    text = (
        f"experiment {experiment.id} {experiment.name!r} on {experiment.endpoint}: "
        f"{experiment.status}; {experiment.control} vs {experiment.treatment}"
    )
    if experiment.verdict_text:
        text += f"\n  {experiment.verdict_text}"
    return text


def cmd_experiments_create(client: Client, args, out: Output) -> None:
    fields: dict[str, Any] = {
        "endpoint": args.endpoint,
        "name": args.name,
        "control": args.control,
        "treatment": args.treatment,
        "metric": args.metric,
        "minimum_effect": args.minimum_effect,
        "treatment_percent": args.treatment_percent,
    }
    if args.description:
        fields["description"] = args.description
    experiment = client.experiment_create(**fields)
    out.result(experiment, _experiment_text(experiment))


def cmd_experiments_start(client: Client, args, out: Output) -> None:
    experiment = client.experiment_start(args.id)
    out.result(experiment, _experiment_text(experiment))


def cmd_experiments_show(client: Client, args, out: Output) -> None:
    experiment = client.experiment_get(args.id)
    out.result(experiment, _experiment_text(experiment))


def cmd_batch_run(client: Client, args, out: Output) -> None:
    job = client.batch_create(
        args.version,
        Path(args.file),
        key_column=args.key_column,
        progress=ProgressBar(f"uploading {Path(args.file).name}"),
    )
    out.note(f"batch job {job.id} created ({job.status})")
    if args.wait or args.out:
        job = client.batch_wait(job.id, timeout=args.timeout)
    if job.status in {"failed", "cancelled"}:
        out.result(job, f"batch job {job.id} {job.status}: {job.status_reason}")
        raise Failed(f"batch job {job.id} {job.status}: {job.status_reason}")
    text = f"batch job {job.id}: {job.status} ({job.rows_done}/{job.rows_total} rows)"
    if args.out and job.status == "succeeded":
        client.batch_result(job.id, Path(args.out))
        text += f"; result in {args.out}"
    out.result(job, text)


MAX_FEEDBACK_BATCH = 1_000


def _feedback_items(path: Path) -> list[dict[str, Any]]:
    """A JSON list, or a CSV with request_id and a label or value column."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        items = json.loads(text)
        if not isinstance(items, list):
            raise ConfigError(f"{path} must hold a JSON list of {{request_id, label|value}}.")
        return items
    rows = list(csv.DictReader(text.splitlines()))
    items = []
    for row in rows:
        item: dict[str, Any] = {"request_id": row.get("request_id", "")}
        if row.get("value") not in (None, ""):
            item["value"] = float(row["value"])
        else:
            item["label"] = row.get("label", "")
        items.append(item)
    return items


def cmd_feedback_send(client: Client, args, out: Output) -> None:
    items = _feedback_items(Path(args.file))
    totals: dict[str, Any] = {}
    for start in range(0, len(items), MAX_FEEDBACK_BATCH):
        answer = client.feedback_send(args.endpoint, items[start : start + MAX_FEEDBACK_BATCH])
        for key, value in answer.items():
            if isinstance(value, int) and not isinstance(value, bool):
                totals[key] = totals.get(key, 0) + value
            elif isinstance(value, list):
                totals.setdefault(key, []).extend(value)
            else:
                totals[key] = value
    summary = ", ".join(
        f"{key} {len(value) if isinstance(value, list) else value}" for key, value in totals.items()
    )
    out.result(totals, f"sent {len(items)} feedback items: {summary}")


def cmd_import_mlflow(client: Client, args, out: Output) -> None:
    from modeldeck_client import mlflow_import

    try:
        imported = mlflow_import.fetch(
            args.model_uri,
            tracking_uri=args.tracking_uri,
            sample_path=Path(args.sample) if args.sample else None,
            absolute_tolerance=args.atol,
            relative_tolerance=args.rtol,
        )
    except mlflow_import.ImportFailed as error:
        raise Failed(f"not uploaded: {error}") from None
    if imported.report is not None:
        out.note(f"parity check passed: {imported.report.summary()}")
    name = args.model or imported.name
    try:
        client.model_get(name)
    except ApiError as error:
        if error.status != 404:
            raise
        client.model_create(name, description=f"Imported from MLflow ({imported.model_uri}).")
        out.note(f"created model {name}")
    version = client.version_push(
        name,
        imported.onnx_path,
        reference=Path(args.reference) if args.reference else None,
        source=imported.source,
        params=imported.params,
        git_commit=imported.git_commit,
        data_reference=imported.model_uri,
        metrics=imported.metrics,
        progress=ProgressBar(f"uploading {imported.onnx_path.name}"),
    )
    out.note(f"registered {version.reference} from {imported.model_uri}")
    _finish_version(client, version, args, out)


# -- the parser ----------------------------------------------------------------------------------


def _waits(parser: argparse.ArgumentParser, default_timeout: float = 600) -> None:
    parser.add_argument("--wait", action="store_true", help="wait until it settles")
    parser.add_argument(
        "--timeout", type=float, default=default_timeout, help="seconds --wait waits at most"
    )


def _tolerances(parser: argparse.ArgumentParser) -> None:
    from modeldeck_client.convert import DEFAULT_ABSOLUTE_TOLERANCE, DEFAULT_RELATIVE_TOLERANCE

    parser.add_argument("--atol", type=float, default=DEFAULT_ABSOLUTE_TOLERANCE)
    parser.add_argument("--rtol", type=float, default=DEFAULT_RELATIVE_TOLERANCE)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modeldeck", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--profile", help="profile in the config file (MODELDECK_PROFILE)")
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")

    def command(subparsers, name: str, handler, help_text: str) -> argparse.ArgumentParser:
        # argparse %-formats help strings: "100 %" must reach it as "100 %%".
        sub = subparsers.add_parser(name, help=help_text.replace("%", "%%"), description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    models = groups.add_parser("models", help="registered models").add_subparsers(required=True)
    sub = command(models, "create", cmd_models_create, "register a model name")
    sub.add_argument("name")
    sub.add_argument("--description", default="")
    sub.add_argument("--tag", action="append", default=[], help="KEY=VALUE (repeatable)")
    sub.add_argument("--team", default="", help="when your token's user is in several teams")
    sub = command(models, "show", cmd_models_show, "one model")
    sub.add_argument("name")

    versions = groups.add_parser("versions", help="model versions").add_subparsers(required=True)
    sub = command(versions, "push", cmd_versions_push, "upload a model file as a new version")
    sub.add_argument("file")
    sub.add_argument("--model", "-m", required=True, help="the registered model's name")
    sub.add_argument(
        "--from",
        dest="framework",
        choices=["onnx", "sklearn", "xgboost", "lightgbm"],
        default="onnx",
        help="convert from this framework on this machine first (default: the file is ONNX)",
    )
    sub.add_argument("--sample", help="CSV (header + numeric rows) both models answer")
    sub.add_argument("--expected", help="with --from onnx: the original's saved output")
    _tolerances(sub)
    sub.add_argument("--reference", help="CSV of sample inputs for drift")
    sub.add_argument("--source", default="", help="http(s) URL of where the model came from")
    sub.add_argument("--git-commit", default="")
    sub.add_argument("--data-reference", default="")
    sub.add_argument("--metrics", help="JSON object of offline metrics")
    sub.add_argument("--params", help="JSON object of training parameters")
    _waits(sub)
    sub = command(versions, "show", cmd_versions_show, "one version")
    sub.add_argument("model")
    sub.add_argument("version", type=int, help="version number")
    sub = command(versions, "list", cmd_versions_list, "a model's versions")
    sub.add_argument("model")

    alias = groups.add_parser("alias", help="aliases").add_subparsers(required=True)
    sub = command(alias, "set", cmd_alias_set, "point an alias at a version")
    sub.add_argument("model")
    sub.add_argument("alias")
    sub.add_argument("version", type=int)
    sub.add_argument("--reason", default="")

    sub = command(groups, "approve", cmd_approve, "approve (or --reject) a version")
    sub.add_argument("model")
    sub.add_argument("version", type=int)
    sub.add_argument("--reject", action="store_true")
    sub.add_argument("--comment", default="")

    endpoints = groups.add_parser("endpoints", help="endpoints").add_subparsers(required=True)
    sub = command(endpoints, "create", cmd_endpoints_create, "create an endpoint")
    sub.add_argument("name")
    sub.add_argument("--target", required=True)
    sub.add_argument("--version", required=True, help='"model:N" or "model@alias"')
    _waits(sub)
    sub = command(endpoints, "show", cmd_endpoints_show, "status and traffic of an endpoint")
    sub.add_argument("name")

    sub = command(groups, "deploy", cmd_deploy, "deploy a version (a canary with --weight)")
    sub.add_argument("endpoint")
    sub.add_argument("version", help='"model:N" or "model@alias"')
    sub.add_argument("--weight", type=int, help="percent of traffic (default 100)")
    sub.add_argument("--note", default="")
    _waits(sub)
    sub = command(groups, "traffic", cmd_traffic, "set the whole split")
    sub.add_argument("endpoint")
    sub.add_argument(
        "split", nargs="+", help="VERSION=PERCENT (the first is the primary); weights sum to 100"
    )
    sub.add_argument("--shadow", action="append", default=[], help="VERSION=MIRROR_PERCENT")
    sub.add_argument("--note", default="")
    _waits(sub)
    sub = command(groups, "promote", cmd_promote, "the candidate takes 100 %")
    sub.add_argument("endpoint")
    sub.add_argument("--note", default="")
    _waits(sub)
    sub = command(groups, "rollback", cmd_rollback, "go back to the previous live release")
    sub.add_argument("endpoint")
    sub.add_argument("--to", type=int, help="this release number instead")
    sub.add_argument("--note", default="")
    _waits(sub)

    experiments = groups.add_parser("experiments", help="A/B experiments").add_subparsers(
        required=True
    )
    sub = command(experiments, "create", cmd_experiments_create, "a draft experiment")
    sub.add_argument("--endpoint", required=True)
    sub.add_argument("--name", required=True)
    sub.add_argument("--control", required=True)
    sub.add_argument("--treatment", required=True)
    sub.add_argument("--metric", required=True)
    sub.add_argument("--minimum-effect", type=float, required=True)
    sub.add_argument("--treatment-percent", type=int, default=50)
    sub.add_argument("--description", default="")
    for name, handler, text in (
        ("start", cmd_experiments_start, "start a draft (splits the traffic)"),
        ("show", cmd_experiments_show, "results and verdict"),
    ):
        sub = command(experiments, name, handler, text)
        sub.add_argument("id", type=int)

    batch = groups.add_parser("batch", help="batch scoring").add_subparsers(required=True)
    sub = command(batch, "run", cmd_batch_run, "score a CSV with a version")
    sub.add_argument("version", help='"model:N" or "model@alias"')
    sub.add_argument("file")
    sub.add_argument("--out", help="write the result CSV here (implies --wait)")
    sub.add_argument("--key-column", default="")
    _waits(sub, default_timeout=3600)

    feedback = groups.add_parser("feedback", help="labels for predictions").add_subparsers(
        required=True
    )
    sub = command(feedback, "send", cmd_feedback_send, "send labels or values by request id")
    sub.add_argument("endpoint")
    sub.add_argument("file", help="JSON list, or CSV with request_id and label or value")

    export = groups.add_parser("export", help="exports").add_subparsers(required=True)
    sub = command(export, "triton", cmd_export_triton, "a Triton model repository (zip)")
    sub.add_argument("model")
    sub.add_argument("version", type=int)
    sub.add_argument("--out", help="zip file to write (default MODEL-VERSION-triton.zip)")
    sub.add_argument("--extract", help="unpack into this folder instead")

    imports = groups.add_parser("import", help="imports").add_subparsers(required=True)
    sub = command(imports, "mlflow", cmd_import_mlflow, "a model from an MLflow registry")
    sub.add_argument("model_uri", help="models:/NAME@ALIAS or models:/NAME/VERSION")
    sub.add_argument("--tracking-uri", required=True)
    sub.add_argument("--model", "-m", help="Modeldeck model name (default: the MLflow name)")
    sub.add_argument("--sample", help="CSV for the parity check of converted flavors")
    sub.add_argument("--reference", help="CSV of sample inputs for drift")
    _tolerances(sub)
    _waits(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Output(args.json)
    try:
        settings = load_settings(profile=args.profile)
        with Client.from_settings(settings) as client:
            args.handler(client, args, out)
    except (ConfigError, argparse.ArgumentTypeError, FileNotFoundError) as error:
        print(f"modeldeck: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ApiError as error:
        print(f"modeldeck: the server refused: {error}", file=sys.stderr)
        if error.detail:
            print(json.dumps(error.detail, default=str), file=sys.stderr)
        return EXIT_REFUSED
    except httpx.HTTPError as error:
        print(f"modeldeck: cannot reach the server: {error}", file=sys.stderr)
        return EXIT_REFUSED
    except WaitTimeout as error:
        print(f"modeldeck: {error}", file=sys.stderr)
        return EXIT_TIMEOUT
    except Failed as error:
        print(f"modeldeck: {error}", file=sys.stderr)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
