"""Reads for the registry, always scoped to the caller's teams."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from django.db.models import Prefetch, Q, QuerySet, TextField
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.http import Http404

from accounts.actor import Actor
from accounts.models import Team
from common.errors import ApplicationError
from registry.models import (
    ALIAS_NAME_PATTERN,
    MODEL_NAME_PATTERN,
    Alias,
    AliasEvent,
    Artifact,
    BatchJob,
    JobStatus,
    ModelVersion,
    Optimization,
    RegisteredModel,
    VersionStatus,
)

MAX_QUERY_LENGTH = 100
# Version numbers are 32-bit in the database; a bigger one in a URL names nothing.
MAX_VERSION_NUMBER = 2**31 - 1


def is_model_name(name: str) -> bool:
    """Whether `name` could be a stored model name (anything else is looked up as missing)."""
    return isinstance(name, str) and re.fullmatch(MODEL_NAME_PATTERN, name) is not None


def is_alias_name(name: str) -> bool:
    """Whether `name` could be a stored alias name."""
    return isinstance(name, str) and re.fullmatch(ALIAS_NAME_PATTERN, name) is not None


def model_list_for_actor(
    *, actor: Actor, q: str = "", tag: str = "", archived: bool | None = None
) -> QuerySet[RegisteredModel]:
    """Models of the actor's teams; `q` searches name and description, `tag` is `key` or
    `key=value`, `archived` None means both."""
    models = RegisteredModel.objects.select_related("team")
    if not actor.is_system:
        models = models.filter(team_id__in=actor.team_ids)
    # PostgreSQL refuses NUL in text; nothing stored can contain one, so dropping it is safe.
    q = (q or "").replace("\x00", "").strip()[:MAX_QUERY_LENGTH]
    if q:
        models = models.filter(Q(name__icontains=q) | Q(description__icontains=q))
    tag = (tag or "").replace("\x00", "").strip()[: MAX_QUERY_LENGTH * 4]
    if tag:
        key, has_value, value = tag.partition("=")
        models = models.filter(tags__has_key=key)
        if has_value:
            # KeyTextTransform takes the key as data, so any key characters are safe.
            models = models.annotate(
                _tag_value=Cast(KeyTextTransform(key, "tags"), TextField())
            ).filter(_tag_value=value)
    if archived is not None:
        models = models.filter(archived_at__isnull=not archived)
    return models


def model_get_for_actor(*, actor: Actor, name: str) -> RegisteredModel:
    """One model by name; another team's model does not exist for the caller (404)."""
    if not is_model_name(name):
        raise Http404("No such model.")
    model = model_list_for_actor(actor=actor).filter(name=name).first()
    if model is None:
        raise Http404("No such model.")
    return model


def team_list_for_role(*, actor: Actor, minimum: str) -> QuerySet[Team]:
    """The actor's teams in which they hold at least `minimum`."""
    team_ids = [team_id for team_id in actor.team_ids if actor.has_role(team_id, minimum)]
    return Team.objects.filter(pk__in=team_ids).order_by("name")


def team_for_new_model(*, actor: Actor, team_name: str | None) -> Team:
    """Which team a new model belongs to: the token's team, the only team, or the named one."""
    teams = Team.objects.filter(pk__in=actor.team_ids).order_by("name")
    if actor.token is not None:
        if team_name and team_name != actor.token.team.name:
            raise ApplicationError(
                f"This token belongs to team {actor.token.team.name!r}.",
                {"team": ["Leave it out or name the token's team."]},
            )
        return actor.token.team
    if team_name:
        team = teams.filter(name=team_name).first()
        if team is None:
            raise ApplicationError(
                "You are not a member of that team.", {"team": ["Name one of your teams."]}
            )
        return team
    if len(teams) == 1:
        return teams[0]
    if not teams:
        raise ApplicationError("You are not a member of any team yet.")
    raise ApplicationError(
        "You are in several teams: say which one owns the model.",
        {"team": [f"One of: {', '.join(t.name for t in teams)}."]},
    )


def _versions() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.select_related(
        "model", "model__team", "derived_from"
    ).prefetch_related(
        Prefetch("artifacts", queryset=Artifact.objects.order_by("kind")),
        Prefetch("aliases", queryset=Alias.objects.order_by("name")),
    )


def version_list(*, actor: Actor, model: RegisteredModel) -> QuerySet[ModelVersion]:
    """The versions of a model the actor can see, newest first."""
    if not actor.is_system and model.team_id not in actor.team_ids:
        raise Http404("No such model.")
    return _versions().filter(model=model).order_by("-number")


