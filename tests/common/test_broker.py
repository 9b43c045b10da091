"""The embedded broker never hands a worker a half-written message."""

import os

from kombu import Connection

from common.broker import PARTIAL_SUFFIX, Transport


def _channel(folder):
    options = {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "store_processed": False,
    }
    connection = Connection("filesystem://", transport=Transport, transport_options=options)
    return connection, connection.default_channel


def test_a_message_appears_complete_under_its_final_name(tmp_path):
    connection, channel = _channel(tmp_path)
    with connection:
        channel._put("celery", {"task": "monitoring.tasks.scrape_all"})
        names = os.listdir(tmp_path)
        assert len(names) == 1
        assert names[0].endswith(".celery.msg")
        assert channel._get("celery") == {"task": "monitoring.tasks.scrape_all"}
        assert os.listdir(tmp_path) == []


def test_a_message_still_being_written_is_not_taken(tmp_path):
    connection, channel = _channel(tmp_path)
    with connection:
        (tmp_path / f"1_abc.celery.msg{PARTIAL_SUFFIX}").write_bytes(b"")
        channel._put("celery", {"n": 1})
        assert channel._get("celery") == {"n": 1}
        assert os.listdir(tmp_path) == [f"1_abc.celery.msg{PARTIAL_SUFFIX}"]
