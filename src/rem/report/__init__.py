"""``rem report``: heatmaps, tables and one self-contained HTML page from a run folder's results store.

- :mod:`rem.report.build`: :func:`build_report`, which reads the store and writes the files;
- :mod:`rem.report.tables`: the aggregates (Table 1, per task, per rate, collapses, cells);
- :mod:`rem.report.model`: the one table model those become; :mod:`rem.report.markdown` and
  :mod:`rem.report.html` render it; :mod:`rem.report.heatmaps` and :mod:`rem.report.curves` draw the figures.
"""

from rem.report.build import HEATMAP_METRICS, KNOWN_METRICS, Report, build_report, settings_match

__all__ = ["HEATMAP_METRICS", "KNOWN_METRICS", "Report", "build_report", "settings_match"]
