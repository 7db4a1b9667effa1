"""Campaign sizing: from measured rates and a campaign's volume, the merge hardware it needs.

Pure arithmetic, no I/O: ``size_campaign(Campaign, Measured) -> Sizing``.  ``measured_from_report``
picks the figures it needs out of a bench.json, naming the key each came from, and every line
of the result carries its source (an input option or a bench.json key), so a reader can check
each number by hand.

The model, per merge server (one server of the kind that was benchmarked):

- Inputs arrive over the network, land on the server's buffer disk, are merged, and the merged
  outputs leave over the same link (full duplex: inputs use the inbound direction, outputs the
  outbound one).  ``k`` is the output/input byte ratio measured for the mode (about 1: blocks
  are copied, not recompressed).
- A server sustains the smallest of: the measured all-core merge rate in the mode (the faster of
  the two ways the bench uses every core: one ``merge_files`` job on all cores' threads, or
  ``merge_run`` with one job per core); the disk
  write rate divided by ``1 + k`` (the disk writes the arriving inputs and the outputs); the
  link rate divided by ``max(1, k)``.  The smallest one is the bottleneck.
- Servers are planned to run at most at ``max_utilisation`` of that rate (default 70%), so
  servers = ceil(input rate / (per-server rate * max_utilisation)).
- Memory per server = peak RSS of one merge job (of that way) * its jobs at once + an OS margin.
- Disk per server: writes = load * (1 + k); reads = load (the inputs).  Safe and deep modes read
  every output back while writing it, from the page cache, before its pages are dropped: no
  disk reads of their own.
- Buffer space: unmerged files wait up to ``wait_hours`` for their run to complete, so the
  buffer holds input rate * wait time (spread over the servers).

Uncertainty: the bench measures each rate in several rounds and this machine's disk alone swings
2-6x between them.  ``size_campaign_range`` sizes the campaign three times: with the median of
the rounds (the answer), with every measured rate at its slowest round (the worst case) and at
its fastest (the best case), and ``Sizing.spread`` gives each line's value in those two.  A
bench of one round has no spread: the report says so rather than showing a range of zero.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from ..errors import ParameterError, UsageError
from . import figures as F

SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class Campaign:
    """A campaign to size hardware for: its volume, duration, mode and the site's constraints."""

    volume_bytes: int
    days: float
    mode: str = "safe"
    link_rate: float = 1.25e9  # bytes/s per direction (10 Gb/s)
    wait_hours: float = 24.0
    max_utilisation: float = 0.7
    os_memory_bytes: int = 2 << 30

    def __post_init__(self):
        if self.volume_bytes <= 0 or self.days <= 0:
            raise ParameterError(
                "volume_bytes and days must be positive", parameters=("volume_bytes", "days")
            )
        if self.mode not in F.MODES:
            raise ParameterError(
                f"unknown mode {self.mode!r} (choose fast, safe or deep)", parameters=("mode",)
            )
        if not 0 < self.max_utilisation <= 1:
            raise ParameterError(
                "max_utilisation must be in (0, 1]", parameters=("max_utilisation",)
            )
        if self.wait_hours < 0 or self.link_rate <= 0 or self.os_memory_bytes < 0:
            raise ParameterError(
                "wait_hours and os_memory_bytes must not be negative, link_rate must be positive",
                parameters=("wait_hours", "link_rate", "os_memory_bytes"),
            )


@dataclass(frozen=True)
class Measured:
    """The measured figures sizing uses, each with the bench.json key it came from."""

    merge_rate: float
    merge_key: str
    disk_write_rate: float
    disk_write_key: str
    disk_read_rate: float
    disk_read_key: str
    peak_rss_per_job: int
    peak_rss_key: str
    jobs: int  # merge jobs a server runs at once (1, or one per core)
    jobs_key: str
    cores: int
    cores_key: str
    output_ratio: float
    output_ratio_key: str


@dataclass(frozen=True)
class Line:
    """One line of a sizing: a value, its unit and where it comes from."""

    key: str
    label: str
    value: float
    unit: str  # B/s, B, servers, cores, ratio, h
    source: str  # the input option or bench.json key, and the arithmetic


@dataclass(frozen=True)
class Sizing:
    """The hardware a campaign needs, line by line, with its bottleneck and spread."""

    campaign: Campaign
    measured: Measured
    lines: tuple[Line, ...]
    bottleneck: str
    spread: dict[str, tuple[float, float]] = field(
        default_factory=dict
    )  # key -> (slowest, fastest rounds)
    rounds: int = 1  # rounds of the bench the spread comes from

    def __getitem__(self, key: str) -> float:
        for line in self.lines:
            if line.key == key:
                return line.value
        raise KeyError(key)

    def to_dict(self) -> dict:
        """The sizing as JSON-ready data."""
        lines = []
        for line in self.lines:
            entry = asdict(line)
            if line.key in self.spread:
                entry["slowest_rounds"], entry["fastest_rounds"] = self.spread[line.key]
            lines.append(entry)
        return {
            "campaign": asdict(self.campaign),
            "measured": asdict(self.measured),
            "bottleneck": self.bottleneck,
            "rounds": self.rounds,
            "lines": lines,
        }


