"""Batch job pages live under /batch-jobs/ (the REST resource's path without /api/v1): the
routes, the highlighted nav link, the progress partial that polls only while the job runs,
other teams and read-only roles."""

from __future__ import annotations

import re

import numpy as np
import pytest
from django.urls import resolve, reverse

from registry import tasks
from registry.models import BatchJob, JobStatus
from tests.registry.conftest import as_upload, register, validated
from tests.registry.onnx_files import save
from tests.registry.test_batch import csv_bytes, scaled_mlp

HTMX = {"HX-Request": "true", "HX-Target": "batch-status"}


@pytest.fixture
def ready_version(registered, scientist_actor, tmp_path):
    return validated(register(scientist_actor, registered, save(scaled_mlp(), tmp_path / "m.onnx")))


@pytest.fixture
def job(client, scientist, ready_version):
    rows = np.random.default_rng(5).normal(size=(30, 4)).astype(np.float32)
    client.force_login(scientist)
    response = client.post(
        "/batch-jobs/new/", {"version": "iris:1", "file": as_upload(csv_bytes(rows))}
    )
    assert response.status_code == 302
    return BatchJob.objects.get()


def current_nav_links(html: str) -> list[str]:
    nav = re.search(r'<nav class="mainnav".*?</nav>', html, re.S).group(0)
    return re.findall(r'<a [^>]*aria-current="page"[^>]*>([^<]+)</a>', nav)


@pytest.mark.parametrize(
    ("name", "args", "path"),
    [
        ("batch-job-list", [], "/batch-jobs/"),
        ("batch-job-create", [], "/batch-jobs/new/"),
        ("batch-job-detail", [7], "/batch-jobs/7/"),
        ("batch-job-cancel", [7], "/batch-jobs/7/cancel/"),
        ("batch-job-result", [7], "/batch-jobs/7/result/"),
    ],
)
def test_batch_routes_resolve_under_batch_jobs(name, args, path):
    assert reverse(f"registry:{name}", args=args) == path
    match = resolve(path)
    assert (match.namespace, match.url_name) == ("registry", name)


def test_the_old_batch_paths_are_gone(client, scientist, job):
    # "_batch" is no model name: the model page answers 404, nothing redirects.
    assert resolve("/models/_batch/").url_name == "model-detail"
    assert client.get("/models/_batch/").status_code == 404
    assert client.get(f"/models/_batch/{job.pk}/").status_code == 404


def test_batch_pages_highlight_batch_jobs_and_model_pages_highlight_models(client, job):
    for path in ("/batch-jobs/", "/batch-jobs/new/", f"/batch-jobs/{job.pk}/"):
        assert current_nav_links(client.get(path).content.decode()) == ["Batch jobs"], path
    for path in ("/models/", "/models/iris/", "/models/iris/versions/1/"):
        assert current_nav_links(client.get(path).content.decode()) == ["Models"], path


def test_the_progress_partial_polls_while_running_and_stops_when_done(client, job):
    pending = client.get(f"/batch-jobs/{job.pk}/", headers=HTMX)
    assert pending.status_code == 200
    body = pending.content.decode()
    assert body.startswith('<div id="batch-status"')
    assert f'hx-get="/batch-jobs/{job.pk}/" hx-trigger="every 2s"' in body
    assert "HX-Refresh" not in pending

    tasks.run_batch_job(job.pk)
    done = client.get(f"/batch-jobs/{job.pk}/", headers=HTMX)
    assert "hx-trigger" not in done.content.decode()
    # The whole page reloads once, to show the download link and the errors table.
    assert done["HX-Refresh"] == "true"
    page = client.get(f"/batch-jobs/{job.pk}/").content.decode()
    assert "hx-trigger" not in page
    assert f'href="/batch-jobs/{job.pk}/result/"' in page
    assert client.get(f"/batch-jobs/{job.pk}/result/").status_code == 200


def test_another_team_gets_404_everywhere(client, outsider, job):
    client.force_login(outsider)
    for path in (f"/batch-jobs/{job.pk}/", f"/batch-jobs/{job.pk}/result/"):
        assert client.get(path).status_code == 404, path
    assert client.get(f"/batch-jobs/{job.pk}/", headers=HTMX).status_code == 404
    assert client.post(f"/batch-jobs/{job.pk}/cancel/").status_code == 404
    assert f"/batch-jobs/{job.pk}/" not in client.get("/batch-jobs/").content.decode()
    # Another team's version cannot be chosen either.
    refused = client.post(
        "/batch-jobs/new/", {"version": "iris:1", "file": as_upload(csv_bytes(np.ones((2, 4))))}
    )
    assert refused.status_code == 400
    job.refresh_from_db()
    assert job.status == JobStatus.PENDING
    assert BatchJob.objects.count() == 1


def test_a_viewer_sees_jobs_but_cannot_create_or_cancel(client, viewer, job):
    client.force_login(viewer)
    listing = client.get("/batch-jobs/").content.decode()
    assert f'href="/batch-jobs/{job.pk}/"' in listing
    assert 'href="/batch-jobs/new/"' not in listing
    detail = client.get(f"/batch-jobs/{job.pk}/").content.decode()
    assert f'action="/batch-jobs/{job.pk}/cancel/"' not in detail
    response = client.post(
        "/batch-jobs/new/", {"version": "iris:1", "file": as_upload(csv_bytes(np.ones((2, 4))))}
    )
    assert response.status_code == 403
    assert client.post(f"/batch-jobs/{job.pk}/cancel/").status_code == 403
    job.refresh_from_db()
    assert job.status == JobStatus.PENDING
    assert BatchJob.objects.count() == 1
