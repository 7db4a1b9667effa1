"""The campaign service (``tmbmerge serve``): dataset assignment, monitoring, recovery,
certification.

``store`` keeps the campaign's tables in the sqlite catalogue, ``monitor`` computes per-run
figures from the catalogue and merge-run journals, ``recovery`` turns them into the list of
what to resume and how, ``certification`` and ``plots`` judge and draw the histograms
``tmbmerge certify`` stored, and ``app`` serves it all as pages and a JSON API.
"""