ROUND_STATISTICS = (
    "value",
    "min",
    "max",
)  # bench.json: median, slowest and fastest round of a figure


def size_campaign_range(campaign: Campaign, report: dict, mode: str) -> Sizing:
    """``size_campaign`` on the rounds' medians, with each line's value on the slowest rounds and on
    the fastest ones (``Sizing.spread``); see the module docstring."""
    median = measured_from_report(report, mode)
    sized = {
        statistic: size_campaign(campaign, _at_round(median, report, statistic))
        for statistic in ROUND_STATISTICS
    }
    result = sized["value"]
    rounds = min(int(report["figures"][key].get("rounds", 1)) for key in _rate_keys(median))
    if rounds < 2:
        return replace(result, rounds=rounds)
    spread = {line.key: (sized["min"][line.key], sized["max"][line.key]) for line in result.lines}
    return replace(result, spread=spread, rounds=rounds)


def _rate_keys(measured: Measured) -> dict[str, str]:
    """The bench.json figure each measured rate was read from."""
    return {
        key.split("'")[1]: name
        for name, key in (
            ("merge_rate", measured.merge_key),
            ("disk_write_rate", measured.disk_write_key),
            ("disk_read_rate", measured.disk_read_key),
        )
    }


def _at_round(measured: Measured, report: dict, statistic: str) -> Measured:
    """``measured`` with every rate taken at one statistic of its rounds (value, min or max)."""
    figures = report["figures"]
    rate = {
        name: float(figures[key].get(statistic, figures[key]["value"]))
        for key, name in _rate_keys(measured).items()
    }
    return replace(
        measured,
        merge_rate=rate["merge_rate"],
        disk_write_rate=rate["disk_write_rate"],
        disk_read_rate=rate["disk_read_rate"],
    )


def measured_from_report(report: dict, mode: str) -> Measured:
    """The figures of a bench report that sizing needs: the faster all-core merge in ``mode``
    (one job on all cores' threads, or one job per core), disk rates, memory of one job."""
    figures = report["figures"]
    cores = int(report["settings"]["jobs"])
    for key in (F.merge_key(mode, 1), F.STORAGE_WRITE, F.STORAGE_READ):
        if key not in figures:
            raise UsageError(f"the bench report has no figure {key!r}; run `tmbmerge bench` again")
    candidates = {
        F.merge_key(mode, n): n for n in sorted({1, cores}) if F.merge_key(mode, n) in figures
    }
    merge_key = max(candidates, key=lambda key: figures[key]["value"])
    merge, jobs = figures[merge_key], candidates[merge_key]
    if "peak_rss_bytes" not in merge:
        raise UsageError(f"the bench report has no peak memory for {merge_key!r}")
    output_ratio = merge.get("output_bytes", merge["bytes"]) / merge["bytes"]
    how = "one job on all cores" if jobs == 1 else f"{jobs} jobs"
    return Measured(
        merge_rate=merge["value"],
        merge_key=f"figures['{merge_key}'].value (faster of {', '.join(candidates)})",
        disk_write_rate=figures[F.STORAGE_WRITE]["value"],
        disk_write_key=f"figures['{F.STORAGE_WRITE}'].value",
        disk_read_rate=figures[F.STORAGE_READ]["value"],
        disk_read_key=f"figures['{F.STORAGE_READ}'].value",
        peak_rss_per_job=int(merge["peak_rss_bytes"]),
        peak_rss_key=f"figures['{merge_key}'].peak_rss_bytes",
        jobs=jobs,
        jobs_key=f"{merge_key} ({how})",
        cores=cores,
        cores_key="settings.jobs (cores of the benchmarked machine)",
        output_ratio=output_ratio,
        output_ratio_key=f"figures['{merge_key}'].output_bytes / .bytes",
    )


