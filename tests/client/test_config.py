"""Where the client finds its server and token, and the streamed multipart body's length."""

from __future__ import annotations

from email.parser import BytesParser
from email.policy import HTTP

import pytest
from modeldeck_client.client import MultipartStream
from modeldeck_client.config import ConfigError, load_settings


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("MODELDECK_URL", "MODELDECK_TOKEN", "MODELDECK_PROFILE", "MODELDECK_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _config(tmp_path, text: str, mode: int = 0o600):
    path = tmp_path / "config.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_variables_win_over_the_profile_file(clean_env, tmp_path):
    path = _config(
        tmp_path,
        '[profiles.default]\nurl = "https://file.example"\ntoken = "from-file"\n'
        '[profiles.staging]\nurl = "https://staging.example/"\ntoken = "staging-token"\n',
    )
    assert load_settings(config_path=path) == load_settings(config_path=path, profile="default")
    assert load_settings(config_path=path).url == "https://file.example"
    assert load_settings(config_path=path, profile="staging").url == "https://staging.example"
    clean_env.setenv("MODELDECK_PROFILE", "staging")
    assert load_settings(config_path=path).token == "staging-token"
    clean_env.setenv("MODELDECK_TOKEN", "from-env")
    settings = load_settings(config_path=path)
    assert (settings.url, settings.token) == ("https://staging.example", "from-env")


def test_missing_or_wrong_settings_say_what_to_set(clean_env, tmp_path, capsys):
    with pytest.raises(ConfigError, match="Set MODELDECK_URL"):
        load_settings(config_path=tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="No profile 'prod'"):
        load_settings(config_path=tmp_path / "absent.toml", profile="prod")
    clean_env.setenv("MODELDECK_URL", "ftp://example")
    with pytest.raises(ConfigError, match="must start with http"):
        load_settings(config_path=tmp_path / "absent.toml")
    clean_env.setenv("MODELDECK_URL", "https://example")
    with pytest.raises(ConfigError, match="Set MODELDECK_TOKEN"):
        load_settings(config_path=tmp_path / "absent.toml")
    broken = _config(tmp_path, "[profiles.default\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_settings(config_path=broken)
    readable = _config(tmp_path, '[profiles.default]\ntoken = "t"\n', mode=0o644)
    assert load_settings(config_path=readable).token == "t"
    assert "readable by other users; chmod 600 it" in capsys.readouterr().err


def test_the_streamed_body_is_the_declared_length_and_parses_back(tmp_path):
    model = tmp_path / 'we"ird\nname.onnx'
    model.write_bytes(bytes(range(256)) * 5000)
    body = MultipartStream({"source": "https://example.com/run/1"}, {"file": model})
    seen = []
    data = b"".join(body.chunks(lambda sent, total: seen.append((sent, total))))
    assert len(data) == body.length
    assert seen[-1] == (body.length, body.length)
    assert [sent for sent, _ in seen] == sorted(sent for sent, _ in seen)
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {body.content_type}\r\n\r\n".encode() + data
    )
    parts = {
        part.get_param("name", header="content-disposition"): part for part in message.iter_parts()
    }
    assert parts["source"].get_content().strip() == "https://example.com/run/1"
    assert parts["file"].get_payload(decode=True) == model.read_bytes()
    assert parts["file"].get_filename() == "we_ird_name.onnx"
