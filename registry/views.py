"""Registry pages: model list and page, version page, compare, upload, alias changes,
optimization and batch prediction jobs."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_POST

from accounts.actor import Actor
from accounts.models import Role
from accounts.permissions import require_role
from common.errors import ApplicationError
from common.htmx import render_page_or_partial
from common.pagination import paginate
from registry import selectors, services
from registry.api.views import batch_result_response
from registry.forms import (
    AliasSetForm,
    ApproveForm,
    BatchJobForm,
    ModelCreateForm,
    OptimizeForm,
    VersionUploadForm,
    parse_tag_lines,
)
from registry.models import Alias, Approval, ArtifactKind, JobStatus, VersionStatus
from registry.storage import open_artifact
from registry.uploads import CappedHashingUploadHandler


def _model(request, name: str):
    """The model named `name` if the user's teams own it (404 otherwise), and the actor."""
    actor = Actor.from_request(request)
    return actor, selectors.model_get_for_actor(actor=actor, name=name)


def _list_context(request, actor, form=None) -> dict:
    query = request.GET.get("q", "")[:100]
    tag = request.GET.get("tag", "")[:400]
    show_archived = request.GET.get("archived") == "1"
    models = selectors.model_list_for_actor(
        actor=actor, q=query, tag=tag, archived=show_archived
    ).order_by("name")
    teams = selectors.team_list_for_role(actor=actor, minimum=Role.SCIENTIST)
    if form is None and teams:
        form = ModelCreateForm(teams=teams)
    return {
        "page": paginate(request, models),
        "q": query,
        "tag": tag,
        "show_archived": show_archived,
        "form": form,
    }


@login_required
@require_GET
def model_list(request):
    """Models of the user's teams, with search, a tag filter and a form for a new one."""
    actor = Actor.from_request(request)
    return render(request, "registry/model_list.html", _list_context(request, actor))


@login_required
@require_POST
def model_create(request):
    """Create a model from the list page's form."""
    actor = Actor.from_request(request)
    teams = selectors.team_list_for_role(actor=actor, minimum=Role.SCIENTIST)
    form = ModelCreateForm(request.POST, teams=teams)
    if form.is_valid():
        try:
            model = services.model_create(
                actor=actor,
                team=form.cleaned_data["team"],
                name=form.cleaned_data["name"],
                description=form.cleaned_data["description"],
                tags=parse_tag_lines(form.cleaned_data["tags"]),
            )
        except ApplicationError as error:
            form.add_error(None, error.message)
        else:
            messages.success(request, f"Model {model.name} created. Upload its first version.")
            return redirect("registry:version-upload", name=model.name)
    return render(
        request, "registry/model_list.html", _list_context(request, actor, form), status=400
    )


@login_required
@require_GET
def model_detail(request, name: str):
    """One model: versions with their badges, aliases, alias history, the set-alias form."""
    actor, model = _model(request, name)
    versions = selectors.version_list(actor=actor, model=model)
    return render(
        request,
        "registry/model_detail.html",
        {
            "model": model,
            "page": paginate(request, versions, per_page=50),
            "aliases": selectors.alias_list(model=model),
            "history": selectors.alias_history(model=model)[:50],
            "alias_form": AliasSetForm(initial={"version": model.last_version_number or None}),
            "can_write": actor.has_role(model.team_id, Role.SCIENTIST),
            "can_deploy": actor.has_role(model.team_id, Role.DEPLOYER),
        },
    )


@login_required
@require_POST
def model_archive(request, name: str):
    """Archive a model (deployers and admins)."""
    actor, model = _model(request, name)
    services.model_archive(actor=actor, model=model)
    messages.success(request, f"Model {model.name} archived.")
    return redirect("registry:model-detail", name=model.name)


@login_required
@require_POST
def alias_set(request, name: str):
    """Create or move an alias from the model page."""
    actor, model = _model(request, name)
    form = AliasSetForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Give an alias name and a version number.")
        return redirect("registry:model-detail", name=model.name)
    try:
        alias = services.alias_set(
            actor=actor,
            model=model,
            name=form.cleaned_data["name"],
            version_number=form.cleaned_data["version"],
            reason=form.cleaned_data["reason"],
            protected=True if form.cleaned_data["protected"] else None,
        )
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"{alias} now points at version {alias.version.number}.")
    return redirect("registry:model-detail", name=model.name)


