"""Whole-command peer benchmark: tmbmerge against ``cat`` and ROOT's ``hadd``, timed as users time
them.

Usage::

    python3 bench/peers.py WORKDIR [--volume 900MB] [--sizes 0.2,15,200] [--rounds 3]
                           [--root-python PYTHON] [--json OUT.json] [--markdown OUT.md]

For each event size (kB) it makes its own inputs of about ``--volume`` bytes of payload (900 MB of
payload is ~677 MB of TMB files at 15 kB: the issue's volume): TMB files with ``tmbmerge
generate`` and, when a Python with PyROOT is given (``--root-python``, e.g. a venv with ``pip
install root``), the same payloads as TTree files (zstd) and as RNTuple files, written by
RDataFrame.  Then, in ``--rounds`` rounds, it runs every command once cold (its inputs dropped
from the page cache with ``POSIX_FADV_DONTNEED`` after a ``sync``) and once warm (inputs read just
before), in an order rotated each round so no command always follows another:

- ``cat INPUTS > out; sync out``: the plain copy;
- ``tmbmerge merge --mode fast|safe|deep`` (whole process: start-up, pre-flight, merge, verify);
- ``hadd -ff`` on the TTree files and on the RNTuple files (ROOT's merger; ``-ff`` keeps the
  inputs' compression, so baskets and pages are copied, not recompressed: without it ``hadd``
  recompresses everything to its default ZLIB-1 and measures a codec, not a merge).

"Cold" is cold data, not a cold machine: each tool's own program and libraries stay cached, as
for a tool run every day (``drop_caches`` would also make every command re-read Python, numpy
or ROOT's libraries from disk, a cost no user pays per merge).  tmbmerge runs as installed: its
modules' bytecode is compiled once beforehand and ``PYTHONDONTWRITEBYTECODE`` is not passed on
(with it, every command would compile the engine from source, ~0.1 s).

Every figure is a whole process's wall time (and peak RSS from GNU time).  Ratios are taken
within a round (same cache state, neighbouring in time) and summarised as median and range over
rounds: the machine is shared and its disk speed swings between rounds.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

VERIFIED = {
    "cat": "nothing",
    "fast": "header, trailer, index of every input; every block's header and stored-bytes "
    "xxh3-64; adler32 vs sidecar not checked",
    "safe": "fast + sidecar size/adler32/event count, duplicate (run, event), every output block "
    "read back and checked, output re-opened, its adler32 and event list (run, event, length, "
    "payload digest) equal to the inputs'",
    "deep": "safe + every block decompressed and every event's payload digest recomputed",
    "hadd-tree": "nothing beyond ROOT's own reading (fast cloning copies baskets without "
    "decompressing them)",
    "hadd-rntuple": "nothing beyond ROOT's own reading (-ff: pages copied in their compression)",
}

ROOT_WRITER = r'''
import sys, ROOT
ROOT.gInterpreter.Declare(r"""
#include <fstream>
#include <vector>
#include <cstdint>
std::vector<std::uint32_t> tmbp_len;
std::vector<std::uint64_t> tmbp_start;
std::vector<std::uint8_t> tmbp_bytes;
void tmbp_load(const char* lens, const char* bytes) {
  std::ifstream l(lens, std::ios::binary);
  l.seekg(0, std::ios::end); auto n = l.tellg() / 4; l.seekg(0);
  tmbp_len.resize(n); l.read((char*)tmbp_len.data(), n * 4);
  std::ifstream b(bytes, std::ios::binary);
  b.seekg(0, std::ios::end); auto m = b.tellg(); b.seekg(0);
  tmbp_bytes.resize(m); b.read((char*)tmbp_bytes.data(), m);
  tmbp_start.resize(n); std::uint64_t s = 0;
  for (size_t i = 0; i < (size_t)n; ++i) { tmbp_start[i] = s; s += tmbp_len[i]; }
}
std::vector<std::uint8_t> tmbp_payload(ULong64_t i) {
  auto first = tmbp_bytes.begin() + tmbp_start[i];
  return std::vector<std::uint8_t>(first, first + tmbp_len[i]);
}
""")
args = sys.argv[1:]
for lens, data, tree, ntuple, count in zip(*[iter(args)] * 5):   # one ROOT start-up for every file
    ROOT.tmbp_load(lens, data)
    df = ROOT.RDataFrame(int(count)).Define("payload", "tmbp_payload(rdfentry_)")
    opts = ROOT.RDF.RSnapshotOptions()
    opts.fCompressionAlgorithm = ROOT.RCompressionSetting.EAlgorithm.kZSTD
    opts.fCompressionLevel = 1
    df.Snapshot("events", tree, ["payload"], opts)
    opts.fOutputFormat = ROOT.RDF.ESnapshotOutputFormat.kRNTuple
    df.Snapshot("events", ntuple, ["payload"], opts)
'''


def parse_bytes(text: str) -> int:
    sys.path.insert(0, str(HERE))
    from engine.units import parse_size

    return parse_size(text)


def tmbmerge_cmd() -> list[str]:
    return [sys.executable, "-m", "bindings.cli"]


def run_env() -> dict:
    """The environment of every timed command: this checkout first on the path, and bytecode
    used as an installed package uses it (see ``compile_bytecode``)."""
    env = {**os.environ, "PYTHONPATH": str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def compile_bytecode() -> None:
    """Compile this checkout's modules once, as ``pip install`` does, so no timed command pays for
    compiling them."""
    for package in ("engine", "bindings"):
        compileall.compile_dir(str(HERE / package), quiet=1)


def make_inputs(
    folder: Path, size_kb: float, volume: int, files: int, root_python: str | None
) -> dict:
    """TMB files (and, with PyROOT, TTree and RNTuple files of the same payloads) in ``folder``."""
    tmb = folder / "tmb"
    per_file = max(1, int(volume / (size_kb * 1000) / files))
    if not tmb.is_dir():
        subprocess.run(
            [
                *tmbmerge_cmd(),
                "generate",
                str(tmb),
                "--files",
                str(files),
                "--events-per-file",
                str(per_file),
                "--mean-event-kb",
                str(size_kb),
                "--quiet",
            ],
            check=True,
            env=run_env(),
        )
    inputs = {"tmb": sorted(str(p) for p in tmb.glob("*.tmb"))}
    if root_python:
        trees, ntuples, jobs = [], [], []
        for number, path in enumerate(inputs["tmb"]):
            tree, ntuple = (
                folder / "tree" / (Path(path).stem + ".root"),
                folder / "ntuple" / (Path(path).stem + ".root"),
            )
            trees.append(str(tree))
            ntuples.append(str(ntuple))
            if tree.exists() and ntuple.exists():
                continue
            tree.parent.mkdir(exist_ok=True)
            ntuple.parent.mkdir(exist_ok=True)
            lens, data, count = dump_payloads(path, folder / "payloads", number)
            jobs += [str(lens), str(data), str(tree), str(ntuple), str(count)]
        if jobs:
            subprocess.run([root_python, "-c", ROOT_WRITER, *jobs], check=True, capture_output=True)
            shutil.rmtree(folder / "payloads")
        inputs["tree"], inputs["ntuple"] = trees, ntuples
    inputs["events"] = per_file * files
    inputs["bytes"] = sum(os.path.getsize(p) for p in inputs["tmb"])
    return inputs


def dump_payloads(path: str, folder: Path, number: int):
    """An input's payloads as raw files (lengths, bytes) for the ROOT writer."""
    sys.path.insert(0, str(HERE))
    import numpy as np

    from engine.readers import open_file

    folder.mkdir(exist_ok=True)
    lens, data = folder / f"{number}.len", folder / f"{number}.bin"
    lengths = []
    with open_file(path) as reader, open(data, "wb") as out:
        for event in reader.iter_events():
            out.write(event.payload)
            lengths.append(len(event.payload))
    np.asarray(lengths, dtype=np.uint32).tofile(lens)
    return lens, data, len(lengths)


