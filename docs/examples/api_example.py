"""tmbmerge's Python API, end to end: the example README.md shows, run by the test suite as written.

Run it with a work folder: ``python3 docs/examples/api_example.py /tmp/tmbmerge-demo``.
"""

import sys
from pathlib import Path

from bindings.catalog import open_catalog
from bindings.catalog.hook import declare_file
from engine.generate import generate_run
from engine.merge import MergeSpec, merge_files, merge_run


def main(work: Path) -> None:
    # Unmerged files of run 178000 with their <file>.json sidecars, named as production names them
    # (tmb_0000178000_p000.tmb ...): safe mode checks each input's name, size, adler32 and event
    # count against its sidecar.
    files = generate_run(work / "unmerged", run=178000, files=4, events_per_file=200)

    report = merge_files(
        [f.path for f in files[:2]],
        work / "tmb_0000178000_mrg_p000-p001.tmb",
        MergeSpec(mode="safe"),
    )
    print(report.event_count, report.checksum, [s.path for s in report.skipped])

    # A catalogue URL names an absolute path after "sqlite://" ("sqlite:///cat.db" is /cat.db);
    # "sqlite:cat.db" is relative to the current folder.  The inputs must be declared before
    # their merged output can be declared with them as parents.
    catalog_url = f"sqlite://{(work / 'catalog.db').resolve()}"
    with open_catalog(catalog_url) as catalog:
        for f in files:
            declare_file(f.path, catalog, declare_parents=True)

    run = merge_run(
        [work / "unmerged"],
        work / "merged",
        target_size=2 << 30,
        jobs=2,
        spec=MergeSpec(mode="safe", catalog=catalog_url, declare=True),
    )
    assert run.ok, run.failures
    print([(o.output.name, o.declared) for o in run.outputs])


# merge_run with jobs > 1 merges in worker processes, which import this file again: without
# this guard each of them would start the whole example over.
if __name__ == "__main__":
    main(Path(sys.argv[1]))