def size_campaign(campaign: Campaign, measured: Measured) -> Sizing:
    """The hardware for ``campaign`` on servers like the measured one; see the module docstring."""
    c, m = campaign, measured
    k = m.output_ratio
    lines: list[Line] = []

    def add(key, label, value, unit, source):
        lines.append(Line(key, label, value, unit, source))
        return value

    rate = add(
        "input_rate",
        "sustained input rate needed",
        c.volume_bytes / (c.days * SECONDS_PER_DAY),
        "B/s",
        f"--volume / (--days * 86400 s) = {c.volume_bytes:.4g} B / {c.days:g} d",
    )
    add("output_ratio", "merged bytes per input byte", k, "ratio", m.output_ratio_key)
    limits = {
        "merge": add(
            "limit.merge",
            f"merge rate, {c.mode} mode, all {m.cores} cores",
            m.merge_rate,
            "B/s",
            m.merge_key,
        ),
        "disk": add(
            "limit.disk",
            "disk-bound input rate (inputs land + outputs written)",
            m.disk_write_rate / (1 + k),
            "B/s",
            f"{m.disk_write_key} ({m.disk_write_rate / 1e6:,.1f} MB/s) / (1 + output_ratio)",
        ),
        "link": add(
            "limit.link",
            "link-bound input rate (full duplex)",
            c.link_rate / max(1.0, k),
            "B/s",
            "--link / max(1, output_ratio)",
        ),
    }
    bottleneck = min(limits, key=lambda name: limits[name])
    per_server = add(
        "per_server_rate",
        f"per-server merge throughput (bottleneck: {bottleneck})",
        limits[bottleneck],
        "B/s",
        "min(limit.merge, limit.disk, limit.link)",
    )
    usable = add(
        "usable_rate",
        "planned per-server rate",
        per_server * c.max_utilisation,
        "B/s",
        f"per_server_rate * --utilisation {c.max_utilisation:g}",
    )
    servers = add(
        "servers",
        "merge servers",
        max(1, math.ceil(round(rate / usable, 9))),
        "servers",
        "ceil(input_rate / usable_rate)",
    )
    load = add(
        "load_per_server", "input rate per server", rate / servers, "B/s", "input_rate / servers"
    )
    add(
        "utilisation",
        "utilisation of each server",
        load / per_server,
        "ratio",
        "load_per_server / per_server_rate",
    )
    add(
        "capacity_margin",
        "capacity / need",
        servers * per_server / rate,
        "ratio",
        "servers * per_server_rate / input_rate",
    )
    add("cores_per_server", "cores per server", m.cores, "cores", m.cores_key)
    add("jobs_per_server", "merge jobs at once per server", m.jobs, "jobs", m.jobs_key)
    add(
        "memory_per_server",
        "memory per server",
        m.peak_rss_per_job * m.jobs + c.os_memory_bytes,
        "B",
        f"{m.peak_rss_key} ({m.peak_rss_per_job / 2**20:,.1f} MiB) * jobs_per_server "
        f"+ --os-memory {c.os_memory_bytes / 2**30:g} GiB",
    )
    write = add(
        "disk_write_per_server",
        "disk writes per server (inputs landing + outputs)",
        load * (1 + k),
        "B/s",
        "load_per_server * (1 + output_ratio)",
    )
    read = add(
        "disk_read_per_server",
        "disk reads per server (inputs; outputs are read back from the page cache)",
        load,
        "B/s",
        "load_per_server",
    )
    add(
        "disk_total_per_server",
        "disk bandwidth per server (read + write)",
        write + read,
        "B/s",
        "disk_write_per_server + disk_read_per_server",
    )
    add(
        "disk_write_utilisation",
        "share of the measured disk write rate",
        write / m.disk_write_rate,
        "ratio",
        f"disk_write_per_server / {m.disk_write_key}",
    )
    add(
        "disk_read_utilisation",
        "share of the measured disk read rate",
        read / m.disk_read_rate,
        "ratio",
        f"disk_read_per_server / {m.disk_read_key}",
    )
    buffer = add(
        "buffer_total",
        f"buffer for unmerged files ({c.wait_hours:g} h wait)",
        rate * c.wait_hours * 3600,
        "B",
        "input_rate * --wait-hours * 3600 s",
    )
    add("buffer_per_server", "buffer per server", buffer / servers, "B", "buffer_total / servers")
    add("network_in_per_server", "network in per server (inputs)", load, "B/s", "load_per_server")
    add(
        "network_out_per_server",
        "network out per server (outputs)",
        load * k,
        "B/s",
        "load_per_server * output_ratio",
    )
    add(
        "link_utilisation",
        "busier link direction, share of --link",
        load * max(1.0, k) / c.link_rate,
        "ratio",
        "load_per_server * max(1, output_ratio) / --link",
    )
    add("network_in_total", "network in, all servers", rate, "B/s", "input_rate")
    add(
        "network_out_total",
        "network out, all servers",
        rate * k,
        "B/s",
        "input_rate * output_ratio",
    )
    return Sizing(campaign, measured, tuple(lines), bottleneck)