def drop_cache(paths) -> None:
    """Drop ``paths`` (a command's inputs) from the page cache, after writing back what is dirty."""
    os.sync()
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm_cache(paths) -> None:
    for path in paths:
        with open(path, "rb") as f:
            while f.read(8 << 20):
                pass


def timed(argv, *, shell=False) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one whole command.  The RSS is GNU time's ``%M``: a
    child forked from this (large) Python would report this process's size as its own peak."""
    report = Path(os.environ.get("TMPDIR", "/tmp")) / f"peers-time-{os.getpid()}"
    wrapped = ["/usr/bin/time", "-f", "%M", "-o", str(report)] + (
        ["sh", "-c", argv] if shell else list(argv)
    )
    start = time.perf_counter()
    done = subprocess.run(wrapped, env=run_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{argv} failed: {done.stderr.decode()[-500:]}")
    return seconds, int(report.read_text().split()[-1]) * 1024


def commands(inputs: dict, out: Path, hadd: str | None) -> dict:
    tmb = inputs["tmb"]
    quoted = " ".join(f"'{p}'" for p in tmb)
    cmds = {"cat": (f"cat {quoted} > '{out}.cat' && sync '{out}.cat'", True)}
    for mode in ("fast", "safe", "deep"):
        cmds[mode] = (
            [*tmbmerge_cmd(), "merge", *tmb, "-o", f"{out}.{mode}.tmb", "--mode", mode, "--quiet"],
            False,
        )
    if hadd and "tree" in inputs:
        cmds["hadd-tree"] = ([hadd, "-ff", f"{out}.tree.root", *inputs["tree"]], False)
        cmds["hadd-rntuple"] = ([hadd, "-ff", f"{out}.ntuple.root", *inputs["ntuple"]], False)
    return cmds


def clean_outputs(out: Path) -> None:
    for path in out.parent.glob(out.name + ".*"):
        path.unlink()


def measure(inputs: dict, work: Path, rounds: int, hadd: str | None) -> dict:
    out = work / "out"
    cmds = commands(inputs, out, hadd)
    names = list(cmds)
    sources = {
        "cat": inputs["tmb"],
        "fast": inputs["tmb"],
        "safe": inputs["tmb"],
        "deep": inputs["tmb"],
        "hadd-tree": inputs.get("tree", []),
        "hadd-rntuple": inputs.get("ntuple", []),
    }
    runs = {cache: {name: [] for name in names} for cache in ("cold", "warm")}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            argv, shell = cmds[name]
            for cache in ("cold", "warm"):
                clean_outputs(out)
                drop_cache(sources[name]) if cache == "cold" else warm_cache(sources[name])
                runs[cache][name].append(timed(argv, shell=shell))
        clean_outputs(out)
    return runs


def summary(values) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def report(size_kb: float, inputs: dict, runs: dict) -> dict:
    result = {
        "event_kb": size_kb,
        "events": inputs["events"],
        "bytes": inputs["bytes"],
        "tools": {},
        "ratios": {},
    }
    for cache, by_tool in runs.items():
        for name, values in by_tool.items():
            result["tools"].setdefault(name, {})[cache] = {
                "seconds": summary([s for s, _ in values]),
                "peak_rss_MB": summary([m / 1e6 for _, m in values]),
                "events_per_s": summary([inputs["events"] / s for s, _ in values]),
            }
        for name in by_tool:
            for base in ("cat", "hadd-tree", "hadd-rntuple"):
                if name in ("fast", "safe", "deep") and base in by_tool:
                    # speed of name relative to base, round by round: base time / name time
                    pairs = [b[0] / a[0] for a, b in zip(by_tool[name], by_tool[base], strict=True)]
                    result["ratios"][f"{name}/{base} {cache}"] = summary(pairs)
    for name in result["tools"]:
        result["tools"][name]["verified"] = VERIFIED[name]
    return result


def markdown(results: list[dict]) -> str:
    lines = [
        "| event size | ratio (speed of A / speed of B, per round) | cold: median (range) | "
        "warm: median (range) |",
        "|---|---|---|---|",
    ]
    for res in results:
        keys = sorted({k.rsplit(" ", 1)[0] for k in res["ratios"]})
        for key in keys:
            cells = []
            for cache in ("cold", "warm"):
                r = res["ratios"].get(f"{key} {cache}")
                cells.append(f"{r['median']:.2f} ({r['min']:.2f}-{r['max']:.2f})" if r else "-")
            lines.append(f"| {res['event_kb']} kB | {key} | {cells[0]} | {cells[1]} |")
    lines += [
        "",
        "| event size | tool | cold s | warm s | peak RSS MB | events/s (warm) |",
        "|---|---|---|---|---|---|",
    ]
    for res in results:
        for name, t in res["tools"].items():
            lines.append(
                f"| {res['event_kb']} kB | {name} | {t['cold']['seconds']['median']:.2f} "
                f"({t['cold']['seconds']['min']:.2f}-{t['cold']['seconds']['max']:.2f}) | "
                f"{t['warm']['seconds']['median']:.2f} ({t['warm']['seconds']['min']:.2f}-"
                f"{t['warm']['seconds']['max']:.2f}) | {t['warm']['peak_rss_MB']['max']:.0f} | "
                f"{t['warm']['events_per_s']['median']:,.0f} |"
            )
    return "\n".join(lines) + "\n"


def find_hadd(root_python: str | None) -> str | None:
    if shutil.which("hadd"):
        return shutil.which("hadd")
    if root_python:
        out = subprocess.run(
            [root_python, "-c", "import ROOT, os; print(os.path.dirname(ROOT.__file__))"],
            capture_output=True,
            text=True,
        )
        candidate = (
            Path(out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "") / "bin" / "hadd"
        )
        if candidate.is_file():
            return str(candidate)
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument(
        "--volume",
        default="900MB",
        help="payload volume per event size (default 900MB: ~677 MB of TMB files at 15 kB)",
    )
    parser.add_argument(
        "--sizes", default="0.2,15,200", help="event sizes in kB (default 0.2,15,200)"
    )
    parser.add_argument(
        "--files", type=int, default=20, help="input files per event size (default 20)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--root-python", help="a Python that imports ROOT (for hadd and the ROOT files)"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    volume = parse_bytes(args.volume)
    hadd = find_hadd(args.root_python)
    compile_bytecode()
    results = []
    for size in (float(s) for s in args.sizes.split(",")):
        folder = args.workdir / f"{size:g}kB"
        folder.mkdir(parents=True, exist_ok=True)
        inputs = make_inputs(folder, size, volume, args.files, args.root_python if hadd else None)
        results.append(report(size, inputs, measure(inputs, folder, args.rounds, hadd)))
        print(markdown(results[-1:]), flush=True)
    text = markdown(results)
    if args.json:
        args.json.write_text(
            json.dumps({"hadd": hadd, "rounds": args.rounds, "results": results}, indent=1)
        )
    if args.markdown:
        args.markdown.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
