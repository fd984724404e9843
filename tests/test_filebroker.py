"""The embedded broker never shows a worker a message that is still being written."""
import kombu


def connection(folder):
    return kombu.Connection(
        "filesystem://",
        transport="mailsuite.lib.filebroker:Transport",
        transport_options={"data_folder_in": str(folder), "data_folder_out": str(folder),
                           "control_folder": str(folder / "control")},
    )


def test_messages_appear_whole_and_half_written_ones_are_ignored(tmp_path):
    with connection(tmp_path) as conn:
        queue = conn.SimpleQueue("mail")
        queue.put({"domain": "faraway.test"})
        files = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
        assert len(files) == 1 and files[0].endswith(".mail.msg")
        # What a crash (or a reader racing a writer) would leave: a .part file.
        (tmp_path / "0_half.mail.msg.part").write_bytes(b'{"body": "trunc')
        assert queue.get(timeout=2).payload == {"domain": "faraway.test"}
        try:
            queue.get(timeout=0.5)
            raise AssertionError("a half-written file was delivered")
        except queue.Empty:
            pass
        queue.close()
