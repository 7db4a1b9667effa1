"""Campaign sizing arithmetic and unit parsing, against numbers worked out by hand.

Every expected value below was computed on paper from the module docstring of
``engine.benchmark.sizing`` (the working is in the comments), not by running the code.
"""

from __future__ import annotations

import pytest

from engine.benchmark.sizing import (
    Campaign,
    Measured,
    measured_from_report,
    size_campaign,
)
from engine.errors import UsageError
from engine.units import parse_rate, parse_size

# -- units ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("40TB", 40 * 10**12),
        ("40 TB", 40 * 10**12),
        ("40tb", 40 * 10**12),
        ("1.5PB", 15 * 10**14),
        ("512MiB", 512 * 2**20),
        ("2GiB", 2 * 2**30),
        ("36TiB", 36 * 2**40),
        ("4096", 4096),
        ("500MB", 5 * 10**8),
        ("2 gigabytes", None),
        (4096, 4096),
    ],
)
def test_parse_size(text, expected):
    if expected is None:
        with pytest.raises(UsageError):
            parse_size(text)
    else:
        assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "TB", "-5TB", "0", "40XB", "1e3"])
def test_parse_size_refuses(text):
    with pytest.raises(UsageError):
        parse_size(text)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1Gb", 125e6),
        ("1Gb/s", 125e6),
        ("10Gb/s", 1.25e9),
        ("10Gbps", 1.25e9),
        ("10 Gbit/s", 1.25e9),
        ("25Gbps", 3.125e9),
        ("100Mb", 12.5e6),
        ("1GB/s", 1e9),
        ("500MB/s", 5e8),
        ("500 MBps", 5e8),
        (2e8, 2e8),
    ],
)
def test_parse_rate(text, expected):
    assert parse_rate(text) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("text", ["", "fast", "1G", "0Gb", "-1Gb", "10Gb/h"])
def test_parse_rate_refuses(text):
    with pytest.raises(UsageError):
        parse_rate(text)


# -- sizing --------------------------------------------------------------------------------------


def measured(**changes) -> Measured:
    values = {
        "merge_rate": 400e6,
        "merge_key": "figures['merge.safe.jobs2'].value",
        "disk_write_rate": 900e6,
        "disk_write_key": "figures['storage.write'].value",
        "disk_read_rate": 1.5e9,
        "disk_read_key": "figures['storage.read'].value",
        "peak_rss_per_job": 150 * 10**6,
        "peak_rss_key": "figures['merge.safe.jobs1'].peak_rss_bytes",
        "jobs": 2,
        "jobs_key": "figures['merge.safe.jobs2'].jobs",
        "cores": 2,
        "cores_key": "settings.jobs",
        "output_ratio": 1.0,
        "output_ratio_key": "ratio key",
    }
    values.update(changes)
    return Measured(**values)