@login_required
@require_POST
def alias_delete(request, name: str, alias: str):
    """Remove an alias (its history stays)."""
    actor, model = _model(request, name)
    try:
        services.alias_delete(
            actor=actor, model=model, name=alias, reason=request.POST.get("reason", "")[:500]
        )
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"Alias {alias} removed.")
    return redirect("registry:model-detail", name=model.name)


@login_required
@require_GET
def version_detail(request, name: str, number: int):
    """One version; its status and its optimizations are htmx partials that poll while
    validation or an optimization runs (each partial asks for itself through HX-Target)."""
    actor, model = _model(request, name)
    version = selectors.version_get(actor=actor, model=model, number=number)
    optimizations = list(selectors.optimization_list(version=version)[:20])
    context = {
        "model": model,
        "version": version,
        "artifacts": list(version.artifacts.all()),
        "approve_form": ApproveForm(),
        "can_write": actor.has_role(model.team_id, Role.SCIENTIST),
        "can_deploy": actor.has_role(model.team_id, Role.DEPLOYER),
        "report_items": _report_items(version.validation_report),
        "optimize_form": OptimizeForm(),
        "optimizations": optimizations,
        "optimizing": any(not item.is_terminal for item in optimizations),
    }
    if getattr(request, "htmx", False) and request.htmx.target == "optimization-status":
        return render(request, "registry/_optimization_status.html", context)
    response = render_page_or_partial(
        request, "registry/version_detail.html", "registry/_version_status.html", context
    )
    if getattr(request, "htmx", False) and version.is_validation_finished:
        # Validation just finished: reload the whole page so the signature and report appear.
        response["HX-Refresh"] = "true"
    return response


def _report_items(report: dict) -> list[tuple[str, str]]:
    labels = [
        ("file_size", "File size (bytes)"),
        ("ir_version", "IR version"),
        ("producer", "Producer"),
        ("opsets", "Opsets"),
        ("nodes", "Nodes"),
        ("tensor_bytes", "Stored tensor bytes"),
        ("load_time_ms", "Load time (ms)"),
        ("latency_ms", "Single-row latency (ms)"),
        ("checks", "Checks passed"),
        ("smoke", "Smoke inference"),
        ("check", "Failed check"),
        ("notes", "Notes"),
    ]
    items = []
    for key, label in labels:
        if key not in report:
            continue
        value = report[key]
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        items.append((label, str(value)))
    return items


@login_required
@require_POST
def version_approve(request, name: str, number: int):
    """Approve or reject a version (deployers and admins)."""
    actor, model = _model(request, name)
    version = selectors.version_get(actor=actor, model=model, number=number)
    form = ApproveForm(request.POST)
    if form.is_valid():
        try:
            services.version_approve(
                actor=actor,
                version=version,
                decision=form.cleaned_data["decision"],
                comment=form.cleaned_data["comment"],
            )
        except ApplicationError as error:
            messages.error(request, error.message)
        else:
            verb = "approved" if form.cleaned_data["decision"] == Approval.APPROVED else "rejected"
            messages.success(request, f"Version {version.number} {verb}.")
    return redirect("registry:version-detail", name=model.name, number=version.number)


@login_required
@require_POST
def version_archive(request, name: str, number: int):
    """Archive a version (confirmed in the browser through the form's data-confirm)."""
    actor, model = _model(request, name)
    version = selectors.version_get(actor=actor, model=model, number=number)
    try:
        services.version_archive(actor=actor, version=version)
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"Version {version.number} archived.")
    return redirect("registry:version-detail", name=model.name, number=version.number)


@login_required
@require_GET
def artifact_download(request, name: str, number: int, kind: str):
    """A stored file of a version, as an attachment under a server-chosen name."""
    actor, model = _model(request, name)
    version = selectors.version_get(actor=actor, model=model, number=number)
    artifact = next((a for a in version.artifacts.all() if a.kind == kind), None)
    if artifact is None:
        raise Http404("No such file.")
    extension = "onnx" if kind == ArtifactKind.MODEL else "csv"
    suffix = "" if kind == ArtifactKind.MODEL else f"-{kind}"
    try:
        stream = open_artifact(artifact)
    except ApplicationError as error:
        raise Http404(error.message) from None
    return FileResponse(
        stream,
        as_attachment=True,
        filename=f"{model.name}-{version.number}{suffix}.{extension}",
        content_type="application/octet-stream",
    )


