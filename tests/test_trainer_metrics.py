import json
import subprocess
import sys

from trainer.metrics import FILE, MetricsWriter, last_metrics, read_metrics


def test_each_line_is_on_disk_before_the_writer_closes(tmp_path):
    w = MetricsWriter(tmp_path)
    w.write(step=1, loss=2.5)
    line = json.loads((tmp_path / FILE).read_text())
    assert (line["step"], line["loss"], type(line["time"])) == (1, 2.5, float)
    w.write(step=2, loss=2.4)
    assert last_metrics(tmp_path / FILE)["step"] == 2
    w.close()


def test_last_metrics_skips_events_and_a_line_cut_off_mid_write(tmp_path):
    path = tmp_path / FILE
    path.write_text('{"step":1,"loss":3.0}\n{"event":"start","step":0}\n{"step":2,"loss":2.0}\n'
                    '{"event":"checkpoint","step":2}\n{"step":3,"lo')
    assert last_metrics(path) == {"step": 2, "loss": 2.0}
    assert read_metrics(path) == [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}]


def test_last_metrics_reads_only_the_tail_of_a_long_file(tmp_path):
    path = tmp_path / FILE
    path.write_text("".join(json.dumps({"step": i, "loss": 1.0, "pad": "x" * 200}) + "\n" for i in range(5000)))
    assert last_metrics(path)["step"] == 4999


def test_last_metrics_of_a_run_without_metrics_is_none(tmp_path):
    assert last_metrics(tmp_path / FILE) is None
    (tmp_path / FILE).write_text('{"event":"start","step":0}\n')
    assert last_metrics(tmp_path / FILE) is None


def test_the_metrics_module_needs_only_the_standard_library():
    code = ("import sys, trainer.metrics; heavy = {'torch', 'numpy'} & set(sys.modules); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_trainer_imports_neither_scheduler_nor_console():
    code = ("import sys, trainer.train, trainer.loop, trainer.sample, trainer.parallelize; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('scheduler', 'console')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
