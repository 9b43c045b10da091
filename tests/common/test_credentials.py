"""Target settings can name credential files only inside TARGET_CREDENTIALS_DIR and
environment variables only with the MODELDECK_TARGET_ prefix."""

import pytest

from common.credentials import (
    CredentialError,
    credential_environment,
    credential_file,
    credential_file_from_environment,
)


@pytest.fixture
def folder(settings, tmp_path):
    settings.TARGET_CREDENTIALS_DIR = tmp_path / "credentials"
    settings.TARGET_CREDENTIALS_DIR.mkdir()
    return settings.TARGET_CREDENTIALS_DIR.resolve()


def test_a_file_inside_the_folder_is_accepted(folder):
    (folder / "team-a").mkdir()
    (folder / "team-a" / "kubeconfig").write_text("x")
    assert credential_file(str(folder / "team-a" / "kubeconfig")) == str(
        folder / "team-a" / "kubeconfig"
    )


@pytest.mark.parametrize(
    "value",
    [
        "/etc/passwd",
        "/root/.kube/config",
        "../outside",
        "team-a/kubeconfig",
        "team-a/../../outside",
        "",
        "a\x00b",
        "x" * 5000,
        None,
        42,
    ],
)
def test_anything_outside_the_folder_is_refused(folder, value):
    with pytest.raises(CredentialError):
        credential_file(value)


def test_a_symlink_out_of_the_folder_is_refused(folder, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("x")
    (folder / "link").symlink_to(secret)
    with pytest.raises(CredentialError):
        credential_file(str(folder / "link"))
    with pytest.raises(CredentialError):
        credential_file(str(folder / ".." / "secret"))


def test_environment_names_need_the_prefix_and_are_checked_again_when_used(folder, monkeypatch):
    assert credential_environment("MODELDECK_TARGET_KUBECONFIG") == "MODELDECK_TARGET_KUBECONFIG"
    for name in ("SECRET_KEY", "DATABASE_URL", "MODELDECK_TARGET_", "modeldeck_target_x", "", 1):
        with pytest.raises(CredentialError):
            credential_environment(name)
    monkeypatch.setenv("MODELDECK_TARGET_KUBECONFIG", "/etc/passwd")
    with pytest.raises(CredentialError):
        credential_file_from_environment("MODELDECK_TARGET_KUBECONFIG")
    monkeypatch.setenv("MODELDECK_TARGET_KUBECONFIG", str(folder / "kubeconfig"))
    assert credential_file_from_environment("MODELDECK_TARGET_KUBECONFIG") == str(
        folder / "kubeconfig"
    )


def test_a_team_scope_is_its_own_subfolder_and_prefix(folder):
    from common.credentials import check_team_scope, team_scope

    assert team_scope("ml-team") == (folder / "ml-team", "MODELDECK_TARGET_ML_TEAM_")
    check_team_scope(
        "ml-team",
        files=[str(folder / "ml-team" / "kubeconfig")],
        variables=["MODELDECK_TARGET_ML_TEAM_KUBECONFIG"],
    )
    for files, variables in (
        ([str(folder / "ops" / "kubeconfig")], []),
        ([str(folder / "ml-team-2" / "kubeconfig")], []),
        ([], ["MODELDECK_TARGET_OPS_KUBECONFIG"]),
    ):
        with pytest.raises(CredentialError):
            check_team_scope("ml-team", files=files, variables=variables)
    for name in ("..", ".", "a/../.."):
        with pytest.raises(CredentialError):
            team_scope(name)