def version_get(*, actor: Actor, model: RegisteredModel, number: int) -> ModelVersion:
    """One version by number (404 when absent or not visible)."""
    if not 0 < number <= MAX_VERSION_NUMBER:
        raise Http404("No such version.")
    version = version_list(actor=actor, model=model).filter(number=number).first()
    if version is None:
        raise Http404("No such version.")
    return version


_REFERENCE = re.compile(r"^(?P<model>[^:@\s]+)(?::(?P<number>\d+)|@(?P<alias>[^:@\s]+))$")


def version_resolve(*, actor: Actor, reference: str) -> ModelVersion:
    """The version that `model:N` or `model@alias` names (also `@latest` and `@vN`).

    Raises ApplicationError with a readable message when the reference names nothing the
    actor can see; another team's model reads as unknown.
    """
    match = _REFERENCE.match(reference.strip()) if isinstance(reference, str) else None
    if match is None:
        raise ApplicationError(
            f"{str(reference)[:80]!r} is not a version reference; write 'model:N' or "
            "'model@alias'.",
            {"version": ["Use model:N or model@alias."]},
        )
    name = match["model"]
    model = (
        model_list_for_actor(actor=actor).filter(name=name).first() if is_model_name(name) else None
    )
    if model is None:
        raise ApplicationError(
            f"There is no model named {name[:63]!r}.", {"version": ["Unknown model."]}
        )
    versions = _versions().filter(model=model)
    alias = match["alias"]
    if match["number"] is not None or (alias and re.fullmatch(r"v\d+", alias)):
        number = int(match["number"] if match["number"] is not None else alias[1:])
        version = versions.filter(number=number).first() if number <= MAX_VERSION_NUMBER else None
        if version is None:
            known = (
                f" (it has versions 1 to {model.last_version_number})"
                if (model.last_version_number)
                else " (it has no versions yet)"
            )
            raise ApplicationError(
                f"Model {name!r} has no version {number}{known}.", {"version": ["Unknown version."]}
            )
        return version
    if alias == "latest":
        version = versions.filter(status=VersionStatus.READY).order_by("-number").first()
        if version is None:
            raise ApplicationError(
                f"Model {name!r} has no ready version yet.", {"version": ["No ready version."]}
            )
        return version
    row = Alias.objects.filter(model=model, name=alias).first() if is_alias_name(alias) else None
    if row is None:
        known = ", ".join(model.aliases.order_by("name").values_list("name", flat=True)[:20])
        hint = f" Its aliases: {known}." if known else " It has no aliases."
        raise ApplicationError(
            f"Model {name!r} has no alias {alias[:32]!r}.{hint}", {"version": ["Unknown alias."]}
        )
    return versions.get(pk=row.version_id)


def alias_list(*, model: RegisteredModel) -> QuerySet[Alias]:
    """A model's current aliases with their versions."""
    return Alias.objects.filter(model=model).select_related("version", "model").order_by("name")


def alias_history(*, model: RegisteredModel, name: str | None = None) -> QuerySet[AliasEvent]:
    """Every move of a model's aliases (or of one alias), newest first."""
    events = AliasEvent.objects.filter(model=model).select_related(
        "from_version", "to_version", "model"
    )
    if name is not None:
        if not is_alias_name(name):
            return events.none()
        events = events.filter(alias_name=name)
    return events.order_by("-created_at", "-id")


def alias_version_at(model: RegisteredModel, alias: str, at: datetime) -> ModelVersion | None:
    """Which version `alias` named at time `at` (None if it did not exist then)."""
    event = alias_history(model=model, name=alias).filter(created_at__lte=at).first()
    return event.to_version if event is not None else None


# Fields compared one to one; signature, metrics, params and the report are compared by key.
_COMPARED_FIELDS = ["status", "approval", "source", "git_commit", "data_reference"]
_COMPARED_REPORT = [
    "opsets",
    "ir_version",
    "producer",
    "file_size",
    "load_time_ms",
    "latency_ms",
    "nodes",
    "tensor_bytes",
]


def _by_name(entries: list[dict]) -> dict[str, dict]:
    return {entry.get("name", ""): entry for entry in entries or []}