def test_petabyte_in_ten_days_is_merge_bound():
    # input rate = 1e15 B / (10 * 86400 s) = 1,157,407,407.41 B/s
    # limits: merge 400e6; disk 900e6 / (1 + 1) = 450e6; link 1.25e9 / 1 = 1.25e9 -> merge
    # servers = ceil(1157.407e6 / (400e6 * 0.7 = 280e6)) = ceil(4.1336) = 5
    sizing = size_campaign(
        Campaign(volume_bytes=10**15, days=10, mode="safe", link_rate=1.25e9), measured()
    )
    assert sizing["input_rate"] == pytest.approx(1_157_407_407.407, rel=1e-9)
    assert sizing["limit.merge"] == 400e6
    assert sizing["limit.disk"] == 450e6
    assert sizing["limit.link"] == 1.25e9
    assert sizing.bottleneck == "merge"
    assert sizing["per_server_rate"] == 400e6
    assert sizing["usable_rate"] == pytest.approx(280e6)
    assert sizing["servers"] == 5
    assert sizing["load_per_server"] == pytest.approx(231_481_481.48, rel=1e-9)  # 1157.407e6 / 5
    assert sizing["utilisation"] == pytest.approx(0.5787037, rel=1e-6)  # 231.48e6 / 400e6
    assert sizing["capacity_margin"] == pytest.approx(1.728, rel=1e-9)  # 5 * 400e6 / 1157.407e6
    assert sizing["cores_per_server"] == 2
    assert sizing["jobs_per_server"] == 2
    assert sizing["memory_per_server"] == 150e6 * 2 + 2 * 2**30  # 2,447,483,648 B
    assert sizing["disk_write_per_server"] == pytest.approx(
        462_962_962.96, rel=1e-9
    )  # load * (1 + 1)
    assert sizing["disk_read_per_server"] == pytest.approx(
        231_481_481.48, rel=1e-9
    )  # load: inputs only
    assert sizing["disk_total_per_server"] == pytest.approx(694_444_444.44, rel=1e-9)
    assert sizing["disk_write_utilisation"] == pytest.approx(
        0.5144033, rel=1e-6
    )  # 462.96e6 / 900e6
    assert sizing["disk_read_utilisation"] == pytest.approx(0.1543210, rel=1e-6)  # 231.48e6 / 1.5e9
    assert sizing["buffer_total"] == pytest.approx(1e14, rel=1e-12)  # one day of 1e15 / 10 d
    assert sizing["buffer_per_server"] == pytest.approx(2e13, rel=1e-12)
    assert sizing["network_in_per_server"] == pytest.approx(231_481_481.48, rel=1e-9)
    assert sizing["network_out_per_server"] == pytest.approx(231_481_481.48, rel=1e-9)
    assert sizing["link_utilisation"] == pytest.approx(0.1851852, rel=1e-6)  # 231.48e6 / 1.25e9


def test_forty_terabytes_over_a_one_gigabit_link_is_link_bound():
    # input rate = 40e12 / (30 * 86400) = 15,432,098.77 B/s
    # limits: link 1 Gb/s = 125e6 B/s < merge 400e6 < disk 450e6 -> link;
    # servers = ceil(15.43e6 / 87.5e6) = 1
    sizing = size_campaign(
        Campaign(volume_bytes=40 * 10**12, days=30, link_rate=parse_rate("1Gb")), measured()
    )
    assert sizing.bottleneck == "link"
    assert sizing["per_server_rate"] == 125e6
    assert sizing["servers"] == 1
    assert sizing["utilisation"] == pytest.approx(15_432_098.77 / 125e6, rel=1e-9)  # 12.3%
    assert sizing["buffer_total"] == pytest.approx(40e12 / 30, rel=1e-12)  # 24 h of input: 1.33 TB
    assert sizing["buffer_per_server"] == pytest.approx(40e12 / 30, rel=1e-12)


def test_slow_disk_is_the_bottleneck_and_counts_inputs_landing():
    # disk 300e6 / (1 + 1) = 150e6 < merge 400e6 and link 1.25e9
    sizing = size_campaign(Campaign(volume_bytes=10**15, days=10), measured(disk_write_rate=300e6))
    assert sizing.bottleneck == "disk"
    assert sizing["per_server_rate"] == 150e6
    assert sizing["servers"] == 12  # ceil(1157.407e6 / 105e6) = ceil(11.023)


def test_servers_land_exactly_on_a_whole_number():
    # 1.12e9 B/s needed, 400e6 * 0.7 = 280e6 usable: exactly 4 servers, not 5 from float rounding
    sizing = size_campaign(Campaign(volume_bytes=1.12e9 * 86400, days=1), measured())
    assert sizing["servers"] == 4
    assert sizing["utilisation"] == pytest.approx(0.7)


