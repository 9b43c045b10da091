from django.urls import include, path

from registry import views

app_name = "registry"

# Model names never start with "_", so "_new/" cannot collide with a model's page.
model_patterns = [
    path("", views.model_list, name="model-list"),
    path("_new/", views.model_create, name="model-create"),
    path("<str:name>/", views.model_detail, name="model-detail"),
    path("<str:name>/archive/", views.model_archive, name="model-archive"),
    path("<str:name>/upload/", views.version_upload, name="version-upload"),
    path("<str:name>/compare/", views.version_compare, name="version-compare"),
    path("<str:name>/aliases/", views.alias_set, name="alias-set"),
    path("<str:name>/aliases/<str:alias>/delete/", views.alias_delete, name="alias-delete"),
    path("<str:name>/versions/<int:number>/", views.version_detail, name="version-detail"),
    path(
        "<str:name>/versions/<int:number>/approve/", views.version_approve, name="version-approve"
    ),
    path(
        "<str:name>/versions/<int:number>/archive/", views.version_archive, name="version-archive"
    ),
    path(
        "<str:name>/versions/<int:number>/optimize/",
        views.version_optimize,
        name="version-optimize",
    ),
    path(
        "<str:name>/versions/<int:number>/files/<str:kind>/",
        views.artifact_download,
        name="artifact-download",
    ),
]

# The same paths as the REST resource (/api/v1/batch-jobs/), under the same namespace.
batch_job_patterns = [
    path("", views.batch_job_list, name="batch-job-list"),
    path("new/", views.batch_job_create, name="batch-job-create"),
    path("<int:job_id>/", views.batch_job_detail, name="batch-job-detail"),
    path("<int:job_id>/cancel/", views.batch_job_cancel, name="batch-job-cancel"),
    path("<int:job_id>/result/", views.batch_job_result, name="batch-job-result"),
]

urlpatterns = [
    path("models/", include(model_patterns)),
    path("batch-jobs/", include(batch_job_patterns)),
]
