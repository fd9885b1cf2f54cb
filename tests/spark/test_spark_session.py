"""The session every job gets from ``sparkjob.spark_session`` under a real spark-submit."""

import pytest

from helpers.jobs import spark_submit

PROBE = """
from sparklm.runtime.entrypoint import spark_session

spark = spark_session("probe")
print("shuffle partitions:", spark.conf.get("spark.sql.shuffle.partitions"))
spark.stop()
"""


@pytest.mark.parametrize(
    ("master", "conf", "expected"),
    [
        ("local[3]", [], "3"),  # a job run alone: the task slots, not Spark's 200
        ("local[3]", ["--conf", "spark.sql.shuffle.partitions=7"], "7"),  # the user's wins
    ],
)
def test_shuffle_partitions_follow_the_task_slots_unless_the_user_set_them(
    tmp_path, master, conf, expected
):
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    done = spark_submit(str(probe), master=master, options=conf)
    assert done.returncode == 0, done.stdout[-3000:]
    assert f"shuffle partitions: {expected}\n" in done.stdout
