from django.urls import path

from deployments import views

app_name = "deployments"

urlpatterns = [
    path("endpoints/", views.endpoint_list, name="endpoint-list"),
    path("endpoints/new/", views.endpoint_create, name="endpoint-create"),
    path("endpoints/<slug:name>/", views.endpoint_detail, name="endpoint-detail"),
    path("endpoints/<slug:name>/deploy/", views.endpoint_deploy, name="endpoint-deploy"),
    path("endpoints/<slug:name>/traffic/", views.endpoint_traffic, name="endpoint-traffic"),
    path("endpoints/<slug:name>/promote/", views.endpoint_promote, name="endpoint-promote"),
    path("endpoints/<slug:name>/rollback/", views.endpoint_rollback, name="endpoint-rollback"),
    path("endpoints/<slug:name>/stop/", views.endpoint_stop, name="endpoint-stop"),
    path("endpoints/<slug:name>/scale/", views.endpoint_scale, name="endpoint-scale"),
    path("endpoints/<slug:name>/keys/", views.endpoint_key_create, name="endpoint-key-create"),
    path(
        "endpoints/<slug:name>/keys/<int:key_id>/revoke/",
        views.endpoint_key_revoke,
        name="endpoint-key-revoke",
    ),
    path(
        "endpoints/<slug:name>/require-key/",
        views.endpoint_require_key,
        name="endpoint-require-key",
    ),
    path("targets/", views.target_list, name="target-list"),
    path("targets/<slug:name>/edit/", views.target_edit, name="target-edit"),
    path("targets/<slug:name>/delete/", views.target_delete, name="target-delete"),
    path("builds/<int:build_id>/", views.build_detail, name="build-detail"),
]