@login_required
@require_GET
def version_compare(request, name: str):
    """Two versions side by side: only what differs."""
    actor, model = _model(request, name)
    versions = selectors.version_list(actor=actor, model=model)
    numbers = [request.GET.get(key, "") for key in ("a", "b")]
    if not any(numbers):
        # Opened without a choice: the newest version (B) against the one before it (A).
        newest = [str(number) for number in versions.values_list("number", flat=True)[:2]]
        if len(newest) == 2:
            numbers = [newest[1], newest[0]]
    comparison = optimization = None
    if all(number.isdigit() and len(number) < 10 for number in numbers):
        first, second = (
            selectors.version_get(actor=actor, model=model, number=int(number))
            for number in numbers
        )
        comparison = selectors.version_compare(first, second)
        optimization = selectors.optimization_between(first, second)
    return render(
        request,
        "registry/compare.html",
        {
            "model": model,
            "versions": versions,
            "a": numbers[0],
            "b": numbers[1],
            "comparison": comparison,
            "optimization": optimization,
        },
    )


def _wants_json(request) -> bool:
    return request.headers.get("x-requested-with") == "XMLHttpRequest"


@login_required
@csrf_exempt
def version_upload(request, name: str):
    """The upload page; its form is posted by static/js/upload.js with a progress bar.

    CSRF is checked right below, once the capped, hashing upload handler is in place: the
    check itself reads the body, and every byte of it must go through that handler.
    """
    if request.method == "POST":
        request.upload_handlers = [CappedHashingUploadHandler(request)]
    try:
        return _version_upload(request, name)
    except ApplicationError as error:  # the upload handler's 413, raised while reading
        return _upload_refused(request, name, error)


@csrf_protect
def _version_upload(request, name: str):
    actor, model = _model(request, name)
    if request.method not in ("GET", "HEAD", "POST"):
        return JsonResponse({"error": "Method not allowed.", "detail": {}}, status=405)
    form = VersionUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST":
        require_role(actor, model.team_id, Role.SCIENTIST)
        if not form.is_valid():
            error = ApplicationError("Choose an ONNX file to upload.", dict(form.errors))
            return _upload_refused(request, name, error, form=form)
        try:
            version = services.version_register(
                actor=actor,
                model=model,
                file=form.cleaned_data["file"],
                reference=form.cleaned_data["reference"],
                source=form.cleaned_data["source"],
                metrics=form.cleaned_data["metrics"],
                params=form.cleaned_data["params"],
                git_commit=form.cleaned_data["git_commit"],
                data_reference=form.cleaned_data["data_reference"],
            )
        except ApplicationError as error:
            return _upload_refused(request, name, error, form=form)
        page = reverse("registry:version-detail", args=[model.name, version.number])
        if _wants_json(request):
            return JsonResponse(
                {
                    "number": version.number,
                    "status": version.status,
                    "url": page,
                    "api_url": reverse("model-version-detail", args=[model.name, version.number]),
                },
                status=201,
            )
        messages.success(request, f"Version {version.number} uploaded; validation is running.")
        return redirect(page)
    return render(request, "registry/upload.html", {"model": model, "form": form})


def _upload_refused(request, name: str, error: ApplicationError, *, form=None):
    if _wants_json(request):
        return JsonResponse({"error": error.message, "detail": error.extra}, status=error.status)
    _actor, model = _model(request, name)
    form = form or VersionUploadForm()
    return render(
        request,
        "registry/upload.html",
        {"model": model, "form": form, "error": error.message},
        status=error.status,
    )


# ---------------------------------------------------------------------------------------------
# Optimization and batch jobs.


@login_required
@require_POST
def version_optimize(request, name: str, number: int):
    """Queue an optimized version derived from this one (scientists)."""
    actor, model = _model(request, name)
    version = selectors.version_get(actor=actor, model=model, number=number)
    form = OptimizeForm(request.POST)
    method = form.cleaned_data["method"] if form.is_valid() else "int8"
    try:
        services.version_optimize(actor=actor, version=version, method=method)
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(
            request,
            f"Optimizing version {version.number} ({method}); the result appears under "
            "Optimize when it is ready.",
        )
    return redirect("registry:version-detail", name=model.name, number=version.number)