def _keyed_differences(a: dict, b: dict, *, numeric: bool = False) -> dict[str, dict]:
    differences = {}
    for key in sorted(set(a) | set(b)):
        left, right = a.get(key), b.get(key)
        if left == right:
            continue
        entry: dict[str, Any] = {"a": left, "b": right}
        if numeric and isinstance(left, int | float) and isinstance(right, int | float):
            # Rounded so 0.4 - 0.5 reads -0.1, not -0.09999999999999998.
            entry["delta"] = round(right - left, 12)
        differences[key] = entry
    return differences


def _artifact_facts(version: ModelVersion) -> dict[str, Any]:
    model = next((a for a in version.artifacts.all() if a.kind == "model"), None)
    return {"sha256": model.sha256 if model else None, "size": model.size if model else None}


def version_compare(a: ModelVersion, b: ModelVersion) -> dict[str, Any]:
    """What differs between two versions, and only that: fields, signature inputs/outputs by
    name, metrics (with deltas), params, validation measurements and aliases."""
    fields = {}
    for field in _COMPARED_FIELDS:
        left, right = getattr(a, field), getattr(b, field)
        if left != right:
            fields[field] = {"a": left, "b": right}
    fields.update(_keyed_differences(_artifact_facts(a), _artifact_facts(b), numeric=True))
    parents = (
        a.derived_from.number if a.derived_from else None,
        b.derived_from.number if b.derived_from else None,
    )
    if parents[0] != parents[1]:
        fields["derived_from"] = {"a": parents[0], "b": parents[1]}
    aliases = ([alias.name for alias in a.aliases.all()], [alias.name for alias in b.aliases.all()])
    if aliases[0] != aliases[1]:
        fields["aliases"] = {"a": aliases[0], "b": aliases[1]}
    signature = {
        side: _keyed_differences(
            _by_name(a.signature.get(side, [])), _by_name(b.signature.get(side, []))
        )
        for side in ("inputs", "outputs")
    }
    report_a = {key: a.validation_report.get(key) for key in _COMPARED_REPORT}
    report_b = {key: b.validation_report.get(key) for key in _COMPARED_REPORT}
    differences = {
        "fields": fields,
        "signature": {side: changes for side, changes in signature.items() if changes},
        "metrics": _keyed_differences(a.metrics, b.metrics, numeric=True),
        "params": _keyed_differences(a.params, b.params),
        "validation": _keyed_differences(report_a, report_b, numeric=True),
    }
    return {
        "a": a.reference,
        "b": b.reference,
        "identical": not any(differences.values()),
        "differences": {section: changes for section, changes in differences.items() if changes},
    }


# ---------------------------------------------------------------------------------------------
# Batch jobs and optimizations.


def batch_job_list_for_actor(*, actor: Actor, status: str = "") -> QuerySet[BatchJob]:
    """Batch jobs on the versions of the actor's teams' models, newest first."""
    jobs = BatchJob.objects.select_related("version", "version__model", "created_by")
    if not actor.is_system:
        jobs = jobs.filter(version__model__team_id__in=actor.team_ids)
    if status in JobStatus.values:
        jobs = jobs.filter(status=status)
    return jobs.order_by("-created_at", "-id")


def batch_job_get_for_actor(*, actor: Actor, job_id: Any) -> BatchJob:
    """One batch job; another team's job does not exist for the caller (404)."""
    try:
        job_id = int(job_id)
    except (TypeError, ValueError):
        raise Http404("No such batch job.") from None
    job = batch_job_list_for_actor(actor=actor).filter(pk=job_id).first() if job_id > 0 else None
    if job is None:
        raise Http404("No such batch job.")
    return job


def version_list_ready_for_actor(*, actor: Actor) -> QuerySet[ModelVersion]:
    """Ready versions of the actor's teams' models (what a batch job can use)."""
    versions = ModelVersion.objects.select_related("model").filter(status=VersionStatus.READY)
    if not actor.is_system:
        versions = versions.filter(model__team_id__in=actor.team_ids)
    return versions.filter(model__archived_at__isnull=True).order_by("model__name", "-number")


def optimization_list(*, version: ModelVersion) -> QuerySet[Optimization]:
    """Optimizations requested from a version, newest first."""
    return Optimization.objects.filter(source=version).select_related("result", "created_by")


def optimization_between(a: ModelVersion, b: ModelVersion) -> Optimization | None:
    """The succeeded optimization that derived one of the two versions from the other."""
    return (
        Optimization.objects.filter(
            Q(source=a, result=b) | Q(source=b, result=a), status=JobStatus.SUCCEEDED
        )
        .select_related("source", "result")
        .first()
    )