def test_disk_reads_are_the_inputs_and_output_ratio_counts():
    # reads = inputs only (every mode); with outputs half the inputs' size (k = 0.5):
    # disk limit 900e6 / 1.5 = 600e6, link limit 1.25e9 / max(1, 0.5) = 1.25e9, merge 400e6
    sizing = size_campaign(
        Campaign(volume_bytes=10**15, days=10, mode="fast"), measured(output_ratio=0.5)
    )
    assert sizing["limit.disk"] == pytest.approx(600e6)
    assert sizing["limit.link"] == 1.25e9
    load = sizing["load_per_server"]
    assert sizing["disk_read_per_server"] == pytest.approx(load)
    assert sizing["disk_write_per_server"] == pytest.approx(load * 1.5)
    assert sizing["network_out_per_server"] == pytest.approx(load * 0.5)


def test_utilisation_option_changes_the_server_count():
    # at 100%: ceil(1157.407e6 / 400e6) = ceil(2.89) = 3; at 50%: ceil(1157.407e6 / 200e6) = 6
    assert (
        size_campaign(Campaign(volume_bytes=10**15, days=10, max_utilisation=1.0), measured())[
            "servers"
        ]
        == 3
    )
    assert (
        size_campaign(Campaign(volume_bytes=10**15, days=10, max_utilisation=0.5), measured())[
            "servers"
        ]
        == 6
    )


def test_every_line_names_its_source():
    sizing = size_campaign(Campaign(volume_bytes=40 * 10**12, days=30), measured())
    assert all(line.source for line in sizing.lines)
    by_key = {line.key: line.source for line in sizing.lines}
    assert by_key["limit.merge"] == "figures['merge.safe.jobs2'].value"
    assert "figures['merge.safe.jobs1'].peak_rss_bytes" in by_key["memory_per_server"]
    assert "jobs_per_server" in by_key["memory_per_server"]
    assert "--wait-hours" in by_key["buffer_total"]


@pytest.mark.parametrize(
    "changes",
    [
        {"days": 0},
        {"volume_bytes": 0},
        {"mode": "quick"},
        {"max_utilisation": 0},
        {"max_utilisation": 1.5},
        {"wait_hours": -1},
    ],
)
def test_campaign_refuses_nonsense(changes):
    values = {"volume_bytes": 10**12, "days": 1}
    values.update(changes)
    with pytest.raises(UsageError):
        Campaign(**values)


def _report(one_job=300e6, two_jobs=450e6):
    def fig(value, **extra):
        return {"value": value, "unit": "B/s", "bytes": 1000, **extra}

    figures = {
        "storage.write": fig(900e6),
        "storage.read": fig(1.5e9),
        "merge.safe.jobs1": fig(one_job, output_bytes=990, peak_rss_bytes=120_000_000, jobs=1),
    }
    if two_jobs:
        figures["merge.safe.jobs2"] = fig(
            two_jobs, output_bytes=1000, peak_rss_bytes=90_000_000, jobs=2
        )
    return {"settings": {"jobs": 2}, "figures": figures}


def test_measured_from_report_takes_the_faster_all_core_merge_with_its_memory():
    m = measured_from_report(_report(), "safe")
    assert (m.merge_rate, m.jobs, m.cores) == (450e6, 2, 2)
    assert m.merge_key.startswith("figures['merge.safe.jobs2'].value")
    assert (m.peak_rss_per_job, m.output_ratio) == (90_000_000, 1.0)
    assert (m.disk_write_rate, m.disk_read_rate) == (900e6, 1.5e9)
    m = measured_from_report(_report(one_job=500e6), "safe")  # one job on both cores is faster here
    assert (m.merge_rate, m.jobs, m.cores, m.peak_rss_per_job, m.output_ratio) == (
        500e6,
        1,
        2,
        120_000_000,
        0.99,
    )


def test_measured_from_report_without_all_core_jobs_and_missing_modes():
    m = measured_from_report(_report(two_jobs=None), "safe")
    assert (m.merge_rate, m.jobs, m.output_ratio) == (300e6, 1, 0.99)
    with pytest.raises(UsageError):
        measured_from_report(_report(), "deep")