def _batch_form(actor, data=None, files=None) -> BatchJobForm:
    versions = list(selectors.version_list_ready_for_actor(actor=actor)[:500])
    aliases = (
        Alias.objects.filter(model__team_id__in=actor.team_ids, version__status=VersionStatus.READY)
        .select_related("model", "version")
        .order_by("model__name", "name")[:500]
    )
    return BatchJobForm(data, files, versions=versions, aliases=aliases)


@login_required
@require_GET
def batch_job_list(request):
    """Batch jobs of the user's teams, newest first."""
    actor = Actor.from_request(request)
    jobs = selectors.batch_job_list_for_actor(actor=actor, status=request.GET.get("status", ""))
    can_create = any(actor.has_role(team_id, Role.SCIENTIST) for team_id in actor.team_ids)
    return render(
        request,
        "registry/batch_list.html",
        {"page": paginate(request, jobs), "can_create": can_create},
    )


@login_required
@csrf_exempt
def batch_job_create(request):
    """The new-job page; the upload goes through the capped, hashing handler before the CSRF
    check reads the body (see `version_upload`)."""
    if request.method == "POST":
        request.upload_handlers = [
            CappedHashingUploadHandler(request, max_bytes=settings.BATCH_MAX_INPUT_BYTES)
        ]
    try:
        return _batch_job_create(request)
    except ApplicationError as error:  # the upload handler's 413, raised while reading
        actor = Actor.from_request(request)
        context = {"form": _batch_form(actor), "error": error.message}
        return render(request, "registry/batch_new.html", context, status=error.status)


@csrf_protect
def _batch_job_create(request):
    actor = Actor.from_request(request)
    if request.method not in ("GET", "HEAD", "POST"):
        return JsonResponse({"error": "Method not allowed.", "detail": {}}, status=405)
    if request.method != "POST":
        initial = {"version": request.GET.get("version", "")[:200]}
        form = _batch_form(actor)
        form.initial = initial
        return render(request, "registry/batch_new.html", {"form": form})
    form = _batch_form(actor, request.POST, request.FILES)
    error = None
    if form.is_valid():
        try:
            job = services.batch_job_create(
                actor=actor,
                version_reference=form.cleaned_data["version"],
                file=form.cleaned_data["file"],
                key_column=form.cleaned_data["key_column"],
            )
        except ApplicationError as refused:
            error = refused
        else:
            messages.success(request, f"Batch job {job.pk} queued.")
            return redirect("registry:batch-job-detail", job_id=job.pk)
    context = {"form": form, "error": error.message if error else "Check the fields below."}
    return render(request, "registry/batch_new.html", context, status=getattr(error, "status", 400))


@login_required
@require_GET
def batch_job_detail(request, job_id: int):
    """One job; its progress part is an htmx partial that polls while the job can change."""
    actor = Actor.from_request(request)
    job = selectors.batch_job_get_for_actor(actor=actor, job_id=job_id)
    context = {
        "job": job,
        "can_write": actor.has_role(job.version.model.team_id, Role.SCIENTIST),
    }
    response = render_page_or_partial(
        request, "registry/batch_detail.html", "registry/_batch_status.html", context
    )
    if getattr(request, "htmx", False) and job.is_terminal:
        # Finished: reload the whole page so the errors table and the download link appear.
        response["HX-Refresh"] = "true"
    return response


@login_required
@require_POST
def batch_job_cancel(request, job_id: int):
    """Cancel a job (confirmed in the browser through the form's data-confirm)."""
    actor = Actor.from_request(request)
    job = selectors.batch_job_get_for_actor(actor=actor, job_id=job_id)
    try:
        services.batch_job_cancel(actor=actor, job=job)
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"Batch job {job.pk} cancelled.")
    return redirect("registry:batch-job-detail", job_id=job.pk)


@login_required
@require_GET
def batch_job_result(request, job_id: int):
    """The result CSV, as an attachment."""
    actor = Actor.from_request(request)
    job = selectors.batch_job_get_for_actor(actor=actor, job_id=job_id)
    if job.status != JobStatus.SUCCEEDED or not job.result_key:
        raise Http404("This job has no result.")
    try:
        return batch_result_response(job)
    except ApplicationError as error:
        raise Http404(error.message) from None
